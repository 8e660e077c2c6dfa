"""One version everywhere (make deploy-check): the workspace version in Cargo.toml is what
`kafka-identity --version`, the filter's `kafka-identity: version ...` line (logged by the built
.wasm in real Envoy), the OCI image's tag and annotations, the Helm chart's version and
appVersion, the placeholder image tags of deploy/ and the chart, CHANGELOG.md's newest entry and
SECURITY.md's supported line say. And the release files the README names exist.

Needs make wasm, make cli and an Envoy in .tools/envoy (scripts/install-deps).
"""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# make cli (release); make test points KAFKA_IDENTITY_CLI at the dev build it has compiled.
CLI = os.environ.get("KAFKA_IDENTITY_CLI", os.path.join(ROOT, "target", "release", "kafka-identity"))
WASM = os.environ.get(
    "KAFKA_IDENTITY_WASM",
    os.path.join(ROOT, "target/wasm32-unknown-unknown/release/kafka_identity_filter.wasm"),
)
CHART = os.path.join(ROOT, "deploy", "helm", "kafka-identity")


def workspace(field):
    text = open(os.path.join(ROOT, "Cargo.toml"), encoding="utf-8").read()
    m = re.search(r"^\[workspace\.package\][^\[]*?^" + field + r'\s*=\s*"([^"]+)"', text, re.M | re.S)
    assert m, f"Cargo.toml: no {field} in [workspace.package]"
    return m.group(1)


VERSION = workspace("version")


def test_the_cli_says_the_workspace_version():
    if not os.access(CLI, os.X_OK):
        pytest.fail(f"{CLI} missing: make cli")
    r = subprocess.run([CLI, "--version"], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == f"kafka-identity {VERSION}"


def newest_envoy():
    root = os.path.join(ROOT, ".tools", "envoy")
    found = sorted((v for v in os.listdir(root) if os.path.isfile(os.path.join(root, v, "envoy"))),
                   key=lambda v: tuple(int(x) for x in v.split("."))) if os.path.isdir(root) else []
    if not found:
        pytest.fail(f"no Envoy under {root}: scripts/install-deps")
    return os.path.join(root, found[-1], "envoy")


def test_the_filter_logs_the_workspace_version_when_its_vm_starts(tmp_path):
    """The built .wasm in real Envoy: `envoy --mode validate` starts the VM and configures the
    filter, which logs its version once per VM."""
    if not os.path.isfile(WASM):
        pytest.fail(f"{WASM} missing: make wasm")
    cfg = {"static_resources": {"listeners": [{
        "name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [
            {"name": "kafka_identity", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
                "config": {"name": "kafka_identity", "root_id": "kafka_identity",
                           "vm_config": {"vm_id": "kafka_identity", "runtime": "envoy.wasm.runtime.v8",
                                         "code": {"local": {"filename": WASM}}},
                           "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                             "value": "{}"}}}},
            {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "t", "cluster": "c"}}]}]}],
        "clusters": [{"name": "c", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
            "cluster_name": "c", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": 9}}}}]}]}}]}}
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(cfg))
    r = subprocess.run([newest_envoy(), "--mode", "validate", "-c", path, "--disable-hot-restart",
                        "-l", "info", "--component-log-level", "wasm:info"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = re.findall(r"kafka-identity: version (\S+) in VM [0-9a-f]+", r.stdout + r.stderr)
    assert lines, f"no 'kafka-identity: version ... in VM ...' line:\n{(r.stdout + r.stderr)[-3000:]}"
    assert set(lines) == {VERSION}


def test_the_oci_image_says_the_version_source_and_revision(tmp_path):
    if not os.path.isfile(WASM):
        pytest.fail(f"{WASM} missing: make wasm")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "oci-image"), "build", "--wasm", WASM,
                    "--out", tmp_path], capture_output=True, text=True, check=True)
    layout = tmp_path / "kafka-identity-wasm"
    index = json.loads((layout / "index.json").read_text())
    desc = index["manifests"][0]
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == VERSION  # the tag
    manifest = json.loads((layout / "blobs" / "sha256" / desc["digest"].split(":")[1]).read_bytes())
    ann = manifest["annotations"]
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--"]).returncode != 0
    assert ann["org.opencontainers.image.version"] == VERSION
    assert ann["org.opencontainers.image.source"] == workspace("repository")
    assert ann["org.opencontainers.image.revision"] == head + ("-dirty" if dirty else "")
    assert ann["org.opencontainers.image.licenses"] == workspace("license")
    env = dict(line.split("=", 1) for line in (tmp_path / "kafka-identity-wasm.env").read_text().splitlines())
    assert env["TAG"] == env["VERSION"] == VERSION


def test_the_chart_says_the_version():
    chart = yaml.safe_load(open(os.path.join(CHART, "Chart.yaml"), encoding="utf-8"))
    assert chart["appVersion"] == VERSION
    assert chart["version"] == VERSION
    assert workspace("repository") in chart["sources"]


def test_placeholder_image_tags_follow_the_version():
    """The example image references users copy (overlays, the chart's values and examples, the
    native proxy image's Dockerfile): the .wasm's image, and the native proxy image, whose tag
    is <version>-istio-<Istio version> (one per Istio version)."""
    files = [os.path.join(CHART, "values.yaml")]
    files += [os.path.join(CHART, "examples", f) for f in os.listdir(os.path.join(CHART, "examples"))]
    for d, _, names in os.walk(os.path.join(ROOT, "deploy", "istio")):
        files += [os.path.join(d, n) for n in names if n.endswith(".yaml") or n == "Dockerfile"]
    tags, proxy_tags = {}, {}
    for f in files:
        text = open(f, encoding="utf-8").read()
        for tag in re.findall(r"kafka-identity-wasm:([0-9][^\s\"']*)", text):
            tags.setdefault(tag, []).append(os.path.relpath(f, ROOT))
        for tag in re.findall(r"kafka-identity-proxyv2:([^\s\"'@]+)", text):
            proxy_tags.setdefault(tag, []).append(os.path.relpath(f, ROOT))
    assert tags, "no placeholder image reference found"
    assert set(tags) == {VERSION}, tags
    assert proxy_tags, "no placeholder native proxy image reference found"
    proxy_tag = re.escape(VERSION) + r"-istio-1\.[0-9]+\.[0-9]+"
    wrong = {t: f for t, f in proxy_tags.items() if not re.fullmatch(proxy_tag, t)}
    assert not wrong, f"native proxy image tags that are not {VERSION}-istio-<Istio version>: {wrong}"


def test_changelog_and_security_policy_name_the_version():
    changelog = open(os.path.join(ROOT, "CHANGELOG.md"), encoding="utf-8").read()
    newest = re.search(r"^## \[?([0-9][^\]\s]*)", changelog, re.M)
    assert newest and newest.group(1) == VERSION, "CHANGELOG.md's newest entry is not the workspace version"
    security = open(os.path.join(ROOT, "SECURITY.md"), encoding="utf-8").read()
    minor = ".".join(VERSION.split(".")[:2])
    supported = re.search(r"^\| ([0-9]+\.[0-9]+)\.x[^|]*\| yes", security, re.M)
    assert supported and supported.group(1) == minor, "SECURITY.md does not support the current minor version"


def test_the_license_is_apache_2():
    text = open(os.path.join(ROOT, "LICENSE"), encoding="utf-8").read()
    assert workspace("license") == "Apache-2.0"
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
