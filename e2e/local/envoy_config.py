"""Renders the local stack's Envoy configuration from data: the bootstrap (envoy.yaml) and
the filter's extension config for ECDS. Called by e2e/local/lib.sh; JSON is YAML, so the
output needs no YAML library and Envoy reads it as it is.

  envoy_config.py bootstrap --out envoy.yaml --version 1.40.0 ... (see --help)
  envoy_config.py ecds --out kafka-identity-ecds.json --wasm F --filter-config F [--vm-env NAME]...
"""

import argparse
import json
import os
import sys

WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"
NATIVE_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.dynamic_modules.v3."
               "DynamicModuleNetworkFilter")
# Envoy finds the module as lib<name>.so on ENVOY_DYNAMIC_MODULES_SEARCH_PATH (lib.sh sets it).
NATIVE_MODULE = "kafka_identity_native"
TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"


def wasm_filter_config(wasm, filter_config, vm_env, vm_id="kafka_identity"):
    """The Wasm filter's typed_config. VM environment variables are named, never valued:
    `host_env_keys` copies them from Envoy's own environment, so a signing key stays out of
    the configuration (and of /config_dump), and the VM's configuration stays the same
    when the filter's configuration changes."""
    with open(filter_config) as f:
        config = json.load(f)
    vm = {"vm_id": vm_id, "runtime": "envoy.wasm.runtime.v8",
          "code": {"local": {"filename": wasm}}}
    if vm_env:
        vm["environment_variables"] = {"host_env_keys": list(vm_env)}
    return {
        "@type": WASM_TYPE,
        "config": {
            "name": "kafka_identity", "root_id": "kafka_identity", "vm_config": vm,
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                              "value": json.dumps(config, separators=(",", ":"))},
        },
    }


def native_filter_config(filter_config, filter_name="kafka_identity", stat_prefix=None):
    """The dynamic module's typed_config: the same filter configuration JSON as the .wasm's.
    A signing key named in it is read from Envoy's own environment (no VM in between).
    The module keeps one current configuration per `filter_name`, so two filters with
    different configurations in one Envoy need different names; `stat_prefix` replaces the
    configuration's, to keep their counters apart."""
    with open(filter_config) as f:
        config = json.load(f)
    if stat_prefix:
        config["stat_prefix"] = stat_prefix
    return {
        "@type": NATIVE_TYPE,
        "dynamic_module_config": {"name": NATIVE_MODULE},
        "filter_name": filter_name,
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                          "value": json.dumps(config, separators=(",", ":"))},
    }


def our_filter(args):
    """Our filter, inline: the .wasm (`--wasm`) or the dynamic module (`--kind native`)."""
    if args.kind == "native":
        return {"name": "envoy.filters.network.dynamic_modules",
                "typed_config": native_filter_config(args.filter_config)}
    return {"name": "envoy.filters.network.wasm",
            "typed_config": wasm_filter_config(args.wasm, args.filter_config, args.vm_env)}


def tls_socket(certs, ca):
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": TLS_TYPE,
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_certificates": [{
                    "certificate_chain": {"filename": f"{certs}/kafka.kafka.crt"},
                    "private_key": {"filename": f"{certs}/kafka.kafka.key"},
                }],
                "validation_context": {"trusted_ca": {"filename": ca}},
            },
        },
    }


def tcp_proxy(stat_prefix, cluster):
    return {"name": "envoy.filters.network.tcp_proxy",
            "typed_config": {"@type": TCP_PROXY_TYPE, "stat_prefix": stat_prefix, "cluster": cluster}}


def static_cluster(name, host, port, http2=False):
    cluster = {
        "name": name, "type": "STATIC", "connect_timeout": "5s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}]},
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }}
    return cluster


def set_filter_state(event, key, format_string):
    """Envoy's network set_filter_state filter writing one string object at `event`."""
    return {
        "name": "envoy.filters.network.set_filter_state",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.set_filter_state.v3.Config",
            event: [{
                "object_key": key, "factory_key": "envoy.string",
                "format_string": {"text_format_source": {"inline_string": format_string}},
            }],
        },
    }


def peer_cert_filter_state():
    """Envoy 1.37/1.38: the client's PEM into filter state (no connection.peer_certificate)."""
    return set_filter_state("on_downstream_tls_handshake", "kafka_identity.peer_cert", "%DOWNSTREAM_PEER_CERT%")


