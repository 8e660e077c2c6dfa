"""apps/producer may write `orders` but not read it; apps/consumer may read `orders` (group
orders-readers) but not write it: each with kcat, Kafka's Java console tools, confluent-kafka,
franz-go (Go), kafka-python (pure Python, its own protocol code) and kafkajs (Node.js, node_client.py),
all speaking plain TLS to Envoy with their workload certificate and no other change to their
configuration. Each client
library sends its own first requests (ApiVersions versions, metadata, client ids) and
reconnects its own way."""

import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition, OFFSET_BEGINNING

from conftest import REPO, SPIFFE, WAIT, authz, read_all
from node_client import node_consume_group, node_produce, node_read

CLIENTS = ["kcat", "java", "python", "go", "kafka-python", "node"]
GO_CLIENT = REPO / ".tools" / "clients" / "go" / "kafka-identity-go-client"
GROUP_CONSUMER_SETTINGS = {"session.timeout.ms": "10000", "auto.offset.reset": "earliest"}


# ---- producing / consuming with each client ----------------------------------------------------
def produce(stack, client, who, value, topic):
    """Produces one message; returns (ok, client output / error text)."""
    if client == "kcat":
        r = stack.kcat(who, "-P", "-t", topic, "-X", "acks=all", "-X", "message.timeout.ms=20000",
                       stdin=value + "\n")
        out = r.stdout + r.stderr
        return r.returncode == 0 and "fail" not in out.lower() and "error" not in out.lower(), out
    if client == "java":
        cls, config, prop = stack.console_tool("producer")
        r = stack.java_tool(cls, "--bootstrap-server", stack.bootstrap,
                            "--topic", topic, config, stack.java_client_config(who),
                            prop, "acks=all",
                            # without idempotence, a denied produce fails on the topic (Write) and not
                            # on InitProducerId (IdempotentWrite on the cluster)
                            prop, "enable.idempotence=false",
                            prop, "delivery.timeout.ms=20000",
                            prop, "request.timeout.ms=15000",
                            stdin=value + "\n")
        out = r.stdout + r.stderr
        return r.returncode == 0 and "Exception" not in out and "ERROR" not in out, out
    if client == "python":
        results = []
        p = Producer(stack.rdkafka_ssl(who, **{"acks": "all", "message.timeout.ms": 20000}))
        p.produce(topic, value=value.encode(), on_delivery=lambda err, msg: results.append(err))
        left = p.flush(WAIT)
        if left or not results:
            return False, f"not delivered within {WAIT} s"
        err = results[0]
        return err is None, "" if err is None else f"{err.name()}: {err.str()}"
    if client == "go":
        r = go_client(stack, "produce", who, "--topic", topic, "--value", value)
        out = r.stdout + r.stderr
        return r.returncode == 0 and "produced" in r.stdout.splitlines(), out
    if client == "kafka-python":
        return kafka_python_produce(stack, who, topic, value)
    if client == "node":
        return node_produce(stack, who, topic, value)
    raise ValueError(client)


