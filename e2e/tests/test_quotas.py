"""Per-service quotas (docs/operations.md, "Per-service quotas and audit"): with a real principal
per service account, Kafka's client quotas apply per SPIFFE ID. A `producer_byte_rate` quota
on User:spiffe://cluster.local/ns/apps/sa/producer, set with Kafka's own kafka-configs tool
exactly as the docs say, throttles that service's producer and no other service's producer
writing the same topic on the same broker at the same time.

Both producers come through Envoy and the filter with their workload certificates, use the same
client.id (so only the principal tells them apart) and send the same bytes. What is asserted is
what the broker did: the throttle time it put into its ProduceResponses (librdkafka reports
each non-zero one through `throttle_cb` and counts them in its statistics, next to the number of
Produce requests it sent), and that every record of both was stored. No duration is measured."""

import json
import zipfile
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

from conftest import SPIFFE, WAIT, read_all, wait_until

OTHER = "admin-wannabe"          # another service account of the local stack, given Write below
OTHER_SPIFFE = "spiffe://cluster.local/ns/apps/sa/admin-wannabe"
# Kafka measures a quota over quota.window.num (11) samples of 1 s and, while fewer have
# passed, over 10 s: 16 KiB/s lets about 160 KiB through before it throttles. Each producer
# sends 256 KiB, so the throttled one is over its quota by ~100 KiB (a throttle of ~6 s in all,
# throttle = excess / quota), and the other, at the same volume, would be too had the quota
# been on anything but the principal.
QUOTA_BYTES_PER_SECOND = 16384
RECORDS, RECORD_BYTES = 64, 4096
CLIENT_ID = "kafka-identity-e2e-quota"   # the same for both: the quota is on the user alone


def config_command_class(stack):
    """kafka-configs.sh's main class in the stack's Kafka: org.apache.kafka.tools.ConfigCommand
    in 4.x, kafka.admin.ConfigCommand (Scala) before it moved."""
    jars = list(Path(stack.classpath.rstrip("*")).glob("*.jar"))
    for cls in ("org.apache.kafka.tools.ConfigCommand", "kafka.admin.ConfigCommand"):
        entry = cls.replace(".", "/") + ".class"
        for jar in jars:
            with zipfile.ZipFile(jar) as z:
                if entry in z.namelist():
                    return cls
    pytest.fail(f"no ConfigCommand in {stack.classpath}")


def kafka_configs(stack, *args):
    """kafka-configs.sh as the super user over the DIRECT listener (not through the filter)."""
    r = stack.java_tool(config_command_class(stack), "--bootstrap-server", stack.broker,
                        "--command-config", stack.admin_config, *args)
    assert r.returncode == 0, f"kafka-configs {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def user_quota(stack, principal):
    return kafka_configs(stack, "--describe", "--entity-type", "users", "--entity-name", principal)


class Recorder:
    """One librdkafka producer through Envoy as `who`, with what the broker answered."""

    def __init__(self, stack, who):
        self.throttles = []    # throttle_time (s) of every ProduceResponse that carried one > 0
        self.stats = {}
        # librdkafka's per-broker `throttle` is a window of the non-zero throttle times the broker
        # sent, rolled over at each statistics emission: summed here over all of them.
        self.throttle_samples, self.throttle_max_ms = {}, {}
        self.delivered, self.errors = 0, []
        self.producer = Producer(stack.rdkafka_ssl(who, **{
            "client.id": CLIENT_ID, "acks": "all", "linger.ms": 5, "batch.size": 16384,
            "message.timeout.ms": 90000, "statistics.interval.ms": 500,
            "throttle_cb": lambda event: self.throttles.append(event.throttle_time),
            "stats_cb": self._stats}))

    def _stats(self, text):
        self.stats = json.loads(text)
        for b in self.stats.get("brokers", {}).values():
            window = b.get("throttle", {})
            node = b.get("nodeid", -1)
            self.throttle_samples[node] = self.throttle_samples.get(node, 0) + window.get("cnt", 0)
            self.throttle_max_ms[node] = max(self.throttle_max_ms.get(node, 0), window.get("max", 0))

    def _delivered(self, err, _msg):
        if err is None:
            self.delivered += 1
        else:
            self.errors.append(f"{err.name()}: {err.str()}")

    def produce(self, topic, prefix):
        for i in range(RECORDS):
            value = f"{prefix}-{i:03d}|".encode().ljust(RECORD_BYTES, b"q")
            self.producer.produce(topic, value=value, on_delivery=self._delivered)
            self.producer.poll(0)

    def done(self):
        self.producer.poll(0.1)
        return self.delivered + len(self.errors) >= RECORDS

    def broker_view(self):
        """Per broker, from librdkafka's statistics: the Produce requests it answered and the
        non-zero throttle times among its answers."""
        out = {}
        for b in self.stats.get("brokers", {}).values():
            node = b.get("nodeid", -1)
            if node < 0:
                continue   # the bootstrap connection
            out[node] = {"produce_requests": b.get("req", {}).get("Produce", 0),
                         "throttle_samples": self.throttle_samples.get(node, 0),
                         "throttle_max_ms": self.throttle_max_ms.get(node, 0)}
        return out

    def close(self):
        self.producer.flush(10)


