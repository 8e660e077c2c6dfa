"""The mesh's network: one namespace of its own with a bridge (the "node"), and one namespace
per pod, wired to the bridge with a veth pair. Addresses come from 198.18.0.0/15, the range
reserved for network tests (RFC 2544): pods in 198.18.0.0/16, Service VIPs in 198.19.0.0/16.
Nothing is added to the machine's own network namespace."""

import ipaddress
import subprocess

from .procs import MeshError, run

POD_NET = ipaddress.ip_network("198.18.0.0/16")
NODE_IP = "198.18.0.1"          # the bridge: control plane addresses pods reach
SERVICE_NET = "198.19.0.0/16"   # kube-apiserver --service-cluster-ip-range


class Network:
    def __init__(self, prefix):
        self.prefix = prefix
        self.node = prefix          # netns of the bridge and the control plane
        self.pods = {}              # pod name -> (netns, ip)
        self._next = 10

    def ns_of(self, pod):
        return self.pods[pod][0]

    def ip_of(self, pod):
        return self.pods[pod][1]

    def _ip(self, *args, what):
        return run(["ip", *args], what)

    def up(self):
        """The node namespace exists already (e2e/mesh/run made it and runs the harness in it)."""
        if self.node not in _existing():
            raise MeshError(f"network namespace {self.node} does not exist: run the harness with e2e/mesh/run")
        n = ["-n", self.node]
        self._ip(*n, "link", "set", "lo", "up", what="mesh loopback")
        self._ip(*n, "link", "add", "br0", "type", "bridge", what="mesh bridge")
        self._ip(*n, "addr", "add", f"{NODE_IP}/{POD_NET.prefixlen}", "dev", "br0", what="bridge address")
        self._ip(*n, "link", "set", "br0", "up", what="bridge up")

    def add_pod(self, name):
        ns = f"{self.prefix}-{name}"
        ip = str(POD_NET.network_address + 256 + self._next)   # 198.18.1.10, .11, ...
        host_if = f"v{self._next}"
        self._next += 1
        self._ip("netns", "add", ns, what=f"pod {name}: network namespace")
        self._ip("-n", self.node, "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns,
                 what=f"pod {name}: veth")
        self._ip("-n", self.node, "link", "set", host_if, "master", "br0", "up", what=f"pod {name}: attach")
        p = ["-n", ns]
        self._ip(*p, "link", "set", "lo", "up", what=f"pod {name}: loopback")
        self._ip(*p, "addr", "add", f"{ip}/{POD_NET.prefixlen}", "dev", "eth0", what=f"pod {name}: address")
        self._ip(*p, "link", "set", "eth0", "up", what=f"pod {name}: eth0 up")
        # Everything else (Service VIPs included) goes to the node, as on a real node.
        self._ip(*p, "route", "add", "default", "via", NODE_IP, what=f"pod {name}: default route")
        self.pods[name] = (ns, ip)
        return ip

    def down(self):
        """Deletes the pods' namespaces (their processes must be stopped first); e2e/mesh/run
        deletes the node's."""
        for ns, _ in self.pods.values():
            if ns in _existing():
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.pods.clear()


def _existing():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}