def consume_group(stack, client, who, topic, group, needle):
    """Consumes `topic` in `group` until `needle` is seen; returns (seen, output)."""
    if client == "kcat":
        r = stack.kcat(who, "-C", "-G", group, topic, "-e", "-q", "-X", "auto.offset.reset=earliest",
                       "-X", "session.timeout.ms=10000")
        out = r.stdout + r.stderr
        return needle in r.stdout.splitlines(), out
    if client == "java":
        cls, config, prop = stack.console_tool("consumer")
        r = stack.java_tool(cls, "--bootstrap-server",
                            stack.bootstrap, "--topic", topic, "--group", group,
                            config, stack.java_client_config(who),
                            prop, "auto.offset.reset=earliest",
                            prop, "session.timeout.ms=10000",
                            "--timeout-ms", "8000")
        out = r.stdout + r.stderr
        return needle in r.stdout.splitlines(), out
    if client == "python":
        c = Consumer(stack.rdkafka_ssl(who, **{"group.id": group, "enable.auto.commit": False,
                                                **GROUP_CONSUMER_SETTINGS}))
        seen, errors = False, []
        try:
            c.subscribe([topic])
            deadline = time.monotonic() + WAIT
            while not seen and time.monotonic() < deadline:
                for m in c.consume(num_messages=100, timeout=0.5):
                    if m.error():
                        errors.append(f"{m.error().name()}: {m.error().str()}")
                        if m.error().fatal() or m.error().code() in (
                                KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED):
                            deadline = 0
                        continue
                    if m.value() == needle.encode():
                        seen = True
            if seen:
                c.commit(asynchronous=False)
        finally:
            c.close()
        return seen, "\n".join(errors)
    if client == "go":
        r = go_client(stack, "consume", who, "--topic", topic, "--group", group, "--value", needle)
        return r.returncode == 0 and f"read {needle}" in r.stdout.splitlines(), r.stdout + r.stderr
    if client == "kafka-python":
        return kafka_python_consume_group(stack, who, topic, group, needle)
    if client == "node":
        return node_consume_group(stack, who, topic, group, needle)
    raise ValueError(client)


def read_without_group(stack, client, who, topic):
    """Tries to fetch partition 0 of `topic` from the beginning without a consumer group
    (so only the topic's Read ACL matters); returns the client output / error text."""
    if client == "kcat":
        return _kcat_bounded(stack, who, topic)
    if client == "java":
        cls, config, _ = stack.console_tool("consumer")
        r = stack.java_tool(cls, "--bootstrap-server",
                            stack.bootstrap, "--topic", topic, "--partition", "0", "--offset", "earliest",
                            config, stack.java_client_config(who), "--timeout-ms", "8000",
                            "--max-messages", "1")
        return r.stdout + r.stderr
    if client == "python":
        c = Consumer(stack.rdkafka_ssl(who, **{"group.id": "unused-assign-only", "enable.auto.commit": False}))
        errors, got = [], 0
        try:
            c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
            deadline = time.monotonic() + 15
            # librdkafka also looks up the group coordinator (GROUP_AUTHORIZATION_FAILED for the
            # producer, which has no group ACL): keep fetching until the topic's verdict arrives
            while time.monotonic() < deadline and not any("TOPIC_AUTH" in e for e in errors):
                for m in c.consume(num_messages=10, timeout=0.5):
                    if m.error():
                        errors.append(f"{m.error().name()}: {m.error().str()}")
                    else:
                        got += 1
        finally:
            c.close()
        return "\n".join(errors) + f"\n(messages read: {got})"
    if client == "go":
        r = go_client(stack, "read", who, "--topic", topic, "--partition", "0", "--timeout", "15s")
        return r.stdout + r.stderr
    if client == "kafka-python":
        return kafka_python_read(stack, who, topic)
    if client == "node":
        return node_read(stack, who, topic)
    raise ValueError(client)


# ---- franz-go (e2e/clients/go, built by scripts/install-e2e-clients) ------------------------------
def go_client(stack, mode, who, *args):
    assert GO_CLIENT.is_file(), f"{GO_CLIENT} missing: run scripts/install-deps (it calls scripts/install-e2e-clients)"
    crt, key = stack.cert(who)
    cmd = [str(GO_CLIENT), mode, "--bootstrap", stack.bootstrap, "--ca", stack.ca, "--cert", crt, "--key", key, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=WAIT + 30)


# ---- kafka-python (pure Python) -------------------------------------------------------------------
def kafka_python_conf(stack, who):
    crt, key = stack.cert(who)
    return {"bootstrap_servers": stack.bootstrap, "security_protocol": "SSL", "ssl_cafile": stack.ca,
            "ssl_certfile": crt, "ssl_keyfile": key, "client_id": "kafka-identity-e2e-kafka-python"}


def kafka_python_error(exc):
    """kafka-python's errors carry Kafka's error name in `message` (TOPIC_AUTHORIZATION_FAILED)."""
    return f"{type(exc).__name__}: {getattr(exc, 'message', '')}: {exc}"


