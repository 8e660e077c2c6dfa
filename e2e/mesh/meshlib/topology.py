"""What the mesh consists of, as data: pods (namespace, service account, labels, ports, with or
without a sidecar) and Services. `Pod` also knows how to run a command inside itself."""

from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
POD_EXEC = REPO / "e2e" / "mesh" / "pod-exec"

BROKERS = 3
KAFKA_NS = "kafka"
KAFKA_SA = "kafka"
HEADLESS = "kafka-headless"
BROKER_LABELS = {"app.kubernetes.io/name": "kafka"}
CLIENT_PORT, CONTROLLER_PORT, INTERNAL_PORT = 9092, 9093, 9094
REGISTRY_PORT = 5000
AUTHZ_PORT = 9000
AUTHZ_PROVIDER = "kafka-ext-authz"   # meshConfig extensionProviders name (CUSTOM policies)


@dataclass
class Pod:
    name: str
    namespace: str
    service_account: str
    labels: dict
    sidecar: bool
    ports: list = field(default_factory=list)
    hostname: str = None
    subdomain: str = None
    workload: str = None
    # set when the pod is created
    ip: str = None
    netns: str = None
    dir: Path = None
    mounts: list = field(default_factory=list)   # pod-exec mount options

    def __post_init__(self):
        self.workload = self.workload or self.name

    @property
    def fqdn(self):
        if self.hostname and self.subdomain:
            return f"{self.hostname}.{self.subdomain}.{self.namespace}.svc.cluster.local"
        return None

    def exec_prefix(self, uid=None, cwd=None):
        argv = [POD_EXEC, "--netns", self.netns, "--hosts", self.dir / "hosts",
                # No DNS server in the mesh: names come from /etc/hosts, and a lookup that
                # reaches DNS (Java asks for IPv6 too) is refused at once instead of timing out.
                "--bind", f"{self.dir / 'resolv.conf'}:/etc/resolv.conf",
                # /var/lib/istio/data for pilot-agent, without touching the machine's /var/lib
                "--overlay", f"/var/lib:{self.dir / 'varlib'}", *self.mounts]
        if uid is not None:
            argv += ["--uid", str(uid)]
        if cwd is not None:
            argv += ["--cwd", cwd]
        return [*argv, "--"]


@dataclass
class Service:
    name: str
    namespace: str
    ports: list          # [(name, port)]
    selector: dict
    headless: bool = False
    cluster_ip: str = None


def broker_name(i):
    return f"kafka-{i}"


def pods():
    out = []
    for i in range(BROKERS):
        name = broker_name(i)
        out.append(Pod(name, KAFKA_NS, KAFKA_SA,
                       dict(BROKER_LABELS, **{"statefulset.kubernetes.io/pod-name": name, "app": "kafka"}),
                       sidecar=True, ports=[CLIENT_PORT, CONTROLLER_PORT, INTERNAL_PORT],
                       hostname=name, subdomain=HEADLESS, workload="kafka"))
    out += [
        Pod("producer", "apps", "producer", {"app": "producer"}, sidecar=True),
        Pod("consumer", "apps", "consumer", {"app": "consumer"}, sidecar=True),
        # A workload outside the mesh: no sidecar, no certificate.
        Pod("legacy", "apps", "legacy", {"app": "legacy"}, sidecar=False),
        # The OCI registry pilot-agent pulls the WasmPlugin image from.
        Pod("registry-0", "registry", "registry", {"app": "registry"}, sidecar=False, ports=[REGISTRY_PORT],
            hostname="registry-0", subdomain="registry", workload="registry"),
        # An external authorization server (Istio CUSTOM action), deliberately slow.
        Pod("ext-authz-0", "authz", "ext-authz", {"app": "ext-authz"}, sidecar=False, ports=[AUTHZ_PORT],
            workload="ext-authz"),
    ]
    return out


def services():
    return [
        Service("kafka", KAFKA_NS, [("tcp-client", CLIENT_PORT)], BROKER_LABELS),
        # Brokers' stable names; 9093/9094 declared so sidecars originate mTLS to them.
        Service(HEADLESS, KAFKA_NS, [("tcp-client", CLIENT_PORT), ("tcp-controller", CONTROLLER_PORT),
                                     ("tcp-internal", INTERNAL_PORT)], BROKER_LABELS, headless=True),
        Service("registry", "registry", [("http-registry", REGISTRY_PORT)], {"app": "registry"}, headless=True),
        Service("ext-authz", "authz", [("grpc", AUTHZ_PORT)], {"app": "ext-authz"}),
    ]


def injected_metadata(pod):
    """Labels and annotations Istio's sidecar injector adds; `security.istio.io/tlsMode: istio`
    is what makes client sidecars originate mTLS to the pod (auto mTLS)."""
    labels = dict(pod.labels)
    annotations = {}
    if pod.sidecar:
        labels.update({"security.istio.io/tlsMode": "istio",
                       "service.istio.io/canonical-name": pod.workload,
                       "service.istio.io/canonical-revision": "latest"})
        annotations["sidecar.istio.io/status"] = (
            '{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":[],"imagePullSecrets":null}')
    return labels, annotations


def pod_object(pod):
    labels, annotations = injected_metadata(pod)
    containers = [{"name": "app", "image": "kafka-identity.invalid/app:mesh",
                   "ports": [{"containerPort": p, "protocol": "TCP"} for p in pod.ports]}]
    if pod.sidecar:
        containers.append({"name": "istio-proxy", "image": "kafka-identity.invalid/proxyv2:mesh",
                           "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}]})
    spec = {"serviceAccountName": pod.service_account, "nodeName": "node-0", "containers": containers}
    if pod.hostname:
        spec.update(hostname=pod.hostname, subdomain=pod.subdomain)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": labels,
                         "annotations": annotations},
            "spec": spec}


def service_object(svc):
    spec = {"selector": svc.selector,
            "ports": [{"name": n, "port": p, "targetPort": p, "protocol": "TCP"} for n, p in svc.ports]}
    if svc.headless:
        spec.update(clusterIP="None", publishNotReadyAddresses=True)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": svc.name, "namespace": svc.namespace},
            "spec": spec}


RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"


def hosts_file(pods_, services_):
    """/etc/hosts of every pod: Service VIPs and headless names as cluster DNS would answer."""
    lines = ["127.0.0.1 localhost", "::1 localhost"]
    for svc in services_:
        fq = f"{svc.name}.{svc.namespace}.svc.cluster.local"
        names = f"{fq} {svc.name}.{svc.namespace}.svc {svc.name}.{svc.namespace}"
        if not svc.headless:
            lines.append(f"{svc.cluster_ip} {names}")
            continue
        for pod in pods_:
            if all(pod.labels.get(k) == v for k, v in svc.selector.items()):
                lines.append(f"{pod.ip} {names}")
    for pod in pods_:
        if pod.fqdn:
            short = pod.fqdn.replace(".svc.cluster.local", "")
            lines.append(f"{pod.ip} {pod.fqdn} {short}")
    return "\n".join(lines) + "\n"
