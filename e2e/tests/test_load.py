"""Bigger traffic through the filter: 1 MiB messages, 100 concurrent connections, and a
consumer-group rebalance; no message may be lost or duplicated."""

import hashlib
import threading
import time

from confluent_kafka import Consumer, Producer

from conftest import SPIFFE, WAIT, authz, read_all, wait_until

MIB = 1024 * 1024


def digest(values):
    h = hashlib.sha256()
    for v in sorted(values):
        h.update(hashlib.sha256(v).digest())
    return h.hexdigest()


def produce_all(producer, topic, values, keys=None):
    errors, delivered = [], []

    def cb(err, msg):
        (errors if err else delivered).append(err or msg.value())

    for i, v in enumerate(values):
        while True:
            try:
                producer.produce(topic, value=v, key=None if keys is None else keys[i], on_delivery=cb)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(WAIT) == 0, f"not all messages delivered within {WAIT} s"
    assert not errors, errors[:5]
    return delivered


def test_one_mib_messages(stack, make_topic, run_id, authorizer_log):
    topic = make_topic(f"big-{run_id}", partitions=1, config={"max.message.bytes": str(4 * MIB)})
    values = [(f"{run_id}-{i}-".encode() + bytes([i]) * MIB)[:MIB] for i in range(5)]
    assert all(len(v) == MIB for v in values)
    p = Producer(stack.rdkafka_ssl("producer", **{"acks": "all", "message.max.bytes": 4 * MIB,
                                                  "compression.type": "none", "linger.ms": 0}))
    produce_all(p, topic, values)
    got, errors = read_all(stack.rdkafka_ssl("consumer", **{"fetch.max.bytes": 8 * MIB,
                                                            "max.partition.fetch.bytes": 8 * MIB,
                                                            "receive.message.max.bytes": 16 * MIB}),
                           topic, want=lambda g: len(g) >= len(values))
    assert not errors, errors
    got_values = [v for _, v in got]
    assert len(got_values) == len(values), f"read {len(got_values)} of {len(values)} messages"
    assert digest(got_values) == digest(values), "1 MiB payloads differ after the round trip"
    assert authorizer_log.wait_for(*authz(SPIFFE["producer"], "Allowed", "WRITE", f"Topic:LITERAL:{topic}"))
    assert authorizer_log.wait_for(*authz(SPIFFE["consumer"], "Allowed", "READ", f"Topic:LITERAL:{topic}"))


def test_one_hundred_concurrent_connections(stack, make_topic, run_id):
    topic = make_topic(f"conn-{run_id}", partitions=3)
    n, per = 100, 5
    before = stack.counters()
    port = stack.envoy_addr[1]
    active_key = next(k for k in stack.stats() if k.startswith("listener.") and k.endswith("downstream_cx_active")
                      and f"_{port}." in k)
    producers = [Producer(stack.rdkafka_ssl("producer", **{"acks": "all", "linger.ms": 5,
                                                           "client.id": f"{run_id}-p{i}"}))
                 for i in range(n)]
    try:
        expected = []
        results = [None] * n

        def run(i):
            vals = [f"{run_id}-p{i}-m{j}".encode() for j in range(per)]
            try:
                produce_all(producers[i], topic, vals)
                results[i] = vals
            except AssertionError as exc:
                results[i] = exc

        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT + 10)
        failed = [r for r in results if not isinstance(r, list)]
        assert not failed, f"{len(failed)} producers failed, e.g. {failed[:3]}"
        # all 100 clients still hold their connections: Envoy sees them at once
        peak = stack.stats()[active_key]
        assert peak >= n, f"{active_key} = {peak} < {n}"
        for r in results:
            expected.extend(r)
    finally:
        for p in producers:
            p.flush(1)
        producers.clear()  # the last references: librdkafka closes the connections
    after = stack.counters()
    assert after["authenticated"] - before["authenticated"] >= n
    assert after["protocol_errors"] == before["protocol_errors"]
    assert after["auth_failed"] == before["auth_failed"]

    got, errors = read_all(stack.rdkafka_ssl("consumer"), topic, want=lambda g: len(g) >= len(expected))
    assert not errors, errors[:5]
    got_values = [v for _, v in got]
    assert len(got_values) == len(expected) == n * per
    assert len(set(got_values)) == len(got_values), "duplicates"
    assert digest(got_values) == digest(expected)


