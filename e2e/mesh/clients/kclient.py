"""Kafka operations run INSIDE a pod of the mesh (via e2e/mesh/pod-exec), with librdkafka
(confluent-kafka). Clients in sidecar pods speak PLAINTEXT Kafka with no certificate and no
credentials: their sidecar originates Istio mTLS. Admin operations run in a broker pod as the
brokers' super user on the INTERNAL listener. Prints one JSON object on stdout.

    kclient.py produce  BOOTSTRAP TOPIC --count N --prefix P [--partition K] [--timeout S] [--idempotent]
    kclient.py consume  BOOTSTRAP TOPIC --group G --prefix P --want N [--timeout S]
    kclient.py metadata BOOTSTRAP TOPIC
    kclient.py admin    BOOTSTRAP --ops JSON   (as the super user; see admin())
    kclient.py probe    HOST PORT              raw ApiVersions in plaintext: does Kafka answer?
    kclient.py probes   HOST:PORT...           the same for each target
"""

import argparse
import json
import socket
import struct
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   NewTopic, ResourcePatternType, ResourceType)


def plain(bootstrap, **extra):
    conf = {"bootstrap.servers": bootstrap, "security.protocol": "PLAINTEXT"}
    conf.update(extra)
    return conf


def produce(a):
    errors, delivered = [], []
    p = Producer(plain(a.bootstrap, acks="all", **{"message.timeout.ms": int(a.timeout * 1000),
                                                  "enable.idempotence": a.idempotent}))
    for i in range(a.count):
        kwargs = {"partition": a.partition} if a.partition is not None else {}
        p.produce(a.topic, f"{a.prefix}-{i}".encode(), key=str(i).encode(),
                  on_delivery=lambda err, msg: (errors if err else delivered).append(
                      err.name() if err else msg.partition()), **kwargs)
        p.poll(0)
    left = p.flush(a.timeout + 5)
    return {"delivered": len(delivered), "partitions": sorted(set(delivered)), "errors": sorted(set(errors)),
            "undelivered": left}


def consume(a):
    got, errors = [], []
    c = Consumer(plain(a.bootstrap, **{"group.id": a.group, "auto.offset.reset": "earliest",
                                       "enable.auto.commit": False,
                                       # transport errors (e.g. a connection the broker side closed)
                                       "error_cb": lambda e: errors.append(e.name())}))
    try:
        c.subscribe([a.topic])
        deadline = time.monotonic() + a.timeout
        while time.monotonic() < deadline and len(got) < a.want:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    errors.append(m.error().name())
                    if m.error().fatal() or m.error().code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                                                 KafkaError.GROUP_AUTHORIZATION_FAILED):
                        break
                continue
            if m.value().decode(errors="replace").startswith(a.prefix + "-"):
                got.append([m.partition(), m.value().decode()])
        if got:
            c.commit(asynchronous=False)
    except KafkaException as e:
        errors.append(e.args[0].name())
    finally:
        c.close()
    return {"consumed": len(got), "records": got, "partitions": sorted({p for p, _ in got}),
            "errors": sorted(set(errors))}


def metadata(a):
    admin = AdminClient(plain(a.bootstrap))
    md = admin.list_topics(a.topic, timeout=a.timeout)
    t = md.topics[a.topic]
    return {"brokers": {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()},
            "error": t.error.name() if t.error else None,
            "leaders": {p.id: p.leader for p in t.partitions.values()}}


