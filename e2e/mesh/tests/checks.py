"""What the tests read from the mesh: Envoy's config dump and stats, the brokers' authorizer
logs, the counters Prometheus would scrape; and the client steps the sidecar passes and the
ambient pass share (every partition written, each client denied the other's rights, the Java
client's round trip), each asserting what the brokers did."""

import json
import re
import time

from meshlib.procs import MeshError
from meshlib.topology import REPO

OUR_FILTER = re.compile(r"kafka[_-]identity")
PEER_CERT_FILTER = "envoy.filters.network.set_filter_state"


def inbound_chains(sidecar, port=9092):
    """Filter names of each inbound chain for `port` (the virtualInbound listener on 15006)."""
    dump = json.loads(sidecar.admin("config_dump?resource=dynamic_listeners"))
    chains = []
    for item in dump.get("configs", []):
        listener = item.get("active_state", {}).get("listener", {})
        if listener.get("name") != "virtualInbound":
            continue
        for fc in listener.get("filter_chains", []):
            match = fc.get("filter_chain_match", {})
            if match.get("destination_port") == port:
                chains.append({"transport": match.get("transport_protocol", "-"),
                               "filters": [f["name"] for f in fc.get("filters", [])]})
    return chains


def ecds_filters(sidecar):
    dump = json.loads(sidecar.admin("config_dump?resource=ecds_filters"))
    out = {}
    for item in dump.get("configs", []):
        cfg = item.get("ecds_filter", {})
        out[cfg.get("name", "?")] = cfg.get("typed_config", {})
    return out


def rejected_updates(sidecar):
    """Every xDS update counter that says Envoy refused a resource, with its value."""
    return {k: v for k, v in sidecar.stats().items()
            if (k.endswith(".update_rejected") or k.endswith(".config_fail")) and v}


def prometheus_counter(sidecar, name):
    """A counter from pilot-agent's merged /stats/prometheus (what Prometheus scrapes)."""
    total, seen = 0, False
    for line in sidecar.prometheus().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += int(float(line.rsplit(" ", 1)[1]))
            seen = True
    return total if seen else None


def scraped_counter(sidecar, name):
    """`prometheus_counter`, for a counter that must be there: missing from the scrape is an
    error, not 0 (read as 0, a missing counter compares equal to another missing one)."""
    value = prometheus_counter(sidecar, name)
    if value is None:
        raise MeshError(f"{name} missing from {sidecar.pod.name}'s :15020/stats/prometheus")
    return value


def filter_authentications(lines):
    """{principal: count} of the filter's `outcome=authenticated` log lines among `lines`."""
    found = {}
    for ln in lines:
        m = re.search(r"kafka-identity: .*\bprincipal=(\S+) .*\boutcome=authenticated\b", ln)
        if m:
            found[m.group(1)] = found.get(m.group(1), 0) + 1
    return found


