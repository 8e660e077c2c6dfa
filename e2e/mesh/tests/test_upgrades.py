"""Upgrading the filter under load, and bad upgrades (docs/operations.md, "Upgrading and rolling
back"; docs/reliability.md). A producer and a consumer run through the brokers' sidecars while
the .wasm is replaced as an operator would for each delivery:

- WasmPlugin `oci://`: a new tag pushed, the WasmPlugin's url and sha256 changed;
- WasmPlugin `file://`: the ConfigMap's content replaced, and the WasmPlugin's
  `vmConfig.env` KAFKA_IDENTITY_MODULE set to the new module's sha256 (without a change of the
  WasmPlugin's spec istiod pushes nothing and Envoy keeps the old module);
- EnvoyFilter: the ConfigMap replaced, and the EnvoyFilter's `vm_config` environment
  KAFKA_IDENTITY_MODULE set to the new sha256 (a listener update).

The new module is the same build with a custom section added (other bytes, another sha256):
what is measured is what Envoy and Istio do with a new module, not what the new code does.
Each test measures what happens to the open connections (kept on the old VM, or drained) and
to new ones, with the accounting of tests/faultlib.py, then rolls back.

Bad upgrades, each from the `oci://` delivery: a sha256 that does not match the image; a
module that fails to start (an import this Envoy does not provide, as a build for a newer
host would have); a configuration the filter refuses. Each measures what Envoy does (fail
open or closed, does the old filter keep serving), the counters and log lines an operator
sees, and that rolling back (applying the previous WasmPlugin) restores new connections.

Only the oci:// upgrade and the sha256 mismatch have been seen green (docs/reliability.md, scenario 11). The tests
marked UNPROVEN state in their docstrings what they expect of Envoy and Istio; none of that
has been observed yet."""

import json
import re
import time
import uuid

import pytest

from checks import LogMark, ecds_filters, rejected_updates, wait_until
from deliveries import BOOTSTRAP, deliver
from faultlib import (LONG, TOPIC, UNPROVEN, Accounting, Workload, check_accounting, check_nothing_lost, client_events,
                      envoy_pid, ensure_topic, filter_counters, isr_full, longest_gap, record, records_figures,
                      restart_proxy)
from meshlib.mesh import REGISTRY_HOST, WASM
from upgradelib import (Module, apply, envoyfilter_overlay, file_overlay, new_module, oci_overlay, push_image,
                        with_unresolvable_import)

VM_ACTIVE, VM_CREATED = "wasm.envoy.wasm.runtime.v8.active", "wasm.envoy.wasm.runtime.v8.created"
NEW_VM = re.compile(r"kafka-identity: root context 1 in VM ([0-9a-f]+)")


# ---- what the brokers' sidecars run ------------------------------------------------------------
def brokers(mesh):
    return {b.pod.name: mesh.sidecars[b.pod.name] for b in mesh.brokers}


def filter_config(sc):
    """Our filter's configuration as Envoy holds it: the ECDS resource (WasmPlugin) or the
    9092 listener's (EnvoyFilter), as text."""
    ecds = {k: v for k, v in ecds_filters(sc).items() if re.search(r"kafka[_-]identity", k)}
    return json.dumps(ecds) if ecds else sc.admin("config_dump?resource=dynamic_listeners")


def wait_running(mesh, marker, what):
    """Until every broker sidecar holds a configuration of our filter naming `marker` (the
    module's file or its sha256)."""
    for name, sc in brokers(mesh).items():
        wait_until(f"{name}: our filter with {what}", lambda sc=sc: marker in filter_config(sc), timeout=120)


def vm_stats(mesh):
    """{sidecar: (active Wasm VMs, VMs created)} of each broker sidecar."""
    out = {}
    for name, sc in brokers(mesh).items():
        s = sc.stats()
        out[name] = (s.get(VM_ACTIVE, 0), s.get(VM_CREATED, 0))
    return out