def admin(a):
    conf = {"bootstrap.servers": a.bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "OAUTHBEARER", "enable.sasl.oauthbearer.unsecure.jwt": True,
            "sasl.oauthbearer.config": f"principal={a.principal}"}
    client = AdminClient(conf)
    out = []
    for op in json.loads(a.ops):
        kind = op["op"]
        if kind == "create_topic":
            fs = client.create_topics([NewTopic(op["topic"], num_partitions=op.get("partitions", 3),
                                                replication_factor=op.get("replication", 3),
                                                config=op.get("config", {}))], operation_timeout=30)
            try:
                fs[op["topic"]].result(timeout=60)
                out.append("created")
            except KafkaException as e:
                if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
                out.append("exists")
        elif kind == "acls":
            bindings = [AclBinding(ResourceType[b["type"]], b["name"], ResourcePatternType.LITERAL,
                                   b["principal"], "*", AclOperation[b["operation"]], AclPermissionType.ALLOW)
                        for b in op["bindings"]]
            for f in client.create_acls(bindings, request_timeout=30).values():
                f.result(timeout=60)
            out.append(len(bindings))
        elif kind == "elect_preferred":
            # As kafka-leader-election.sh --election-type PREFERRED does: each partition of
            # op["topic"] (of every topic without one) back to its preferred leader (a broker that
            # was slow or restarted may have lost leadership).
            from confluent_kafka import ElectionType, TopicPartition  # noqa: PLC0415
            parts = None
            if op.get("topic"):
                md = client.list_topics(op["topic"], timeout=30)
                parts = [TopicPartition(op["topic"], p) for p in md.topics[op["topic"]].partitions]
            try:
                result = client.elect_leaders(ElectionType.PREFERRED, parts).result(timeout=60)
            except KafkaException as e:
                if e.args[0].code() != KafkaError.ELECTION_NOT_NEEDED:
                    raise
                result = {}
            # Per partition: None, or the error (a KafkaError; a KafkaException in some versions).
            errors = {tp: err.args[0] if isinstance(err, KafkaException) else err for tp, err in result.items()}
            # The partitions not led by their preferred leader yet, and why (e.g.
            # PREFERRED_LEADER_NOT_AVAILABLE while that replica catches up): the caller retries.
            out.append({f"{tp.topic}-{tp.partition}": err.name() for tp, err in errors.items()
                        if err is not None and err.code() != KafkaError.ELECTION_NOT_NEEDED})
        elif kind == "brokers":
            out.append(sorted(client.list_topics(timeout=30).brokers))
        elif kind == "describe_acls":
            flt = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                   AclOperation.ANY, AclPermissionType.ANY)
            out.append(len(client.describe_acls(flt, request_timeout=30).result(timeout=60)))
        elif kind == "describe_topic":
            md = client.list_topics(op["topic"], timeout=30)
            t = md.topics[op["topic"]]
            out.append({"leaders": {p.id: p.leader for p in t.partitions.values()},
                        "isrs": {p.id: p.isrs for p in t.partitions.values()},
                        "error": t.error.name() if t.error else None})
        elif kind == "describe_group":
            g = client.describe_consumer_groups([op["group"]])[op["group"]].result(timeout=30)
            out.append({"coordinator": g.coordinator.id, "state": str(g.state), "members": len(g.members)})
        else:
            raise SystemExit(f"kclient admin: unknown op {kind!r}")
    return {"results": out}


def probe_one(host, port, timeout):
    """An ApiVersions v0 request straight on the socket, no TLS: a broker would answer it.
    Says how it ended, so "no answer" can be told apart: `connected` (the TCP handshake
    completed), `closed` (then the other side closed or reset the connection without a Kafka
    answer: what a proxy refusing it does), or neither (refused, unreachable, timed out)."""
    client_id = b"ki-probe"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    try:
        s = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        return {"answered": False, "connected": False, "closed": False, "error": type(e).__name__}
    with s:
        try:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(body)) + body)
            data = s.recv(8)
        except TimeoutError:
            return {"answered": False, "connected": True, "closed": False, "error": "timeout"}
        except OSError as e:  # reset by the peer
            return {"answered": False, "connected": True, "closed": True, "error": type(e).__name__}
    answered = len(data) >= 8 and struct.unpack(">i", data[4:8])[0] == 1
    return {"answered": answered, "connected": True, "closed": not data,
            "error": None if answered else f"{len(data)} bytes"}


def probe(a):
    return probe_one(a.host, a.port, a.timeout)


def probes(a):
    out = {}
    for target in a.targets:
        host, _, port = target.rpartition(":")
        out[target] = probe_one(host, int(port), a.timeout)
    return {"results": out}


def main(argv):
    p = argparse.ArgumentParser(prog="kclient.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("produce")
    pr.add_argument("bootstrap"), pr.add_argument("topic")
    pr.add_argument("--count", type=int, default=10), pr.add_argument("--prefix", required=True)
    pr.add_argument("--partition", type=int), pr.add_argument("--timeout", type=float, default=30)
    pr.add_argument("--idempotent", action="store_true")
    co = sub.add_parser("consume")
    co.add_argument("bootstrap"), co.add_argument("topic")
    co.add_argument("--group", required=True), co.add_argument("--prefix", required=True)
    co.add_argument("--want", type=int, required=True), co.add_argument("--timeout", type=float, default=30)
    md = sub.add_parser("metadata")
    md.add_argument("bootstrap"), md.add_argument("topic"), md.add_argument("--timeout", type=float, default=20)
    ad = sub.add_parser("admin")
    ad.add_argument("bootstrap"), ad.add_argument("--ops", required=True)
    ad.add_argument("--principal", default="kafka-broker")
    pb = sub.add_parser("probe")
    pb.add_argument("host"), pb.add_argument("port", type=int), pb.add_argument("--timeout", type=float, default=5)
    ps = sub.add_parser("probes")
    ps.add_argument("targets", nargs="+", metavar="HOST:PORT"), ps.add_argument("--timeout", type=float, default=5)
    a = p.parse_args(argv)
    result = {"produce": produce, "consume": consume, "metadata": metadata, "admin": admin,
              "probe": probe, "probes": probes}[a.cmd](a)
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main(sys.argv[1:])
