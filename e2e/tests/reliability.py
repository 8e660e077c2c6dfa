"""What the reliability tests (docs/reliability.md) watch on a side stack's Envoy: its pid and
admin, its memory and the Wasm VMs' linear memory, the VM stats, trap and panic lines in its
log, and the filter's per-connection outcome lines. Also: raising this process's file
descriptor limit (its children, Envoy and Kafka, inherit it) and recording the figures a
test measured, for the document."""

import hashlib
import json
import re
import resource
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import kafka_raw  # noqa: E402,F401  (re-exported: the raw-socket Kafka client of bench/)
import envoy_probe  # noqa: E402

from side_stack import SideStack, envoy_stats, filter_counters  # noqa: E402

FIGURES = REPO / "e2e" / ".state" / "figures"
# queued.max.request.bytes of the 2-worker stack's broker: room for two frames of Kafka's
# largest request size (socket.request.max.bytes, 100 MiB) at once, in a 1 GiB heap.
BROKER_REQUEST_MEMORY = 256 * 1024 * 1024
STATS_FLUSH_S = 5.5  # server.memory_* gauges are refreshed at Envoy's stats flush (every 5 s)
LOG_FLUSH_S = 11  # Envoy writes its log file every 10 s (default --file-flush-interval-msec)
# What a trapped VM or a Rust panic leaves in Envoy's log: the filter's panic hook logs
# "panicked at ..." (critical); proxy-wasm-cpp-host reports a V8 trap as
# "Function: <name> failed: Uncaught RuntimeError: ..."; a VM that cannot be used any more
# makes Envoy log about a failed VM or plugin.
TRAP_MARKERS = ("panicked at", "Uncaught", "RuntimeError", "unreachable", "VM failed", "Wasm VM",
                "failed to", "[critical]")
# The filter's per-connection line. A refusal on the first chunk may have no source (`-`).
# Outcome counters and the `outcome=` they log.
OUTCOME_OF = {"authenticated": "authenticated", "passed_through": "passed_through",
              "protocol_errors": "protocol_error", "rejected_client_sasl": "rejected_client_sasl",
              "rejected_no_identity": "rejected_no_identity", "auth_failed": "auth_failed"}
OUTCOME = re.compile(r"kafka-identity: source=(?:127\.0\.0\.1:(\d+)|-) .*?outcome=(\w+)")


def raise_fd_limit(needed):
    """Soft RLIMIT_NOFILE up to the hard limit; fails, naming `ulimit -n`, below `needed`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise RuntimeError(f"the hard file descriptor limit is {hard}; this test needs {needed} "
                           f"(raise it: ulimit -Hn / limits.conf)")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def record_figures(name, figures):
    """Writes what a test measured to e2e/.state/figures/<name>.json and prints it."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    figures = dict(figures, recorded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    (FIGURES / f"{name}.json").write_text(json.dumps(figures, indent=1) + "\n")
    print(f"\n[figures] {name}: {json.dumps(figures)}")


def checksum(values):
    """Of a collection of records (bytes): equal for two collections exactly when they hold the
    same records, whatever their order."""
    h = hashlib.sha256()
    for v in sorted(values):
        h.update(hashlib.sha256(v).digest())
    return h.hexdigest()


