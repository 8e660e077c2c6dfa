"""Issue #12, scenario 9 (docs/reliability.md): the long run. An idempotent producer (acks=all)
and a consumer group member, at a fixed rate, through a 2-worker Envoy and the filter, to a
broker with connections.max.reauth.ms=60000, for SOAK_MINUTES (`make test`: 2, `make soak`:
30). Every connection the clients hold is re-authenticated by the filter about once a
minute. Asserts no disconnect and no client error, no authentication failure and no new
authentication after the clients settled (no reconnect), and no record lost or duplicated:
by count and by checksum over a read_committed read-back of everything acknowledged."""

import logging
import os
import re
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import read_all
from reliability import Envoy, checksum, raise_fd_limit, record_figures
from side_stack import REPO, LinkLog, SideStack

MINUTES = float(os.environ.get("SOAK_MINUTES", "2"))
RATE = int(os.environ.get("SOAK_RATE", "20"))  # records per second
REAUTH_MS = 60000
TOPIC = "soak"
SETTLE_S = 15  # the clients' connections are all open by then
STATE = REPO / "e2e" / ".state" / "soak-inputs"
PRODUCER = "spiffe://cluster.local/ns/apps/sa/producer"
CONSUMER = "spiffe://cluster.local/ns/apps/sa/consumer"


@pytest.fixture(scope="module")
def soak_stack():
    raise_fd_limit(4096)
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / "broker.properties").write_text(f"connections.max.reauth.ms={REAUTH_MS}\n")
    side = SideStack("soak", 600, {
        "KAFKA_IDENTITY_KAFKA_EXTRA_CONFIG": str(STATE / "broker.properties"),
        "KAFKA_IDENTITY_ENVOY_CONCURRENCY": "2",
        # debug: the filter logs each re-authentication with its connection's source
        "KAFKA_IDENTITY_ENVOY_WASM_LOG_LEVEL": "debug",
        "KAFKA_IDENTITY_AUTHORIZER_LOG_LEVEL": "INFO",
    })
    try:
        yield side.up()
    finally:
        side.down()


def make_topic(side):
    """Topic `soak` (3 partitions) and ACLs for it, as User:admin over the DIRECT listener."""
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient, NewTopic,
                                       ResourcePatternType, ResourceType)
    admin = AdminClient({"bootstrap.servers": side.stack["KAFKA_IDENTITY_BROKER"],
                         "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "OAUTHBEARER",
                         "enable.sasl.oauthbearer.unsecure.jwt": True, "sasl.oauthbearer.config": "principal=admin"})
    admin.create_topics([NewTopic(TOPIC, 3, 1)])[TOPIC].result(30)
    bindings = [AclBinding(ResourceType.TOPIC, TOPIC, ResourcePatternType.LITERAL, f"User:{who}", "*", op,
                           AclPermissionType.ALLOW)
                for who, ops in ((PRODUCER, (AclOperation.WRITE, AclOperation.DESCRIBE)),
                                 (CONSUMER, (AclOperation.READ, AclOperation.DESCRIBE)))
                for op in ops]
    for f in admin.create_acls(bindings).values():
        f.result(30)
    time.sleep(1)  # the authorizer reads the ACLs from the metadata log


def client_ports(listener_port):
    """Peer ports of the TCP connections established to Envoy's listener now (this test's
    clients are its only peers): /proc/net/tcp, read in this network namespace."""
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if state == "01" and int(local.split(":")[1], 16) == listener_port:
            ports.add(int(remote.split(":")[1], 16))
    return ports


def outcome_ports(log_text, outcome):
    """{client port: number of lines} of the filter's `outcome=` lines."""
    ports = {}
    for m in re.finditer(rf"kafka-identity: source=127\.0\.0\.1:(\d+) .*?outcome={outcome}\b", log_text):
        ports[int(m.group(1))] = ports.get(int(m.group(1)), 0) + 1
    return ports


