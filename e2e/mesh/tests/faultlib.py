"""What the mesh's fault, upgrade and soak tests share (docs/reliability.md): the workload, the
accounting every scenario does, and what is read from the proxies and the brokers.

The accounting of a scenario, from its start to its end (`Accounting`):
- records: sent, acknowledged, read back `read_committed` (count and checksum), lost,
  duplicated, read by the live consumer group member (`check_nothing_lost`);
- the clients: disconnects (librdkafka's log lines) and errors (its error_cb), apart;
- the filter: its counters on every proxy that runs it (the broker sidecars, or the waypoint
  replicas), summed over the proxies' restarts, and reconciled with its per-connection log
  lines: each outcome counter moved exactly as often as the filter logged that outcome;
- the brokers: their own failed authentications (`Failed authentication` in server.log).
"""

import itertools
import json
import os
import re
import sys
import time
import uuid
from pathlib import Path

import pytest

from checks import wait_until
from conftest import CONSUMER, PRODUCER
from deliveries import BOOTSTRAP
from meshlib.mesh import REPO
from meshlib.procs import MeshError, Proc

sys.path.insert(0, str(REPO / "bench"))
from envoy_probe import wasm_linear_memory_kib  # noqa: E402  (what the local reliability tests read)

TOPIC, GROUP = "events", "events-readers"
WORKLOAD = REPO / "e2e" / "mesh" / "clients" / "workload.py"
RATE = float(os.environ.get("KAFKA_IDENTITY_MESH_FAULT_RATE", "40"))     # records per second
# How often each fault scenario repeats (make e2e-mesh-faults: spread for the docs).
REPEATS = range(int(os.environ.get("KAFKA_IDENTITY_MESH_FAULT_REPEATS", "1")))
# make e2e-mesh-faults sets it: the scenarios too long for make test's mesh pass run there.
LONG = os.environ.get("KAFKA_IDENTITY_MESH_LONG") == "1"
# Scenarios written but not yet seen green on the mesh: out of every make target until a run
# proves them (KAFKA_IDENTITY_MESH_UNPROVEN=1 runs them, e.g. with e2e/mesh/run -k).
UNPROVEN = pytest.mark.skipif(os.environ.get("KAFKA_IDENTITY_MESH_UNPROVEN") != "1",
                              reason="not yet seen green on the mesh (KAFKA_IDENTITY_MESH_UNPROVEN=1)")

# Outcome counters and the `outcome=` values the filter logs for them (docs/operations.md).
OUTCOME_OF = {"authenticated": ("authenticated",), "reauthenticated": ("reauthenticated",),
              "auth_failed": ("auth_failed",), "rejected_no_identity": ("rejected_no_identity",),
              "rejected_client_sasl": ("rejected_client_sasl",), "passed_through": ("passed_through",),
              "protocol_errors": ("protocol_error", "host_error"),
              "reidentified_closed": ("reidentified_closed",)}
COUNTERS = ("connections", *OUTCOME_OF)
FILTER_LINE = re.compile(r"kafka-identity: source=\S+ .*?\boutcome=(\w+)")
STAT = re.compile(r"^wasmcustom\.kafka_identity\.(\w+)$")
# What the broker logs when a client's SASL authentication fails (Kafka's Selector, INFO).
BROKER_AUTH_FAILURE = "Failed authentication"


