"""A steady Kafka workload for fault tests: an idempotent producer (acks=all) and a consumer
group member, each on long-lived connections, for a bounded time. Runs inside a client pod
(PLAINTEXT: the sidecar does mTLS) or against the local stack (TLS settings given as -X).

    workload.py produce BOOTSTRAP TOPIC --seconds S --rate R --prefix P --out FILE [-X k=v ...]
    workload.py consume BOOTSTRAP TOPIC --seconds S --group G --prefix P --out FILE [--want-file F] [-X k=v ...]
    workload.py readback BOOTSTRAP TOPIC --prefix P --group G --out FILE [-X k=v ...]

`produce` writes records `<prefix>-<n>` and records when each was acknowledged; `consume`
records when each record of the prefix arrived; `readback` reads the topic from the start with
isolation.level=read_committed and reports count, duplicates and a checksum of what it read.
Each writes one JSON report to --out (and stdout) when it ends; SIGTERM ends it early, cleanly.
Progress timestamps let the test compute how long the clients made no progress during a fault.
"""

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())


def settings(a, **base):
    conf = {"bootstrap.servers": a.bootstrap}
    conf.update(base)
    for kv in a.X:
        k, _, v = kv.partition("=")
        conf[k] = v
    return conf


class Links(logging.Handler):
    """Every connection librdkafka saw go down: its log lines (log.connection.close is on by
    default) and transport errors from error_cb, with the time they were seen."""

    PATTERNS = ("Disconnected", "Connection reset", "Connection refused", "Connect to", "failed:")

    def __init__(self, name):
        super().__init__()
        self.events = []
        self.logger = logging.getLogger(f"rdkafka-{name}")
        self.logger.addHandler(self)
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False

    def emit(self, record):
        text = record.getMessage()
        if any(p in text for p in self.PATTERNS):
            self.events.append([round(time.time(), 3), text[:240]])

    def error(self, err):
        self.events.append([round(time.time(), 3), f"error: {err}"])

    def settings(self):
        return {"error_cb": self.error, "logger": self.logger}


def produce(a):
    links = Links("producer")
    acked, failed = {}, {}
    p = Producer(settings(a, **{"acks": "all", "enable.idempotence": True, "linger.ms": 5,
                                "message.timeout.ms": 120000, **links.settings()}))
    n, t0 = 0, time.time()
    interval = 1.0 / a.rate
    deadline = t0 + a.seconds
    while time.time() < deadline and not stop.is_set():
        value = f"{a.prefix}-{n}"

        def done(err, msg, v=value):
            (failed if err else acked)[v] = [round(time.time(), 3), err.name() if err else msg.partition()]
        p.produce(a.topic, value.encode(), key=str(n).encode(), on_delivery=done)
        n += 1
        p.poll(0)
        next_at = t0 + n * interval
        while time.time() < next_at and not stop.is_set():
            p.poll(min(0.05, max(0.0, next_at - time.time())))
    left = p.flush(130)
    times = sorted(t for t, _ in acked.values())
    return {"sent": n, "acked": len(acked), "acked_checksum": checksum(acked),
            "failed": len(failed), "failures": sorted({e for _, e in failed.values()}), "unflushed": left,
            "ack_times": times, "links": links.events, "started": t0}


def consume(a):
    links = Links("consumer")
    c = Consumer(settings(a, **{"group.id": a.group, "auto.offset.reset": "earliest", "enable.auto.commit": True,
                                "isolation.level": "read_committed", **links.settings()}))
    c.subscribe([a.topic])
    seen, times, errors = set(), [], []
    deadline = time.time() + a.seconds
    want = None
    while time.time() < deadline and not stop.is_set():
        if want is None and a.want_file and os.path.exists(a.want_file):
            want = int(open(a.want_file).read())
        if want is not None and len(seen) >= want:
            break
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() != KafkaError._PARTITION_EOF:
                errors.append(m.error().name())
            continue
        v = m.value().decode(errors="replace")
        if v.startswith(a.prefix + "-"):
            seen.add(v)
            times.append(round(time.time(), 3))
    c.close()
    return {"consumed": len(seen), "arrivals": times, "errors": sorted(set(errors)), "links": links.events}


def checksum(values):
    """Of a set of record values: equal for the producer's acknowledged records and the read-back
    exactly when they are the same records."""
    return hashlib.sha256("\n".join(sorted(set(values))).encode()).hexdigest()


def readback(a):
    c = Consumer(settings(a, **{"group.id": a.group, "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                "isolation.level": "read_committed", "enable.partition.eof": True}))
    md = c.list_topics(a.topic, timeout=30)
    parts = sorted(md.topics[a.topic].partitions)
    c.assign([TopicPartition(a.topic, p, 0) for p in parts])
    values, eof = [], set()
    deadline = time.time() + a.seconds
    while len(eof) < len(parts) and time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                eof.add(m.partition())
            continue
        v = m.value().decode(errors="replace")
        if v.startswith(a.prefix + "-"):
            values.append(v)
    c.close()
    unique = sorted(set(values))
    seen, duplicated = set(), set()
    for v in values:
        (duplicated if v in seen else seen).add(v)
    return {"read": len(values), "unique": len(unique), "duplicates": len(values) - len(unique),
            "checksum": checksum(unique), "complete": len(eof) == len(parts), "values": unique,
            "duplicated": sorted(duplicated)}


def main(argv):
    p = argparse.ArgumentParser(prog="workload.py")
    p.add_argument("mode", choices=["produce", "consume", "readback"])
    p.add_argument("bootstrap"), p.add_argument("topic")
    p.add_argument("--seconds", type=float, default=60), p.add_argument("--rate", type=float, default=20)
    p.add_argument("--prefix", required=True), p.add_argument("--group", default="orders-readers")
    p.add_argument("--out", required=True), p.add_argument("-X", action="append", default=[])
    p.add_argument("--want-file", help="consume: stop once this file exists and that many records were read")
    a = p.parse_args(argv)
    # A day at most: the mesh soak (make soak-mesh) runs its workload for hours.
    if not 0 < a.seconds <= 86400 or not 0 < a.rate <= 10000:
        p.error("--seconds must be in (0, 86400] and --rate in (0, 10000]: the workload is bounded")
    report = {"produce": produce, "consume": consume, "readback": readback}[a.mode](a)
    with open(a.out, "w") as f:
        json.dump(report, f)
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, list)}))


if __name__ == "__main__":
    main(sys.argv[1:])