def debug_logs(mesh, level="debug"):
    for sc in brokers(mesh).values():
        sc.admin_post(f"logging?wasm={level}")


def source_ports(lines, outcome):
    """Client ports of the filter's lines with `outcome` (the connection a line is about)."""
    return [int(m.group(1)) for ln in lines for m in [re.search(rf"source=[\d.]+:(\d+) .*\boutcome={outcome}\b", ln)]
            if m]


def probe_client(mesh, label):
    """A new client (new connections) writing one record: delivered or not."""
    return mesh.kclient("producer", "produce", BOOTSTRAP, TOPIC, "--count", "1", "--prefix",
                        f"probe-{label}-{uuid.uuid4().hex[:6]}", "--timeout", "20")


@pytest.fixture(scope="module")
def upgrades(mesh):
    ensure_topic(mesh)
    # The starting point of every upgrade: the shipped oci delivery (and mesh.oci_digest set,
    # whichever tests ran before).
    deliver(mesh, "1.31", "wasmplugin-oci")
    yield mesh
    # The next tests expect the shipped oci delivery, the module of `make wasm`, wasm at info.
    debug_logs(mesh, "info")
    deliver(mesh, "1.31", "wasmplugin-oci")
    wait_running(mesh, f"{mesh.oci_digest}.wasm", "the module of make wasm")


def upgrade_under_load(mesh, name, start_old, to_new, new_marker, back_to_old, old_marker):
    """The measurement every delivery shares: the old module with sessions of a minute, a
    workload of 100 s, the upgrade 15 s in, a new client after it; then, with the workload's
    connections closed, the VMs left; then the rollback. Returns the figures and the brokers'
    sidecars' log lines from the upgrade to the workload's end."""
    start_old()
    wait_running(mesh, old_marker, "the old module")
    debug_logs(mesh)
    marks = {n: LogMark(sc.proc.log) for n, sc in brokers(mesh).items()}
    vms_before = vm_stats(mesh)
    acct = Accounting(mesh, brokers(mesh), debug=True)
    wl = Workload(mesh, f"upgrade-{name}", 100).start()
    time.sleep(15)
    wl.check_running()
    opened = {n: set(source_ports(m.lines(), "authenticated")) for n, m in marks.items()}
    at_upgrade = {n: LogMark(sc.proc.log) for n, sc in brokers(mesh).items()}
    t_up = time.time()
    to_new()
    wait_running(mesh, new_marker, "the new module")
    t_running = time.time()
    vms_during = vm_stats(mesh)
    probe = probe_client(mesh, "after-upgrade")
    produced, consumed = wl.wait()
    lines = {n: m.lines() for n, m in at_upgrade.items()}
    # Connections of the workload opened before the upgrade that re-authenticated after it (on
    # the sidecar that had authenticated them): the VM they were opened on still served them.
    reauth_after = {n: sorted(opened[n] & set(source_ports(lines[n], "reauthenticated"))) for n in lines}
    new_vms = {n: sorted(set(NEW_VM.findall("\n".join(ls)))) for n, ls in lines.items()}
    # With the workload's connections closed, do the old VMs go?
    vms_closed = wait_until("the VM counts to settle after the workload closed its connections",
                            lambda: _settled(mesh), timeout=60, interval=5)
    back = wl.readback()
    check_nothing_lost(produced, consumed, back)
    accounting = check_accounting(acct)
    t_back = time.time()
    back_to_old()
    wait_running(mesh, old_marker, "the old module again (rollback)")
    rolled_back_s = round(time.time() - t_back, 1)
    after_rollback = probe_client(mesh, "after-rollback")
    figures = {**records_figures(wl, produced, consumed, back), **accounting,
               "upgrade_running_after_s": round(t_running - t_up, 1),
               "producer_stall_s": longest_gap(produced["ack_times"], t_up),
               "consumer_stall_s": longest_gap(consumed["arrivals"], t_up),
               "vms_active_created_before": vms_before, "vms_active_created_after_upgrade": vms_during,
               "vms_active_created_after_clients_closed": vms_closed,
               "new_vm_ids": new_vms, "connections_opened_before_upgrade": {n: len(p) for n, p in opened.items()},
               "of_them_reauthenticated_after_upgrade": {n: len(p) for n, p in reauth_after.items()},
               "new_client_after_upgrade_delivered": probe["delivered"],
               "rollback_running_after_s": rolled_back_s,
               "new_client_after_rollback_delivered": after_rollback["delivered"]}
    return figures, lines