def kafka_python_produce(stack, who, topic, value, library_defaults=False):
    from kafka import KafkaProducer
    from kafka.errors import KafkaError as KafkaPythonError
    settings = {} if library_defaults else {
        "acks": "all", "max_block_ms": 20000, "request_timeout_ms": 15000,
        # as the Java console producer: a denied produce then fails on the topic (Write), not on
        # InitProducerId (IdempotentWrite on the cluster)
        "enable_idempotence": False}
    producer = KafkaProducer(**settings, **kafka_python_conf(stack, who))
    try:
        producer.send(topic, value.encode()).get(timeout=WAIT)
        return True, ""
    except KafkaPythonError as exc:
        return False, kafka_python_error(exc)
    finally:
        producer.close(timeout=10)


def kafka_python_consume_group(stack, who, topic, group, needle):
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError as KafkaPythonError
    consumer = KafkaConsumer(group_id=group, auto_offset_reset="earliest", enable_auto_commit=False,
                             session_timeout_ms=10000, **kafka_python_conf(stack, who))
    seen, errors = False, []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + WAIT
        while not seen and time.monotonic() < deadline:
            try:
                batches = consumer.poll(timeout_ms=500)
            except KafkaPythonError as exc:
                errors.append(kafka_python_error(exc))
                if "AUTHORIZATION" in errors[-1].upper():
                    break
                continue
            seen = any(record.value == needle.encode() for records in batches.values() for record in records)
        if seen:
            consumer.commit()
    finally:
        consumer.close()
    return seen, "\n".join(errors)


def kafka_python_read(stack, who, topic):
    from kafka import KafkaConsumer, TopicPartition as KafkaPythonPartition
    from kafka.errors import KafkaError as KafkaPythonError
    consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, **kafka_python_conf(stack, who))
    errors, got = [], 0
    try:
        tp = KafkaPythonPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any("TOPIC_AUTH" in e for e in errors):
            try:
                got += sum(len(records) for records in consumer.poll(timeout_ms=500).values())
            except KafkaPythonError as exc:
                errors.append(kafka_python_error(exc))
    finally:
        consumer.close()
    return "\n".join(errors) + f"\n(messages read: {got})"


