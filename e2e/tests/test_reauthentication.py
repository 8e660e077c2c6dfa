"""KIP-368 on the client's behalf: a broker with connections.max.reauth.ms=10000 keeps
long-lived connections only if the filter re-authenticates them."""

import json

import pytest

from side_stack import REPO, SideStack, produce_and_consume

STATE = REPO / "e2e" / ".state" / "reauth-inputs"


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


def test_producer_and_consumer_run_60s_through_reauthentication(stack):
    before = stack.counter("reauthenticated")
    report = produce_and_consume(stack, 60)
    reauths = stack.counter("reauthenticated") - before
    assert report["disconnects"] == [], report["disconnects"][:3]
    assert report["delivered"] == len(report["sent"]) > 500
    assert sorted(report["consumed"]) == sorted(report["sent"]), "lost or duplicated messages"
    # Two long-lived connections (producer, consumer) plus the consumer's coordinator
    # connection, re-authenticated every 8.5-9.5 s of a 10 s session for a minute.
    assert reauths >= 10, f"only {reauths} re-authentications"
    assert stack.counter("auth_failed") == 0


def test_without_reauthentication_the_broker_disconnects(stack):
    off = STATE / "no-reauth.json"
    config = json.loads((REPO / "e2e" / "local" / "filter-config.json").read_text())
    off.write_text(json.dumps(dict(config, reauthenticate=False)))
    stack.filter_update(off)
    try:
        before = stack.counter("reauthenticated")
        report = produce_and_consume(stack, 25)
        assert stack.counter("reauthenticated") == before
        # The broker closes a connection at its first request after the 10 s session.
        assert len(report["disconnects"]) >= 2, report
    finally:
        stack.filter_update(REPO / "e2e" / "local" / "filter-config.json")
