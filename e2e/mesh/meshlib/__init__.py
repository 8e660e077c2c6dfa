"""The containerless Istio mesh of e2e/mesh: network namespaces as pods, a real Kubernetes API
server, real istiod, pilot-agent and Envoy sidecars, and a Kafka cluster of three brokers.

Modules: `procs` (processes and their logs), `network` (namespaces, bridge, addresses),
`kube` (etcd, kube-apiserver, kubectl, objects), `istio` (istiod, sidecars), `kafka` (brokers,
admin), `topology` (which pods exist), `mesh` (puts it all together), `ambient` (the waypoint
pass: waypoint, HBONE clients standing in for ztunnel, brokers behind the waypoint).
"""