class LogMark:
    """Lines appended to a file after this mark."""

    def __init__(self, path):
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def lines(self):
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read().decode(errors="replace").splitlines()

    def wait_for(self, *needles, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            found = [ln for ln in self.lines() if all(n in ln for n in needles)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.3)


def wait_any(marks, *needles, timeout=20):
    """The first of several logs (e.g. every broker's authorizer log) that shows a line with
    all `needles`, polling them together; [] after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        for mark in marks:
            found = [ln for ln in mark.lines() if all(n in ln for n in needles)]
            if found:
                return found
        if time.monotonic() > deadline:
            return []
        time.sleep(0.3)


def authz(principal, verdict, operation, resource):
    return (f"Principal = User:{principal} is {verdict} operation = {operation} ",
            f"on resource = {resource} ")


def wait_until(what, pred, timeout=60, interval=0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise MeshError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Checks:
    """The assertions a pass made, each with the seconds it took."""

    def __init__(self, into):
        self.into = into
        self.t = time.monotonic()

    def append(self, text):
        now = time.monotonic()
        self.into.append(f"{text} [{now - self.t:.1f} s]")
        self.t = now


def spread_leaders(mesh, topic):
    """The topic's partition leaders once they are on all three brokers (preferred leader
    election: a broker that was slow or restarted may have lost leadership)."""
    def spread():
        found = mesh.admin({"op": "elect_preferred", "topic": topic}, {"op": "describe_topic", "topic": topic})[1]
        return found["leaders"] if sorted(set(found["leaders"].values())) == [0, 1, 2] else None
    return wait_until("partition leaders on all three brokers (preferred leader election)", spread, 60, interval=2)


def write_every_partition(mesh, pod, bootstrap, topic, prefix, principal, marks, per_partition=5):
    """kcat in `pod` writes `per_partition` records `<prefix>-p<partition>-<i>` to each partition
    (each led by another broker); each leader's authorizer must allow WRITE for `principal`."""
    leaders = spread_leaders(mesh, topic)
    for partition in sorted(leaders, key=int):
        r = mesh.exec(pod, ["kcat", "-b", bootstrap, "-P", "-t", topic, "-p", partition,
                            "-X", "acks=all", "-X", "message.timeout.ms=30000"],
                      input="".join(f"{prefix}-p{partition}-{i}\n" for i in range(per_partition)), timeout=60)
        assert r.returncode == 0, r.stderr
    for partition, leader in leaders.items():
        assert marks[leader].wait_for(*authz(principal, "Allowed", "WRITE", f"Topic:LITERAL:{topic}")), \
            f"broker {leader} (leader of partition {partition}) logged no allowed WRITE for {principal}"
    return leaders


def java_round_trip(mesh, producer_pod, consumer_pod, bootstrap, topic, group, prefix, count=6):
    """The Java client as shipped (console tools), PLAINTEXT: `count` records `<prefix>-java-<i>`
    written from one pod and read back exactly in `group` from the other."""
    lines = [f"{prefix}-java-{i}" for i in range(count)]
    java = ["java", "-Xmx192m", "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={REPO}/e2e/local/tools-log4j2.xml", "-cp", mesh.kafka_classpath]
    r = mesh.exec(producer_pod, [*java, "org.apache.kafka.tools.ConsoleProducer", "--bootstrap-server", bootstrap,
                                 "--topic", topic, "--command-property", "acks=all"],
                  input="\n".join(lines) + "\n", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    r = mesh.exec(consumer_pod, [*java, "org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server",
                                 bootstrap, "--topic", topic, "--group", group, "--timeout-ms", "60000",
                                 "--max-messages", str(len(lines))], timeout=120, check=False)
    seen = [ln for ln in r.stdout.splitlines() if ln.startswith(f"{prefix}-java-")]
    assert sorted(seen) == sorted(lines), f"Java consumer read {seen}; stderr: {r.stderr[-1500:]}"


def each_denied_the_others_rights(mesh, producer_pod, consumer_pod, bootstrap, topic, group, prefix, marks,
                                  producer, consumer):
    """The consumer may not write and the producer may not read, each refused by the broker
    with its authorizer naming the principal. Returns the errors the producer's read got."""
    denied = mesh.kclient(consumer_pod, "produce", bootstrap, topic, "--count", "1", "--prefix", f"{prefix}-x",
                          "--timeout", "20")
    assert denied["delivered"] == 0 and "TOPIC_AUTHORIZATION_FAILED" in denied["errors"], denied
    assert wait_any(marks.values(), *authz(consumer, "Denied", "WRITE", f"Topic:LITERAL:{topic}"))
    denied = mesh.kclient(producer_pod, "consume", bootstrap, topic, "--group", group, "--prefix", prefix,
                          "--want", "1", "--timeout", "20")
    assert denied["consumed"] == 0 and ({"GROUP_AUTHORIZATION_FAILED", "TOPIC_AUTHORIZATION_FAILED"}
                                        & set(denied["errors"])), denied
    # Its consumer is stopped at FindCoordinator: no Describe on the group, let alone Read.
    assert wait_any(marks.values(), *authz(producer, "Denied", "DESCRIBE", f"Group:LITERAL:{group}"))
    return denied["errors"]
