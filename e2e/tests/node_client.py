"""The Node.js client of the e2e suite: kafkajs (e2e/clients/node/client.js, its dependencies
installed pinned by scripts/install-e2e-clients into .tools/clients/node). test_clients.py runs
it like the other clients: produce, consume in a group, and a read that only the topic's Read
ACL decides."""

import os
import subprocess
import uuid

from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   ResourcePatternType, ResourceType)

from conftest import REPO, SPIFFE, WAIT, wait_until

NODE_CLIENT = REPO / "e2e" / "clients" / "node" / "client.js"
NODE_MODULES = REPO / ".tools" / "clients" / "node" / "node_modules"


def node_client(stack, mode, who, *args, timeout=WAIT, direct=False):
    """Runs client.js as `who`: through Envoy and the filter with its workload certificate, or
    (direct) straight to the broker's DIRECT listener, authenticating itself as the filter would."""
    assert (NODE_MODULES / "kafkajs").is_dir(), \
        f"{NODE_MODULES}/kafkajs missing: run scripts/install-deps (it calls scripts/install-e2e-clients)"
    if direct:
        identity = ["--bootstrap", stack.broker, "--direct-principal", SPIFFE[who]]
    else:
        crt, key = stack.cert(who)
        identity = ["--bootstrap", stack.bootstrap, "--ca", stack.ca, "--cert", crt, "--key", key]
    cmd = ["node", str(NODE_CLIENT), mode, *identity, "--timeout", str(int(timeout)), *args]
    env = dict(os.environ, NODE_PATH=str(NODE_MODULES), KAFKAJS_NO_PARTITIONER_WARNING="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30, env=env)


def node_produce(stack, who, topic, value):
    r = node_client(stack, "produce", who, "--topic", topic, "--value", value)
    return r.returncode == 0 and "produced" in r.stdout.splitlines(), r.stdout + r.stderr


def node_consume_group(stack, who, topic, group, needle):
    r = node_client(stack, "consume", who, "--topic", topic, "--group", group, "--value", needle)
    return r.returncode == 0 and f"read {needle}" in r.stdout.splitlines(), r.stdout + r.stderr


def node_read(stack, who, topic):
    """kafkajs reads only in a consumer group (it has no assign): the principal gets Read on a
    group of its own for this read, so that the topic's Read ACL alone decides, as for the
    group-less reads of the other clients."""
    group = f"e2e-node-read-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(stack.rdkafka_admin_direct())
    binding = AclBinding(ResourceType.GROUP, group, ResourcePatternType.LITERAL, f"User:{SPIFFE[who]}", "*",
                         AclOperation.READ, AclPermissionType.ALLOW)
    for f in admin.create_acls([binding], request_timeout=WAIT).values():
        f.result(timeout=WAIT)
    flt = AclBindingFilter(ResourceType.GROUP, group, ResourcePatternType.LITERAL, None, None,
                           AclOperation.ANY, AclPermissionType.ANY)
    assert wait_until(lambda: admin.describe_acls(flt, request_timeout=10).result(timeout=WAIT)), \
        f"the group ACL for {group} is not in effect"
    try:
        r = node_client(stack, "read", who, "--topic", topic, "--group", group, timeout=20)
        return r.stdout + r.stderr
    finally:
        for f in admin.delete_acls([flt], request_timeout=WAIT).values():
            f.result(timeout=WAIT)
