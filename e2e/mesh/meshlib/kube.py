"""The Kubernetes side: etcd and kube-apiserver (both from k8s.io/kubernetes, built by
scripts/install-mesh) on the node's loopback, kubectl of the same version, and the objects a
kubelet and the endpoint-slice controller would otherwise write (Pod status, EndpointSlices)."""

import json
import secrets
import time
import urllib.request
import ssl
from pathlib import Path

import yaml

from .procs import Proc, run, wait_for

API_PORT = 6443


class Kube:
    def __init__(self, tools, state, node_ip):
        self.bin = Path(tools) / "bin"
        self.state = Path(state) / "kube"
        self.node_ip = node_ip
        self.token = secrets.token_hex(16)
        self.kubeconfig = self.state / "kubeconfig"
        self.procs = []

    # ---- processes ------------------------------------------------------------------
    def up(self):
        self.state.mkdir(parents=True, exist_ok=True)
        etcd = Proc("etcd", [self.bin / "etcd", "--name", "mesh", "--data-dir", self.state / "etcd",
                             "--listen-client-urls", "http://127.0.0.1:2379",
                             "--advertise-client-urls", "http://127.0.0.1:2379",
                             "--listen-peer-urls", "http://127.0.0.1:2380",
                             "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                             "--initial-cluster", "mesh=http://127.0.0.1:2380",
                             "--listen-metrics-urls", "http://127.0.0.1:2381",
                             "--quota-backend-bytes", str(2 << 30), "--log-level", "warn"],
                    self.state / "etcd.log").start()
        self.procs.append(etcd)
        (self.state / "tokens.csv").write_text(f"{self.token},mesh-admin,mesh-admin,system:masters\n")
        run(["openssl", "genrsa", "-out", self.state / "sa.key", "2048"], "service-account signing key")
        run(["openssl", "rsa", "-in", self.state / "sa.key", "-pubout", "-out", self.state / "sa.pub"],
            "service-account public key")
        api = Proc("kube-apiserver", [
            self.bin / "kube-apiserver",
            "--etcd-servers", "http://127.0.0.1:2379",
            "--bind-address", "0.0.0.0", "--secure-port", API_PORT,
            "--advertise-address", self.node_ip,
            "--cert-dir", self.state / "certs",
            "--token-auth-file", self.state / "tokens.csv",
            "--authorization-mode", "RBAC",
            "--service-cluster-ip-range", "198.19.0.0/16",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", self.state / "sa.pub",
            "--service-account-signing-key-file", self.state / "sa.key",
            # No kubelet, no controller manager: nothing mints service-account tokens for pods.
            "--disable-admission-plugins", "ServiceAccount",
            "--enable-priority-and-fairness=false",
            "--profiling=false", "-v", "1"], self.state / "kube-apiserver.log").start()
        self.procs.append(api)
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "mesh",
            "clusters": [{"name": "mesh", "cluster": {"server": f"https://127.0.0.1:{API_PORT}",
                                                      "insecure-skip-tls-verify": True}}],
            "users": [{"name": "mesh-admin", "user": {"token": self.token}}],
            "contexts": [{"name": "mesh", "context": {"cluster": "mesh", "user": "mesh-admin"}}]}))
        wait_for("kube-apiserver /readyz", self._ready, 120, procs=self.procs)

    def _ready(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request(f"https://127.0.0.1:{API_PORT}/readyz",
                                     headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=3, context=ctx) as r:
                return r.status == 200
        except OSError:
            return False

    def check(self):
        for p in self.procs:
            p.check()

    def down(self):
        for p in reversed(self.procs):
            p.stop()

    # ---- kubectl --------------------------------------------------------------------
    def kubectl(self, *args, stdin=None, what=None, timeout=120):
        argv = [self.bin / "kubectl", "--kubeconfig", self.kubeconfig, *args]
        return run(argv, what or f"kubectl {' '.join(map(str, args))}", timeout=timeout, input=stdin)

    def apply(self, objects, what="apply objects"):
        """Server-side apply of a list of objects (dicts), as `kubectl apply --server-side`."""
        text = yaml.safe_dump_all(objects, sort_keys=False)
        return self.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager", "mesh-harness",
                            "-f", "-", stdin=text, what=what)

    def get_json(self, *args):
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def wait_crds(self, timeout=120):
        """Every CRD Established (polled: `kubectl wait` fails outright on a CRD whose status has
        no conditions yet)."""
        def established():
            items = self.get_json("crd")["items"]
            return items and all(any(c.get("type") == "Established" and c.get("status") == "True"
                                     for c in (i.get("status") or {}).get("conditions") or []) for i in items)
        wait_for("CRDs established", established, timeout, procs=self.procs, interval=0.5)

    # ---- what a kubelet and the endpoint-slice controller would write ---------------------
    def set_pod_running(self, namespace, name, ip, node_ip, containers):
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = {"status": {
            "containerStatuses": [{"name": c["name"], "image": c["image"], "imageID": "", "ready": True,
                                   "started": True, "restartCount": 0, "state": {"running": {"startedAt": now}}}
                                  for c in containers],
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": node_ip,
            "hostIPs": [{"ip": node_ip}], "startTime": now,
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                           for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]}}
        self.kubectl("patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge",
                     "-p", json.dumps(status), what=f"status of pod {namespace}/{name}")


def endpoint_slice(service, namespace, ports, pods, headless):
    """The EndpointSlice the controller would make for `service` selecting `pods`
    [(name, ip, hostname)]; `ports` [(name, port)]."""
    endpoints = []
    for name, ip, hostname in pods:
        ep = {"addresses": [ip], "conditions": {"ready": True, "serving": True, "terminating": False},
              "nodeName": "node-0", "targetRef": {"kind": "Pod", "namespace": namespace, "name": name}}
        if headless and hostname:
            ep["hostname"] = hostname
        endpoints.append(ep)
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{service}-mesh", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service,
                                    "endpointslice.kubernetes.io/managed-by": "mesh-harness.kafka-identity"}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports]}

