"""The filter in waypoint mode (`waypoint` in its configuration) takes the client's identity from
filter state, as in an ambient waypoint, where the inner connection has no TLS of its own and
Istio's HBONE termination writes the tunnel peer's SPIFFE ID into `io.istio.peer_principal`.

Without a mesh, the side stack's Envoy writes that key itself on every connection
(KAFKA_IDENTITY_WAYPOINT_PEER, e2e/local/envoy_config.py): the producer's SPIFFE ID, while the
client presents the consumer's certificate, which may not write. A write the broker allows as
the producer shows the identity came from filter state and not from the certificate. Runs on
the .wasm and, with KAFKA_IDENTITY_FILTER_KIND=native, on the dynamic module (`make e2e-native`);
the mesh's waypoint pass runs the .wasm in a real waypoint."""

import json

import pytest
from confluent_kafka import KafkaError, Producer

from conftest import LogTail, authz, wait_until
from side_stack import REPO, SideStack

STATE = REPO / "e2e" / ".state" / "waypoint-inputs"
PRODUCER = "spiffe://cluster.local/ns/apps/sa/producer"
CONSUMER = "spiffe://cluster.local/ns/apps/sa/consumer"


@pytest.fixture(scope="module")
def stack():
    STATE.mkdir(parents=True, exist_ok=True)
    config = json.loads((REPO / "e2e" / "local" / "filter-config.json").read_text())
    (STATE / "filter-config.json").write_text(json.dumps(dict(config, waypoint={})))
    side = SideStack("waypoint", 800, {
        "KAFKA_IDENTITY_FILTER_CONFIG": str(STATE / "filter-config.json"),
        "KAFKA_IDENTITY_WAYPOINT_PEER": PRODUCER,
    })
    try:
        yield side.up()
    finally:
        side.down()


def produce_one(stack, as_certificate_of):
    """One record to `orders` with that service account's certificate: the delivery error, or None."""
    outcome = []
    producer = Producer({**stack.client_conf(as_certificate_of), "message.timeout.ms": 20000,
                         "enable.idempotence": False})
    producer.produce(stack.stack["KAFKA_IDENTITY_TOPIC"], b"through a waypoint",
                     on_delivery=lambda err, _msg: outcome.append(err))
    producer.flush(30)
    assert outcome, "no delivery report"
    return outcome[0]


def test_a_waypoint_filter_takes_the_identity_from_filter_state_not_the_certificate(stack):
    authorizer = LogTail(stack.stack["KAFKA_IDENTITY_AUTHORIZER_LOG"])
    envoy = LogTail(stack.stack["KAFKA_IDENTITY_ENVOY_LOG"])
    before = stack.counter("authenticated")
    err = produce_one(stack, "consumer")
    assert err is None or err.code() == KafkaError.NO_ERROR, f"the write was refused: {err}"
    assert stack.counter("authenticated") > before
    # The broker authorized the write as the principal in filter state ...
    assert authorizer.wait_for(*authz(PRODUCER, "Allowed", "WRITE", "Topic:LITERAL:orders")), \
        authorizer.lines()[-20:]
    # ... the filter logged that identity, and the certificate's never reached the broker.
    assert wait_until(lambda: envoy.matching(f"identity={PRODUCER}", "outcome=authenticated")), \
        envoy.lines()[-20:]
    assert not authorizer.matching(CONSUMER), authorizer.matching(CONSUMER)[:3]
