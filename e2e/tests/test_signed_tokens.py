"""Signed mode: the broker checks the filter's tokens against a JWKS with Kafka's stock
OAuthBearerValidatorCallbackHandler, so a client that reaches the broker directly cannot
present a token of its own; and the signing key rotates without dropping a connection."""

import json
import subprocess
import time

import pytest

from side_stack import CLI, REPO, SideStack, produce_and_consume, wait_for_text

KEYS = REPO / "e2e" / ".state" / "signed-inputs"
IDENTITY = {"sources": ["spiffe"], "spiffe": {"trust_domains": ["cluster.local"]}}


def filter_config(kid):
    return {"stat_prefix": "kafka_identity", "identity": IDENTITY,
            "signing": {"key_id": kid, "issuer": "kafka-identity", "audience": "kafka",
                        "private_key_env": "KAFKA_IDENTITY_SIGNING_KEY"}}


def keygen(kid, append):
    args = [str(CLI), "keygen", "--key-id", kid, "--key-out", str(KEYS / f"{kid}.pem"),
            "--jwks-out", str(KEYS / "jwks.json")] + (["--append"] if append else [])
    subprocess.run(args, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def stack():
    assert CLI.is_file(), f"{CLI} missing: make builds it (cargo build --release -p kafka-identity-cli)"
    KEYS.mkdir(parents=True, exist_ok=True)
    (KEYS / "jwks.json").unlink(missing_ok=True)
    keygen("old", append=False)
    keygen("new", append=True)
    jwks = f"file://{KEYS / 'jwks.json'}"
    (KEYS / "broker.properties").write_text("\n".join([
        "connections.max.reauth.ms=10000",
        "listener.name.mesh.oauthbearer.sasl.server.callback.handler.class="
        "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler",
        f"listener.name.mesh.oauthbearer.sasl.oauthbearer.jwks.endpoint.url={jwks}",
        "listener.name.mesh.oauthbearer.sasl.oauthbearer.expected.audience=kafka",
        "listener.name.mesh.oauthbearer.sasl.oauthbearer.expected.issuer=kafka-identity", ""]))
    for kid in ("old", "new"):
        (KEYS / f"filter-{kid}.json").write_text(json.dumps(filter_config(kid)))
    side = SideStack("signed", 200, {
        "KAFKA_IDENTITY_KAFKA_EXTRA_CONFIG": str(KEYS / "broker.properties"),
        "KAFKA_IDENTITY_KAFKA_JVM_OPTS": f"-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={jwks}",
        "KAFKA_IDENTITY_ECDS": "1",
        "KAFKA_IDENTITY_FILTER_CONFIG": str(KEYS / "filter-old.json"),
        # The key reaches the VM as an environment variable, as from a Kubernetes Secret.
        "KAFKA_IDENTITY_VM_ENV_FILES": f"KAFKA_IDENTITY_SIGNING_KEY={KEYS / 'old.pem'}",
    })
    try:
        yield side.up()
    finally:
        side.down()


def new_lines(path, since):
    return path.read_text(errors="replace")[since:]


def test_signed_tokens_authorize_each_principal(stack):
    from confluent_kafka import KafkaException, Producer
    log = REPO / stack.stack["KAFKA_IDENTITY_AUTHORIZER_LOG"]
    mark = len(log.read_text(errors="replace"))
    ok = Producer(dict(stack.client_conf("producer"), acks="all"))
    ok.produce("orders", b"signed-hello")
    assert ok.flush(30) == 0
    denied = []
    bad = Producer(dict(stack.client_conf("consumer"), acks="all", **{"message.timeout.ms": 10000}))
    bad.produce("orders", b"not allowed", on_delivery=lambda err, msg: denied.append(err))
    bad.flush(20)
    assert denied and denied[0] is not None and denied[0].name() == "TOPIC_AUTHORIZATION_FAILED", denied
    lines = new_lines(log, mark)
    assert "User:spiffe://cluster.local/ns/apps/sa/consumer is Denied operation = WRITE" in lines
    assert wait_for_text(stack.stack["KAFKA_IDENTITY_ENVOY_LOG"], "token=ES256:old outcome=authenticated")
    assert stack.counter("auth_failed") == 0


def direct_metadata(stack, token):
    """Connects to the broker's mesh listener directly (no Envoy) presenting `token`."""
    from confluent_kafka.admin import AdminClient
    client = AdminClient({
        "bootstrap.servers": stack.stack["KAFKA_IDENTITY_MESH_LISTENER"],
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "OAUTHBEARER",
        "oauth_cb": lambda _config: (token, time.time() + 3600)})
    try:
        return sorted(client.list_topics(timeout=8).topics)
    except Exception:  # noqa: BLE001 - any failure means the broker did not let it in
        return None


def token_for_admin(config_extra, key_file=None):
    """A token claiming sub=admin (a super user), made with the CLI as an attacker would."""
    cfg = KEYS / "attacker.json"
    cfg.write_text(json.dumps(dict({"identity": {"spiffe": {"template": "admin"}}}, **config_extra)))
    env = {"PATH": "/usr/bin:/bin"}
    if key_file:
        env["ATTACKER_KEY"] = key_file.read_text()
    cert = REPO / "e2e" / ".state" / "signed" / "certs" / "apps.admin-wannabe.crt"
    run = subprocess.run([str(CLI), "token", "--cert", str(cert), "--config", str(cfg)],
                         env=env, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def signing(kid):
    return {"signing": {"key_id": kid, "issuer": "kafka-identity", "audience": "kafka",
                        "private_key_env": "ATTACKER_KEY"}}


def test_direct_client_with_an_unsigned_token_is_refused(stack):
    assert direct_metadata(stack, token_for_admin({})) is None
    # Control: the same client with a token the broker trusts gets in, so the refusal
    # above is the signature check, not a broken connection.
    assert "orders" in direct_metadata(stack, token_for_admin(signing("old"), KEYS / "old.pem"))


def test_direct_client_with_a_token_from_another_key_is_refused(stack):
    rogue = KEYS / "rogue"
    rogue.mkdir(exist_ok=True)
    subprocess.run([str(CLI), "keygen", "--key-id", "old", "--key-out", str(rogue / "key.pem"),
                    "--jwks-out", str(rogue / "jwks.json")], check=True, capture_output=True)
    assert direct_metadata(stack, token_for_admin(signing("old"), rogue / "key.pem")) is None


def test_key_rotation_drops_no_open_connection(stack):
    envoy_log = REPO / stack.stack["KAFKA_IDENTITY_ENVOY_LOG"]

    def rotate():
        stack.filter_update(KEYS / "filter-new.json",
                            vm_env_files=f"KAFKA_IDENTITY_SIGNING_KEY={KEYS / 'new.pem'}")

    reauth_before = stack.counter("reauthenticated")
    report = produce_and_consume(stack, 36, during=rotate)
    assert report["disconnects"] == [], report["disconnects"][:3]
    assert sorted(report["consumed"]) == sorted(report["sent"]) and report["delivered"] == len(report["sent"])
    # Open connections kept re-authenticating (with the old key, still in the JWKS)...
    assert stack.counter("reauthenticated") - reauth_before >= 4
    # ...and a connection opened after the switch authenticates with the new key.
    from confluent_kafka import Producer
    after = Producer(dict(stack.client_conf("producer"), acks="all"))
    after.produce("orders", b"after-rotation")
    assert after.flush(30) == 0
    assert wait_for_text(envoy_log, "token=ES256:new outcome=authenticated")
    assert stack.counter("auth_failed") == 0
