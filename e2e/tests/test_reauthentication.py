"""KIP-368 on the client's behalf: a broker with connections.max.reauth.ms=10000 keeps
long-lived connections only if the filter re-authenticates them.

What tells the two apart is the broker's own account: a connection whose session expired is
closed at its next request with "Disconnecting expired channel ... id=<listener>-<peer>-<n>"
(kafka.network.Processor at DEBUG, which e2e/local's broker logging keeps in server.log)."""

import json
import time
from pathlib import Path

import pytest

from reliability import kafka_raw
from side_stack import REPO, SideStack, produce_and_consume

STATE = REPO / "e2e" / ".state" / "reauth-inputs"
# The filter's own ways of ending a connection: none may move in either test.
REFUSALS = ("auth_failed", "rejected_no_identity", "rejected_client_sasl", "protocol_errors")


@pytest.fixture(scope="module")
def stack():
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / "broker.properties").write_text("connections.max.reauth.ms=10000\n")
    side = SideStack("reauth", 100, {
        "KAFKA_IDENTITY_KAFKA_EXTRA_CONFIG": str(STATE / "broker.properties"),
        "KAFKA_IDENTITY_ECDS": "1",
    })
    try:
        yield side.up()
    finally:
        side.down()


class BrokerLog:
    """Lines the broker appended to its server.log after this mark."""

    def __init__(self, stack):
        self.path = Path(stack.stack["KAFKA_IDENTITY_KAFKA_LOG"])
        self.listener = stack.stack["KAFKA_IDENTITY_MESH_LISTENER"]
        self.offset = self.path.stat().st_size

    def expired_sessions(self):
        """The broker's "Disconnecting expired channel" lines for connections on the MESH
        listener (the one behind Envoy), since the mark."""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            lines = f.read().decode(errors="replace").splitlines()
        return [ln for ln in lines if "Disconnecting expired channel" in ln and f"id={self.listener}-" in ln]


def refusals(stack):
    return {name: stack.counter(name) for name in REFUSALS}


def test_producer_and_consumer_run_60s_through_reauthentication(stack):
    before, refused = stack.counter("reauthenticated"), refusals(stack)
    broker = BrokerLog(stack)
    report = produce_and_consume(stack, 60)
    reauths = stack.counter("reauthenticated") - before
    assert report["disconnects"] == [], report["disconnects"][:3]
    assert report["errors"] == [], report["errors"][:3]
    assert report["delivered"] == len(report["sent"]) > 500
    assert sorted(report["consumed"]) == sorted(report["sent"]), "lost or duplicated messages"
    # Two long-lived connections (producer, consumer) plus the consumer's coordinator
    # connection, re-authenticated every 8.5-9.5 s of a 10 s session for a minute.
    assert reauths >= 10, f"only {reauths} re-authentications"
    assert refusals(stack) == refused
    # The broker never found a session expired: every one was renewed in time.
    assert broker.expired_sessions() == [], broker.expired_sessions()[:3]


def test_without_reauthentication_the_broker_disconnects(stack):
    off = STATE / "no-reauth.json"
    config = json.loads((REPO / "e2e" / "local" / "filter-config.json").read_text())
    off.write_text(json.dumps(dict(config, reauthenticate=False)))
    stack.filter_update(off)
    try:
        before, refused = stack.counter("reauthenticated"), refusals(stack)
        broker = BrokerLog(stack)
        report = produce_and_consume(stack, 25)
        assert stack.counter("reauthenticated") == before
        # The connections worked until their sessions ended: records went both ways first.
        first_drop = min(report["disconnect_times"], default=None)
        assert first_drop is not None, "no client connection dropped"
        assert report["delivered_times"] and min(report["delivered_times"]) < first_drop, \
            "nothing was delivered before the first disconnect"
        assert report["consumed_times"] and min(report["consumed_times"]) < first_drop, \
            "nothing was consumed before the first disconnect"
        # The broker closes a connection at its first request after the 10 s session: the
        # producer's and the consumer's at least, each logged by the broker as expired; the
        # filter closed none of them.
        assert len(report["disconnects"]) >= 2, report
        expired = broker.expired_sessions()
        assert len(expired) >= 2, f"the broker expired {len(expired)} sessions: {expired}; client saw " \
                                  f"{report['disconnects'][:3]}"
        assert refusals(stack) == refused
    finally:
        stack.filter_update(REPO / "e2e" / "local" / "filter-config.json")


def test_an_idle_connection_is_reauthenticated_at_its_deadline(stack):
    """A connection that sends nothing for longer than its session: the native module's timer
    re-authenticates it at each deadline, with no client bytes to ride on, and the connection
    still answers afterwards. The .wasm has no per-connection timer (proxy-wasm gives network
    filters none): it re-authenticates an idle connection at its next request instead."""
    if stack.stack.get("KAFKA_IDENTITY_FILTER_KIND", "wasm") != "native":
        pytest.skip("the .wasm re-authenticates an idle connection at its next request")
    host, port = stack.stack["KAFKA_IDENTITY_BOOTSTRAP"].rsplit(":", 1)
    certs = Path(stack.stack["KAFKA_IDENTITY_CERTS"])
    ctx = kafka_raw.tls_context(stack.stack["KAFKA_IDENTITY_CA"], str(certs / "apps.producer.crt"),
                                str(certs / "apps.producer.key"))
    before, refused = stack.counter("reauthenticated"), refusals(stack)
    broker = BrokerLog(stack)
    conn = kafka_raw.connect(host, int(port), ctx)
    try:
        conn.api_versions()  # the filter authenticates the connection before it
        time.sleep(25)  # two and a half 10 s sessions without a byte from the client
        idle_reauths = stack.counter("reauthenticated") - before
        conn.api_versions()  # still open, still answered
    finally:
        conn.close()
    # Re-authentication at 85-95 % of each 10 s session: at least two in 25 s of silence.
    assert idle_reauths >= 2, f"{idle_reauths} re-authentications while idle"
    assert refusals(stack) == refused
    assert broker.expired_sessions() == [], broker.expired_sessions()[:3]
