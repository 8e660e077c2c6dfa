"""Putting the filter on the brokers' sidecars: which proxy versions and deliveries exist, and
`deliver`, which leaves exactly one delivery applied and waits until istiod's configuration
with our filter is on every broker. Deliveries are deploy/istio overlays applied with
`kubectl apply -k`, and "helm": the chart deploy/helm/kafka-identity installed with `helm install`
(its TrafficExtension example, oci://)."""

from checks import OUR_FILTER, inbound_chains, wait_until
from meshlib.mesh import REGISTRY_HOST, REPO, ChartRelease
from meshlib.topology import CLIENT_PORT

BOOTSTRAP = f"kafka.kafka.svc.cluster.local:{CLIENT_PORT}"
# proxy -> (Envoy version, Istio version the proxy announces)
PROXIES = {"1.30": ("1.38.2", "1.30.3"), "1.31": ("1.40.0", "1.31.0")}
DELIVERIES = ("envoyfilter", "wasmplugin-file", "wasmplugin-oci", "helm")
# Istio 1.30+'s TrafficExtension API (deploy/istio/overlays/trafficextension-*): run on the 1.31 proxies.
TRAFFICEXTENSION_DELIVERIES = ("trafficextension-file", "trafficextension-oci")
HELM_VALUES = REPO / "deploy" / "helm" / "kafka-identity" / "examples" / "trafficextension-oci.yaml"


def oci_digest(mesh):
    if not getattr(mesh, "oci_digest", None):
        mesh.oci_digest = mesh.push_wasm_image()
    return mesh.oci_digest


def overlay_dir(mesh, delivery, plugin_config=None):
    if delivery == "helm":
        return ChartRelease("kafka-identity")
    if delivery.endswith("-oci"):
        return mesh.oci_overlay(oci_digest(mesh), plugin_config, base=delivery)
    if plugin_config:
        raise ValueError("only the oci delivery takes a pluginConfig patch here")
    return REPO / "deploy" / "istio" / "overlays" / delivery


def our_chain_ok(filters):
    return len(filters) >= 2 and filters[-1] == "envoy.filters.network.tcp_proxy" and OUR_FILTER.search(filters[-2])


def deliver(mesh, proxy, delivery, plugin_config=None):
    """Broker sidecars on `proxy`, exactly one delivery applied, and every broker's 9092 chain
    carrying our filter."""
    envoy, istio = PROXIES[proxy]
    brokers = [p.name for p in mesh.broker_pods()]
    if mesh.sidecars[brokers[0]].envoy_version != envoy:
        mesh.restart_sidecars(brokers, envoy, istio)
    target = overlay_dir(mesh, delivery, plugin_config)
    for applied in list(mesh.applied):
        if applied != target:
            mesh.delete_kustomization(applied)
    if delivery == "helm":
        # The image pushed to the mesh's registry; deploy/kafka's AuthorizationPolicy is there
        # from the start (the chart would render the same one), so the chart leaves it out.
        mesh.install_chart(HELM_VALUES, {
            "wasm.url": f"oci://{REGISTRY_HOST}/kafka-identity/kafka-identity-wasm:mesh",
            "wasm.sha256": oci_digest(mesh), "mesh.internalListenersPolicy": "false"})
    else:
        if not delivery.endswith("-oci"):
            mesh.publish_wasm_configmap()
        mesh.apply_kustomization(target)
    for name in brokers:
        wait_until(f"our filter in the 9092 chain of {name} ({delivery}, Istio {istio})",
                   lambda n=name: any(our_chain_ok(c["filters"]) for c in inbound_chains(mesh.sidecars[n])),
                   timeout=120)
