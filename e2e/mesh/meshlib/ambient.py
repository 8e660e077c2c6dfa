"""Ambient mode on the mesh: the filter in a waypoint instead of the brokers' sidecars.

    ambient client pod ──(iptables)──> hbone-client Envoy ══ HBONE (mTLS 1.3, client's cert) ══>
      waypoint (pilot-agent proxy waypoint + Envoy): connect_terminate → main_internal
        → 9092 chain: kafka_identity (waypoint mode) → tcp_proxy
      ══ HBONE (waypoint's cert) ══> broker sidecar with HBONE listening: RBAC admits only the
        waypoint's identity on 9092 → Kafka broker

What runs as in a real cluster: istiod (ambient enabled) generating the waypoint's whole
configuration from the Gateway, the labelled Services and our WasmPlugin
(deploy/istio/overlays/ambient-waypoint applied with kubectl apply -k), pilot-agent in waypoint
mode, the brokers' advertised listeners from the overlay's broker.properties.

What stands in for what is not available here (ztunnel is not published in any registry this
project reaches; there is no CNI or kubelet):
- ztunnel on the client side: an upstream Envoy per client pod (`HboneClient`), configured as an
  HBONE client: traffic to a Service VIP goes to the waypoint as ztunnel sends traffic for a
  Service with a waypoint (CONNECT to VIP:port), traffic to a pod IP goes straight to that
  pod's HBONE port 15008 (as ztunnel does for a pod without a waypoint); the app's traffic is
  captured by iptables in the pod, as istio-cni redirects it to ztunnel.
- ztunnel on the brokers' side: the brokers' sidecars, listening for HBONE
  (ISTIO_META_ENABLE_HBONE, label networking.istio.io/tunnel=http). They terminate the
  waypoint's tunnel and enforce the brokers' L4 AuthorizationPolicy on the tunnel peer's
  identity, which ztunnel would do.
- Istio's waypoint deployment controller: the harness runs the waypoint in a pod of its own
  with its Service and writes the Gateway's status address.

Compatibility changes for upstream Envoy, kept here and never in deploy/ (see
/work/shared/notes/istio-ambient-waypoint.md and docs/deploy.md):
- a bootstrap template without the `metadata_discovery` extension (Istio's proxy build only);
- EnvoyFilters removing the peer-metadata HTTP filters istiod always generates for HBONE
  listeners (the waypoint's, the brokers' sidecars'), and PEER_METADATA_DISCOVERY=false for the
  broker sidecars;
- the waypoint and, during the pass, the brokers' sidecars announce Istio 1.29.1: from 1.29.2 on
  istiod types the filter state of HBONE termination (`io.istio.peer_principal`,
  `io.istio.connect_authority`) `istio.hashable_string`, which only Istio's proxy build
  registers.
"""

import json
import os
import re
import shutil
import time

import yaml

from . import topology
from .istio import PROXY_UID, Sidecar
from .kafka import broker_properties
from .kube import endpoint_slice
from .network import NODE_IP, POD_NET, SERVICE_NET
from .procs import MeshError, Proc, run, wait_for
from .topology import KAFKA_NS, REPO, Pod, Service

OVERLAY = REPO / "deploy" / "istio" / "overlays" / "ambient-waypoint"
ISSUE_CERT = REPO / "e2e" / "local" / "issue_cert.py"
WAYPOINT = "kafka-waypoint"            # Gateway, its Service and service account (Istio names them alike)
WAYPOINT_ID = f"spiffe://cluster.local/ns/{KAFKA_NS}/sa/{WAYPOINT}"
HBONE_PORT = 15008
# Below 1.29.2: istiod types io.istio.peer_principal envoy.string (upstream Envoy has no
# istio.hashable_string).
WAYPOINT_ENVOY, WAYPOINT_ISTIO = "1.40.0", "1.29.1"
HBONE_CLIENT_ENVOY = "1.40.0"
HBONE_CLIENT_PORT = 15001              # where iptables sends the app's traffic (ztunnel's outbound)
PEER_METADATA_FILTERS = ("waypoint_downstream_peer_metadata", "waypoint_upstream_peer_metadata")
COMPAT_ENVOYFILTER = "mesh-harness-waypoint-compat"
REGISTRY_HOST = f"registry.registry.svc.cluster.local:{topology.REGISTRY_PORT}"