def test_soak_at_a_fixed_rate_through_reauthentication(soak_stack):
    from confluent_kafka import Consumer, Producer

    assert MINUTES >= 1, f"SOAK_MINUTES={MINUTES}: at least 1 (one re-authentication per connection)"
    side = soak_stack
    envoy = Envoy(side)
    make_topic(side)
    seconds = MINUTES * 60
    run = uuid.uuid4().hex[:10]
    log = LinkLog()
    logger = logging.getLogger(f"soak-{run}")
    logger.addHandler(log)
    logger.setLevel(logging.DEBUG)
    errors, failed = [], []
    log_start = envoy.log_offset()  # the clients' connections are logged after this
    producer = Producer(dict(side.client_conf("producer"), logger=logger, acks="all",
                             **{"linger.ms": 5, "enable.idempotence": True,
                                "error_cb": lambda e: errors.append(f"producer: {e}")}))
    consumer = Consumer(dict(side.client_conf("consumer"), logger=logger,
                             **{"group.id": "orders-readers", "auto.offset.reset": "earliest",
                                "enable.auto.commit": False, "isolation.level": "read_committed",
                                "error_cb": lambda e: errors.append(f"consumer: {e}")}))
    consumer.subscribe([TOPIC])
    consumed, stop = [], threading.Event()

    def consume():
        last_commit = time.monotonic()
        while not stop.is_set():
            for m in consumer.consume(num_messages=200, timeout=0.5):
                if m.error():
                    errors.append(f"consumer: {m.error()}")
                elif m.value().startswith(run.encode()):
                    consumed.append(m.value())
            if time.monotonic() - last_commit > 2:
                try:
                    consumer.commit(asynchronous=False)
                except Exception as exc:  # noqa: BLE001 - nothing new to commit is fine
                    if "NO_OFFSET" not in str(exc):
                        errors.append(f"commit: {exc}")
                last_commit = time.monotonic()

    reader = threading.Thread(target=consume)
    reader.start()
    sent, delivered = [], []

    def on_delivery(err, msg):
        (failed.append(str(err)) if err else delivered.append(msg.value()))

    start = time.monotonic()
    settled = None
    samples = []
    next_sample = start + SETTLE_S
    i = 0
    try:
        while time.monotonic() - start < seconds:
            # Fixed rate: record i is due at start + i / RATE.
            due = start + i / RATE
            if time.monotonic() < due:
                time.sleep(min(0.05, due - time.monotonic()))
                producer.poll(0)
                continue
            value = f"{run}-{i:09d}-".encode() + b"x" * 80
            sent.append(value)
            producer.produce(TOPIC, value, key=str(i % 64).encode(), on_delivery=on_delivery)
            producer.poll(0)
            i += 1
            if time.monotonic() >= next_sample:
                c, listener = envoy.counters(), envoy.listener()
                sample = {"t_s": round(time.monotonic() - start), "reauthenticated": c["reauthenticated"],
                          "authenticated": c["authenticated"], "auth_failed": c["auth_failed"],
                          "active": listener["downstream_cx_active"], "sent": len(sent),
                          "delivered": len(delivered), "consumed": len(consumed),
                          **envoy.memory(settle=False)}
                if settled is None:
                    settled = sample
                    held = client_ports(envoy.port)  # the connections the clients hold from here on
                samples.append(sample)
                print(f"[soak] {sample}", flush=True)
                next_sample += 60
        assert producer.flush(60) == 0, "records still unacknowledged 60 s after the last one"
        deadline = time.monotonic() + 60
        while len(consumed) < len(delivered) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        reader.join(30)
    end_counters, end_listener = envoy.counters(), envoy.listener()
    held_at_end = client_ports(envoy.port)
    end_memory = envoy.memory()
    consumer.close()
    del producer

    # Read everything acknowledged back, read_committed, on a fresh connection.
    back, read_errors = read_all(dict(side.client_conf("consumer"), **{"isolation.level": "read_committed"}),
                                 TOPIC, want=lambda g: len(g) >= len(delivered), timeout=120)
    back = [v for _, v in back if v.startswith(run.encode())]
    lost = len(set(delivered) - set(back))
    duplicated = len(back) - len(set(back))
    # Per connection of the clients (by client port): authenticated once, then re-authenticated.
    clients_log = envoy.log_since(log_start)
    authenticated = outcome_ports(clients_log, "authenticated")
    per_connection = outcome_ports(clients_log, "reauthenticated")
    figures = {
        "envoy_version": side.stack["KAFKA_IDENTITY_ENVOY_VERSION"], "workers": 2, "minutes": MINUTES,
        "rate_per_s": RATE, "connections_max_reauth_ms": REAUTH_MS,
        "sent": len(sent), "acknowledged": len(delivered), "delivery_failures": len(failed),
        "consumed_live": len(consumed), "read_back": len(back), "lost": lost, "duplicated": duplicated,
        "checksum_equal": checksum(back) == checksum(delivered),
        "reauthenticated": end_counters["reauthenticated"] - settled["reauthenticated"],
        "reauthentications_per_connection": sorted(per_connection.values()),
        "connections_held": len(held), "connections_authenticated": len(authenticated),
        "new_authentications_after_settling": end_counters["authenticated"] - settled["authenticated"],
        "auth_failed": end_counters["auth_failed"], "disconnects": len(log.disconnects),
        "client_errors": len(errors), "active_connections": [settled["active"], end_listener["downstream_cx_active"]],
        "memory_settled": {k: settled[k] for k in end_memory}, "memory_end": end_memory, "samples": samples,
    }
    record_figures(f"soak-{int(MINUTES)}min", figures)
    assert log.disconnects == [], log.disconnects[:3]
    assert errors == [] and read_errors == [], (errors[:3], read_errors[:3])
    assert failed == [] and len(delivered) == len(sent), f"{len(failed)} records not acknowledged: {failed[:3]}"
    assert lost == 0 and duplicated == 0 and len(back) == len(delivered), figures
    assert checksum(back) == checksum(delivered)
    assert sorted(consumed) == sorted(delivered), "the live consumer lost or duplicated records"
    assert end_counters["auth_failed"] == 0
    assert figures["new_authentications_after_settling"] == 0, "a client reconnected"
    assert end_listener["downstream_cx_active"] == settled["active"], "a connection was closed"
    # Each connection the clients hold through the run is re-authenticated at 85-95% of its
    # 60 s session, i.e. at least once every 57 s: judged on the connections that were open
    # from settling to the end (by their ports), each of which the filter authenticated,
    # not only on those that happen to have re-authentication lines.
    assert held == held_at_end, (held, held_at_end)
    assert len(held) >= 2, f"the clients held {held}"
    assert held <= set(authenticated), f"connections the filter never authenticated: {held - set(authenticated)}"
    assert set(per_connection) <= set(authenticated), (per_connection, authenticated)
    due = int(seconds // 57) - 1
    behind = {port: per_connection.get(port, 0) for port in held if per_connection.get(port, 0) < due}
    assert not behind, f"connections held through the run but re-authenticated fewer than {due} times: {behind}"
    assert figures["reauthenticated"] >= len(held) * due