class Envoy:
    """The side stack's Envoy, seen from outside: /proc and the admin endpoint."""

    def __init__(self, side):
        self.side = side
        state = Path(side.stack["KAFKA_IDENTITY_STATE"])
        self.pid = int((state / "envoy.pid").read_text().strip())
        self.admin = side.stack["KAFKA_IDENTITY_ENVOY_ADMIN"]
        self.log = Path(side.stack["KAFKA_IDENTITY_ENVOY_LOG"])
        self.port = int(side.stack["KAFKA_IDENTITY_BOOTSTRAP"].rsplit(":", 1)[1])

    def stats(self, regex=""):
        return envoy_stats(self.admin, regex)

    def counters(self):
        return filter_counters(self.admin)

    def vm_stats(self):
        """Envoy's own Wasm stats: VMs created and active per runtime, the plugin's VM
        reloads (a reload follows a failed VM), the VM count."""
        return self.stats(r"^wasm\.")

    def listener(self):
        """This listener's downstream_cx_{total,active,destroy}, overall and per worker."""
        prefix = f"listener.127.0.0.1_{self.port}."
        return {k[len(prefix):]: v for k, v in self.stats(rf"^listener\.127\.0\.0\.1_{self.port}\.").items()
                if "downstream_cx" in k}

    def alive(self):
        """(same process still running, admin answers LIVE)."""
        running = Path(f"/proc/{self.pid}/cmdline").exists()
        try:
            with urllib.request.urlopen(f"http://{self.admin}/ready", timeout=5) as r:
                live = r.read().decode().startswith("LIVE")
        except OSError:
            live = False
        return running, live

    def rss_kib(self):
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def fds(self):
        """Open file descriptors: two sockets per proxied connection, and Envoy's own."""
        return len(list(Path(f"/proc/{self.pid}/fd").iterdir()))

    def wasm_linear_memory_kib(self):
        """(resident KiB, size KiB) of the Wasm VMs' linear memories (bench/envoy_probe.py)."""
        return envoy_probe.wasm_linear_memory_kib(self.pid)

    def memory(self, settle=True):
        """Envoy's RSS, tcmalloc's allocated bytes and heap, the linear memories; after a
        stats flush unless `settle` is false."""
        if settle:
            time.sleep(STATS_FLUSH_S)
        s = self.stats(r"^server\.memory_(allocated|heap_size)$")
        w_rss, w_size = self.wasm_linear_memory_kib()
        return {"fds": self.fds(), "rss_kib": self.rss_kib(),
                "allocated_kib": s.get("server.memory_allocated", 0) // 1024,
                "heap_kib": s.get("server.memory_heap_size", 0) // 1024,
                "wasm_resident_kib": w_rss, "wasm_size_kib": w_size}

    def log_offset(self):
        return self.log.stat().st_size if self.log.exists() else 0

    def log_since(self, offset):
        with open(self.log, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def trap_lines(self, offset):
        """Lines since `offset` that a trapped VM, a panic or a failed VM would leave."""
        return [ln for ln in self.log_since(offset).splitlines()
                if any(m.lower() in ln.lower() for m in TRAP_MARKERS) and "kafka-identity: source=" not in ln]

    def outcomes(self, offset):
        """[(client port or None, outcome), ...] of the filter's per-connection lines since
        `offset`, in order (re-authentications are not connection outcomes)."""
        return [(int(port) if port else None, outcome)
                for port, outcome in OUTCOME.findall(self.log_since(offset)) if outcome != "reauthenticated"]

    def wait_outcomes(self, offset, moved, timeout=30.0, interval=0.5):
        """Envoy writes its log file every few seconds (LOG_FLUSH_S): waits, reading the log
        every `interval` and for at most `timeout`, until the outcome lines since `offset`
        match the counters that `moved` (counter -> delta); returns the lines. Raises
        AssertionError naming both sides if they still differ at the end."""
        end = time.monotonic() + timeout
        want = {counter: moved.get(counter, 0) for counter in OUTCOME_OF}
        while True:
            lines = self.outcomes(offset)
            logged = {counter: sum(1 for _, o in lines if o == outcome) for counter, outcome in OUTCOME_OF.items()}
            if logged == want:
                return lines
            if time.monotonic() > end:
                raise AssertionError(f"after {timeout} s the filter's outcome lines in {self.log} do not match "
                                     f"its counters: logged {logged}, counters moved {want}")
            time.sleep(interval)


def two_worker_stack():
    """A side stack whose Envoy runs 2 workers, as an Istio sidecar does (own state and
    ports: the main stack's + 500), with production-like logging: one line per connection."""
    raise_fd_limit(8192)  # Envoy and Kafka inherit it: 2 sockets per connection in Envoy
    # The broker bounds what requests in flight may hold, as docs/reliability.md advises: the
    # hostile streams declare frames of up to 100 MiB (Kafka's socket.request.max.bytes, and the
    # filter's default limit), which a broker allocates when the size arrives. Unbounded, six at
    # once threw OutOfMemoryError in a 512 MiB broker's network thread and stalled the
    # well-behaved consumer on it (seen once in a CI run).
    broker_conf = REPO / "e2e" / ".state" / "workers2-broker.properties"
    broker_conf.parent.mkdir(parents=True, exist_ok=True)
    broker_conf.write_text(f"queued.max.request.bytes={BROKER_REQUEST_MEMORY}\n")
    side = SideStack("workers2", 500, {"KAFKA_IDENTITY_ENVOY_CONCURRENCY": "2",
                                       "KAFKA_IDENTITY_ENVOY_WASM_LOG_LEVEL": "info",
                                       "KAFKA_IDENTITY_KAFKA_EXTRA_CONFIG": str(broker_conf),
                                       "KAFKA_IDENTITY_KAFKA_HEAP": "-Xmx1g -Xms256m"})
    try:
        yield side.up()
    finally:
        side.down()
