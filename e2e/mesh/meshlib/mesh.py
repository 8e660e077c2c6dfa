"""The whole mesh: brings every part up in order, applies our manifests as a user would, and
tears everything down again (also after a failure)."""

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import topology
from .istio import Istiod, Sidecar
from .kafka import Broker, admin_client_conf, new_cluster_id
from .kube import Kube, endpoint_slice
from .network import NODE_IP, Network
from .procs import MeshError, Proc, run, wait_for
from .topology import REPO

WASM = REPO / "target" / "wasm32-unknown-unknown" / "release" / "kafka_identity_filter.wasm"
OCI_DIR = REPO / "target" / "oci"
KCLIENT = REPO / "e2e" / "mesh" / "clients" / "kclient.py"
ISSUE_CERT = REPO / "e2e" / "local" / "issue_cert.py"
# Where the file deliveries expect the module (deploy/istio/broker/wasm-file-volume.patch.yaml).
WASM_MOUNT = "/var/local/lib/kafka-identity"
REGISTRY_HOST = f"registry.registry.svc.cluster.local:{topology.REGISTRY_PORT}"
CLIENT_ENVOY, CLIENT_ISTIO = "1.40.0", "1.31.0"
AUTHZ_SERVER = REPO / "e2e" / "tests" / "authz_server.py"
AUTHZ_DELAY = 0.5   # seconds each check is held: clients pipeline while ext_authz pauses
CHART = REPO / "deploy" / "helm" / "kafka-identity"


@dataclass(frozen=True)
class ChartRelease:
    """A delivery installed with `helm install` (install_chart); in `Mesh.applied` beside the
    kustomize directories, and removed by delete_kustomization like them."""
    name: str