def waypoint_peer(spiffe_ids):
    """What an ambient waypoint's inner connection carries about its client: Istio's HBONE
    termination writes the tunnel peer's URI SANs into `io.istio.peer_principal` (a string).
    Here a constant, written when the connection opens, so that a filter configured with
    `waypoint` can be tested without a mesh: its identity must come from this, not from the
    TLS certificate the client really presents."""
    return set_filter_state("on_new_connection", "io.istio.peer_principal", spiffe_ids)


def ext_authz():
    """Envoy's network ext_authz against the local authorization server: while a check is
    pending it stops iteration without draining the read buffer."""
    return {
        "name": "envoy.filters.network.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz",
            "stat_prefix": "kafka_authz",
            "transport_api_version": "V3",
            "grpc_service": {"envoy_grpc": {"cluster_name": "ext_authz"}, "timeout": "10s"},
        },
    }


def bench_listener(args, name, port, filters, cluster):
    return {
        "name": name,
        "address": {"socket_address": {"address": args.host, "port_value": port}},
        "filter_chains": [{"transport_socket": tls_socket(args.certs, args.ca),
                           "filters": filters + [tcp_proxy(name, cluster)]}],
    }


def null_filter(args):
    return {"name": "envoy.filters.network.wasm", "typed_config": {
        "@type": WASM_TYPE,
        "config": {
            "name": "null_filter", "root_id": "null_filter",
            "vm_config": {"vm_id": "kafka_identity_null", "runtime": "envoy.wasm.runtime.v8",
                          "code": {"local": {"filename": args.null_wasm}}},
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                              "value": str(args.null_calls)},
        }}}


