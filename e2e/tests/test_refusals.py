"""Connections the filter (or Envoy's TLS) must refuse, and what the broker saw of them:
no client certificate, a foreign trust domain, a client that speaks SASL itself, and a
malformed Kafka frame."""

import gc
import re
import socket
import ssl
import struct
import time

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import SPIFFE, WAIT, read_all, wait_until


def api_versions_request(correlation_id=1):
    """A valid Kafka ApiVersions v0 request (request header v1), size-prefixed."""
    client_id = b"e2e-raw"
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    return struct.pack(">i", len(body)) + body


def closed_by_peer(sock, timeout=10):
    """True if the peer closes the connection (EOF / reset / TLS alert) within `timeout`."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                return True
    except (ssl.SSLError, ConnectionError, OSError) as exc:
        if isinstance(exc, socket.timeout):
            return False
        return True
    return False


def listener_connections(stack):
    """(downstream_cx_total, downstream_cx_active) of Envoy's listener for the filter."""
    host, port = stack.envoy_addr
    stats = stack.stats()
    prefix = f"listener.{host}_{port}."
    return stats[prefix + "downstream_cx_total"], stats[prefix + "downstream_cx_active"]


def quiet(stack, active):
    """Waits until the listener holds `active` connections again (every connection a client of
    the test opened is gone); returns (counters, total connections) from then."""
    assert wait_until(lambda: listener_connections(stack)[1] == active, timeout=WAIT), \
        f"connections still open on the listener: {listener_connections(stack)} (expected {active} active)"
    return stack.counters(), listener_connections(stack)[0]


def listener_ssl(stack):
    port = stack.envoy_addr[1]
    stats = stack.stats()
    return {k.rsplit(".ssl.", 1)[1]: v for k, v in stats.items()
            if k.startswith("listener.") and k.split(".ssl.")[0].endswith(f"_{port}") and ".ssl." in k}


def test_no_client_certificate_fails_tls_handshake(stack, authorizer_log):
    before_ssl, before = listener_ssl(stack), stack.counters()
    refused = False
    try:
        s = stack.tls_socket(who=None)
        # TLS 1.3: the client finishes its side first; Envoy's alert arrives on the next read
        s.sendall(api_versions_request())
        refused = closed_by_peer(s)
        s.close()
    except (ssl.SSLError, ConnectionError) as exc:
        refused = True
        print(f"handshake refused: {exc}")
    assert refused, "Envoy accepted a TLS connection without a client certificate"

    # a real client without a certificate gets nowhere either
    with pytest.raises(KafkaException):
        AdminClient(stack.rdkafka_ssl(None)).list_topics(timeout=5)

    moved = wait_until(lambda: {k: v - before_ssl.get(k, 0) for k, v in listener_ssl(stack).items()
                                if k in ("fail_verify_no_cert", "connection_error", "no_certificate")
                                and v > before_ssl.get(k, 0)}, timeout=10)
    assert moved, f"no listener ssl failure stat moved: {listener_ssl(stack)}"
    print(f"listener ssl stats moved: {moved}")
    # measured on Envoy 1.36-1.40: a missing client certificate counts as fail_verify_no_cert
    assert moved.get("fail_verify_no_cert", 0) >= 1, moved
    after = stack.counters()
    assert after["authenticated"] == before["authenticated"], "the filter authenticated a cert-less client"
    assert not [ln for ln in authorizer_log.lines() if "Principal = User:" in ln and "/sa/" not in ln
                and "User:admin" not in ln], "unexpected principal in the authorizer log"


def test_foreign_trust_domain_is_disconnected(stack, authorizer_log, envoy_log):
    before = stack.counters()

    # raw TLS with the evil.example certificate (signed by the same CA: TLS accepts it)
    s = stack.tls_socket(who="evil")
    s.sendall(api_versions_request())
    assert closed_by_peer(s), "the filter did not close a connection from spiffe://evil.example"
    s.close()

    # and a real client fails
    with pytest.raises(KafkaException):
        AdminClient(stack.rdkafka_ssl("evil")).list_topics(timeout=5)

    assert wait_until(lambda: stack.counters()["rejected_no_identity"] >= before["rejected_no_identity"] + 2,
                      timeout=10), f"rejected_no_identity did not move: {stack.counters()}"
    after = stack.counters()
    assert after["authenticated"] == before["authenticated"]
    assert envoy_log.wait_for("outcome=rejected_no_identity", timeout=10)
    time.sleep(1)
    assert not [ln for ln in authorizer_log.lines() if "evil.example" in ln], \
        "the broker authorized something for a spiffe://evil.example principal"
    assert not [ln for ln in envoy_log.lines() if f"identity={SPIFFE['evil']}" in ln and "outcome=authenticated" in ln]


# What librdkafka (kcat) logs when the filter closes its connection during its SASL handshake:
# the close, then the handshake's failure for want of a transport (kcat 1.7.1).
KCAT_SASL_CUT = re.compile(r": Disconnected(: SSL connection closed by peer)? \(after \d+ms in state AUTH_HANDSHAKE\)$")
KCAT_SASL_CUT_THEN = re.compile(r": SASL OAUTHBEARER mechanism handshake failed: Local: Broker transport failure")
# How kcat gives up on its record then: every connection down, or the record timed out.
KCAT_GAVE_UP = re.compile(r"^% ERROR: Local: (All broker connections are down|Message timed out)", re.M)