class Mesh:
    def __init__(self, node_netns, state, tools=None):
        self.state = Path(state)
        self.repo_tools = Path(tools or REPO / ".tools")
        self.tools = self.repo_tools / "mesh"
        self.python = self.repo_tools / "venv" / "bin" / "python"
        self.kafka_classpath = str(self.repo_tools / "kafka" / "libs" / "*")
        self.node_ip = NODE_IP
        self.net = Network(node_netns)
        self.kube = Kube(self.tools, self.state, NODE_IP)
        self.istiod = Istiod(self.tools, self.state, self.kube, NODE_IP)
        self.pods = {p.name: p for p in topology.pods()}
        self.services = topology.services()
        self.sidecars = {}
        self.brokers = []
        self.registry = None
        self.authz = None
        self.applied = []        # kustomize directories applied, newest last
        self.timings = {}
        # Parts added while the mesh runs (e.g. meshlib/ambient.py): stopped first on
        # tear-down, logs listed with the others.
        self.teardown_hooks = []
        self.extra_logs = {}

    # ---- helpers ----------------------------------------------------------------------
    def envoy_binary(self, version):
        path = self.repo_tools / "envoy" / version / "envoy"
        if not path.is_file():
            raise MeshError(f"Envoy {version} is not installed at {path}: run scripts/install-mesh")
        return path

    def broker_pods(self):
        return [self.pods[topology.broker_name(i)] for i in range(topology.BROKERS)]

    def exec(self, pod, argv, timeout=120, uid=None, check=True, input=None):
        """Runs a command in a pod; returns CompletedProcess (raises MeshError if check fails)."""
        p = self.pods[pod] if isinstance(pod, str) else pod
        argv = [str(a) for a in [*p.exec_prefix(uid=uid), *argv]]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise MeshError(f"in pod {p.name}: {' '.join(argv[len(p.exec_prefix()):])} failed "
                            f"(exit {r.returncode}):\n{r.stdout[-1500:]}\n{r.stderr[-2500:]}")
        return r

    def kclient(self, pod, *args, timeout=90):
        r = self.exec(pod, [self.python, KCLIENT, *args], timeout=timeout)
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError) as e:
            raise MeshError(f"kclient {args[0]} in pod {pod}: no JSON result ({e}):\n{r.stdout}\n{r.stderr}") from e

    def admin(self, *ops, broker=0):
        bootstrap = admin_client_conf(broker)["bootstrap.servers"]
        return self.kclient(topology.broker_name(broker), "admin", bootstrap, "--ops", json.dumps(list(ops)))["results"]

    def _timed(self, name, fn, *args):
        t0 = time.monotonic()
        result = fn(*args)
        self.timings[name] = round(time.monotonic() - t0, 1)
        return result

    # ---- bring-up ---------------------------------------------------------------------
    def up(self, broker_envoy, broker_istio):
        self.state.mkdir(parents=True, exist_ok=True)
        if not WASM.is_file():
            raise MeshError(f"{WASM} missing: make wasm")
        self._timed("network", self.net.up)
        self._timed("kube-apiserver", self.kube.up)
        self._timed("cluster objects", self._cluster_objects)
        self._timed("istiod", self.istiod.start)
        self._timed("pods", self._pods)
        self._timed("sidecars", self._sidecars, broker_envoy, broker_istio)
        self._timed("registry", self._registry)
        self._timed("ext-authz", self._ext_authz)
        self._timed("kafka", self._kafka)

    def _cluster_objects(self):
        self.kube.kubectl("apply", "--server-side", "-f", self.tools / "istio" / "crd-all.gen.yaml",
                          what="Istio CRDs")
        # Before istiod starts, so that it watches them (the ambient pass's waypoint Gateway).
        self.kube.kubectl("apply", "--server-side", "-f", self.tools / "gateway-api" / "standard-crds.yaml",
                          what="Gateway API CRDs")
        self.kube.wait_crds()
        namespaces = sorted({p.namespace for p in self.pods.values()} | {"istio-system"})
        objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in namespaces]
        objects.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-0"},
                        "status": {"addresses": [{"type": "InternalIP", "address": NODE_IP}]}})
        objects += [{"apiVersion": "v1", "kind": "ServiceAccount",
                     "metadata": {"name": sa, "namespace": ns}}
                    for ns, sa in sorted({(p.namespace, p.service_account) for p in self.pods.values()})]
        objects += [topology.service_object(s) for s in self.services]
        self.kube.apply(objects, "namespaces, service accounts, services")
        for svc in self.services:
            if not svc.headless:
                svc.cluster_ip = self.kube.get_json("service", svc.name, "-n", svc.namespace)["spec"]["clusterIP"]
        # The mesh-wide settings every overlay assumes (deploy/kafka).
        self.kube.kubectl("apply", "-k", REPO / "deploy" / "kafka", what="kubectl apply -k deploy/kafka")

    def _pods(self):
        for pod in self.pods.values():
            pod.ip = self.net.add_pod(pod.name)
            pod.netns = self.net.ns_of(pod.name)
            pod.dir = self.state / "pods" / pod.name
            pod.dir.mkdir(parents=True, exist_ok=True)
            (pod.dir / "varlib").mkdir(exist_ok=True)
        hosts = topology.hosts_file(list(self.pods.values()), self.services)
        for pod in self.pods.values():
            (pod.dir / "hosts").write_text(hosts)
            (pod.dir / "resolv.conf").write_text(topology.RESOLV_CONF)
        objects = {p.name: topology.pod_object(p) for p in self.pods.values()}
        self.kube.apply(list(objects.values()), "pods")
        for pod in self.pods.values():
            self.kube.set_pod_running(pod.namespace, pod.name, pod.ip, NODE_IP,
                                      objects[pod.name]["spec"]["containers"])
        slices = []
        for svc in self.services:
            selected = [(p.name, p.ip, p.hostname) for p in self.pods.values()
                        if all(p.labels.get(k) == v for k, v in svc.selector.items())]
            slices.append(endpoint_slice(svc.name, svc.namespace, svc.ports, selected, svc.headless))
        self.kube.apply(slices, "endpoint slices")

    def _broker_mounts(self, pod):
        # The file deliveries' volume, mounted where the manifests expect it (the userVolumeMount
        # of deploy/istio/broker/wasm-file-volume.patch.yaml).
        vol = pod.dir / "volumes" / "kafka-identity-wasm"
        vol.mkdir(parents=True, exist_ok=True)
        pod.mounts = ["--tmpfs", "/var/local", "--bind", f"{vol}:{WASM_MOUNT}"]

    def _sidecars(self, broker_envoy, broker_istio):
        ca_state = self.state / "ca-state"
        for pod in self.pods.values():
            if pod.labels.get("app.kubernetes.io/name") == "kafka":
                self._broker_mounts(pod)
            if not pod.sidecar:
                continue
            sc = Sidecar(pod, self)
            sc.prepare(self.python, ISSUE_CERT, ca_state)
            sc.capture_traffic()
            self.sidecars[pod.name] = sc
        self.ca = ca_state / "ca" / "ca.crt"
        self.start_sidecars([p.name for p in self.broker_pods()], broker_envoy, broker_istio)
        self.start_sidecars([n for n in self.sidecars if not n.startswith("kafka-")], CLIENT_ENVOY, CLIENT_ISTIO)

    def start_sidecars(self, names, envoy_version, istio_version):
        for name in names:
            extra = {"WASM_INSECURE_REGISTRIES": REGISTRY_HOST} if name.startswith("kafka-") else {}
            self.sidecars[name].start(envoy_version, istio_version, extra)
        for name in names:
            self.sidecars[name].wait_ready()

    def restart_sidecars(self, names, envoy_version, istio_version):
        for name in names:
            self.sidecars[name].stop()
        self.start_sidecars(names, envoy_version, istio_version)

    def _registry(self):
        pod = self.pods["registry-0"]
        cfg = pod.dir / "registry.yml"
        cfg.write_text(yaml.safe_dump({
            "version": 0.1, "log": {"level": "info"},
            "storage": {"filesystem": {"rootdirectory": str(pod.dir / "storage")}},
            "http": {"addr": f"{pod.ip}:{topology.REGISTRY_PORT}"}}))
        self.registry = Proc("OCI registry (pod registry-0)",
                             [*pod.exec_prefix(), self.tools / "bin" / "registry", "serve", cfg],
                             pod.dir / "registry.log",
                             env=dict(os.environ, OTEL_TRACES_EXPORTER="none")).start()
        wait_for("OCI registry /v2/", lambda: _http_ok(f"http://{pod.ip}:{topology.REGISTRY_PORT}/v2/"), 60,
                 procs=[self.registry])

    def _ext_authz(self):
        pod = self.pods["ext-authz-0"]
        self.authz = Proc("ext_authz server (pod ext-authz-0)",
                          [*pod.exec_prefix(), self.python, AUTHZ_SERVER, pod.ip, topology.AUTHZ_PORT, AUTHZ_DELAY],
                          pod.dir / "authz.log").start()
        wait_for("ext_authz server listening", lambda: "allowing every check" in _read(self.authz.log), 30,
                 procs=[self.authz])

    def push_wasm_image(self):
        """`make oci` then `scripts/oci-image push`, from inside a broker pod's network (plain
        HTTP registry); returns the manifest digest to put in the WasmPlugin's sha256."""
        run(["make", "-C", REPO, "oci"], "make oci", timeout=600)
        env_file = OCI_DIR / "kafka-identity-wasm.env"
        values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
        digest = values.get("MANIFEST_DIGEST", "").removeprefix("sha256:")
        self.exec("legacy", [REPO / "scripts" / "oci-image", "push", "--plain-http",
                             "--layout", OCI_DIR / "kafka-identity-wasm",
                             "--to", f"{REGISTRY_HOST}/kafka-identity/kafka-identity-wasm:mesh"], timeout=300)
        if len(digest) != 64:
            raise MeshError(f"no MANIFEST_DIGEST in {env_file}")
        return digest

    def _kafka(self):
        cluster_id = new_cluster_id()
        for i, pod in enumerate(self.broker_pods()):
            b = Broker(i, pod, self)
            b.configure(cluster_id)
            self.brokers.append(b)
        for b in self.brokers:
            b.start()
        for b in self.brokers:
            b.wait_started()
        wait_for("the brokers' metadata to show all three", self._three_brokers, 120,
                 procs=[b.proc for b in self.brokers])

    def _three_brokers(self):
        try:
            return self.admin({"op": "brokers"})[0] == list(range(topology.BROKERS))
        except MeshError:
            return False

    # ---- deliveries ---------------------------------------------------------------------
    def publish_wasm_configmap(self, wasm=WASM):
        """The ConfigMap of the file deliveries, made as docs/deploy.md says, then what the
        kubelet's ConfigMap volume of deploy/istio/broker/wasm-file-volume.patch.yaml shows
        istio-proxy: the .wasm itself (make wasm keeps it under a ConfigMap's 1 MiB); `wasm`:
        another module (an upgrade)."""
        manifest = self.kube.kubectl("create", "configmap", "kafka-identity-wasm", "-n", "kafka",
                                     f"--from-file=kafka_identity_filter.wasm={wasm}", "--dry-run=client",
                                     "-o", "yaml")
        self.kube.kubectl("apply", "--server-side", "-f", "-", stdin=manifest, what="ConfigMap kafka-identity-wasm")
        data = self.kube.get_json("configmap", "kafka-identity-wasm", "-n", "kafka")["binaryData"]
        import base64
        module = base64.b64decode(data["kafka_identity_filter.wasm"])
        for pod in self.broker_pods():
            vol = pod.dir / "volumes" / "kafka-identity-wasm"
            tmp = vol / "kafka_identity_filter.wasm.tmp"
            tmp.write_bytes(module)
            os.replace(tmp, vol / "kafka_identity_filter.wasm")
            os.chmod(vol / "kafka_identity_filter.wasm", 0o644)

    def apply_kustomization(self, path):
        self.kube.kubectl("apply", "-k", path, what=f"kubectl apply -k {path}")
        self.applied.append(Path(path))

    def delete_kustomization(self, path):
        if isinstance(path, ChartRelease):
            self.helm("uninstall", path.name, "--namespace", "kafka", what=f"helm uninstall {path.name}")
            self.applied = [p for p in self.applied if p != path]
            return
        self.kube.kubectl("delete", "-k", path, "--ignore-not-found", what=f"kubectl delete -k {path}")
        self.applied = [p for p in self.applied if p != Path(path)]

    def helm(self, *args, what=None):
        """Helm (scripts/install-deploy-tools) against this mesh's API server."""
        helm_home = self.state / "helm"
        env = dict(os.environ, HELM_CACHE_HOME=str(helm_home / "cache"), HELM_CONFIG_HOME=str(helm_home / "config"),
                   HELM_DATA_HOME=str(helm_home / "data"))
        return run([self.repo_tools / "deploy" / "bin" / "helm", "--kubeconfig", self.kube.kubeconfig, *args],
                   what or f"helm {args[0]}", timeout=180, env=env)

    def install_chart(self, values_file, sets, name="kafka-identity"):
        """`helm install` of deploy/helm/kafka-identity into namespace kafka, as a user would."""
        argv = ["upgrade", "--install", name, CHART, "--namespace", "kafka", "-f", values_file]
        for k, v in sets.items():
            argv += ["--set", f"{k}={v}"]
        self.helm(*argv, what=f"helm upgrade --install {name} -f {Path(values_file).name}")
        release = ChartRelease(name)
        if release not in self.applied:
            self.applied.append(release)
        return release

    def oci_overlay(self, digest, plugin_config=None, base="wasmplugin-oci"):
        """A user's own overlay of deploy/istio/overlays/<base> (an oci:// WasmPlugin, or a
        TrafficExtension for the *trafficextension* overlays): url and sha256, and optionally
        fields of pluginConfig (merged over the shipped one)."""
        # A TrafficExtension holds the WasmPlugin's fields under spec.wasm.
        kind, spec = ("TrafficExtension", "/spec/wasm") if "trafficextension" in base else ("WasmPlugin", "/spec")
        name = base if not plugin_config else base + "-" + "-".join(
            f"{k}-{v}" for k, v in sorted(plugin_config.items()))
        d = self.state / "overlays" / name
        d.mkdir(parents=True, exist_ok=True)
        rel = os.path.relpath(REPO / "deploy" / "istio" / "overlays" / base, d)
        ops = [{"op": "replace", "path": f"{spec}/url",
                "value": f"oci://{REGISTRY_HOST}/kafka-identity/kafka-identity-wasm:mesh"},
               {"op": "replace", "path": f"{spec}/sha256", "value": digest}]
        ops += [{"op": "add", "path": f"{spec}/pluginConfig/{k}", "value": v}
                for k, v in sorted((plugin_config or {}).items())]
        # By kind, not name: each overlay has one WasmPlugin or TrafficExtension (the waypoint's
        # is named kafka-identity-waypoint).
        (d / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [rel],
            "patches": [{"target": {"kind": kind},
                         "patch": yaml.safe_dump(ops)}]}, sort_keys=False))
        return d

    # ---- tear-down ------------------------------------------------------------------------
    def down(self):
        errors = []
        for step in (list(reversed(self.teardown_hooks)) + [b.stop for b in self.brokers]
                     + [s.stop for s in self.sidecars.values()]
                     + [lambda: self.registry and self.registry.stop(), lambda: self.authz and self.authz.stop(),
                        self.istiod.stop, self.kube.down,
                        self.net.down]):
            try:
                step()
            except Exception as e:  # noqa: BLE001 - keep tearing down, report at the end
                errors.append(str(e))
        if errors:
            raise MeshError("tear-down: " + "; ".join(errors))

    def logs(self):
        """Where each component's log is."""
        out = {"etcd": self.kube.state / "etcd.log", "kube-apiserver": self.kube.state / "kube-apiserver.log",
               "istiod": self.istiod.dir / "istiod.log"}
        for name, sc in self.sidecars.items():
            if sc.proc:
                out[f"sidecar {name}"] = sc.proc.log
        for b in self.brokers:
            out[f"kafka broker {b.index}"] = b.log
        if self.registry:
            out["registry"] = self.registry.log
        if self.authz:
            out["ext_authz server"] = self.authz.log
        out.update(self.extra_logs)
        return out


def _read(path):
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _http_ok(url):
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False