def bootstrap(args):
    major_minor = ".".join(args.version.split(".")[:2])
    filters = []
    if args.filter != "none":
        sfs = args.peer_cert_filter_state
        if sfs == "1" or (sfs == "auto" and major_minor == "1.38"):
            filters.append(peer_cert_filter_state())
        if args.waypoint_peer:
            filters.append(waypoint_peer(args.waypoint_peer))
        if args.filter == "ecds":
            # Delivered like Istio's WasmPlugin: by extension config discovery (here from a
            # file), so e2e/local/filter-update can change it without touching connections.
            ours = {"name": "kafka_identity", "config_discovery": {
                "config_source": {"path_config_source": {"path": args.ecds_file},
                                  "resource_api_version": "V3"},
                "type_urls": [NATIVE_TYPE if args.kind == "native" else WASM_TYPE]}}
        else:
            ours = our_filter(args)
        # The filter belongs last before tcp_proxy (docs/design.md, "Placement");
        # `--ext-authz after` puts a pausing filter behind it to show why.
        if args.ext_authz == "before":
            filters += [ext_authz(), ours]
        elif args.ext_authz == "after":
            filters += [ours, ext_authz()]
        else:
            filters.append(ours)
    listeners = [{
        "name": "kafka_inbound",
        "address": {"socket_address": {"address": args.host, "port_value": args.envoy_port}},
        "filter_chains": [{"transport_socket": tls_socket(args.certs, args.ca),
                           "filters": filters + [tcp_proxy("kafka_inbound", "kafka_mesh")]}],
    }]
    clusters = [static_cluster("kafka_mesh", args.host, args.mesh_port)]
    if args.bench_plain_port:
        # Benchmark baseline: same TLS settings and certificates, no filter, broker PLAINTEXT.
        listeners.append({
            "name": "kafka_inbound_plain",
            "address": {"socket_address": {"address": args.host, "port_value": args.bench_plain_port}},
            "filter_chains": [{"transport_socket": tls_socket(args.certs, args.ca),
                               "filters": [tcp_proxy("kafka_inbound_plain", "kafka_plain")]}],
        })
        clusters.append(static_cluster("kafka_plain", args.host, args.plaintext_port))
    if args.bench_signed_port:
        # Signed mode for the benchmark: the filter in its own VM, signing with a key from
        # Envoy's environment, to the broker's SIGNED listener (JWKS validator).
        signed = {"name": "envoy.filters.network.wasm",
                  "typed_config": wasm_filter_config(args.signed_wasm, args.signed_filter_config,
                                                     args.signed_vm_env, "kafka_identity_signed")}
        listeners.append(bench_listener(args, "kafka_inbound_signed", args.bench_signed_port,
                                        [signed], "kafka_signed"))
        clusters.append(static_cluster("kafka_signed", args.host, args.signed_port))
    if args.bench_null_port:
        # A Wasm filter that does nothing (bench/null-filter): to a PLAINTEXT listener of its
        # own, and on the next port to MESH (the client does SASL): what any Wasm network
        # filter costs.
        clusters.append(static_cluster("kafka_null_plain", args.host, args.null_plaintext_port))
        for name, port, cluster in [("kafka_inbound_null", args.bench_null_port, "kafka_null_plain"),
                                    ("kafka_inbound_null_sasl", args.bench_null_port + 1, "kafka_mesh")]:
            listeners.append(bench_listener(args, name, port, [null_filter(args)], cluster))
    if args.bench_native_port:
        # The filter as the dynamic module (lib<NATIVE_MODULE>.so), beside the .wasm in the same
        # Envoy: unsecured tokens to a broker listener configured like MESH, and (with
        # --bench-native-signed-port) signing like (s) to one configured like SIGNED. Each has
        # its own broker listener, advertised as its Envoy listener so that clients stay on the
        # path they bootstrapped through, and its own cluster, so its bytes are counted apart.
        for listener, port, name, cfg, cluster, upstream in [
                ("kafka_inbound_native", args.bench_native_port, "kafka_identity_native",
                 args.native_filter_config, "kafka_native", args.native_port),
                ("kafka_inbound_native_signed", args.bench_native_signed_port, "kafka_identity_native_signed",
                 args.signed_filter_config, "kafka_native_signed", args.native_signed_port)]:
            if not port:
                continue
            native = {"name": "envoy.filters.network.dynamic_modules",
                      "typed_config": native_filter_config(cfg, name, name)}
            listeners.append(bench_listener(args, listener, port, [native], cluster))
            clusters.append(static_cluster(cluster, args.host, upstream))
    if args.ext_authz != "none":
        clusters.append(static_cluster("ext_authz", args.host, args.ext_authz_port, http2=True))
    config = {
        "node": {"id": "kafka-identity-e2e", "cluster": "e2e"},
        "admin": {"address": {"socket_address": {"address": args.host, "port_value": args.admin_port}}},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
    header = [
        f"# generated by e2e/local/envoy_config.py (ENVOY_VERSION={args.version}, filter={args.filter}"
        f", kind={args.kind}"
        f", ext_authz={args.ext_authz})",
        "# Shaped like an Istio inbound sidecar listener: mTLS (client cert required) terminated",
        "# here, then [kafka_identity filter] + tcp_proxy to the broker's MESH listener.",
    ]
    return "\n".join(header) + "\n" + json.dumps(config, indent=2) + "\n"


def ecds(args):
    resource = {"@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                "name": "kafka_identity",
                "typed_config": (native_filter_config(args.filter_config) if args.kind == "native"
                                 else wasm_filter_config(args.wasm, args.filter_config, args.vm_env))}
    return json.dumps({"resources": [resource]}, indent=2) + "\n"


def write_atomically(path, text):
    # Envoy reloads a watched path config source when a file is moved over it.
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv):
    parser = argparse.ArgumentParser(prog="envoy_config.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    b = sub.add_parser("bootstrap", help="the Envoy bootstrap (envoy.yaml)")
    b.add_argument("--out", required=True)
    b.add_argument("--version", required=True, help="Envoy version, e.g. 1.40.0")
    b.add_argument("--host", required=True)
    b.add_argument("--envoy-port", type=int, required=True)
    b.add_argument("--admin-port", type=int, required=True)
    b.add_argument("--mesh-port", type=int, required=True)
    b.add_argument("--certs", required=True)
    b.add_argument("--ca", required=True)
    b.add_argument("--filter", choices=["none", "inline", "ecds"], required=True)
    b.add_argument("--kind", choices=["wasm", "native"], default="wasm",
                   help="the .wasm (--wasm) or the dynamic module (lib%s.so)" % NATIVE_MODULE)
    b.add_argument("--wasm")
    b.add_argument("--filter-config")
    b.add_argument("--ecds-file")
    b.add_argument("--vm-env", action="append", default=[], metavar="NAME",
                   help="a VM environment variable taken from Envoy's environment (host_env_keys)")
    b.add_argument("--peer-cert-filter-state", choices=["auto", "0", "1"], default="auto")
    b.add_argument("--waypoint-peer", metavar="SPIFFE_IDS",
                   help="emulate a waypoint: io.istio.peer_principal set to this on every connection")
    b.add_argument("--bench-plain-port", type=int)
    b.add_argument("--plaintext-port", type=int)
    b.add_argument("--bench-signed-port", type=int, help="bench: Envoy listener whose filter signs")
    b.add_argument("--signed-port", type=int, help="bench: the broker's SIGNED listener")
    b.add_argument("--signed-wasm")
    b.add_argument("--signed-filter-config")
    b.add_argument("--signed-vm-env", action="append", default=[], metavar="NAME")
    b.add_argument("--bench-null-port", type=int, help="bench: listeners with a Wasm filter that does nothing")
    b.add_argument("--null-wasm")
    b.add_argument("--null-plaintext-port", type=int, help="bench: the broker's PLAINTEXT listener advertised as (n)")
    b.add_argument("--null-calls", type=int, default=0)
    b.add_argument("--bench-native-port", type=int,
                   help="bench: Envoy listener with the dynamic module (unsecured tokens)")
    b.add_argument("--native-port", type=int, help="bench: the broker's listener behind it (like MESH)")
    b.add_argument("--native-filter-config")
    b.add_argument("--bench-native-signed-port", type=int,
                   help="bench: Envoy listener with the dynamic module signing (--signed-filter-config)")
    b.add_argument("--native-signed-port", type=int, help="bench: the broker's listener behind it (like SIGNED)")
    b.add_argument("--ext-authz", choices=["none", "before", "after"], default="none",
                   help="an ext_authz network filter before or after kafka_identity")
    b.add_argument("--ext-authz-port", type=int)
    e = sub.add_parser("ecds", help="the filter's extension config for ECDS")
    e.add_argument("--out", required=True)
    e.add_argument("--kind", choices=["wasm", "native"], default="wasm")
    e.add_argument("--wasm")
    e.add_argument("--filter-config", required=True)
    e.add_argument("--vm-env", action="append", default=[], metavar="NAME")
    args = parser.parse_args(argv)
    if args.what == "bootstrap":
        if args.filter == "inline" and not ((args.wasm or args.kind == "native") and args.filter_config):
            parser.error("--filter inline needs --filter-config, and --wasm unless --kind native")
        if args.filter == "ecds" and not args.ecds_file:
            parser.error("--filter ecds needs --ecds-file")
        if args.bench_plain_port and not args.plaintext_port:
            parser.error("--bench-plain-port needs --plaintext-port")
        if args.bench_signed_port and not (args.signed_port and args.signed_wasm and args.signed_filter_config
                                           and args.bench_plain_port):
            parser.error("--bench-signed-port needs --signed-port, --signed-wasm, --signed-filter-config")
        if args.bench_null_port and not (args.null_wasm and args.bench_plain_port and args.null_plaintext_port):
            parser.error("--bench-null-port needs --null-wasm, --null-plaintext-port and --bench-plain-port")
        if args.bench_native_port and not (args.native_port and args.native_filter_config and args.bench_plain_port):
            parser.error("--bench-native-port needs --native-port, --native-filter-config and --bench-plain-port")
        if args.bench_native_signed_port and not (args.bench_native_port and args.native_signed_port
                                                  and args.signed_filter_config):
            parser.error("--bench-native-signed-port needs --bench-native-port, --native-signed-port and "
                         "--signed-filter-config")
        if args.ext_authz != "none" and not args.ext_authz_port:
            parser.error("--ext-authz needs --ext-authz-port")
        text = bootstrap(args)
    else:
        if args.kind == "wasm" and not args.wasm:
            parser.error("ecds needs --wasm unless --kind native")
        text = ecds(args)
    write_atomically(args.out, text)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (OSError, ValueError) as exc:
        print(f"envoy_config.py: {exc}", file=sys.stderr)
        sys.exit(1)
