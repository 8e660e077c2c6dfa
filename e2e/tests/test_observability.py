"""The dashboard and the alerts in deploy/observability/ use metric names the filter really
exports: read from the running Envoy's /stats/prometheus (the endpoint Istio's pilot-agent
merges into :15020/stats/prometheus for Prometheus)."""

import json
import re
import urllib.request

from conftest import REPO

OBSERVABILITY = REPO / "deploy" / "observability"
METRIC = re.compile(r"\bkafka_identity_[a-z_]+\b")


# Envoy strips the Wasm filters' `wasmcustom` namespace from its Prometheus names but not the
# dynamic modules' `dynamicmodulescustom`: the native build's counters come out as
# envoy_dynamicmodulescustom_kafka_identity_*, which the relabelling rule that
# docs/operations.md gives for it turns into the same names. This is that rule.
NATIVE_ONLY = {"kafka_identity_panics"}
NATIVE_PREFIX = re.compile(r"^envoy_dynamicmodulescustom_(?=kafka_identity_)")


def exported(stack):
    """{metric name: type} of the kafka_identity_* families in Envoy's Prometheus output."""
    with urllib.request.urlopen(f"http://{stack.envoy_admin}/stats/prometheus", timeout=10) as r:
        text = r.read().decode()
    families = {}
    for line in text.splitlines():
        m = re.match(r"# TYPE (\w+) (\w+)$", line)
        if m:
            name = NATIVE_PREFIX.sub("", m.group(1))
            if name.startswith("kafka_identity_"):
                families[name] = m.group(2)
    return families, text


def referenced():
    """Metric names used by the dashboard's queries and the PrometheusRule's expressions."""
    names = set()
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names.update(METRIC.findall(target["expr"]))
    for var in dashboard["templating"]["list"]:
        names.update(METRIC.findall(var.get("definition", "")))
    # expressions only (comments and annotations also mention names): the lines of `expr:` blocks
    rules = (OBSERVABILITY / "prometheusrule.yaml").read_text()
    for block in re.findall(r"^\s*expr: (\|\n(?:\s{8,}.*\n)+|.*)$", rules, re.M):
        names.update(METRIC.findall(block))
    return names


def test_every_metric_of_the_dashboard_and_alerts_is_exported(stack):
    families, text = exported(stack)
    used = referenced()
    # the parsers found what they should: the queries name the counters, Envoy exports them
    assert {"kafka_identity_connections", "kafka_identity_authenticated", "kafka_identity_auth_failed",
            "kafka_identity_rejected_client_sasl", "kafka_identity_protocol_errors"} <= used, used
    assert "kafka_identity_connections" in families, text[:2000]
    # The .wasm has no `panics` (a panic traps its VM; Envoy's wasm stats count that).
    native_only = set() if stack.env.get("KAFKA_IDENTITY_FILTER_KIND") == "native" else NATIVE_ONLY
    missing = sorted(used - set(families) - native_only)
    assert not missing, f"used by deploy/observability but not exported by the filter: {missing}; " \
                        f"exported: {sorted(families)}"
    # rate()/increase() need counters
    counted = used - native_only
    assert {families[name] for name in counted} == {"counter"}, {name: families[name] for name in counted}


def test_every_counter_the_filter_exports_is_on_the_dashboard(stack):
    families, _ = exported(stack)
    dashboard = (OBSERVABILITY / "grafana-dashboard.json").read_text()
    absent = sorted(name for name in families if name not in dashboard)
    assert not absent, f"counters exported by the filter but shown nowhere on the dashboard: {absent}"
