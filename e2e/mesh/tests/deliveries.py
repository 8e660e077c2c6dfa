"""Putting the filter on the brokers' sidecars: which proxy versions and deliveries exist, and
`deliver`, which leaves exactly one delivery applied and waits until istiod's configuration
with our filter is on every broker."""

from checks import OUR_FILTER, inbound_chains, wait_until
from meshlib.mesh import REPO
from meshlib.topology import CLIENT_PORT

BOOTSTRAP = f"kafka.kafka.svc.cluster.local:{CLIENT_PORT}"
# proxy -> (Envoy version, Istio version the proxy announces)
PROXIES = {"1.30": ("1.38.2", "1.30.3"), "1.31": ("1.40.0", "1.31.0")}
DELIVERIES = ("envoyfilter", "wasmplugin-file", "wasmplugin-oci")
# Istio 1.30+'s TrafficExtension API (deploy/istio/overlays/trafficextension-*): run on the 1.31 proxies.
TRAFFICEXTENSION_DELIVERIES = ("trafficextension-file", "trafficextension-oci")


def overlay_dir(mesh, delivery, plugin_config=None):
    if delivery.endswith("-oci"):
        if not getattr(mesh, "oci_digest", None):
            mesh.oci_digest = mesh.push_wasm_image()
        return mesh.oci_overlay(mesh.oci_digest, plugin_config, base=delivery)
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
    if not delivery.endswith("-oci"):
        mesh.publish_wasm_configmap()
    mesh.apply_kustomization(target)
    for name in brokers:
        wait_until(f"our filter in the 9092 chain of {name} ({delivery}, Istio {istio})",
                   lambda n=name: any(our_chain_ok(c["filters"]) for c in inbound_chains(mesh.sidecars[n])),
                   timeout=120)