@pytest.fixture
def quota_topic(stack, admin, make_topic, run_id):
    topic = make_topic(f"quota-{run_id}", partitions=1)
    bindings = [AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, f"User:{OTHER_SPIFFE}", "*", op,
                           AclPermissionType.ALLOW) for op in (AclOperation.WRITE, AclOperation.DESCRIBE)]
    for f in admin.create_acls(bindings, request_timeout=WAIT).values():
        f.result(timeout=WAIT)
    return topic   # make_topic deletes the topic and every ACL on it


@pytest.fixture
def producer_quota(stack):
    """The documented command: a producer_byte_rate quota on the producer's SPIFFE principal."""
    principal = SPIFFE["producer"]
    kafka_configs(stack, "--alter", "--add-config", f"producer_byte_rate={QUOTA_BYTES_PER_SECOND}",
                  "--entity-type", "users", "--entity-name", principal)
    assert wait_until(lambda: f"producer_byte_rate={QUOTA_BYTES_PER_SECOND}" in user_quota(stack, principal)), \
        f"the broker does not report the quota on {principal}"
    yield principal
    kafka_configs(stack, "--alter", "--delete-config", "producer_byte_rate",
                  "--entity-type", "users", "--entity-name", principal)


def test_a_quota_on_one_spiffe_principal_throttles_that_service_only(stack, quota_topic, producer_quota, run_id):
    # The quota is the producer's alone: the other principal has none.
    assert "producer_byte_rate" not in user_quota(stack, OTHER_SPIFFE)

    throttled, other = Recorder(stack, "producer"), Recorder(stack, OTHER)
    try:
        # Both at once, the same bytes to the same partition of the same broker.
        throttled.produce(quota_topic, f"{run_id}-throttled")
        other.produce(quota_topic, f"{run_id}-other")
        assert wait_until(lambda: throttled.done() and other.done(), timeout=120, interval=0), \
            f"not all delivered: producer {throttled.delivered}, {OTHER} {other.delivered} of {RECORDS}"
        # one more statistics interval, so the counts include the last responses
        for r in (throttled, other):
            seen = r.stats.get("ts")
            assert wait_until(lambda r=r, seen=seen: r.producer.poll(0.1) is not None and r.stats.get("ts") != seen)
    finally:
        throttled.close()
        other.close()

    assert throttled.errors == [] and other.errors == [], (throttled.errors, other.errors)
    mine, theirs = throttled.broker_view(), other.broker_view()
    print(f"\nbroker's ProduceResponses: {SPIFFE['producer']} (quota {QUOTA_BYTES_PER_SECOND} B/s): {mine}, "
          f"throttle_cb {[round(t, 3) for t in throttled.throttles]} s; {OTHER_SPIFFE} (no quota): {theirs}, "
          f"throttle_cb {other.throttles}")
    # The broker throttled the producer's principal: non-zero throttle_time_ms in its responses.
    assert throttled.throttles and max(throttled.throttles) > 0, \
        f"the broker never throttled {SPIFFE['producer']} although it wrote {RECORDS * RECORD_BYTES} bytes"
    assert sum(v["throttle_samples"] for v in mine.values()) > 0, mine
    # ... and not the other principal, whose Produce requests the same broker answered at the
    # same time: every response carried throttle_time_ms 0.
    assert sum(v["produce_requests"] for v in theirs.values()) > 0, f"{OTHER} sent no Produce request: {theirs}"
    assert other.throttles == [], f"the broker throttled {OTHER_SPIFFE}, which has no quota: {other.throttles}"
    assert all(v["throttle_samples"] == 0 for v in theirs.values()), theirs

    # A quota delays, it refuses nothing: every record of both is stored (read back as admin).
    want = {f"{run_id}-{who}-{i:03d}".encode() for who in ("throttled", "other") for i in range(RECORDS)}
    got, errors = read_all(stack.rdkafka_admin_direct(), quota_topic,
                           want=lambda g: want <= {v.split(b"|")[0] for _, v in g})
    assert not errors, errors
    stored = {v.split(b"|")[0] for _, v in got}
    assert want <= stored, f"{len(want - stored)} records missing"