def kcat_sasl_cut(stderr):
    """kcat's connection failures, as (cut during the SASL handshake, any other failure)."""
    fails = [ln for ln in stderr.splitlines() if "|FAIL|" in ln]
    cut = [ln for ln in fails if KCAT_SASL_CUT.search(ln)]
    other = [ln for ln in fails if not (KCAT_SASL_CUT.search(ln) or KCAT_SASL_CUT_THEN.search(ln))]
    return cut, other


def sasl_client_conf(stack, **extra):
    conf = stack.rdkafka_ssl("producer", **{
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "OAUTHBEARER",
        "enable.sasl.oauthbearer.unsecure.jwt": True,
        "sasl.oauthbearer.config": "principal=admin",
    })
    conf.update(extra)
    return conf


def test_client_speaking_sasl_is_refused_and_gains_no_admin_rights(stack, admin, run_id, envoy_log):
    before, active = stack.counters(), listener_connections(stack)[1]
    topic = f"pwn-{run_id}"

    # confluent-kafka admin client claiming to be User:admin: must not create a topic
    rogue = AdminClient(sasl_client_conf(stack))
    fs = rogue.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)],
                             request_timeout=8, operation_timeout=8)
    try:
        with pytest.raises(KafkaException):
            fs[topic].result(timeout=WAIT)
    finally:
        del rogue, fs  # stop its reconnect loop (librdkafka destroys the client with the object)
        gc.collect()

    # kcat claiming to be User:admin: cannot produce (admin could, it is a super user). Alone
    # on the listener once the admin client's connections are gone, so every connection that
    # opens meanwhile is kcat's, and each must be refused for speaking SASL.
    rogue_refused, total = quiet(stack, active)
    assert rogue_refused["rejected_client_sasl"] > before["rejected_client_sasl"], \
        "the admin client speaking SASL was not refused"
    value = f"{run_id}-written-as-fake-admin"
    cmd_extra = ["security.protocol=SASL_SSL", "sasl.mechanisms=OAUTHBEARER",
                 "enable.sasl.oauthbearer.unsecure.jwt=true", "sasl.oauthbearer.config=principal=admin",
                 "message.timeout.ms=6000"]
    r = stack.kcat("producer", "-P", "-t", stack.topic, stdin=value + "\n", extra=cmd_extra)
    kcat_done, kcat_total = quiet(stack, active)
    connections = kcat_total - total
    refused = kcat_done["rejected_client_sasl"] - rogue_refused["rejected_client_sasl"]
    assert connections >= 1 and refused == connections, \
        f"kcat opened {connections} connections, {refused} refused for speaking SASL"
    assert all(kcat_done[k] == rogue_refused[k] for k in ("rejected_no_identity", "protocol_errors", "auth_failed")), \
        (rogue_refused, kcat_done)
    # What kcat saw is that refusal, on each of its connections: closed by the other side in
    # the middle of its SASL handshake (not a configuration error, not a TLS failure, not a
    # broker's SASL refusal); then it gave up on its record.
    cut, other = kcat_sasl_cut(r.stderr)
    assert r.returncode != 0 and KCAT_GAVE_UP.search(r.stderr), f"kcat did not give up:\n{r.stderr[-2000:]}"
    assert not other, f"kcat failed otherwise than by its SASL handshake cut off: {other[:3]}"
    assert len(cut) == connections, f"{len(cut)} of kcat's {connections} connections cut in its SASL handshake"

    # the broker (asked by the real admin over DIRECT) has no such topic ...
    assert topic not in admin.list_topics(timeout=10).topics
    # ... and no fake-admin message in orders (markers written by the real admin bound the read)
    p = Producer(stack.rdkafka_admin_direct())
    markers = [f"{run_id}-m{i}".encode() for i in range(3)]
    for i, m in enumerate(markers):
        p.produce(stack.topic, value=m, partition=i)
    assert p.flush(WAIT) == 0
    got, errors = read_all(stack.rdkafka_admin_direct(), stack.topic, want=lambda g: set(markers) <= {v for _, v in g})
    assert set(markers) <= {v for _, v in got}, errors
    assert value.encode() not in {v for _, v in got}
    # the filter logged why it refused (and never authenticated a client-chosen principal)
    assert envoy_log.wait_for("outcome=rejected_client_sasl", timeout=10)
    assert not [ln for ln in envoy_log.lines() if "principal=admin " in ln]


def test_malformed_frame_is_a_protocol_error_and_harms_nobody(stack, run_id, envoy_log):
    before = stack.counters()
    s = stack.tls_socket(who="producer")
    s.sendall(struct.pack(">i", -5) + b"\x00\x12\x00\x00garbage")
    assert closed_by_peer(s), "a frame with a negative size did not close the connection"
    s.close()
    assert wait_until(lambda: stack.counters()["protocol_errors"] >= before["protocol_errors"] + 1, timeout=10), \
        f"protocol_errors did not move: {stack.counters()}"
    assert envoy_log.wait_for("outcome=protocol_error", timeout=10)

    # a good client right after still works end to end
    mid = stack.counters()
    value = f"{run_id}-after-malformed".encode()
    results = []
    p = Producer(stack.rdkafka_ssl("producer", **{"acks": "all", "message.timeout.ms": 20000}))
    p.produce(stack.topic, value=value, partition=0, on_delivery=lambda err, msg: results.append(err))
    assert p.flush(WAIT) == 0 and results == [None], results
    got, _ = read_all(stack.rdkafka_ssl("consumer"), stack.topic, want=lambda g: value in {v for _, v in g},
                      partitions=[0])
    assert value in {v for _, v in got}
    assert stack.counters()["authenticated"] > mid["authenticated"]
    assert stack.counters()["protocol_errors"] == mid["protocol_errors"]
