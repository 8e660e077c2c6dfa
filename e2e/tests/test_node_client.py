"""kafkajs's own behaviour, told apart from the filter's by the same client on the broker's DIRECT
listener (no Envoy, no filter; kafkajs authenticates itself with the same kind of token).

kafkajs has no group-less consumer, and when the principal may not use the group it reports
the broker's GROUP_AUTHORIZATION_FAILED (FindCoordinator) as "KafkaJSGroupCoordinatorNotFound:
Failed to find group coordinator", which reads like a group join failure. The broker's
authorizer shows what it is, and the same error comes without the filter. That is why
test_clients.py gives kafkajs's reads a group the principal may use (node_client.node_read)."""

import uuid

import pytest

from conftest import SPIFFE, authz
from node_client import node_client


@pytest.mark.parametrize("path", ["filter", "direct"])
def test_kafkajs_reports_a_denied_group_as_no_coordinator_with_and_without_the_filter(stack, path,
                                                                                       authorizer_log):
    group = f"e2e-node-no-acl-{uuid.uuid4().hex[:8]}"
    r = node_client(stack, "read", "producer", "--topic", stack.topic, "--group", group, timeout=15,
                    direct=path == "direct")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "error: KafkaJSGroupCoordinatorNotFound: Failed to find group coordinator" in r.stdout.splitlines(), out
    assert "messages read: 0" in r.stdout.splitlines(), out
    # ... what the broker did: it refused the group to the producer's principal, on either path
    denied = authorizer_log.wait_for(*authz(SPIFFE["producer"], "Denied", "DESCRIBE", f"Group:LITERAL:{group}"),
                                     "request = FindCoordinator")
    assert denied, f"no 'Denied DESCRIBE' on {group} for the producer's principal in the authorizer log"