def _settled(mesh):
    """Two readings of the VM counts 5 s apart that agree."""
    first = vm_stats(mesh)
    time.sleep(5)
    second = vm_stats(mesh)
    return second if first == second else None


@pytest.mark.skipif(not LONG, reason="make e2e-mesh-faults (KAFKA_IDENTITY_MESH_LONG=1)")
def test_upgrade_oci_new_tag_under_load(upgrades):
    """WasmPlugin oci://: a new image tag and its sha256. ECDS replaces the filter's
    configuration: new connections get new VMs; open connections keep the VM they were
    opened on and are not drained."""
    mesh = upgrades
    v2 = new_module(mesh, f"v2-{uuid.uuid4().hex[:6]}")
    digest = push_image(mesh, v2, v2.label)
    old = oci_overlay(mesh, "oci-old", "mesh", mesh.oci_digest)
    figures, lines = upgrade_under_load(
        mesh, "oci", lambda: apply(mesh, old),
        lambda: apply(mesh, oci_overlay(mesh, "oci-new", v2.label, digest)), f"{digest}.wasm",
        lambda: apply(mesh, old), f"{mesh.oci_digest}.wasm")
    record(mesh, "upgrade: WasmPlugin oci:// new tag", figures)
    check_kept_open(figures)


def check_kept_open(figures):
    """An ECDS upgrade: nothing was drained, the open connections re-authenticated after the
    upgrade, every sidecar started new VMs, a new client was served, and after the rollback
    too."""
    assert figures["client_disconnects"] == 0 and figures["client_errors"] == 0, \
        f"the upgrade disturbed open connections: {figures}"
    assert all(figures["new_vm_ids"].values()), f"a sidecar started no new VM: {figures['new_vm_ids']}"
    assert sum(figures["of_them_reauthenticated_after_upgrade"].values()) > 0, \
        f"no connection opened before the upgrade re-authenticated after it: {figures}"
    assert figures["new_client_after_upgrade_delivered"] == 1 and figures["new_client_after_rollback_delivered"] == 1


@UNPROVEN
@pytest.mark.skipif(not LONG, reason="make e2e-mesh-faults (KAFKA_IDENTITY_MESH_LONG=1)")
def test_upgrade_file_delivery_under_load(upgrades):
    """WasmPlugin file://: the ConfigMap gets the new module (the kubelet replaces the mounted
    file), and the WasmPlugin's vmConfig.env KAFKA_IDENTITY_MODULE its sha256: istiod pushes,
    Envoy starts new VMs that read the new file."""
    mesh = upgrades
    v1 = Module(mesh, "v1-file", WASM.read_bytes())
    v2 = new_module(mesh, f"v2-{uuid.uuid4().hex[:6]}")
    deliver(mesh, "1.31", "wasmplugin-file")

    def install(module):
        mesh.publish_wasm_configmap(module.path)
        apply(mesh, file_overlay(mesh, f"file-{module.label}", module))
    try:
        figures, _ = upgrade_under_load(mesh, "file", lambda: install(v1), lambda: install(v2), v2.sha256,
                                        lambda: install(v1), v1.sha256)
    finally:
        deliver(mesh, "1.31", "wasmplugin-file")
    record(mesh, "upgrade: WasmPlugin file:// new ConfigMap", dict(figures, module_bytes=v2.size))
    check_kept_open(figures)


