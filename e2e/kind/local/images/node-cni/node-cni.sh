#!/bin/sh
# The default CNI of the kind node image built here. kind's own, kindnetd, is built from a Go
# module the module proxy does not serve (sigs.k8s.io/kind/images/kindnetd and
# github.com/aojea/kindnet answer 404/403), so the node image installs the same CNI setup kindnetd
# writes, with the standard plugins from Debian's containernetworking-plugins:
#   - ptp + host-local on this node's spec.podCIDR (kindnetd's choice of plugins), with
#     ipMasq so that pods reach addresses outside the pod network (the e2e's registry);
#   - portmap for hostPort;
#   - a route to every other node's podCIDR via that node's InternalIP, kept up to date.
# What kindnetd does beyond this (network policies, IPv6, its own masquerade agent) is not here.
# Runs as a DaemonSet on the host network; CONTROL_PLANE_ENDPOINT is set by kind (the manifest
# asks it to be patched in) because the API server's Service needs kube-proxy, which may not
# have programmed the node yet.
set -eu

NET_D=${CNI_NET_DIR:-/etc/cni/net.d}
CONF="${NET_D}/10-node-cni.conflist"
SA=/var/run/secrets/kubernetes.io/serviceaccount
API="https://${CONTROL_PLANE_ENDPOINT:-${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT}}"
: "${NODE_NAME:?NODE_NAME must be set (downward API spec.nodeName)}"

api() { curl -fsS --max-time 10 --cacert "${SA}/ca.crt" -H "Authorization: Bearer $(cat "${SA}/token")" "${API}$1"; }

cidr=""
while [ -z "${cidr}" ]; do
  cidr=$(api "/api/v1/nodes/${NODE_NAME}" | jq -r '.spec.podCIDR // empty') || cidr=""
  [ -n "${cidr}" ] || { echo "node-cni: waiting for ${NODE_NAME}'s podCIDR"; sleep 2; }
done
mkdir -p "${NET_D}"
jq -n --arg cidr "${cidr}" '{
  cniVersion: "0.4.0", name: "node-cni",
  plugins: [
    {type: "ptp", ipMasq: true, mtu: 1500,
     ipam: {type: "host-local", dataDir: "/run/cni-ipam-state",
            routes: [{dst: "0.0.0.0/0"}], ranges: [[{subnet: $cidr}]]}},
    {type: "portmap", capabilities: {portMappings: true}}
  ]}' > "${CONF}.tmp"
mv "${CONF}.tmp" "${CONF}"
echo "node-cni: wrote ${CONF} for ${NODE_NAME} (podCIDR ${cidr})"

while true; do
  api /api/v1/nodes | jq -r --arg me "${NODE_NAME}" '.items[]
      | select(.metadata.name != $me and .spec.podCIDR != null)
      | [.spec.podCIDR, (.status.addresses[] | select(.type == "InternalIP") | .address)] | @tsv' \
    | while IFS="$(printf '\t')" read -r other via; do
        [ -n "${via}" ] && ip route replace "${other}" via "${via}"
      done || echo "node-cni: listing nodes failed; retrying"
  sleep 10
done
