"""Kafka brokers in the mesh: combined broker + controller (KRaft, a 3-voter quorum), configured
with deploy/kafka/server.properties as shipped (CLIENT 9092 behind the filter, INTERNAL 9094 and
CONTROLLER 9093 through the sidecars) plus what a StatefulSet would add per pod."""

import re
import uuid

from .procs import Proc, run, wait_for
from .topology import (BROKERS, CONTROLLER_PORT, HEADLESS, KAFKA_NS, REPO, broker_name)

SERVER_PROPERTIES = REPO / "deploy" / "kafka" / "server.properties"
LOG4J = REPO / "e2e" / "local" / "kafka-log4j2.xml"
SUPER_USER = "kafka-broker"   # the brokers' own principal in deploy/kafka/server.properties


def broker_fqdn(i):
    return f"{broker_name(i)}.{HEADLESS}.{KAFKA_NS}.svc.cluster.local"


def voters():
    return ",".join(f"{i}@{broker_fqdn(i)}:{CONTROLLER_PORT}" for i in range(BROKERS))


# What every broker of this 3-node cluster needs beyond the mesh settings: replication that
# survives one broker (RF 3, min ISR 2) and quick group start-up for tests.
CLUSTER_SETTINGS = {
    "process.roles": "broker,controller",
    "num.partitions": "3",
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.replication.factor": "3",
    "offsets.topic.num.partitions": "6",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "share.coordinator.state.topic.replication.factor": "3",
    "share.coordinator.state.topic.min.isr": "2",
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "false",
    "num.network.threads": "2",
    "num.io.threads": "2",
    "log.segment.bytes": "16777216",
}


def broker_properties(i, data_dir, extra=None):
    """deploy/kafka/server.properties with ${POD_NAME} substituted (as the docs say: envsubst in
    the container command), then the per-pod settings; later keys win in Kafka's loader."""
    text = SERVER_PROPERTIES.read_text().replace("${POD_NAME}", broker_name(i))
    if "${" in re.sub(r"#.*", "", text):
        raise ValueError(f"{SERVER_PROPERTIES} has a placeholder the harness does not fill")
    settings = dict(CLUSTER_SETTINGS, **{"node.id": str(i), "controller.quorum.voters": voters(),
                                         "log.dirs": str(data_dir)})
    settings.update(extra or {})
    lines = [text, "", "# ---- per pod (e2e/mesh) ----"] + [f"{k}={v}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


class Broker:
    def __init__(self, index, pod, mesh):
        self.index = index
        self.pod = pod
        self.mesh = mesh
        self.dir = pod.dir / "kafka"
        self.proc = None
        self.starts_before = 0

    @property
    def log(self):
        return self.dir / "logs" / "server.log"

    @property
    def authorizer_log(self):
        return self.dir / "authorizer.log"

    def configure(self, cluster_id, extra=None):
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        props = self.dir / "server.properties"
        props.write_text(broker_properties(self.index, self.dir / "data", extra))
        run(["java", "-Xmx256m", "-XX:TieredStopAtLevel=1",
             f"-Dlog4j2.configurationFile={REPO}/e2e/local/tools-log4j2.xml",
             "-cp", self.mesh.kafka_classpath, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", props,
             "--ignore-formatted"], f"kafka storage format for broker {self.index}")

    def start(self):
        # A restarted broker logs "started" again in the same file: wait for one more.
        self.starts_before = self._starts()
        self.proc = Proc(f"kafka broker {self.index} (pod {self.pod.name})", [
            *self.pod.exec_prefix(), "java", "-Xmx384m", "-Xms128m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true", f"-Dkafka.logs.dir={self.dir / 'logs'}",
            f"-Dkafka.authorizer.log={self.authorizer_log}", "-Dkafka.authorizer.level=DEBUG",
            f"-Dlog4j2.configurationFile={LOG4J}", "-cp", self.mesh.kafka_classpath,
            "kafka.Kafka", self.dir / "server.properties"], self.dir / "stdout.log").start()
        return self

    def _starts(self):
        try:
            return self.log.read_text(errors="replace").count("Kafka Server started")
        except OSError:
            return 0

    def started(self):
        return self._starts() > self.starts_before

    def wait_started(self, timeout=180):
        wait_for(f"kafka broker {self.index} started (log {self.log})", self.started, timeout, procs=[self.proc])

    def stop(self):
        if self.proc:
            self.proc.stop(timeout=60)

    def kill(self):
        if self.proc:
            self.proc.kill()


def new_cluster_id():
    raw = uuid.uuid4().bytes
    import base64
    s = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return "A" + s[1:] if s[0] == "-" else s   # a leading "-" reads as an option


def admin_client_conf(broker_index=0):
    """librdkafka settings for the brokers' super user on the INTERNAL listener (only the broker
    service account may reach it: deploy/kafka/authorizationpolicy.yaml)."""
    return {"bootstrap.servers": f"{broker_fqdn(broker_index)}:9094", "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "OAUTHBEARER", "enable.sasl.oauthbearer.unsecure.jwt": True,
            "sasl.oauthbearer.config": f"principal={SUPER_USER}"}

