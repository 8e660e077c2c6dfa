"""Placement: the filter must be the last filter before tcp_proxy. Envoy calls the read
filters from the first one with the connection's whole read buffer on every read, so a
filter after ours that stops iteration without draining (ext_authz while its check is
pending) makes ours see its own injected requests again when the client pipelines. Here
a real Envoy runs the network ext_authz filter against a slow local authorization server,
once after ours (the bad order: shows the failure) and once before it (Istio's order for
CUSTOM authorization with the WasmPlugin phase UNSPECIFIED_PHASE, and the EnvoyFilter
INSERT_BEFORE tcp_proxy)."""

import socket
import ssl
import struct
import time

import pytest

from authz_server import SlowAuthz
from conftest import wait_until
from side_stack import SideStack, wait_for_text

DELAY = 1.5  # seconds each authorization check takes


def api_versions(correlation_id):
    """ApiVersions v0 (request header v1), size-prefixed."""
    client_id = b"placement"
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    return struct.pack(">i", len(body)) + body


def pipelined_exchange(stack):
    """Sends one request, then a second while the authorization check is still pending;
    returns the correlation ids of the responses that came back before the connection
    closed or 10 s passed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(stack.stack["KAFKA_IDENTITY_CA"])
    certs = stack.stack["KAFKA_IDENTITY_CERTS"]
    ctx.load_cert_chain(f"{certs}/apps.producer.crt", f"{certs}/apps.producer.key")
    host, port = stack.stack["KAFKA_IDENTITY_BOOTSTRAP"].rsplit(":", 1)
    sock = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=10), server_hostname=host)
    seen, data = [], b""
    try:
        sock.sendall(api_versions(1))
        time.sleep(DELAY / 3)
        sock.sendall(api_versions(2))
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, ssl.SSLError, OSError):
                break
            if not chunk:
                break
            data += chunk
            while len(data) >= 8:
                size = struct.unpack(">i", data[:4])[0]
                if len(data) < 4 + size:
                    break
                seen.append(struct.unpack(">i", data[4:8])[0])
                data = data[4 + size:]
    finally:
        sock.close()
    return seen


@pytest.fixture(scope="module")
def authz():
    server = SlowAuthz(DELAY).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(authz):
    side = SideStack("placement", 300, {
        "KAFKA_IDENTITY_EXT_AUTHZ": "after",
        "KAFKA_IDENTITY_EXT_AUTHZ_PORT": str(authz.port),
    })
    try:
        yield side.up()
    finally:
        side.down()


def test_a_pausing_filter_after_ours_makes_it_see_its_own_requests_again(stack, authz):
    """The wrong order, to show what the rule prevents."""
    checks = authz.checks
    refused = stack.counter("rejected_client_sasl")
    seen = pipelined_exchange(stack)
    assert seen != [1, 2], "the pipelined requests were answered although ext_authz runs after the filter"
    # Our own SaslHandshake came round again and looked like the client's.
    assert stack.counter("rejected_client_sasl") == refused + 1
    assert wait_for_text(stack.stack["KAFKA_IDENTITY_ENVOY_LOG"],
                         "outcome=rejected_client_sasl reason=\"client sent SaslHandshake (correlation id 2147483640)")
    # ext_authz did hold this connection for a check of this server (answered after DELAY
    # whether or not Envoy still waits for it): the pause the failure above comes from.
    assert wait_until(lambda: authz.checks > checks, timeout=10 * DELAY), \
        "ext_authz made no check: nothing paused the connection"


def test_the_filter_last_before_tcp_proxy_works_behind_a_pausing_filter(stack, authz):
    stack.envoy_restart({"KAFKA_IDENTITY_EXT_AUTHZ": "before"})
    checks = authz.checks
    authenticated = stack.counter("authenticated")
    for _ in range(3):
        assert pipelined_exchange(stack) == [1, 2]
    assert authz.checks >= checks + 3, "ext_authz did not check the connections"
    assert stack.counter("authenticated") == authenticated + 3
    assert stack.counter("rejected_client_sasl") == 0
    assert stack.counter("protocol_errors") == 0