def test_rebalance_loses_and_duplicates_nothing(stack, make_topic, run_id, authorizer_log):
    topic = make_topic(f"rebal-{run_id}", partitions=3)
    group = stack.group  # the consumer's only group ACL
    total = 1500
    values = [f"{run_id}-{i:05d}".encode() for i in range(total)]
    consumed = {"A": [], "B": []}
    events = {"A": [], "B": []}
    stop = threading.Event()
    problems = []

    def member(name, start_delay, leave_after=None):
        time.sleep(start_delay)
        c = Consumer(stack.rdkafka_ssl("consumer", **{
            "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000,
            "partition.assignment.strategy": "range", "client.id": f"{run_id}-{name}"}))

        def on_assign(consumer, parts):
            events[name].append(("assign", sorted(p.partition for p in parts)))

        def on_revoke(consumer, parts):
            events[name].append(("revoke", sorted(p.partition for p in parts)))
            # everything handed out so far was committed after each batch; commit again to be sure
            try:
                consumer.commit(asynchronous=False)
            except Exception as exc:  # _NO_OFFSET: nothing new to commit
                if "NO_OFFSET" not in str(exc):
                    problems.append(f"{name} revoke commit: {exc}")

        c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
        started = time.monotonic()
        try:
            while not stop.is_set():
                if leave_after is not None and time.monotonic() - started > leave_after:
                    break
                msgs = c.consume(num_messages=50, timeout=0.3)
                batch = []
                for m in msgs:
                    if m.error():
                        problems.append(f"{name}: {m.error()}")
                        continue
                    batch.append(m.value())
                if batch:
                    consumed[name].extend(batch)
                    c.commit(asynchronous=False)  # synchronously, before the next poll can rebalance
                    time.sleep(0.05)  # a slow-ish consumer so the rebalance happens mid-stream
        finally:
            c.close()  # commits nothing more (auto commit off) and leaves the group

    a = threading.Thread(target=member, args=("A", 0))
    b = threading.Thread(target=member, args=("B", 4, 6))  # joins mid-run, then leaves again
    a.start()
    b.start()
    # produce steadily while the group changes
    p = Producer(stack.rdkafka_ssl("producer", **{"acks": "all", "linger.ms": 5, "enable.idempotence": True}))
    for chunk in range(0, total, 100):
        produce_all(p, topic, values[chunk:chunk + 100], keys=[v[-3:] for v in values[chunk:chunk + 100]])
        time.sleep(0.5)
    done = wait_until(lambda: len(consumed["A"]) + len(consumed["B"]) >= total and not b.is_alive(),
                      timeout=WAIT + 15)
    time.sleep(1)  # would catch late duplicates
    stop.set()
    a.join(WAIT)
    b.join(WAIT)
    assert not problems, problems[:5]
    everything = consumed["A"] + consumed["B"]
    assert done, f"consumed {len(everything)} of {total}; events {events}"
    assert len(everything) == total, f"{len(everything) - len(set(everything))} duplicates"
    assert len(set(everything)) == total
    assert digest(everything) == digest(values)
    # a rebalance did happen and B took part in it
    assert consumed["B"], f"B never got messages: {events}"
    assert any(e[0] == "revoke" for e in events["A"]), events
    assert len([e for e in events["A"] if e[0] == "assign"]) >= 3, f"A did not rebalance twice: {events}"
    assert authorizer_log.wait_for(*authz(SPIFFE["consumer"], "Allowed", "READ", f"Group:LITERAL:{group}"))