def waypoint_pod(name=WAYPOINT):
    """A pod of the waypoint's Deployment (`name`: another replica's)."""
    # The labels Istio's waypoint Deployment gives its pods (manifests/.../waypoint.yaml);
    # istiod finds the waypoint's workloads by gateway-name.
    labels = {"gateway.networking.k8s.io/gateway-name": WAYPOINT,
              "gateway.networking.k8s.io/gateway-class-name": "istio-waypoint",
              "gateway.istio.io/managed": "istio.io-mesh-controller",
              "istio.io/dataplane-mode": "none", "sidecar.istio.io/inject": "false",
              "service.istio.io/canonical-name": WAYPOINT, "service.istio.io/canonical-revision": "latest"}
    return Pod(name, KAFKA_NS, WAYPOINT, labels, sidecar=False, ports=[HBONE_PORT, 15021, 15020],
               workload=WAYPOINT)


def client_pods():
    """Ambient workloads of the same service accounts as the sidecar clients (so the same
    principals and ACLs): no sidecar, traffic captured for the node's ztunnel."""
    return [Pod(f"amb-{sa}", "apps", sa, {"app": f"{sa}-ambient", "istio.io/dataplane-mode": "ambient"},
                sidecar=False)
            for sa in ("producer", "consumer")]


def overlay_services():
    """The Services of the overlay (services.yaml), as the harness needs them for names."""
    docs = yaml.safe_load_all((OVERLAY / "services.yaml").read_text())
    return [Service(d["metadata"]["name"], d["metadata"]["namespace"],
                    [(p["name"], p["port"]) for p in d["spec"]["ports"]], d["spec"]["selector"])
            for d in docs if d and d.get("kind") == "Service"]


def broker_settings(pod_name):
    """broker.properties of the overlay as settings, ${POD_NAME} filled in as in server.properties."""
    settings = {}
    for line in (OVERLAY / "broker.properties").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise MeshError(f"{OVERLAY / 'broker.properties'}: not key=value: {line!r}")
        settings[key.strip()] = value.strip().replace("${POD_NAME}", pod_name)
    return settings


def compat_envoyfilters():
    """Harness only: removes the peer-metadata HTTP filters istiod always puts into a waypoint
    and into the HBONE listener of a sidecar that accepts HBONE (io.istio.http.peer_metadata,
    in Istio's proxy build only: upstream Envoy refuses the listeners that carry them). Neither
    is in the TCP chains our filter or the brokers' RBAC sit in. Waypoints take policies by
    targetRefs, sidecars by workloadSelector: one EnvoyFilter each."""
    patches = [{"applyTo": "HTTP_FILTER",
                "match": {"listener": {"filterChain": {"filter": {
                    "name": "envoy.filters.network.http_connection_manager", "subFilter": {"name": name}}}}},
                "patch": {"operation": "REMOVE"}} for name in PEER_METADATA_FILTERS]
    attach = {"waypoint": {"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io",
                                           "name": WAYPOINT}]},
              "brokers": {"workloadSelector": {"labels": dict(topology.BROKER_LABELS)}}}
    return [{"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
             "metadata": {"name": f"{COMPAT_ENVOYFILTER}-{who}", "namespace": KAFKA_NS},
             "spec": dict(to, configPatches=patches)} for who, to in attach.items()]


class WaypointProxy(Sidecar):
    """`pilot-agent proxy waypoint` with upstream Envoy: the waypoint Deployment's container."""

    proxy_type = "waypoint"

    def prepare(self, ca_python, issue_cert, ca_state):
        super().prepare(ca_python, issue_cert, ca_state)
        # pilot-agent forces metadata_discovery (istio.workload.BootstrapExtension) for
        # waypoint~ nodes; upstream Envoy exits on it. The same template with it switched off.
        tmpl = self.dir / "var/lib/istio/envoy/envoy_bootstrap_tmpl.json"
        text = tmpl.read_text()
        if ".metadata_discovery" not in text:
            raise MeshError(f"{tmpl}: no metadata_discovery switch to turn off (new bootstrap template?)")
        tmpl.write_text(text.replace(".metadata_discovery", "false"))

    def capture_traffic(self):
        raise MeshError("a waypoint captures no traffic: clients address it over HBONE")

    def env(self, envoy_version, istio_version, extra=None):
        env = super().env(envoy_version, istio_version, extra)
        for sidecar_only in ("ISTIO_META_INTERCEPTION_MODE", "ISTIO_META_APP_CONTAINERS"):
            env.pop(sidecar_only, None)
        env["ISTIO_META_SERVICE_ACCOUNT"] = self.pod.service_account
        return env