def _kcat_bounded(stack, who, topic):
    try:
        r = stack.kcat(who, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-c", "1", timeout=15)
        return r.stdout + r.stderr
    except subprocess.TimeoutExpired as exc:  # kcat keeps retrying a partition it may not fetch
        out = (exc.stdout or b"") + (exc.stderr or b"")
        return out.decode(errors="replace") if isinstance(out, bytes) else out


def admin_markers(stack, topic, run_id):
    """Writes one marker per partition as User:admin over DIRECT; returns the marker values."""
    p = Producer(stack.rdkafka_admin_direct(**{"acks": "all"}))
    markers = []
    for part in range(3):
        v = f"{run_id}-marker-{part}"
        p.produce(topic, value=v.encode(), partition=part)
        markers.append(v.encode())
    assert p.flush(WAIT) == 0, "admin could not write markers over DIRECT"
    return markers


def topic_values(stack, topic, until):
    """Values in `topic` (read as admin over DIRECT) until all `until` values are seen."""
    got, errors = read_all(stack.rdkafka_admin_direct(), topic,
                           want=lambda g: set(until) <= {v for _, v in g})
    assert not errors, errors
    values = [v for _, v in got]
    assert set(until) <= set(values), f"admin did not read back {until} within {WAIT} s"
    return values


# ---- tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("client", ["go", "kafka-python"])
def test_producer_with_the_librarys_own_defaults(stack, client, run_id, envoy_log):
    """Nothing but TLS and the bootstrap address set: the library's own producer defaults (both
    idempotent by default, so InitProducerId goes through the filter too)."""
    who, topic = "producer", stack.topic
    value = f"{run_id}-{client}-defaults"
    if client == "go":
        r = go_client(stack, "produce", who, "--topic", topic, "--value", value, "--library-defaults")
        ok, out = r.returncode == 0 and "produced" in r.stdout.splitlines(), r.stdout + r.stderr
    else:
        ok, out = kafka_python_produce(stack, who, topic, value, library_defaults=True)
    assert ok, f"{client} with its default settings could not produce: {out}"
    assert value.encode() in topic_values(stack, topic, until=admin_markers(stack, topic, run_id) + [value.encode()])
    assert envoy_log.wait_for(f"identity={SPIFFE[who]} principal={SPIFFE[who]} token=unsecured outcome=authenticated")


@pytest.mark.parametrize("client", CLIENTS)
def test_producer_may_write_orders_but_not_read_it(stack, client, run_id, authorizer_log, envoy_log):
    who, topic = "producer", stack.topic
    before = stack.counters()
    value = f"{run_id}-{client}-from-producer"

    ok, out = produce(stack, client, who, value, topic)
    assert ok, f"{client} as {who} could not produce: {out}"
    # the broker stored it: the admin reads it back over DIRECT (bypassing Envoy)
    assert value.encode() in topic_values(stack, topic, until=admin_markers(stack, topic, run_id) + [value.encode()])
    # ... and authorized it for the producer's SPIFFE principal
    assert authorizer_log.wait_for(*authz(SPIFFE[who], "Allowed", "WRITE", f"Topic:LITERAL:{topic}")), \
        "no 'Allowed WRITE' line for the producer's principal in the authorizer log"
    assert envoy_log.wait_for(f"identity={SPIFFE[who]} principal={SPIFFE[who]} token=unsecured outcome=authenticated")
    assert stack.counters()["authenticated"] > before["authenticated"]

    # reading is denied by the broker, with Kafka's authorization error at the client
    out = read_without_group(stack, client, who, topic)
    assert ("Topic authorization failed" in out or "TOPIC_AUTHORIZATION_FAILED" in out
            or "TopicAuthorizationException" in out), f"{client}: read was not denied:\n{out[-2000:]}"
    assert value not in out
    denied = authorizer_log.wait_for(*authz(SPIFFE[who], "Denied", "READ", f"Topic:LITERAL:{topic}"))
    assert denied, "no 'Denied READ' line for the producer's principal in the authorizer log"


@pytest.mark.parametrize("client", CLIENTS)
def test_consumer_may_read_orders_but_not_write_it(stack, client, run_id, authorizer_log, envoy_log):
    who, topic, group = "consumer", stack.topic, stack.group
    before = stack.counters()
    value = f"{run_id}-{client}-for-consumer"
    p = Producer(stack.rdkafka_admin_direct(**{"acks": "all"}))
    p.produce(topic, value=value.encode())
    assert p.flush(WAIT) == 0

    seen, out = consume_group(stack, client, who, topic, group, value)
    assert seen, f"{client} as {who} did not read {value} in group {group}:\n{out[-2000:]}"
    assert authorizer_log.wait_for(*authz(SPIFFE[who], "Allowed", "READ", f"Topic:LITERAL:{topic}"))
    assert authorizer_log.wait_for(*authz(SPIFFE[who], "Allowed", "READ", f"Group:LITERAL:{group}"))
    assert envoy_log.wait_for(f"identity={SPIFFE[who]} principal={SPIFFE[who]} token=unsecured outcome=authenticated")
    assert stack.counters()["authenticated"] > before["authenticated"]

    # writing is denied by the broker
    denied_value = f"{run_id}-{client}-written-by-consumer"
    ok, out = produce(stack, client, who, denied_value, topic)
    assert not ok, f"{client}: the consumer's produce succeeded:\n{out}"
    assert ("Topic authorization failed" in out or "TOPIC_AUTHORIZATION_FAILED" in out
            or "TopicAuthorizationException" in out), f"{client}: unexpected error:\n{out[-2000:]}"
    assert authorizer_log.wait_for(*authz(SPIFFE[who], "Denied", "WRITE", f"Topic:LITERAL:{topic}")), \
        "no 'Denied WRITE' line for the consumer's principal in the authorizer log"
    # and nothing was stored
    values = topic_values(stack, topic, until=admin_markers(stack, topic, run_id))
    assert denied_value.encode() not in values
