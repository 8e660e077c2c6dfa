"""Shared fixtures for the kafka-identity e2e suite.

The suite runs against a stack started by e2e/local/stack-up (e2e/run does that). Every
test checks what the *broker* did: the authorizer log, what a consumer reads back, and the
filter's counters on Envoy's admin endpoint.
"""

import os
import re
import ssl
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from side_stack import envoy_stats, filter_counters

REPO = Path(__file__).resolve().parents[2]
WAIT = 30.0  # upper bound for any single wait in this suite (seconds)

SPIFFE = {
    "producer": "spiffe://cluster.local/ns/apps/sa/producer",
    "consumer": "spiffe://cluster.local/ns/apps/sa/consumer",
    "evil": "spiffe://evil.example/ns/apps/sa/producer",
}
CERT_BASE = {
    "producer": "apps.producer",
    "consumer": "apps.consumer",
    "evil": "evil.apps.producer",
    "admin-wannabe": "apps.admin-wannabe",
}


def load_stack_env():
    state = Path(os.environ.get("KAFKA_IDENTITY_STATE", REPO / "e2e" / ".state"))
    path = state / "stack.env"
    if not path.is_file():
        pytest.exit(f"no {path}: start the stack first (e2e/local/stack-up, or use e2e/run)", returncode=2)
    env = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        env[k] = v
    if env.get("KAFKA_IDENTITY_FILTER_ENABLED") != "1":
        pytest.exit("the stack runs without the filter (KAFKA_IDENTITY_NO_FILTER=1): this suite needs it",
                    returncode=2)
    return env


class Stack:
    def __init__(self, env):
        self.env = env
        self.bootstrap = env["KAFKA_IDENTITY_BOOTSTRAP"]
        self.broker = env["KAFKA_IDENTITY_BROKER"]
        self.ca = env["KAFKA_IDENTITY_CA"]
        self.certs = Path(env["KAFKA_IDENTITY_CERTS"])
        self.client_configs = Path(env["KAFKA_IDENTITY_CLIENT_CONFIGS"])
        self.admin_config = env["KAFKA_IDENTITY_ADMIN_CONFIG"]
        self.classpath = env["KAFKA_IDENTITY_KAFKA_CLASSPATH"]
        self.kafka_version = env.get("KAFKA_IDENTITY_KAFKA_VERSION", "4.4.0")
        self.kafka_log_opts = env.get(
            "KAFKA_IDENTITY_KAFKA_LOG_OPTS",
            f"-Dlog4j2.configurationFile={REPO / 'e2e' / 'local' / 'tools-log4j2.xml'}")
        self.envoy_admin = env["KAFKA_IDENTITY_ENVOY_ADMIN"]
        self.authorizer_log = Path(env["KAFKA_IDENTITY_AUTHORIZER_LOG"])
        self.envoy_log = Path(env["KAFKA_IDENTITY_ENVOY_LOG"])
        self.envoy_version = env["KAFKA_IDENTITY_ENVOY_VERSION"]
        self.topic = env.get("KAFKA_IDENTITY_TOPIC", "orders")
        self.group = env.get("KAFKA_IDENTITY_GROUP", "orders-readers")
        host, port = self.bootstrap.rsplit(":", 1)
        self.envoy_addr = (host, int(port))

    # ---- certificates -----------------------------------------------------------
    def cert(self, who):
        base = CERT_BASE[who]
        return str(self.certs / f"{base}.crt"), str(self.certs / f"{base}.key")

    # ---- Envoy admin --------------------------------------------------------------
    def stats(self):
        return envoy_stats(self.envoy_admin)

    def counters(self):
        """The filter's own counters (wasmcustom.kafka_identity.<name>) -> {name: value}."""
        return filter_counters(self.envoy_admin)

    # ---- TLS sockets ------------------------------------------------------------------
    def tls_socket(self, who=None, timeout=10):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.ca)
        ctx.check_hostname = True
        if who is not None:
            ctx.load_cert_chain(*self.cert(who))
        raw = socket.create_connection(self.envoy_addr, timeout=timeout)
        s = ctx.wrap_socket(raw, server_hostname=self.envoy_addr[0])
        s.settimeout(timeout)
        return s

    # ---- librdkafka (confluent-kafka, kcat) settings ------------------------------------
    def rdkafka_ssl(self, who, **extra):
        conf = {"bootstrap.servers": self.bootstrap, "security.protocol": "SSL", "ssl.ca.location": self.ca}
        if who is not None:
            crt, key = self.cert(who)
            conf["ssl.certificate.location"] = crt
            conf["ssl.key.location"] = key
        conf.update(extra)
        return conf

    def rdkafka_admin_direct(self, **extra):
        """User:admin (super user) straight to the broker's DIRECT listener, bypassing Envoy."""
        conf = {
            "bootstrap.servers": self.broker,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "OAUTHBEARER",
            "enable.sasl.oauthbearer.unsecure.jwt": True,
            "sasl.oauthbearer.config": "principal=admin",
        }
        conf.update(extra)
        return conf

    def kcat(self, who, *args, stdin=None, timeout=WAIT, extra=()):
        cmd = ["kcat", "-b", self.bootstrap]
        for k, v in self.rdkafka_ssl(who).items():
            if k != "bootstrap.servers":
                cmd += ["-X", f"{k}={v}"]
        for kv in extra:
            cmd += ["-X", kv]
        cmd += list(args)
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)

    def java_tool(self, cls, *args, stdin=None, timeout=60):
        cmd = ["java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", self.kafka_log_opts,
               "-cp", self.classpath, cls, *args]
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)

    def console_tool(self, kind):
        """The Java console producer or consumer of the broker's Kafka version, as (main class,
        config-file option, property option): 3.x has the Scala kafka.tools.ConsoleProducer, and
        only 4.2+ knows --command-config/--command-property (older: --producer.config, ...)."""
        cls = self.env.get(f"KAFKA_IDENTITY_KAFKA_CONSOLE_{kind.upper()}") or {
            "producer": "org.apache.kafka.tools.ConsoleProducer",
            "consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer"}[kind]
        if self.kafka_version_at_least(4, 2):
            return cls, "--command-config", "--command-property"
        return cls, f"--{kind}.config", f"--{kind}-property"

    def kafka_version_at_least(self, major, minor):
        parts = [int(p) for p in re.findall(r"\d+", self.kafka_version)[:2]]
        return tuple(parts) >= (major, minor)

    def java_client_config(self, who):
        return str(self.client_configs / f"{CERT_BASE[who]}.ssl.properties")