class HboneClient:
    """The client side of ztunnel for one pod: an upstream Envoy that carries the pod's TCP
    connections over HBONE (HTTP/2 CONNECT in mTLS, TLS 1.3, the pod's own SPIFFE certificate),
    to the waypoint for Service VIPs and to the destination pod's 15008 for pod IPs. The
    waypoint's addresses come from a file (EDS), rewritten when its replicas change, as ztunnel
    learns the waypoint's ready pods from istiod."""

    def __init__(self, pod, mesh, waypoint_ips):
        self.pod = pod
        self.mesh = mesh
        self.waypoint_ips = list(waypoint_ips)
        self.dir = pod.dir / "hbone-client"
        self.eds_dir = self.dir / "eds"
        self.eds_version = 0
        self.proc = None

    def prepare(self, ca_state):
        certs = self.dir / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        run([self.mesh.python, ISSUE_CERT, "--state", ca_state, self.pod.namespace,
             self.pod.service_account, "--out", certs, "--name", "workload", "--hours", "48"],
            f"certificate for ambient pod {self.pod.name}")
        shutil.copy(ca_state / "ca" / "ca.crt", certs / "root-cert.pem")
        (self.dir / "envoy.json").write_text(json.dumps(self.config(certs), indent=1))
        self.eds_dir.mkdir(exist_ok=True)
        self.set_waypoints(self.waypoint_ips)
        for path in [self.dir, *self.dir.rglob("*")]:
            os.chown(path, PROXY_UID, PROXY_UID)

    def set_waypoints(self, ips):
        """The waypoint's ready pods, as istiod tells ztunnel: Envoy reads the file again when a
        new one is moved into its directory. Connections to a pod no longer listed are not cut;
        new ones go to the pods listed."""
        self.waypoint_ips = list(ips)
        self.eds_version += 1
        assignment = {"version_info": str(self.eds_version), "resources": [{
            "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            "cluster_name": "waypoint",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": ip, "port_value": HBONE_PORT}}}} for ip in self.waypoint_ips]}]}]}
        tmp = self.dir / "waypoint-eds.json.tmp"
        tmp.write_text(json.dumps(assignment))
        os.chown(tmp, PROXY_UID, PROXY_UID)
        os.replace(tmp, self.eds_dir / "waypoint.json")

    def config(self, certs):
        def tls(san_matcher):
            return {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {
                    # HBONE is TLS 1.3 only: the waypoint refuses 1.2 (UNSUPPORTED_PROTOCOL).
                    "tls_params": {"tls_minimum_protocol_version": "TLSv1_3",
                                   "tls_maximum_protocol_version": "TLSv1_3"},
                    "alpn_protocols": ["h2"],
                    "tls_certificates": [{"certificate_chain": {"filename": str(certs / "workload.crt")},
                                          "private_key": {"filename": str(certs / "workload.key")}}],
                    "validation_context": {"trusted_ca": {"filename": str(certs / "root-cert.pem")},
                                           "match_typed_subject_alt_names": [
                                               {"san_type": "URI", "matcher": san_matcher}]}}}}
        h2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}

        def chain(name, net, cluster):
            address, prefix = net.split("/")
            return {"name": name,
                    "filter_chain_match": {"prefix_ranges": [{"address_prefix": address,
                                                              "prefix_len": int(prefix)}]},
                    "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                        "stat_prefix": name, "cluster": cluster,
                        # CONNECT to the original destination (VIP:port or pod IP:port), as ztunnel.
                        "tunneling_config": {"hostname": "%DOWNSTREAM_LOCAL_ADDRESS%"}}}]}

        return {
            "node": {"id": f"hbone-client~{self.pod.ip}~{self.pod.name}.{self.pod.namespace}",
                     "cluster": "hbone-client"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15000}}},
            "static_resources": {
                "listeners": [{
                    "name": "outbound", "address": {"socket_address": {"address": "0.0.0.0",
                                                                       "port_value": HBONE_CLIENT_PORT}},
                    "listener_filters": [{"name": "envoy.filters.listener.original_dst", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"}}],
                    "filter_chains": [chain("to_waypoint", SERVICE_NET, "waypoint"),
                                      chain("to_pod", str(POD_NET), "pod_hbone")]}],
                "clusters": [
                    {"name": "waypoint", "type": "EDS", "connect_timeout": "5s",
                     "eds_cluster_config": {"eds_config": {"resource_api_version": "V3", "path_config_source": {
                         "path": str(self.eds_dir / "waypoint.json"),
                         "watched_directory": {"path": str(self.eds_dir)}}}},
                     # ztunnel checks the waypoint's identity too.
                     "transport_socket": tls({"exact": WAYPOINT_ID}),
                     "typed_extension_protocol_options": h2},
                    {"name": "pod_hbone", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
                     "connect_timeout": "5s", "original_dst_lb_config": {"upstream_port_override": HBONE_PORT},
                     "transport_socket": tls({"prefix": "spiffe://cluster.local/"}),
                     "typed_extension_protocol_options": h2}]}}

    def capture_traffic(self):
        """What istio-cni does for an ambient pod: the app's TCP connections to Service VIPs and
        pod IPs go to the node's ztunnel (here: the pod's hbone-client), never its own."""
        rules = "\n".join([
            "*nat", ":KI_AMBIENT - [0:0]",
            "-A OUTPUT -p tcp -j KI_AMBIENT",
            f"-A KI_AMBIENT -m owner --uid-owner {PROXY_UID} -j RETURN",
            f"-A KI_AMBIENT -d {self.pod.ip}/32 -j RETURN",
            f"-A KI_AMBIENT -d {NODE_IP}/32 -j RETURN",
            f"-A KI_AMBIENT -d {SERVICE_NET} -p tcp -j REDIRECT --to-ports {HBONE_CLIENT_PORT}",
            f"-A KI_AMBIENT -d {POD_NET} -p tcp -j REDIRECT --to-ports {HBONE_CLIENT_PORT}",
            "COMMIT", ""])
        run([*self.pod.exec_prefix(), "iptables-restore"], f"iptables in ambient pod {self.pod.name}",
            input=rules)

    def start(self):
        envoy = self.mesh.envoy_binary(HBONE_CLIENT_ENVOY)
        self.proc = Proc(f"hbone-client of ambient pod {self.pod.name} (Envoy {HBONE_CLIENT_ENVOY})",
                         [*self.pod.exec_prefix(uid=PROXY_UID, cwd=self.dir), envoy, "-c", self.dir / "envoy.json",
                          "--disable-hot-restart", "--log-level", "warning"],
                         self.dir / "envoy.log").start()
        wait_for(f"hbone-client of pod {self.pod.name} ready", self.ready, 60, procs=[self.proc])
        return self

    def ready(self):
        r = self.mesh.exec(self.pod, ["curl", "-sS", "--max-time", "2", "http://127.0.0.1:15000/ready"], check=False)
        return r.returncode == 0 and "LIVE" in r.stdout

    def stats(self):
        r = self.mesh.exec(self.pod, ["curl", "-sS", "--max-time", "5", "http://127.0.0.1:15000/stats"])
        return {k: int(v) for k, _, v in (ln.rpartition(": ") for ln in r.stdout.splitlines())
                if v.strip().isdigit()}

    def stop(self):
        if self.proc:
            self.proc.stop()


class Ambient:
    """Brings the ambient pass up on a running mesh and takes it down again, leaving the mesh
    as the sidecar passes expect it (brokers, their sidecars and the Services as before)."""

    def __init__(self, mesh):
        self.mesh = mesh
        self.waypoint_pod = waypoint_pod()
        self.clients = {}          # pod name -> HboneClient
        self.waypoint = None
        self.replicas = []         # waypoint replicas added by a test (add_replica), beyond the first
        self.services = []         # Services of the overlay, with their VIPs once applied
        self.timings = {}
        self.broker_proxies = {}   # broker pod -> (Envoy, Istio) of its sidecar before the pass
        self.overlay_dirs = []     # the overlays applied (user copies), for down()
        self.oci_digest = None
        self.changed = {}          # what up() has changed so far, for down() after a failure

    def _timed(self, name, fn, *args):
        t0 = time.monotonic()
        result = fn(*args)
        self.timings[name] = round(time.monotonic() - t0, 1)
        return result

    # ---- bring-up ---------------------------------------------------------------------
    def up(self, oci_digest):
        m = self.mesh
        m.teardown_hooks.append(self.stop_processes)
        self._timed("ambient pods", self._pods)
        for applied in list(m.applied):       # the brokers' sidecars must not run the filter
            m.delete_kustomization(applied)
        self.oci_digest = oci_digest
        self._timed("overlay applied", self._apply)
        self.changed["sidecars"] = True
        self._timed("broker sidecars with HBONE", self._broker_sidecars, True)
        self.changed["brokers"] = True
        self._timed("brokers advertising their Services", self._restart_brokers, True)
        self._timed("waypoint", self._waypoint)
        self._timed("hbone clients", self._hbone_clients)

    def _add_pods(self, pods):
        m = self.mesh
        for pod in pods:
            pod.ip = m.net.add_pod(pod.name)
            pod.netns = m.net.ns_of(pod.name)
            pod.dir = m.state / "pods" / pod.name
            (pod.dir / "varlib").mkdir(parents=True, exist_ok=True)
            (pod.dir / "resolv.conf").write_text(topology.RESOLV_CONF)
            m.pods[pod.name] = pod

    def _pods(self):
        m = self.mesh
        pods = [self.waypoint_pod, *client_pods()]
        self._add_pods(pods)
        objects = [{"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": WAYPOINT, "namespace": KAFKA_NS}}]
        pod_objects = {p.name: topology.pod_object(p) for p in pods}
        for p in pods[1:]:
            # What istio-cni marks on a pod it has redirected to ztunnel.
            pod_objects[p.name]["metadata"]["annotations"]["ambient.istio.io/redirection"] = "enabled"
        objects += pod_objects.values()
        # The waypoint's Service, as Istio's deployment controller would create it.
        objects.append({"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": WAYPOINT, "namespace": KAFKA_NS,
                                     "labels": {"gateway.networking.k8s.io/gateway-name": WAYPOINT,
                                                "gateway.networking.k8s.io/gateway-class-name": "istio-waypoint"}},
                        "spec": {"selector": {"gateway.networking.k8s.io/gateway-name": WAYPOINT},
                                 "ports": [{"name": "status-port", "port": 15021, "protocol": "TCP",
                                            "appProtocol": "tcp"},
                                           {"name": "mesh", "port": HBONE_PORT, "protocol": "TCP",
                                            "appProtocol": "all"}]}})
        m.kube.apply(objects, "ambient pods, the waypoint's service account and Service")
        for p in pods:
            m.kube.set_pod_running(p.namespace, p.name, p.ip, NODE_IP, pod_objects[p.name]["spec"]["containers"])
        self._waypoint_endpoints([self.waypoint_pod])

    def _waypoint_endpoints(self, pods):
        """The waypoint Service's ready pods: its EndpointSlice (what the endpoint-slice
        controller writes once the kubelet reports them ready) and what the ambient pods'
        ztunnel stand-ins send to."""
        self.mesh.kube.apply([endpoint_slice(WAYPOINT, KAFKA_NS, [("status-port", 15021), ("mesh", HBONE_PORT)],
                                             [(p.name, p.ip, None) for p in pods], False)],
                             "EndpointSlice of the waypoint")
        for hc in self.clients.values():
            hc.set_waypoints([p.ip for p in pods])

    def apply_overlay(self, name):
        """A user's own copy of deploy/istio/overlays/<name> with the WasmPlugin's url and sha256
        set to the harness registry's image, applied with kubectl apply -k."""
        d = self.mesh.oci_overlay(self.oci_digest, base=name)
        self.mesh.apply_kustomization(d)
        if d not in self.overlay_dirs:
            self.overlay_dirs.append(d)

    def _apply(self):
        m = self.mesh
        self.apply_overlay("ambient-waypoint")
        m.kube.apply(compat_envoyfilters(), "EnvoyFilters (harness only): HBONE listeners for upstream Envoy")
        # What the endpoint-slice controller would write for the per-broker Services.
        self.services = overlay_services()
        slices = []
        for svc in self.services:
            svc.cluster_ip = m.kube.get_json("service", svc.name, "-n", svc.namespace)["spec"]["clusterIP"]
            selected = [(p.name, p.ip, None) for p in m.broker_pods()
                        if all(p.labels.get(k) == v for k, v in svc.selector.items())]
            if svc.name != "kafka":        # the bootstrap Service has its slice since start-up
                slices.append(endpoint_slice(svc.name, svc.namespace, svc.ports, selected, False))
        m.kube.apply(slices, "EndpointSlices of the per-broker Services")
        self._write_hosts(with_ambient=True)
        self._gateway_status()

    def _write_hosts(self, with_ambient):
        """Every pod's /etc/hosts as cluster DNS would answer: now with the per-broker Services."""
        m = self.mesh
        services = list(m.services)
        if with_ambient:
            wp_svc = Service(WAYPOINT, KAFKA_NS, [("mesh", HBONE_PORT)], {})
            wp_svc.cluster_ip = m.kube.get_json("service", WAYPOINT, "-n", KAFKA_NS)["spec"]["clusterIP"]
            services += [s for s in self.services if s.name != "kafka"] + [wp_svc]
        hosts = topology.hosts_file(list(m.pods.values()), services)
        for pod in m.pods.values():
            tmp = pod.dir / "hosts.tmp"
            tmp.write_text(hosts)
            os.replace(tmp, pod.dir / "hosts")

    def _gateway_status(self):
        """The status Istio's controller writes once the waypoint has a ready pod: its address.
        istiod binds Services to the waypoint through it."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        gw = self.mesh.kube.get_json("gateway", WAYPOINT, "-n", KAFKA_NS)
        cond = [{"type": t, "status": "True", "reason": t, "message": "mesh harness", "lastTransitionTime": now,
                 "observedGeneration": gw["metadata"].get("generation", 1)} for t in ("Accepted", "Programmed")]
        status = {"status": {"addresses": [{"type": "Hostname",
                                            "value": f"{WAYPOINT}.{KAFKA_NS}.svc.cluster.local"}],
                             "conditions": cond}}
        self.mesh.kube.kubectl("patch", "gateway", WAYPOINT, "-n", KAFKA_NS, "--subresource=status", "--type=merge",
                               "-p", json.dumps(status), what="status of Gateway kafka-waypoint")

    def _broker_sidecars(self, hbone):
        """Broker sidecars that accept HBONE (on) or not (off), with the pod label istiod reads to
        send HBONE to them."""
        m = self.mesh
        names = [p.name for p in m.broker_pods()]
        label = "networking.istio.io/tunnel=http" if hbone else "networking.istio.io/tunnel-"
        m.kube.kubectl("label", "pod", "-n", KAFKA_NS, "--overwrite", *names, label, what=f"label {label}")
        for name in names:
            sc = m.sidecars[name]
            extra = {"WASM_INSECURE_REGISTRIES": REGISTRY_HOST}
            if hbone:
                self.broker_proxies[name] = (sc.envoy_version, sc.istio_version)
                envoy, istio = sc.envoy_version, WAYPOINT_ISTIO
                # HBONE listening; pilot-agent would then also switch on metadata_discovery
                # (Istio's proxy build only): off, as in the waypoint's bootstrap. Istio below
                # 1.29.2, as the waypoint: connect_authority's filter state typed envoy.string.
                extra.update(ISTIO_META_ENABLE_HBONE="true", PEER_METADATA_DISCOVERY="false")
            else:
                envoy, istio = self.broker_proxies.get(name, (sc.envoy_version, sc.istio_version))
            sc.stop()
            sc.start(envoy, istio, extra)
        for name in names:
            m.sidecars[name].wait_ready()
            if hbone:
                wait_for(f"HBONE listener (connect_terminate) in the sidecar of {name}",
                         lambda n=name: "connect_terminate" in m.sidecars[n].admin("listeners"), 60,
                         procs=[m.sidecars[name].proc])

    def _restart_brokers(self, ambient):
        """Rolls the brokers, one at a time as in a real cluster (the other two keep the KRaft
        quorum, so each controlled shut-down is quick), with (or without) the overlay's
        broker.properties."""
        m = self.mesh
        for b in m.brokers:
            extra = broker_settings(b.pod.name) if ambient else None
            (b.dir / "server.properties").write_text(broker_properties(b.index, b.dir / "data", extra))
            b.stop()
            b.start()
            b.wait_started()
        wait_for("the brokers' metadata to show all three", m._three_brokers, 120,
                 procs=[b.proc for b in m.brokers])
        # A restart moves partition leadership; the passes expect every broker to lead a
        # partition of the topic, as before. Preferred leaders once they have caught up.
        deadline = time.monotonic() + 90
        while left := m.admin({"op": "elect_preferred"})[0]:
            if time.monotonic() > deadline:
                raise MeshError(f"partitions without their preferred leader 90 s after the restart: {left}")
            for b in m.brokers:
                b.proc.check()
            time.sleep(2)

    def _waypoint(self):
        m = self.mesh
        wp = WaypointProxy(self.waypoint_pod, m)
        wp.prepare(m.python, REPO / "e2e" / "local" / "issue_cert.py", m.state / "ca-state")
        self.waypoint = wp
        m.extra_logs["waypoint"] = wp.pod.dir / f"waypoint-{WAYPOINT_ENVOY}.log"
        self.start_waypoint(wp, wait_filter=False)

    def start_waypoint(self, wp, wait_filter=True):
        """Starts a waypoint replica's pilot-agent and Envoy (again, after a crash: its OCI
        cache is kept, as in a restarted container); with `wait_filter`, until its 9092 chains
        run our filter with its module."""
        # pilot-agent pulls the WasmPlugin's image from the harness's plain-HTTP registry.
        wp.start(WAYPOINT_ENVOY, WAYPOINT_ISTIO, {"WASM_INSECURE_REGISTRIES": REGISTRY_HOST})
        wp.wait_ready()
        if wait_filter:
            wait_for(f"our filter with its module in the 9092 chains of {wp.pod.name}",
                     lambda: filter_loaded(wp), 120, procs=[wp.proc])

    def waypoints(self):
        """{pod name: WaypointProxy} of every replica running."""
        return {wp.pod.name: wp for wp in [self.waypoint, *self.replicas] if wp}

    def add_replica(self, name):
        """A second pod of the waypoint's Deployment (as `kubectl scale` would make): its own
        certificate of the waypoint's service account, its own pilot-agent and Envoy; the
        clients send to both once it runs the filter."""
        m = self.mesh
        pod = waypoint_pod(name)
        self._add_pods([pod])
        self._write_hosts(with_ambient=True)     # its /etc/hosts (pod-exec mounts it), others' with its name
        obj = topology.pod_object(pod)
        m.kube.apply([obj], f"waypoint replica {name}")
        m.kube.set_pod_running(pod.namespace, pod.name, pod.ip, NODE_IP, obj["spec"]["containers"])
        wp = WaypointProxy(pod, m)
        wp.prepare(m.python, ISSUE_CERT, m.state / "ca-state")
        self.replicas.append(wp)
        m.extra_logs[f"waypoint {name}"] = pod.dir / f"waypoint-{WAYPOINT_ENVOY}.log"
        self.start_waypoint(wp)
        self._waypoint_endpoints([w.pod for w in self.waypoints().values()])
        return wp

    def mark_gone(self, wp):
        """A replica whose pod is gone (killed, not restarted): out of the endpoints, as once
        the kubelet reports it not ready."""
        self._waypoint_endpoints([w.pod for w in self.waypoints().values() if w is not wp])

    def mark_ready(self):
        """Every replica running is in the endpoints again (a restarted pod ready again)."""
        self._waypoint_endpoints([w.pod for w in self.waypoints().values()])

    def remove_replica(self, wp):
        """Scales the waypoint back: the replica stopped, its pod deleted."""
        wp.stop()
        self.replicas = [w for w in self.replicas if w is not wp]
        self._waypoint_endpoints([w.pod for w in self.waypoints().values()])
        self.mesh.kube.kubectl("delete", "pod", "-n", KAFKA_NS, wp.pod.name, "--ignore-not-found", "--wait=false",
                               what=f"delete waypoint replica {wp.pod.name}")

    def _hbone_clients(self):
        m = self.mesh
        for pod in client_pods():
            pod = m.pods[pod.name]
            hc = HboneClient(pod, m, [self.waypoint_pod.ip])
            hc.prepare(m.state / "ca-state")
            hc.capture_traffic()
            m.extra_logs[f"hbone-client {pod.name}"] = hc.dir / "envoy.log"
            self.clients[pod.name] = hc.start()

    # ---- take-down ------------------------------------------------------------------------
    def stop_processes(self):
        for hc in self.clients.values():
            hc.stop()
        for wp in self.waypoints().values():
            wp.stop()

    def down(self):
        """Back to sidecar mode: no waypoint, broker sidecars without HBONE, brokers advertising
        their headless names, the bootstrap Service without the waypoint label. Every step is
        tried even if one before it failed (a half-restored mesh fails every later pass)."""
        errors = []

        def step(name, fn, *args):
            t0 = time.monotonic()
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - go on restoring, report at the end
                errors.append(f"{name}: {e}")
            self.timings[name] = round(time.monotonic() - t0, 1)

        step("ambient processes stopped", self.stop_processes)
        if self.changed.get("sidecars"):
            # Before the compatibility EnvoyFilters go: HBONE sidecars need them.
            step("broker sidecars without HBONE", self._broker_sidecars, False)
        step("ambient configuration removed", self._unapply)
        step("hosts files", self._write_hosts, False)
        if self.changed.get("brokers"):
            step("brokers back to headless names", self._restart_brokers, False)
        if errors:
            raise MeshError("restoring sidecar mode after the ambient pass: " + "; ".join(errors))

    def _unapply(self):
        m = self.mesh
        m.kube.kubectl("delete", "envoyfilter", "-n", KAFKA_NS, "--ignore-not-found",
                       *(f["metadata"]["name"] for f in compat_envoyfilters()))
        for d in reversed(self.overlay_dirs):
            # Everything of the overlay but the bootstrap Service, which only loses its label
            # (services.yaml: `kubectl delete -k` would delete it).
            rendered = m.kube.kubectl("kustomize", d)
            drop = [o for o in yaml.safe_load_all(rendered)
                    if o and not (o["kind"] == "Service" and o["metadata"]["name"] == "kafka")]
            m.kube.kubectl("delete", "--ignore-not-found", "-f", "-", stdin=yaml.safe_dump_all(drop),
                           what=f"delete {d} (but Service kafka)")
            m.applied = [p for p in m.applied if p != d]
        if self.overlay_dirs:
            m.kube.kubectl("label", "service", "kafka", "-n", KAFKA_NS, "istio.io/use-waypoint-",
                           what="remove the waypoint label from Service kafka")
        self.overlay_dirs = []


def filter_loaded(waypoint):
    """Whether our filter, with its module (not the deny-all stand-in pilot-agent puts there
    until it has fetched it), is in the waypoint's 9092 chain of every Kafka Service."""
    chains = waypoint_chains(waypoint)
    dump = json.loads(waypoint.admin("config_dump?resource=ecds_filters"))
    ecds = [i.get("ecds_filter", {}) for i in dump.get("configs", [])]
    ours = [e for e in ecds if re.search(r"kafka[_-]identity", e.get("name", ""))]
    services = [f"{n}.{KAFKA_NS}.svc.cluster.local" for n in ("kafka", *(topology.broker_name(i)
                                                                         for i in range(topology.BROKERS)))]
    return (all(any(re.search(r"kafka[_-]identity", f) for f in chains.get(s, [])) for s in services)
            and ours and all("wasm" in str(e.get("typed_config", {}).get("@type", "")) for e in ours))


def waypoint_chains(waypoint, port=topology.CLIENT_PORT):
    """Filter names of each TCP chain of the waypoint's main_internal listener for `port`, by
    chain name (inbound-vip|<port>|tcp|<service host>)."""
    dump = json.loads(waypoint.admin("config_dump?resource=dynamic_listeners"))
    chains = {}
    for item in dump.get("configs", []):
        listener = item.get("active_state", {}).get("listener", {})
        if listener.get("name") != "main_internal":
            continue
        for fc in listener.get("filter_chains", []):
            name = fc.get("name", "")
            if re.match(rf"^inbound-vip\|{port}\|tcp\|", name):
                chains[name.rsplit("|", 1)[1]] = [f["name"] for f in fc.get("filters", [])]
    return chains

