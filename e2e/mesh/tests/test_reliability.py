"""Faults on the mesh, under a steady workload: a broker killed, a rolling restart, a broker's
sidecar restarted, istiod away, a new filter configuration pushed by istiod. Each asserts what
the broker and the clients saw: nothing acknowledged was lost, nothing duplicated (count and
checksum over a read_committed read-back), every new connection authenticated as the right
principal; and it records how long the clients made no progress (docs/reliability.md).

The workload is an idempotent producer (acks=all) in the producer pod and a consumer group
member in the consumer pod, plain Kafka clients behind their own sidecars
(e2e/mesh/clients/workload.py). Figures of each run are appended to
e2e/.state/mesh/reliability.jsonl."""

import json
import os
import re
import time
import uuid

import pytest

from checks import (LogMark, authz, filter_authentications, prometheus_counter, scraped_counter, spread_leaders,
                    wait_any, wait_until)
from conftest import CONSUMER, PRODUCER
from deliveries import BOOTSTRAP, deliver
from faultlib import check_nothing_lost, isr_full, longest_gap, record
from meshlib.mesh import REPO
from meshlib.procs import Proc

TOPIC, GROUP = "events", "events-readers"
WORKLOAD = REPO / "e2e" / "mesh" / "clients" / "workload.py"
RATE = float(os.environ.get("KAFKA_IDENTITY_MESH_FAULT_RATE", "40"))     # records per second
# How often the broker and sidecar faults repeat (make e2e-mesh-faults: spread for the docs).
REPEATS = range(int(os.environ.get("KAFKA_IDENTITY_MESH_FAULT_REPEATS", "1")))


@pytest.fixture(scope="module")
def faults(mesh):
    """The topic and ACLs of these tests, and the recommended delivery (WasmPlugin oci://) on
    Istio 1.31 proxies."""
    bindings = [{"type": "TOPIC", "name": TOPIC, "principal": f"User:{PRODUCER}", "operation": op}
                for op in ("WRITE", "DESCRIBE")]
    bindings += [{"type": "TOPIC", "name": TOPIC, "principal": f"User:{CONSUMER}", "operation": op}
                 for op in ("READ", "DESCRIBE")]
    bindings.append({"type": "GROUP", "name": GROUP, "principal": f"User:{CONSUMER}", "operation": "READ"})
    mesh.admin({"op": "create_topic", "topic": TOPIC, "partitions": 3, "replication": 3,
                "config": {"min.insync.replicas": "2"}}, {"op": "acls", "bindings": bindings})
    deliver(mesh, "1.31", "wasmplugin-oci")
    return mesh


