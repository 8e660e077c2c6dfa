"""A second local stack for tests that need a differently configured broker (signed tokens,
connections.max.reauth.ms): own state folder and ports, started with e2e/local/stack-up and
stopped with e2e/local/stack-down, beside the main stack the suite runs against."""

import logging
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from envoy_probe import stats as envoy_stats  # noqa: E402  (bench/: one reader of Envoy's /stats)

LOCAL = REPO / "e2e" / "local"
CLI = Path(os.environ.get("KAFKA_IDENTITY_CLI", REPO / "target" / "release" / "kafka-identity"))
PYTHON = REPO / ".tools" / "venv" / "bin" / "python"


def read_env(path):
    env = {}
    for line in Path(path).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key] = value
    return env


class SideStack:
    """Ports are the main stack's + `offset`."""

    def __init__(self, name, offset, extra_env):
        self.state = REPO / "e2e" / ".state" / name
        ports = {"MESH": 19092, "CONTROLLER": 19093, "DIRECT": 19094, "PLAINTEXT": 19095,
                 "ENVOY": 19443, "ENVOY_ADMIN": 19901}
        self.env = dict(os.environ)
        self.env["KAFKA_IDENTITY_STATE"] = str(self.state)
        for key, port in ports.items():
            self.env[f"KAFKA_IDENTITY_{key}_PORT"] = str(port + offset)
        self.env.update(extra_env)
        self.stack = {}

    def up(self):
        run = subprocess.run([str(LOCAL / "stack-up")], env=self.env, capture_output=True, text=True, timeout=300)
        if run.returncode != 0:
            raise RuntimeError(f"side stack-up failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
        self.stack = read_env(self.state / "stack.env")
        return self

    def down(self):
        subprocess.run([str(LOCAL / "stack-down")], env=self.env, capture_output=True, timeout=120)

    def envoy_restart(self, extra_env):
        """Restarts only Envoy with these settings changed (Kafka keeps running)."""
        self.env.update(extra_env)
        run = subprocess.run([str(LOCAL / "envoy-restart")], env=self.env, capture_output=True, text=True,
                             timeout=120)
        if run.returncode != 0:
            raise RuntimeError(f"side envoy-restart failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
        self.stack = read_env(self.state / "stack.env")

    def filter_update(self, config, vm_env_files=None):
        env = dict(self.env)
        if vm_env_files is not None:
            env["KAFKA_IDENTITY_VM_ENV_FILES"] = vm_env_files
        run = subprocess.run([str(LOCAL / "filter-update"), str(config)], env=env,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr

    def counter(self, name):
        return filter_counters(self.stack["KAFKA_IDENTITY_ENVOY_ADMIN"]).get(name, 0)

    def client_conf(self, sa):
        certs = self.stack["KAFKA_IDENTITY_CERTS"]
        return {"bootstrap.servers": self.stack["KAFKA_IDENTITY_BOOTSTRAP"], "security.protocol": "SSL",
                "ssl.ca.location": self.stack["KAFKA_IDENTITY_CA"],
                "ssl.certificate.location": f"{certs}/apps.{sa}.crt",
                "ssl.key.location": f"{certs}/apps.{sa}.key"}


class LinkLog(logging.Handler):
    """Collects librdkafka's log lines about dropped connections, and when each came."""

    def __init__(self):
        super().__init__()
        self.disconnects = []
        self.disconnect_times = []

    def emit(self, record):
        text = record.getMessage()
        if "Disconnected" in text or "Connection reset" in text:
            self.disconnects.append(text)
            self.disconnect_times.append(time.time())


# Envoy files a Wasm filter's counters under `wasmcustom.` and a dynamic module's under
# `dynamicmodulescustom.` (both namespaces are stripped in /stats/prometheus).
FILTER_STAT_PREFIX = re.compile(r"^(?:wasmcustom|dynamicmodulescustom)\.kafka_identity\.")


def filter_counters(admin):
    """The filter's own counters (<namespace>.kafka_identity.<name>) -> {name: value}."""
    stats = envoy_stats(admin, r"custom\.kafka_identity\.")
    return {FILTER_STAT_PREFIX.sub("", k): v for k, v in stats.items() if FILTER_STAT_PREFIX.match(k)}


def wait_for_text(path, text, timeout=30.0):
    """Envoy flushes its log file every few seconds: poll, bounded."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in Path(path).read_text(errors="replace"):
            return True
        time.sleep(0.5)
    return False


def produce_and_consume(stack, seconds, during=None, steps=(), until=None):
    """One producer and one consumer (group orders-readers), each on its long-lived
    connection, for `seconds`; `during()` runs once a third of the way in, and each
    `(at_seconds, action)` of `steps` once `at_seconds` have passed (in order). With
    `until`, it stops earlier: once every step ran and `until()` is true. Returns a
    report of what was sent, delivered and read back, and every disconnect librdkafka
    logged, with the times (time.time()) of each delivery, arrival and disconnect."""
    steps = list(steps)
    if during is not None:
        steps.append((seconds / 3, during))
    steps.sort(key=lambda step: step[0])
    from confluent_kafka import Consumer, Producer

    run = uuid.uuid4().hex[:10]
    log = LinkLog()
    logger = logging.getLogger(f"rdkafka-{run}")
    logger.addHandler(log)
    logger.setLevel(logging.DEBUG)
    errors = []
    producer = Producer(dict(stack.client_conf("producer"), acks="all", logger=logger,
                             error_cb=lambda e: errors.append(str(e))))
    consumer = Consumer(dict(stack.client_conf("consumer"), logger=logger,
                             error_cb=lambda e: errors.append(str(e)),
                             # earliest, not latest: with latest the start offset is looked up after the
                             # assignment, and on a busy machine the first records are sent before it
                             # (seen as "lost" records that only arrived before the consumer's start);
                             # records of earlier runs are told apart by the run prefix below
                             **{"group.id": "orders-readers", "auto.offset.reset": "earliest",
                                "enable.auto.commit": False}))
    consumer.subscribe(["orders"])
    deadline = time.time() + 30
    while not consumer.assignment() and time.time() < deadline:
        consumer.poll(0.5)
    assert consumer.assignment(), "consumer got no partitions within 30 s"
    consumed, consumed_times, stop = [], [], threading.Event()

    def consume():
        while not stop.is_set():
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error() and msg.value().decode().startswith(run):
                consumed.append(msg.value().decode())
                consumed_times.append(time.time())

    reader = threading.Thread(target=consume)
    reader.start()
    sent, delivered, delivered_times = [], [], []

    def on_delivery(err, msg):
        delivered.append(err is None)
        if err is None:
            delivered_times.append(time.time())

    start = time.time()
    i = 0
    while time.time() - start < seconds and not (until is not None and not steps and until()):
        value = f"{run}-{i}"
        sent.append(value)
        producer.produce("orders", value.encode(), on_delivery=on_delivery)
        producer.poll(0)
        i += 1
        while steps and time.time() - start > steps[0][0]:
            steps.pop(0)[1]()
        time.sleep(0.1)
    assert not steps, f"{len(steps)} steps did not run within {seconds} s"
    producer.flush(30)
    deadline = time.time() + 20
    while len(consumed) < len(sent) and time.time() < deadline:
        time.sleep(0.2)
    stop.set()
    reader.join()
    consumer.close()
    return {"sent": sent, "delivered": sum(delivered), "consumed": consumed,
            "disconnects": log.disconnects, "errors": errors, "started": start,
            "delivered_times": delivered_times, "consumed_times": consumed_times,
            "disconnect_times": log.disconnect_times}
