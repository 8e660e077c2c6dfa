"""The mesh, once per session: control plane, pods, sidecars, registry, three brokers, the topic
and the ACLs. Tests then apply deliveries and assert what the brokers did. Run by e2e/mesh/run,
which made the node's network namespace and runs pytest inside it."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meshlib.mesh import Mesh  # noqa: E402
from meshlib.procs import MeshError  # noqa: E402
from meshlib.kafka import broker_fqdn  # noqa: E402

TOPIC, GROUP = "orders", "orders-readers"
PRODUCER = "spiffe://cluster.local/ns/apps/sa/producer"
CONSUMER = "spiffe://cluster.local/ns/apps/sa/consumer"
# The broker proxies of the first pass (the session starts with them).
FIRST_PROXY = ("1.38.2", "1.30.3")


def acl_ops():
    bindings = [{"type": "TOPIC", "name": TOPIC, "principal": f"User:{PRODUCER}", "operation": op}
                for op in ("WRITE", "DESCRIBE")]
    bindings += [{"type": "TOPIC", "name": TOPIC, "principal": f"User:{CONSUMER}", "operation": op}
                 for op in ("READ", "DESCRIBE")]
    bindings.append({"type": "GROUP", "name": GROUP, "principal": f"User:{CONSUMER}", "operation": "READ"})
    return [{"op": "create_topic", "topic": TOPIC, "partitions": 3, "replication": 3,
             "config": {"min.insync.replicas": "2"}},
            {"op": "acls", "bindings": bindings}]


@pytest.fixture(scope="session")
def mesh():
    netns = os.environ.get("KAFKA_IDENTITY_MESH_NETNS")
    state = os.environ.get("KAFKA_IDENTITY_MESH_STATE")
    if not netns or not state:
        pytest.exit("run the mesh tests with e2e/mesh/run (it makes the network namespaces)", returncode=2)
    m = Mesh(netns, state, os.environ.get("KAFKA_IDENTITY_TOOLS"))
    try:
        m.up(*FIRST_PROXY)
        m.admin(*acl_ops())
        yield m
    finally:
        logs = m.logs()
        Path(state, "logs.txt").write_text("".join(f"{k}: {v}\n" for k, v in logs.items()))
        print("\n[e2e/mesh] start-up times (s): " + ", ".join(f"{k} {v}" for k, v in m.timings.items()))
        print("[e2e/mesh] component logs:\n" + "".join(f"  {k}: {v}\n" for k, v in logs.items()))
        if os.environ.get("KAFKA_IDENTITY_MESH_KEEP") != "1":
            m.down()


# node id -> outcome ("passed", "failed", "skipped") of each test that ran: its call, or its
# setup when that did not pass. The summaries read it through `earlier_outcomes`.
_OUTCOMES = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _OUTCOMES[item.nodeid] = report.outcome


@pytest.fixture
def earlier_outcomes(request):
    """{node id: outcome} of the tests of the requesting test's file that ran before it, so a
    summary can fail when a pass it summarises failed."""
    module = request.node.nodeid.split("::")[0]
    return {n: o for n, o in _OUTCOMES.items() if n.split("::")[0] == module and n != request.node.nodeid}


def check_summary(outcomes):
    """A summary passes only if something ran and nothing it summarises failed."""
    failed = sorted(n.split("::", 1)[1] for n, o in outcomes.items() if o == "failed")
    assert not failed, f"failed: {', '.join(failed)}"
    assert any(o == "passed" for o in outcomes.values()), f"no pass ran: {outcomes}"


def pytest_exception_interact(node, call, report):
    if isinstance(call.excinfo.value, MeshError):
        report.longrepr = str(call.excinfo.value)


__all__ = ["broker_fqdn"]