class LogTail:
    """Lines appended to a log file after this object was created."""

    def __init__(self, path):
        self.path = Path(path)
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def lines(self):
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read().decode(errors="replace").splitlines()

    def matching(self, *needles):
        return [ln for ln in self.lines() if all(n in ln for n in needles)]

    def wait_for(self, *needles, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while True:
            found = self.matching(*needles)
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


def authz(principal_id, verdict, operation, resource):
    """Needles for an authorizer log line: principal, Allowed/Denied, OPERATION, Topic:LITERAL:x."""
    return (f"Principal = User:{principal_id} is {verdict} operation = {operation} ",
            f"on resource = {resource} ")


def wait_until(pred, timeout=WAIT, interval=0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


@pytest.fixture(scope="session")
def stack():
    return Stack(load_stack_env())


@pytest.fixture(scope="session")
def two_workers():
    """A side stack with a 2-worker Envoy, shared by the load and hostile-bytes tests of
    docs/reliability.md (started once, only if one of them runs)."""
    from reliability import two_worker_stack
    yield from two_worker_stack()


@pytest.fixture
def run_id():
    return f"e2e-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def authorizer_log(stack):
    return LogTail(stack.authorizer_log)


@pytest.fixture
def envoy_log(stack):
    return LogTail(stack.envoy_log)


@pytest.fixture(scope="session")
def admin(stack):
    from confluent_kafka.admin import AdminClient
    return AdminClient(stack.rdkafka_admin_direct())


@pytest.fixture
def make_topic(stack, admin):
    """Creates a topic as User:admin over DIRECT, with ACLs for producer (Write, Describe) and
    consumer (Read, Describe); deletes it at the end."""
    from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, NewTopic,
                                       ResourcePatternType, ResourceType)
    created = []

    def make(name, partitions=3, config=None):
        fs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                           config=config or {})], operation_timeout=WAIT)
        fs[name].result(timeout=WAIT)
        created.append(name)
        bindings = []
        for who, ops in (("producer", (AclOperation.WRITE, AclOperation.DESCRIBE)),
                         ("consumer", (AclOperation.READ, AclOperation.DESCRIBE))):
            for op in ops:
                bindings.append(AclBinding(ResourceType.TOPIC, name, ResourcePatternType.LITERAL,
                                           f"User:{SPIFFE[who]}", "*", op, AclPermissionType.ALLOW))
        for f in admin.create_acls(bindings, request_timeout=WAIT).values():
            f.result(timeout=WAIT)
        # wait until the broker has the topic's metadata and its authorizer has the ACLs
        assert wait_until(lambda: name in admin.list_topics(timeout=10).topics), f"topic {name} not visible"
        flt = AclBindingFilter(ResourceType.TOPIC, name, ResourcePatternType.LITERAL,
                               None, None, AclOperation.ANY, AclPermissionType.ANY)
        assert wait_until(lambda: len(admin.describe_acls(flt, request_timeout=10).result(timeout=WAIT))
                          >= len(bindings)), f"ACLs for {name} not in effect"
        time.sleep(0.5)  # describe_acls and the authorizer read the same metadata image; small margin
        return name

    yield make
    if created:
        try:
            for name in created:
                flt = AclBindingFilter(ResourceType.TOPIC, name, ResourcePatternType.LITERAL,
                                       None, None, AclOperation.ANY, AclPermissionType.ANY)
                for f in admin.delete_acls([flt], request_timeout=WAIT).values():
                    f.result(timeout=WAIT)
            for f in admin.delete_topics(created, operation_timeout=WAIT).values():
                f.result(timeout=WAIT)
        except Exception as exc:  # cleanup only; the stack is thrown away at the end anyway
            print(f"cleanup of {created} failed: {exc}")


def read_all(conf, topic, want, timeout=WAIT, partitions=None):
    """Reads topic from the beginning (assign, no group) until `want(messages)` is true or the
    timeout passes; returns the list of (key, value) pairs seen."""
    from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
    conf = dict(conf)
    conf.setdefault("group.id", "orders-readers")  # only used for the coordinator lookup
    conf.setdefault("enable.auto.commit", False)
    c = Consumer(conf)
    try:
        if partitions is None:
            md = c.list_topics(topic, timeout=10)
            partitions = sorted(md.topics[topic].partitions)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        got, errors = [], []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not want(got):
            for m in c.consume(num_messages=500, timeout=0.5):
                if m.error():
                    errors.append(m.error())
                    continue
                got.append((m.key(), m.value()))
        return got, errors
    finally:
        c.close()