class Workload:
    """Producer and consumer, each on long-lived connections, for `seconds`."""

    def __init__(self, mesh, name, seconds):
        self.mesh, self.name = mesh, name
        self.prefix = f"{name}-{uuid.uuid4().hex[:8]}"
        self.dir = mesh.state / "faults" / self.prefix
        self.dir.mkdir(parents=True, exist_ok=True)
        self.seconds = seconds
        self.procs = {}

    def _proc(self, pod, mode, seconds, *extra):
        p = self.mesh.pods[pod]
        out = self.dir / f"{mode}.json"
        return Proc(f"{mode} workload in pod {pod}", [
            *p.exec_prefix(), self.mesh.python, WORKLOAD, mode, BOOTSTRAP, TOPIC, "--seconds", seconds,
            "--prefix", self.prefix, "--group", GROUP, "--out", out, *extra], self.dir / f"{mode}.log")

    def start(self):
        self.procs["consume"] = self._proc("consumer", "consume", self.seconds + 60, "--want-file",
                                           self.dir / "want").start()
        time.sleep(3)   # the consumer joins its group first
        self.procs["produce"] = self._proc("producer", "produce", self.seconds, "--rate", RATE).start()
        self.t0 = time.time()
        return self

    def wait(self):
        """Waits for the producer, then tells the consumer how many records were acknowledged:
        it stops once it has read them all (or at its own deadline)."""
        self.procs["produce"].popen.wait(timeout=self.seconds + 200)
        produced = json.loads((self.dir / "produce.json").read_text())
        (self.dir / "want.tmp").write_text(str(produced["acked"]))
        os.replace(self.dir / "want.tmp", self.dir / "want")
        self.procs["consume"].popen.wait(timeout=self.seconds + 120)
        consumed = json.loads((self.dir / "consume.json").read_text())
        return produced, consumed

    def readback(self):
        r = self.mesh.exec("consumer", [self.mesh.python, WORKLOAD, "readback", BOOTSTRAP, TOPIC, "--seconds", "60",
                                        "--prefix", self.prefix, "--group", GROUP, "--out",
                                        self.dir / "readback.json"], timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads((self.dir / "readback.json").read_text())


def authenticated_total(mesh):
    return sum(scraped_counter(mesh.sidecars[b.pod.name], "kafka_identity_authenticated") for b in mesh.brokers)


def auth_failures(mesh):
    return sum(scraped_counter(mesh.sidecars[b.pod.name], "kafka_identity_auth_failed") for b in mesh.brokers)


def check_principals(marks):
    """The broker sidecars' filters authenticated connections since `marks` (sidecar log marks),
    each as the producer's or the consumer's principal, and both clients among them: the
    clients' reconnections during the fault carried their own identities. Returns the counts."""
    found = {}
    for mark in marks:
        for principal, n in filter_authentications(mark.lines()).items():
            found[principal] = found.get(principal, 0) + n
    assert set(found) <= {PRODUCER, CONSUMER}, f"connections authenticated as other principals: {found}"
    assert set(found) == {PRODUCER, CONSUMER}, f"not both clients authenticated again: {found}"
    return found


@pytest.mark.parametrize("repeat", REPEATS)
def test_broker_killed_and_restarted(faults, repeat):
    mesh = faults
    victim = mesh.brokers[1]
    wl = Workload(mesh, "kill", seconds=75).start()
    time.sleep(12)
    auth_before, fails_before = authenticated_total(mesh), auth_failures(mesh)
    victim_log = LogMark(victim.authorizer_log)
    t_kill = time.time()
    victim.kill()
    time.sleep(10)
    victim.start()
    victim.wait_started()
    t_back = time.time()
    # Back in sync, and leading its partitions again (as auto.leader.rebalance or an operator's
    # preferred election does): the clients then open new connections to it.
    wait_until("all replicas back in sync", lambda: isr_full(mesh), 120)
    mesh.admin({"op": "elect_preferred", "topic": TOPIC})
    assert victim_log.wait_for(f"Principal = User:{PRODUCER} is Allowed operation = WRITE", timeout=45), \
        f"the restarted broker {victim.index} logged no write of User:{PRODUCER} (authorizer: {victim.authorizer_log})"
    produced, consumed = wl.wait()
    # Before the read-back, whose own new connections would make the counter grow anyway.
    auth_after, fails_after = authenticated_total(mesh), auth_failures(mesh)
    back = wl.readback()
    by_readback = authenticated_total(mesh) - auth_after
    check_nothing_lost(produced, consumed, back)
    assert auth_after > auth_before and fails_after == fails_before, (auth_before, auth_after, fails_after)
    # The clients did see the broker go (this is what makes "no link events" elsewhere meaningful).
    assert produced["links"] or consumed["links"], "the clients logged no lost connection when a broker died"
    figures = {"records": produced["sent"], "lost": produced["sent"] - back["unique"],
               "duplicates": back["duplicates"], "checksum": back["checksum"][:16],
               "producer_stall_s": longest_gap(produced["ack_times"], t_kill),
               "consumer_stall_s": longest_gap(consumed["arrivals"], t_kill),
               "broker_down_s": round(t_back - t_kill, 1),
               "new_authentications": auth_after - auth_before, "authentications_by_readback": by_readback,
               "client_link_events": len(produced["links"]) + len(consumed["links"])}
    record(mesh, "broker kill -9", figures)


@pytest.mark.parametrize("repeat", REPEATS)
def test_rolling_restart_of_all_brokers(faults, repeat):
    mesh = faults
    wl = Workload(mesh, "rolling", seconds=70).start()
    time.sleep(8)
    auth_before, fails_before = authenticated_total(mesh), auth_failures(mesh)
    filter_logs = [LogMark(mesh.sidecars[b.pod.name].proc.log) for b in mesh.brokers]
    authorizer_logs = [LogMark(b.authorizer_log) for b in mesh.brokers]
    t_start = time.time()
    for b in mesh.brokers:
        b.stop()          # SIGTERM: a controlled shutdown, as a rolling update does
        b.start()
        b.wait_started()
        wait_until(f"replicas in sync after restarting broker {b.index}", lambda: isr_full(mesh), 120)
    t_done = time.time()
    produced, consumed = wl.wait()
    # Before the read-back, whose own new connections would make the counter grow anyway.
    auth_after, fails_after = authenticated_total(mesh), auth_failures(mesh)
    # The reconnections during the roll were authenticated as the clients' own principals (the
    # filters' log lines), and the brokers authorized the clients' requests under those names.
    principals = check_principals(filter_logs)
    assert wait_any(authorizer_logs, *authz(PRODUCER, "Allowed", "WRITE", f"Topic:LITERAL:{TOPIC}")), \
        f"no broker logged an allowed WRITE of User:{PRODUCER} during the roll"
    assert wait_any(authorizer_logs, *authz(CONSUMER, "Allowed", "READ", f"Group:LITERAL:{GROUP}")), \
        f"no broker logged an allowed READ of the group by User:{CONSUMER} during the roll"
    back = wl.readback()
    by_readback = authenticated_total(mesh) - auth_after
    check_nothing_lost(produced, consumed, back)
    assert auth_after > auth_before and fails_after == fails_before, (auth_before, auth_after, fails_after)
    record(mesh, "rolling restart", {
        "records": produced["sent"], "lost": produced["sent"] - back["unique"], "duplicates": back["duplicates"],
        "checksum": back["checksum"][:16], "restart_s": round(t_done - t_start, 1),
        "producer_stall_s": longest_gap(produced["ack_times"], t_start, t_done),
        "consumer_stall_s": longest_gap(consumed["arrivals"], t_start, t_done),
        "new_authentications": auth_after - auth_before, "authentications_by_readback": by_readback,
        "authenticated_principals": principals})


@pytest.mark.parametrize("repeat", REPEATS)
def test_broker_sidecar_restart(faults, repeat):
    mesh = faults
    broker = mesh.brokers[0]
    sc = mesh.sidecars[broker.pod.name]
    # Broker 0 leads a partition the producer writes to: its requests cross the restarted sidecar.
    leaders = spread_leaders(mesh, TOPIC)
    wl = Workload(mesh, "sidecar", seconds=40).start()
    time.sleep(10)
    filter_log, authorizer_log = LogMark(sc.proc.log), LogMark(broker.authorizer_log)
    t_restart = time.time()
    mesh.restart_sidecars([sc.pod.name], sc.envoy_version, sc.istio_version)
    sc = mesh.sidecars[broker.pod.name]
    wait_until("our filter back in the restarted sidecar",
               lambda: (prometheus_counter(sc, "kafka_identity_authenticated") or 0) > 0, 120)
    t_back = time.time()
    # Through the new Envoy, as the producer: the broker behind it authorizes its writes again.
    assert authorizer_log.wait_for(*authz(PRODUCER, "Allowed", "WRITE", f"Topic:LITERAL:{TOPIC}"), timeout=30), \
        f"broker {broker.index} (leader of {[p for p, b in leaders.items() if b == broker.index]}) logged no " \
        f"allowed WRITE of User:{PRODUCER} after its sidecar restarted"
    produced, consumed = wl.wait()
    # Before the read-back: the clients' reconnections through the new Envoy, authenticated
    # again there as their own principals.
    authenticated, failed = (scraped_counter(sc, "kafka_identity_authenticated"),
                             scraped_counter(sc, "kafka_identity_auth_failed"))
    principals = check_principals([filter_log])
    back = wl.readback()
    check_nothing_lost(produced, consumed, back)
    assert authenticated > 0 and failed == 0, (authenticated, failed)
    record(mesh, "broker sidecar restart", {
        "records": produced["sent"], "lost": produced["sent"] - back["unique"], "duplicates": back["duplicates"],
        "sidecar_down_s": round(t_back - t_restart, 1),
        "producer_stall_s": longest_gap(produced["ack_times"], t_restart),
        "consumer_stall_s": longest_gap(consumed["arrivals"], t_restart),
        "authenticated_on_new_sidecar": authenticated, "authenticated_principals": principals,
        "client_link_events": len(produced["links"]) + len(consumed["links"])})


def test_control_plane_away(faults):
    mesh = faults
    away = float(os.environ.get("KAFKA_IDENTITY_MESH_ISTIOD_AWAY", "60"))
    wl = Workload(mesh, "istiod", seconds=away + 35).start()
    time.sleep(8)
    mesh.istiod.stop()
    t_stop = time.time()
    fresh, auth_before, fails_before = 0, authenticated_total(mesh), auth_failures(mesh)
    while time.time() - t_stop < away:
        # A new client connection every few seconds, each through the filter while istiod is away.
        r = mesh.kclient("producer", "produce", BOOTSTRAP, TOPIC, "--count", "1", "--prefix", f"away-{fresh}",
                         "--timeout", "20")
        assert r["delivered"] == 1, f"a new connection failed while istiod was away: {r}"
        fresh += 1
        time.sleep(3)
    authenticated_while_away = authenticated_total(mesh) - auth_before
    mesh.istiod.start()
    wait_until("every sidecar connected to istiod again",
               lambda: mesh.istiod.connected_proxies() >= len(mesh.sidecars), 120)
    produced, consumed = wl.wait()
    back = wl.readback()
    check_nothing_lost(produced, consumed, back)
    assert authenticated_while_away >= fresh, (authenticated_while_away, fresh)
    assert auth_failures(mesh) == fails_before, "the brokers refused a token while istiod was away or returning"
    # Nothing disrupted, neither while istiod was away nor when it returned: the long-lived
    # clients saw no dropped connection.
    dropped = produced["links"] + consumed["links"]
    assert dropped == [], dropped[:3]
    record(mesh, "istiod away", {
        "away_s": away, "new_connections_while_away": fresh, "authenticated_while_away": authenticated_while_away,
        "records": produced["sent"], "lost": produced["sent"] - back["unique"], "duplicates": back["duplicates"],
        "client_link_events": len(produced["links"]) + len(consumed["links"])})


def test_config_change_under_load(faults):
    """A new pluginConfig (token lifetime) pushed by istiod while connections are open: none is
    dropped; new connections and re-authentications on the open ones use the new one."""
    mesh = faults
    brokers = [b.pod.name for b in mesh.brokers]
    for name in brokers:
        mesh.sidecars[name].admin_post("logging?wasm=debug")
    deliver(mesh, "1.31", "wasmplugin-oci", {"token_lifetime_seconds": 60})
    wl = Workload(mesh, "config", seconds=75).start()
    time.sleep(8)
    marks = {n: LogMark(mesh.sidecars[n].proc.log) for n in brokers}
    fails_before = auth_failures(mesh)
    mesh.apply_kustomization(mesh.oci_overlay(mesh.oci_digest, {"token_lifetime_seconds": 120}))
    t_push = time.time()
    new_lifetime = re.compile(r"outcome=authenticated session_lifetime_ms=1[01]\d{4}\b")

    def new_connection_has_new_lifetime():
        mesh.kclient("producer", "produce", BOOTSTRAP, TOPIC, "--count", "1", "--prefix", "probe", "--timeout", "20")
        return any(new_lifetime.search(ln) for m in marks.values() for ln in m.lines())
    wait_until("a new connection authenticated with the pushed token lifetime", new_connection_has_new_lifetime, 90,
               interval=3)
    produced, consumed = wl.wait()
    back = wl.readback()
    check_nothing_lost(produced, consumed, back)
    assert produced["links"] == [] and consumed["links"] == [], (produced["links"][:3], consumed["links"][:3])
    reauth = [ln for n in brokers for ln in marks[n].lines() if "outcome=reauthenticated" in ln]
    lifetimes = [int(m.group(1)) for ln in reauth for m in [re.search(r"session_lifetime_ms=(\d+)", ln)] if m]
    assert lifetimes, "no re-authentication on the open connections after the push"
    assert all(100_000 <= ms <= 120_000 for ms in lifetimes), f"re-authentications with the old lifetime: {lifetimes}"
    assert auth_failures(mesh) == fails_before, "the brokers refused a token after the push"
    record(mesh, "config change", {"records": produced["sent"], "lost": produced["sent"] - back["unique"],
                                   "duplicates": back["duplicates"], "reauthentications_after_push": len(lifetimes),
                                   "pushed_after_s": round(t_push - wl.t0, 1)})
    deliver(mesh, "1.31", "wasmplugin-oci")
    for name in brokers:
        mesh.sidecars[name].admin_post("logging?wasm=info")