@UNPROVEN
@pytest.mark.skipif(not LONG, reason="make e2e-mesh-faults (KAFKA_IDENTITY_MESH_LONG=1)")
def test_upgrade_envoyfilter_under_load(upgrades):
    """EnvoyFilter: the ConfigMap gets the new module, the EnvoyFilter's vm_config environment
    its sha256: a listener update. Envoy drains the 9092 chain's connections (closed after the
    drain time) and the clients reconnect to the new filter."""
    mesh = upgrades
    v1 = Module(mesh, "v1-envoyfilter", WASM.read_bytes())
    v2 = new_module(mesh, f"v2-{uuid.uuid4().hex[:6]}")
    deliver(mesh, "1.31", "envoyfilter")

    def install(module):
        mesh.publish_wasm_configmap(module.path)
        apply(mesh, envoyfilter_overlay(mesh, f"envoyfilter-{module.label}", module))
    try:
        figures, lines = upgrade_under_load(mesh, "envoyfilter", lambda: install(v1), lambda: install(v2),
                                            v2.sha256, lambda: install(v1), v1.sha256)
    finally:
        deliver(mesh, "1.31", "envoyfilter")
    reconnected = {n: sorted({p for p in source_ports(ls, "authenticated")}) for n, ls in lines.items()}
    figures["authenticated_after_upgrade"] = {n: len(p) for n, p in reconnected.items()}
    record(mesh, "upgrade: EnvoyFilter new module", figures)
    # Drained: the clients lost their connections and came back through the new filter.
    assert figures["client_disconnects"] > 0, f"no connection was drained by the listener update: {figures}"
    assert all(figures["new_vm_ids"].values()), f"a sidecar started no new VM: {figures['new_vm_ids']}"
    assert sum(figures["authenticated_after_upgrade"].values()) > 0
    assert figures["new_client_after_upgrade_delivered"] == 1 and figures["new_client_after_rollback_delivered"] == 1


# ---- bad upgrades ------------------------------------------------------------------------------
def agent_metric(sc, name):
    """pilot-agent's own metric `name` from :15020/stats/prometheus, by label set."""
    out = {}
    for line in sc.prometheus().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line.rpartition(" ")
            out[labels[len(name):] or "-"] = float(value)
    return out


def rbac_denied(sc):
    return {k: v for k, v in sc.stats().items() if "rbac" in k and k.endswith("denied")}


def snapshot(sc):
    return {"counters": filter_counters(sc), "update_rejected": rejected_updates(sc), "rbac_denied": rbac_denied(sc),
            "agent_wasm_remote_fetch": agent_metric(sc, "istio_agent_wasm_remote_fetch_count")}


def moved(before, after):
    """What grew between two snapshots of a sidecar."""
    out = {"authenticated": after["counters"]["authenticated"] - before["counters"]["authenticated"]}
    for key in ("update_rejected", "rbac_denied", "agent_wasm_remote_fetch"):
        out[key] = {k: v - before[key].get(k, 0) for k, v in after[key].items() if v != before[key].get(k, 0)}
    return out


