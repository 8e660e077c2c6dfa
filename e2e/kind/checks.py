#!/usr/bin/env python3
"""What e2e/kind/run reads out of Envoy, Prometheus and the clients (standard library only).

  checks.py chain PORT < config_dump.json
      The broker sidecar's inbound filter chain for PORT (mTLS), one filter per line; exit 0 if
      kafka_identity is the filter right before tcp_proxy, 1 if not, 2 if there is no such chain.
  checks.py metric NAME < prometheus.txt
      The sum of NAME's samples (every label set); exit 2 if NAME is not in the scrape.
  checks.py records PRODUCER_LOG EXPECTED < consumed.txt
      PRODUCER_LOG is the output of Kafka's VerifiableProducer (one JSON event per line): the
      records the broker acknowledged (producer_send_success) and the sends that failed. Compares
      them with the records a consumer read (the values PREFIX.N of that producer): prints sent
      errors, acknowledged, read, distinct, lost (acknowledged, not read), duplicated, unexpected
      (read, never acknowledged) and checksums of both sets; exit 0 only if all EXPECTED records
      were acknowledged without a failed send and each was read exactly once.
"""
import hashlib
import json
import sys

OURS = ("kafka_identity", "kafka-identity")


def usage():
    sys.stderr.write(__doc__)
    sys.exit(64)


def filter_label(f):
    """A filter's name, plus where its configuration comes from (ECDS for WasmPlugins)."""
    name = f.get("name", "?")
    discovery = f.get("config_discovery")
    if discovery:
        return f"{name} (ECDS)"
    return name


def is_ours(f):
    text = json.dumps(f)
    return any(o in text for o in OURS)


def inbound_chain(dump, port):
    for config in dump.get("configs", []):
        if not config.get("@type", "").endswith("ListenersConfigDump"):
            continue
        for dynamic in config.get("dynamic_listeners", []):
            listener = (dynamic.get("active_state") or {}).get("listener") or {}
            if listener.get("name") != "virtualInbound":
                continue
            for chain in listener.get("filter_chains", []):
                match = chain.get("filter_chain_match") or {}
                if match.get("destination_port") == port and match.get("transport_protocol") == "tls":
                    return chain.get("filters", [])
    return None


def cmd_chain(args):
    if len(args) != 1:
        usage()
    port = int(args[0])
    filters = inbound_chain(json.load(sys.stdin), port)
    if filters is None:
        print(f"no mTLS filter chain for port {port} in virtualInbound")
        return 2
    for f in filters:
        print(filter_label(f))
    names = [f.get("name", "") for f in filters]
    if "envoy.filters.network.tcp_proxy" not in names:
        return 1
    i = names.index("envoy.filters.network.tcp_proxy")
    return 0 if i > 0 and is_ours(filters[i - 1]) else 1


def cmd_metric(args):
    if len(args) != 1:
        usage()
    name = args[0]
    total, seen = 0.0, False
    for line in sys.stdin:
        if line.startswith("#") or not line.strip():
            continue
        metric = line.split("{", 1)[0].split(" ", 1)[0]
        if metric != name:
            continue
        seen = True
        total += float(line.rsplit(" ", 1)[1])
    if not seen:
        print(f"{name} is not in the scrape")
        return 2
    print(int(total) if total.is_integer() else total)
    return 0


def digest(records):
    return hashlib.sha256("\n".join(sorted(records)).encode()).hexdigest()[:16]


def cmd_records(args):
    if len(args) != 2:
        usage()
    log_path, expected_count = args[0], int(args[1])
    acked, errors = [], 0
    with open(log_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("name") == "producer_send_success":
                acked.append(str(event.get("value")))
            elif event.get("name") == "producer_send_error":
                errors += 1
    prefixes = {a.split(".", 1)[0] for a in acked}
    acked_set = set(acked)
    read = []
    for line in sys.stdin:
        value = line.strip()
        if "." in value and value.split(".", 1)[0] in prefixes:
            read.append(value)
    distinct = set(read)
    lost = acked_set - distinct
    unexpected = distinct - acked_set
    duplicated = len(read) - len(distinct)
    print(f"send_errors={errors} acknowledged={len(acked_set)}/{expected_count} read={len(read)} "
          f"distinct={len(distinct)} lost={len(lost)} duplicated={duplicated} unexpected={len(unexpected)} "
          f"checksum_read={digest(distinct)} checksum_acknowledged={digest(acked_set)}")
    if lost:
        print("lost: " + " ".join(sorted(lost, key=lambda v: int(v.split(".")[-1]))[:20]))
    ok = (errors == 0 and len(acked_set) == expected_count and len(acked) == expected_count
          and not lost and not unexpected and duplicated == 0)
    return 0 if ok else 1


def main():
    if len(sys.argv) < 2:
        usage()
    commands = {"chain": cmd_chain, "metric": cmd_metric, "records": cmd_records}
    if sys.argv[1] not in commands:
        usage()
    sys.exit(commands[sys.argv[1]](sys.argv[2:]))


if __name__ == "__main__":
    main()