def record(mesh, scenario, figures):
    """Appends a run's figures to e2e/.state/mesh/reliability.jsonl and prints them."""
    with open(mesh.state / "reliability.jsonl", "a") as f:
        f.write(json.dumps(dict(figures, scenario=scenario, at=time.strftime("%Y-%m-%dT%H:%M:%SZ"))) + "\n")
    print(f"\n[{scenario}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def ensure_topic(mesh):
    """The topic and ACLs of the fault scenarios (idempotent: Kafka answers "exists")."""
    bindings = [{"type": "TOPIC", "name": TOPIC, "principal": f"User:{PRODUCER}", "operation": op}
                for op in ("WRITE", "DESCRIBE")]
    bindings += [{"type": "TOPIC", "name": TOPIC, "principal": f"User:{CONSUMER}", "operation": op}
                 for op in ("READ", "DESCRIBE")]
    bindings.append({"type": "GROUP", "name": GROUP, "principal": f"User:{CONSUMER}", "operation": "READ"})
    mesh.admin({"op": "create_topic", "topic": TOPIC, "partitions": 3, "replication": 3,
                "config": {"min.insync.replicas": "2"}}, {"op": "acls", "bindings": bindings})


class Workload:
    """An idempotent producer (acks=all) and a consumer group member, each on long-lived
    connections, for `seconds`, in the given pods (sidecar clients or ambient ones)."""

    def __init__(self, mesh, name, seconds, producer="producer", consumer="consumer", rate=RATE):
        self.mesh, self.name = mesh, name
        self.producer_pod, self.consumer_pod, self.rate = producer, consumer, rate
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
        self.procs["consume"] = self._proc(self.consumer_pod, "consume", self.seconds + 60, "--want-file",
                                           self.dir / "want").start()
        time.sleep(3)   # the consumer joins its group first
        self.procs["produce"] = self._proc(self.producer_pod, "produce", self.seconds, "--rate", self.rate).start()
        self.t0 = time.time()
        return self

    def check_running(self):
        """Raises, naming its log, if a client of the workload has ended early."""
        for p in self.procs.values():
            p.check()

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

    def stop(self):
        for p in self.procs.values():
            p.stop(timeout=150)

    def readback(self, seconds=60):
        r = self.mesh.exec(self.consumer_pod, [self.mesh.python, WORKLOAD, "readback", BOOTSTRAP, TOPIC,
                                               "--seconds", seconds, "--prefix", self.prefix, "--group", GROUP,
                                               "--out", self.dir / "readback.json"], timeout=seconds + 60)
        assert r.returncode == 0, r.stderr
        return json.loads((self.dir / "readback.json").read_text())


def longest_gap(times, since, until=None):
    """The longest time without progress in [since, until], counting from `since`."""
    pts = sorted(t for t in times if t >= since and (until is None or t <= until))
    if not pts:
        return None
    gaps = [pts[0] - since] + [b - a for a, b in itertools.pairwise(pts)]
    return round(max(gaps), 2)


def check_nothing_lost(produced, consumed, back):
    assert produced["failed"] == 0 and produced["unflushed"] == 0, \
        f"producer: {produced['failed']} failed ({produced['failures']}), {produced['unflushed']} unflushed"
    assert back["complete"], "read-back did not reach the end of every partition"
    assert back["duplicates"] == 0, f"{back['duplicates']} duplicated records in the read-back"
    # Idempotent acks=all producer: every record it sent was acknowledged, so the read-back must
    # hold exactly prefix-0 .. prefix-(sent-1).
    assert back["unique"] == produced["sent"] == produced["acked"], \
        f"sent {produced['sent']}, acknowledged {produced['acked']}, read back {back['unique']}"
    assert back["checksum"] == produced["acked_checksum"], \
        "the read-back holds other records than the producer's acknowledged ones"
    assert consumed["consumed"] == produced["acked"], \
        f"the consumer group member read {consumed['consumed']} of {produced['acked']} acknowledged records"


def client_events(produced, consumed):
    """The clients' link events split: (disconnects, errors), each a list of [time, text]."""
    events = produced["links"] + consumed["links"]
    errors = [e for e in events if e[1].startswith("error: ")]
    return [e for e in events if not e[1].startswith("error: ")], errors


def records_figures(wl, produced, consumed, back):
    """The records' side of the accounting: lost (acknowledged, not read back), duplicated
    (read back more than once), the checksum comparison, the clients' disconnects and errors."""
    disconnects, errors = client_events(produced, consumed)
    sent = {f"{wl.prefix}-{n}" for n in range(produced["sent"])}
    return {"records": produced["sent"], "acked": produced["acked"], "read_back": back["unique"],
            "lost": len(sent - set(back["values"])), "duplicates": back["duplicates"],
            "checksum_equal": back["checksum"] == produced["acked_checksum"], "consumed": consumed["consumed"],
            "client_disconnects": len(disconnects), "client_errors": len(errors),
            "client_error_kinds": sorted({e[1][7:70] for e in errors})}


def isr_full(mesh):
    try:
        isrs = mesh.admin({"op": "describe_topic", "topic": TOPIC})[0]["isrs"]
    except Exception:  # noqa: BLE001 - a broker may be on its way up
        return False
    return all(len(v) == 3 for v in isrs.values())


# ---- what is read from a proxy (pilot-agent + Envoy) ------------------------------------------
def envoy_pid(sidecar):
    """The Envoy that pilot-agent started: the process named envoy in pilot-agent's process group."""
    if not sidecar.proc or not sidecar.proc.alive():
        return None
    group = sidecar.proc.pid
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if comm == "envoy" and int(fields[2]) == group:
            return int(d.name)
    return None


def envoy_figures(sidecar):
    """What the soak samples of one proxy: its Envoy's pid, RSS, open descriptors, tcmalloc's
    allocated bytes and heap, the Wasm VMs' linear memory, the active VMs, the filter's counters.
    None while it has no Envoy running."""
    pid = envoy_pid(sidecar)
    if pid is None:
        return None
    stats = sidecar.stats()
    rss = next(int(ln.split()[1]) for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
               if ln.startswith("VmRSS:"))
    w_rss, w_size = wasm_linear_memory_kib(pid)
    counters = dict.fromkeys(COUNTERS, 0)
    for name, value in stats.items():
        m = STAT.match(name)
        if m and m.group(1) in counters:
            counters[m.group(1)] = value
    return {"pid": pid, "rss_kib": rss, "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "allocated_kib": stats.get("server.memory_allocated", 0) // 1024,
            "heap_kib": stats.get("server.memory_heap_size", 0) // 1024,
            "wasm_resident_kib": w_rss, "wasm_size_kib": w_size,
            "vms_active": stats.get("wasm.envoy.wasm.runtime.v8.active", 0), "counters": counters}


def filter_counters(sidecar):
    """The filter's counters from Envoy's /stats (0 for one not defined yet)."""
    out = dict.fromkeys(COUNTERS, 0)
    for name, value in sidecar.stats().items():
        m = STAT.match(name)
        if m and m.group(1) in out:
            out[m.group(1)] = value
    return out


def logged_outcomes(lines):
    """{counter: how often the filter logged its outcome} among `lines`."""
    outcomes = [m.group(1) for ln in lines for m in [FILTER_LINE.search(ln)] if m]
    return {c: sum(outcomes.count(o) for o in names) for c, names in OUTCOME_OF.items()}


def file_size(path):
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


def read_from(path, offset, end=None):
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read() if end is None else f.read(max(0, end - offset))
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()


class Epoch:
    """One Envoy process of a proxy, from the moment it is watched: its counters then, and
    where its lines start in the proxy's log."""

    def __init__(self, sidecar, fresh):
        self.proc = sidecar.proc
        self.log = sidecar.proc.log
        # A proxy started anew counts from 0 and logs after the offset taken before its start.
        self.base = dict.fromkeys(COUNTERS, 0) if fresh is not None else filter_counters(sidecar)
        self.offset = fresh if fresh is not None else file_size(self.log)
        self.end = None          # (counters, log offset) of the last reading before it ended

    def lines(self):
        return read_from(self.log, self.offset, self.end[1] if self.end else None)


class Accounting:
    """Counters of the filter on every proxy that runs it, reconciled with its log lines, and
    the brokers' failed authentications, from now until `finish()`. Faults that stop a proxy
    tell it (`before_stop`, `after_start`), so that counters of a restarted Envoy, which start
    from 0, are added up and each Envoy's lines are matched with its own counters."""

    def __init__(self, mesh, proxies, debug=False):
        self.mesh = mesh
        self.proxies = dict(proxies)          # name -> Sidecar (or WaypointProxy)
        self.debug = debug                    # wasm at debug: re-authentications are logged too
        self.epochs = {n: [Epoch(sc, None)] for n, sc in self.proxies.items()}
        self.broker_offsets = {b.index: file_size(b.log) for b in mesh.brokers}
        self.unseen = {}                      # name -> outcomes logged after the last reading before a kill

    def counted(self):
        return [c for c in OUTCOME_OF if self.debug or c != "reauthenticated"]

    def add(self, name, sidecar):
        """A proxy that starts running the filter now (e.g. a second waypoint replica)."""
        self.proxies[name] = sidecar
        self.epochs[name] = [Epoch(sidecar, None)]

    def _reading(self, sidecar):
        """Counters and the log offset, read together: counters first, so every counted
        outcome's line is before the offset (the filter logs as it counts)."""
        return filter_counters(sidecar), file_size(sidecar.proc.log)

    def _reconciled(self, epoch, counters, offset):
        lines = read_from(epoch.log, epoch.offset, offset)
        logged = logged_outcomes(lines)
        moved = {c: counters[c] - epoch.base[c] for c in COUNTERS}
        return all(logged[c] == moved[c] for c in self.counted()), logged, moved

    def before_stop(self, name, timeout=20):
        """Ends the proxy's current Envoy: a reading whose counters match its lines (retried
        while a connection's outcome falls between the two reads), just before it is stopped
        or killed. Outcomes after it are lost with the process, as for Prometheus: counted in
        `unseen` from the log once it is gone (`after_start`)."""
        sc = self.proxies[name]
        epoch = self.epochs[name][-1]

        def matching():
            counters, offset = self._reading(sc)
            ok, _, _ = self._reconciled(epoch, counters, offset)
            return (counters, offset) if ok else None
        epoch.end = wait_until(f"{name}: counters matching the filter's lines before the stop", matching,
                               timeout, interval=0.3)
        return file_size(sc.proc.log)

    def after_stop(self, name):
        """The proxy's Envoy is gone: its lines between its last reading and now were never
        counted (kept in `unseen`). Returns where its log ends."""
        epoch = self.epochs[name][-1]
        stopped_at = file_size(epoch.log)
        late = logged_outcomes(read_from(epoch.log, epoch.end[1], stopped_at))
        self.unseen[name] = {c: self.unseen.get(name, {}).get(c, 0) + v for c, v in late.items()}
        return stopped_at

    def after_start(self, name, stopped_at):
        """The proxy runs a new Envoy, started after its log reached `stopped_at`, whose
        counters start from 0."""
        if self.proxies[name].proc.log != self.epochs[name][-1].log:
            raise MeshError(f"{name}: restarted with another log file ({self.proxies[name].proc.log}): "
                            "the accounting follows one log per proxy")
        self.epochs[name].append(Epoch(self.proxies[name], stopped_at))

    def broker_auth_failures(self):
        return [ln for b in self.mesh.brokers
                for ln in read_from(b.log, self.broker_offsets[b.index]) if BROKER_AUTH_FAILURE in ln]

    def finish(self, timeout=30):
        """Reconciles every proxy's running Envoy (waiting for lines still being written) and
        returns the totals: counters moved (summed over each proxy's Envoys), outcomes logged,
        outcomes after a last reading (`unseen`), the brokers' failed authentications."""
        totals = dict.fromkeys(COUNTERS, 0)
        logged_total = dict.fromkeys(OUTCOME_OF, 0)
        per_proxy = {}
        for name, epochs in self.epochs.items():
            sc = self.proxies[name]
            last = epochs[-1]
            if last.end is None:
                def matching(sc=sc, last=last):
                    counters, offset = self._reading(sc)
                    ok, _, _ = self._reconciled(last, counters, offset)
                    return (counters, offset) if ok else None
                try:
                    last.end = wait_until(f"{name}: the filter's counters to match its log lines", matching,
                                          timeout, interval=0.5)
                except MeshError:
                    counters, offset = self._reading(sc)
                    _, logged, moved = self._reconciled(last, counters, offset)
                    raise AssertionError(f"{name}: the filter's outcome lines do not match its counters after "
                                         f"{timeout} s: logged {logged}, counters moved {moved} "
                                         f"(log {last.log})") from None
            mine = dict.fromkeys(COUNTERS, 0)
            for e in epochs:
                for c in COUNTERS:
                    mine[c] += e.end[0][c] - e.base[c]
                for c, v in logged_outcomes(e.lines()).items():
                    logged_total[c] += v
            per_proxy[name] = mine
            for c in COUNTERS:
                totals[c] += mine[c]
        unseen = {c: sum(u.get(c, 0) for u in self.unseen.values()) for c in OUTCOME_OF}
        return {"counters": totals, "logged": logged_total, "unseen": unseen, "per_proxy": per_proxy,
                "restarts": {n: len(e) - 1 for n, e in self.epochs.items() if len(e) > 1},
                "broker_auth_failures": self.broker_auth_failures()}


def check_accounting(acct, allow_refusals=False):
    """What every scenario asserts of the filter and the brokers: nothing refused by the
    broker (auth_failed 0, no failed authentication in the brokers' logs), counters and lines
    reconciled (finish()), and, unless the scenario refuses connections on purpose, no
    refusal of the filter either. Returns the figures."""
    got = acct.finish()
    c = got["counters"]
    assert c["auth_failed"] == 0 and got["logged"]["auth_failed"] == 0 and got["unseen"]["auth_failed"] == 0, \
        f"the brokers refused the filter's token: {got}"
    assert got["broker_auth_failures"] == [], f"the brokers logged failed authentications: " \
                                              f"{got['broker_auth_failures'][:3]}"
    if not allow_refusals:
        refused = {k: c[k] for k in ("rejected_no_identity", "rejected_client_sasl", "protocol_errors",
                                     "reidentified_closed") if c[k]}
        assert not refused, f"the filter refused connections: {refused}"
    return {"authenticated": c["authenticated"], "reauthenticated": c["reauthenticated"],
            "auth_failed": c["auth_failed"], "filter_connections": c["connections"],
            "refused_by_filter": sum(c[k] for k in ("rejected_no_identity", "rejected_client_sasl",
                                                     "protocol_errors", "reidentified_closed")),
            "broker_auth_failures": len(got["broker_auth_failures"]),
            "outcomes_after_last_reading": {k: v for k, v in got["unseen"].items() if v},
            "proxy_restarts": got["restarts"]}


def restart_proxy(acct, name, sidecar, stop, start):
    """Stops (`stop()`: SIGTERM or SIGKILL) and starts (`start()`) a proxy that runs the filter,
    with the accounting told about it."""
    watched = acct is not None and name in acct.proxies
    if watched:
        acct.before_stop(name)
    stop()
    stopped_at = acct.after_stop(name) if watched else None
    start()
    if watched:
        acct.after_start(name, stopped_at)