def bad_upgrade(mesh, name, apply_bad, expect, restart_one=None):
    """The oci delivery, a workload of 75 s, the bad upgrade 10 s in; what Envoy and Istio do
    (`expect`: "deny" for Istio's deny-all stand-in, "keep" for the old filter kept) and
    whether a new client is served; optionally a broker's sidecar (`restart_one`) restarted
    while the bad configuration is what istiod serves; then the rollback (the previous
    WasmPlugin applied again) and a new client again."""
    old = oci_overlay(mesh, "oci-old", "mesh", mesh.oci_digest)
    apply(mesh, old)
    wait_running(mesh, f"{mesh.oci_digest}.wasm", "the module of make wasm")
    scs = brokers(mesh)
    marks = {n: LogMark(sc.proc.log) for n, sc in scs.items()}
    istiod = LogMark(mesh.istiod.proc.log)
    before = {n: snapshot(sc) for n, sc in scs.items()}
    acct = Accounting(mesh, scs)
    wl = Workload(mesh, f"bad-{name}", 75).start()
    time.sleep(10)
    wl.check_running()
    t_bad = time.time()
    apply_bad()
    if expect == "deny":
        wait_until("Istio's deny-all filter in place of ours on every broker",
                   lambda: all("network.rbac" in filter_config(sc) for sc in scs.values()), 120)
    else:
        wait_until("every broker sidecar to refuse the update",
                   lambda: all(rejected_updates(sc) != before[n]["update_rejected"] for n, sc in scs.items()), 120)
    t_effect = time.time()
    new_client = probe_client(mesh, f"bad-{name}")
    while_bad = {n: moved(before[n], snapshot(sc)) for n, sc in scs.items()}
    restarted, t_restart = None, None
    if restart_one:
        # A broker's sidecar restarting while the bad configuration is what istiod serves: it
        # has no earlier configuration of our filter to keep.
        sc = scs[restart_one]
        t_restart = time.time()
        restart_proxy(acct, restart_one, sc, sc.stop, lambda: sc.start(sc.envoy_version, sc.istio_version,
                                                                       {"WASM_INSECURE_REGISTRIES": REGISTRY_HOST}))
        time.sleep(30)
        restarted = {"ready_after_30_s": sc.ready(), "envoy_running": envoy_pid(sc) is not None,
                     "probe_to_its_broker": mesh.kclient("producer", "probe",
                                                         f"{restart_one}.kafka-headless.kafka.svc.cluster.local",
                                                         "9092")}
    lines = {n: m.lines() for n, m in marks.items()}
    t_rollback = time.time()
    apply(mesh, old)
    wait_running(mesh, f"{mesh.oci_digest}.wasm", "the module of make wasm again (rollback)")
    if restart_one:
        scs[restart_one].wait_ready()
    rolled_back_s = round(time.time() - t_rollback, 1)
    after_rollback = probe_client(mesh, f"rollback-{name}")
    produced, consumed = wl.wait()
    back = wl.readback()
    check_nothing_lost(produced, consumed, back)
    wait_until("all replicas in sync", lambda: isr_full(mesh), 120)
    accounting = check_accounting(acct)
    disconnects, errors = client_events(produced, consumed)
    until = t_restart or float("inf")
    envoy_lines = sorted({re.sub(r"^\S+ ", "", ln)[:300] for ls in lines.values() for ln in ls
                          if re.search(r"\[(warning|error|critical)\]", ln) or "configuration refused" in ln
                          or "does not match" in ln or "applying deny" in ln})
    return {**records_figures(wl, produced, consumed, back), **accounting,
            "effect_after_s": round(t_effect - t_bad, 1),
            "disconnects_before_any_restart": len([e for e in disconnects if e[0] < until]),
            "errors_before_any_restart": len([e for e in errors if e[0] < until]),
            "new_client_while_bad": {k: new_client[k] for k in ("delivered", "errors")},
            "while_bad": while_bad,
            "istiod_nacks": len([ln for ln in istiod.lines() if "ACK ERROR" in ln]),
            "sidecar_restarted_while_bad": restarted,
            "rollback_running_after_s": rolled_back_s,
            "new_client_after_rollback_delivered": after_rollback["delivered"],
            "producer_stall_s": longest_gap(produced["ack_times"], t_bad),
            "log_lines": envoy_lines[:12]}


@pytest.mark.skipif(not LONG, reason="make e2e-mesh-faults (KAFKA_IDENTITY_MESH_LONG=1)")
def test_bad_upgrade_sha256_mismatch(upgrades):
    """A new tag with a sha256 that matches no image (a digest mistyped): pilot-agent fetches
    the image, refuses it and puts Istio's deny-all RBAC filter in ours' place (the WasmPlugin's
    default failStrategy FAIL_CLOSE). Open connections keep the filter they were opened with;
    new connections are refused until the rollback. (A new tag with the *old* sha256 is no
    mismatch at all: pilot-agent finds that sha256 in its cache and fetches nothing, measured
    in docs/operations.md.)"""
    mesh = upgrades
    v3 = new_module(mesh, f"v3-{uuid.uuid4().hex[:6]}")
    digest = push_image(mesh, v3, v3.label)
    mistyped = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    figures = bad_upgrade(mesh, "sha256", lambda: apply(mesh, oci_overlay(mesh, "oci-bad-sha", v3.label,
                                                                          mistyped)), "deny")
    record(mesh, "bad upgrade: sha256 mismatch", figures)
    assert figures["new_client_while_bad"]["delivered"] == 0, f"a new client was served by the deny-all: {figures}"
    assert any(c["rbac_denied"] for c in figures["while_bad"].values()), figures
    assert any("checksum_mismatched" in k for c in figures["while_bad"].values()
               for k in c["agent_wasm_remote_fetch"]), figures
    assert figures["client_disconnects"] == 0 and figures["client_errors"] == 0, \
        f"open connections were disturbed: {figures}"
    assert figures["new_client_after_rollback_delivered"] == 1


@UNPROVEN
@pytest.mark.skipif(not LONG, reason="make e2e-mesh-faults (KAFKA_IDENTITY_MESH_LONG=1)")
def test_bad_upgrade_module_fails_to_start(upgrades):
    """A module Envoy cannot start (it imports a host function this Envoy lacks), with its
    correct sha256: pilot-agent fetches it, Envoy refuses the update (NACK) and keeps the old
    filter for open and new connections. A sidecar that restarts meanwhile has no old filter."""
    mesh = upgrades
    data, missing = with_unresolvable_import(WASM.read_bytes())
    broken = Module(mesh, f"broken-{uuid.uuid4().hex[:6]}", data)
    digest = push_image(mesh, broken, broken.label)
    figures = bad_upgrade(mesh, "start", lambda: apply(mesh, oci_overlay(mesh, "oci-broken", broken.label, digest)),
                          "keep", restart_one="kafka-2")
    figures["missing_import"] = missing
    record(mesh, "bad upgrade: module fails to start", figures)
    assert figures["new_client_while_bad"]["delivered"] == 1, f"the old filter did not serve a new client: {figures}"
    assert figures["disconnects_before_any_restart"] == 0 and figures["errors_before_any_restart"] == 0, figures
    assert figures["istiod_nacks"] > 0, "istiod logged no NACK for the refused module"
    assert figures["new_client_after_rollback_delivered"] == 1


@UNPROVEN
@pytest.mark.skipif(not LONG, reason="make e2e-mesh-faults (KAFKA_IDENTITY_MESH_LONG=1)")
def test_bad_upgrade_configuration_refused(upgrades):
    """A new module with a configuration the filter refuses (token_lifetime_seconds: 5):
    Envoy's configuration canary fails, the update is refused (NACK), the old filter keeps
    serving."""
    mesh = upgrades
    v4 = new_module(mesh, f"v4-{uuid.uuid4().hex[:6]}")
    digest = push_image(mesh, v4, v4.label)
    figures = bad_upgrade(mesh, "config", lambda: apply(mesh, oci_overlay(
        mesh, "oci-refused", v4.label, digest, {"token_lifetime_seconds": 5})), "keep")
    record(mesh, "bad upgrade: configuration refused", figures)
    assert figures["new_client_while_bad"]["delivered"] == 1, f"the old filter did not serve a new client: {figures}"
    assert any("configuration refused: token_lifetime_seconds" in ln for ln in figures["log_lines"]), figures
    assert figures["client_disconnects"] == 0 and figures["client_errors"] == 0, figures
    assert figures["new_client_after_rollback_delivered"] == 1

