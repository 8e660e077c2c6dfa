"""Signed mode: the broker checks the filter's tokens against a JWKS with Kafka's stock
OAuthBearerValidatorCallbackHandler, so a client that reaches the broker directly cannot
present a token of its own; the signing key never shows in Envoy's config dump; and the
key rotates as docs/security.md describes without dropping or failing a connection."""

import functools
import http.server
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from reliability import kafka_raw, record_figures
from side_stack import CLI, REPO, SideStack, produce_and_consume, wait_for_text

KEYS = REPO / "e2e" / ".state" / "signed-inputs"
IDENTITY = {"sources": ["spiffe"], "spiffe": {"trust_domains": ["cluster.local"]}}
TOKEN_LIFETIME = 60  # seconds; the broker's sessions are shorter (connections.max.reauth.ms)
SLOTS = {"old": "KAFKA_IDENTITY_SIGNING_KEY_A", "new": "KAFKA_IDENTITY_SIGNING_KEY_B"}
KAFKA_VERSION = os.environ.get("KAFKA_IDENTITY_KAFKA_VERSION", "4.4.0")
# Kafka reads a file:// JWKS again when the file changes only from 4.1 on; 3.x and 4.0 read it
# once at start-up. There the broker fetches the JWKS over HTTP and refreshes it this often
# (docs/security.md, "Rotation"): shorter than step 1 -> step 2 of the procedure.
JWKS_REFRESH_MS = 2000


def jwks_file_is_reread():
    major, minor = (int(p) for p in re.findall(r"\d+", KAFKA_VERSION)[:2])
    return (major, minor) >= (4, 1)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@functools.cache
def jwks_http_url():
    """Serves KEYS/jwks.json on loopback for the test session (a thread of pytest)."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(KEYS)))
    threading.Thread(target=server.serve_forever, name="jwks-http", daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/jwks.json"


def filter_config(kid):
    return {"stat_prefix": "kafka_identity", "identity": IDENTITY,
            "token_lifetime_seconds": TOKEN_LIFETIME,
            "signing": {"key_id": kid, "issuer": "kafka-identity", "audience": "kafka",
                        "private_key_env": SLOTS[kid]}}


def keygen(kid):
    subprocess.run([str(CLI), "keygen", "--key-id", kid, "--key-out", str(KEYS / f"{kid}.pem"),
                    "--jwks-out", str(KEYS / f"{kid}.jwks.json")],
                   check=True, capture_output=True, timeout=60)


def publish_jwks(*kids):
    """Writes the broker's JWKS with these keys, atomically, as an operator must: Kafka 4.1+
    reads the file again when its modification time changes; older brokers fetch it over
    HTTP every JWKS_REFRESH_MS."""
    keys = [key for kid in kids for key in json.loads((KEYS / f"{kid}.jwks.json").read_text())["keys"]]
    tmp = KEYS / "jwks.json.tmp"
    tmp.write_text(json.dumps({"keys": keys}))
    os.replace(tmp, KEYS / "jwks.json")


@pytest.fixture(scope="module")
def stack():
    assert CLI.is_file(), f"{CLI} missing: make builds it (cargo build --release -p kafka-identity-cli)"
    KEYS.mkdir(parents=True, exist_ok=True)
    # The next key is in its slot from the start (step 0 of the rotation), but only the
    # active key is in the broker's JWKS.
    keygen("old")
    keygen("new")
    publish_jwks("old")
    if jwks_file_is_reread():
        jwks, refresh = f"file://{KEYS / 'jwks.json'}", []
    else:
        jwks = jwks_http_url()
        refresh = [f"listener.name.mesh.oauthbearer.sasl.oauthbearer.jwks.endpoint.refresh.ms={JWKS_REFRESH_MS}"]
    (KEYS / "broker.properties").write_text("\n".join([
        "connections.max.reauth.ms=10000", *refresh,
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
        # Two key slots in Envoy's environment, named in host_env_keys, as an istio-proxy
        # container gets them from a Secret.
        "KAFKA_IDENTITY_VM_ENV_FILES": " ".join(f"{SLOTS[kid]}={KEYS / f'{kid}.pem'}" for kid in ("old", "new")),
    })
    try:
        yield side.up()
    finally:
        side.down()


def new_lines(path, since):
    return path.read_text(errors="replace")[since:]


def test_signed_tokens_authorize_each_principal(stack):
    from confluent_kafka import Producer
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


def pem_body(path):
    """The base64 lines of a PEM key: what would show if the key leaked."""
    return "".join(line for line in path.read_text().splitlines() if not line.startswith("-----"))


def test_config_dump_does_not_contain_the_signing_key(stack):
    admin = stack.stack["KAFKA_IDENTITY_ENVOY_ADMIN"]
    with urllib.request.urlopen(f"http://{admin}/config_dump?include_eds", timeout=10) as r:
        dump = r.read().decode()
    # The dump has the filter and names the key slots (the .wasm's VM takes them from Envoy's
    # environment by name; Envoy does not dump the native module's ECDS configuration, whose
    # key comes from Envoy's environment too)...
    if stack.stack.get("KAFKA_IDENTITY_FILTER_KIND") == "native":
        assert "kafka_identity" in dump
    else:
        assert "kafka_identity" in dump and SLOTS["old"] in dump and "host_env_keys" in dump
    # ...but holds neither key, not even one line of either (JSON may escape newlines).
    flat = dump.replace("\\n", "").replace("\n", "").replace(" ", "")
    for kid in ("old", "new"):
        body = pem_body(KEYS / f"{kid}.pem")
        assert body not in flat, f"the {kid} signing key is in /config_dump"
        for line in (KEYS / f"{kid}.pem").read_text().splitlines():
            if not line.startswith("-----"):
                assert line not in dump, f"a line of the {kid} key is in /config_dump"
    assert "PRIVATE KEY" not in dump


def direct_sasl(stack, token):
    """Authenticates straight to the broker's mesh listener (no Envoy) with `token`; returns
    the broker's refusal, or None once it let the client in and showed it topic "orders".

    A raw client, not librdkafka: the mesh listener advertises Envoy's TLS port, and a client
    library that follows the advertised address after bootstrap (librdkafka does) ends up at
    Envoy speaking plaintext, which made the control below fail in CI for that reason alone."""
    host, port = stack.stack["KAFKA_IDENTITY_MESH_LISTENER"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        conn = kafka_raw.Conn(sock)
        try:
            conn.sasl_oauthbearer("unused", token)
        except kafka_raw.KafkaError as refused:
            return str(refused)
        assert conn.metadata("orders") == 0, "authenticated as admin, yet no metadata for orders"
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
    assert "invalid_token" in direct_sasl(stack, token_for_admin({}))
    # Control: the same client with a token the broker trusts gets in, so the refusal
    # above is the signature check, not a broken connection.
    assert direct_sasl(stack, token_for_admin(signing("old"), KEYS / "old.pem")) is None


def test_direct_client_with_a_token_from_another_key_is_refused(stack):
    rogue = KEYS / "rogue"
    rogue.mkdir(exist_ok=True)
    subprocess.run([str(CLI), "keygen", "--key-id", "old", "--key-out", str(rogue / "key.pem"),
                    "--jwks-out", str(rogue / "jwks.json")], check=True, capture_output=True)
    assert "invalid_token" in direct_sasl(stack, token_for_admin(signing("old"), rogue / "key.pem"))


def connection_tokens(log_text):
    """{source address: [(outcome, token), ...]} from the filter's per-connection lines."""
    by_source = {}
    pattern = r"source=(\S+) identity=\S+ principal=\S+ token=(\S+) outcome=(authenticated|reauthenticated)"
    for source, token, outcome in re.findall(pattern, log_text):
        by_source.setdefault(source, []).append((outcome, token))
    return by_source


def test_key_rotation_reaches_open_connections(stack):
    """docs/security.md, "Rotation", step by step, with a producer and a consumer connected
    from before step 1 until after step 3. Runs last: it leaves only the new key trusted."""
    envoy_log = REPO / stack.stack["KAFKA_IDENTITY_ENVOY_LOG"]
    broker_log = REPO / stack.stack["KAFKA_IDENTITY_KAFKA_LOG"]
    mark = len(envoy_log.read_text(errors="replace"))
    broker_mark = len(broker_log.read_text(errors="replace"))
    counts = {}

    def step1_publish_the_new_key():
        # The clients' connections are open from here to the end of the procedure.
        counts["step1_at"] = time.time()
        counts["authenticated_at_step1"] = stack.counter("authenticated")
        counts["reauth_at_step1"] = stack.counter("reauthenticated")
        publish_jwks("old", "new")

    def step2_switch_the_filter():
        stack.filter_update(KEYS / "filter-new.json")
        counts["switched"] = time.time()
        counts["reauth_at_switch"] = stack.counter("reauthenticated")

    def step3_remove_the_old_key():
        # One token lifetime after the switch took effect.
        assert time.time() - counts["switched"] >= TOKEN_LIFETIME
        publish_jwks("new")
        counts["reauth_at_removal"] = stack.counter("reauthenticated")

    switch_at = 15
    report = produce_and_consume(stack, switch_at + TOKEN_LIFETIME + 35, steps=[
        (8, step1_publish_the_new_key),
        (switch_at, step2_switch_the_filter),
        (switch_at + TOKEN_LIFETIME + 5, step3_remove_the_old_key),
    ])
    procedure_s = time.time() - counts["step1_at"]
    reauthenticated, authenticated = stack.counter("reauthenticated"), stack.counter("authenticated")
    failed_on_broker = [ln for ln in new_lines(broker_log, broker_mark).splitlines() if "Failed authentication" in ln]
    assert report["disconnects"] == [], report["disconnects"][:3]
    assert report["errors"] == [], report["errors"][:3]
    assert report["delivered"] == len(report["sent"]) > 500
    assert sorted(report["consumed"]) == sorted(report["sent"]), "lost or duplicated messages"
    assert stack.counter("auth_failed") == 0
    assert failed_on_broker == [], failed_on_broker[:3]
    # No connection was opened again during the procedure: the filter authenticated none.
    assert authenticated == counts["authenticated_at_step1"], "a client reconnected during the rotation"
    # Connections kept re-authenticating after the old key was gone (10 s sessions).
    assert reauthenticated - counts["reauth_at_removal"] >= 4
    # The connections that authenticated with the old key before the switch went on,
    # without reconnecting, re-authenticating with the new one.
    assert wait_for_text(envoy_log, "token=ES256:new outcome=reauthenticated")
    tokens = connection_tokens(new_lines(envoy_log, mark))
    carried_over = {source: seen for source, seen in tokens.items()
                    if ("authenticated", "ES256:old") in seen and ("reauthenticated", "ES256:new") in seen}
    assert len(carried_over) >= 2, tokens
    for seen in carried_over.values():
        first_new = seen.index(("reauthenticated", "ES256:new"))
        assert all(token == "ES256:new" for _, token in seen[first_new:]), seen
    record_figures("key-rotation", {
        "envoy_version": stack.stack["KAFKA_IDENTITY_ENVOY_VERSION"], "token_lifetime_s": TOKEN_LIFETIME,
        "connections_max_reauth_ms": 10000, "procedure_s": round(procedure_s),
        "reauthenticated": {"total": reauthenticated - counts["reauth_at_step1"],
                            "after_switch": reauthenticated - counts["reauth_at_switch"],
                            "after_old_key_removed": reauthenticated - counts["reauth_at_removal"]},
        "connections_carried_over": len(carried_over),
        "new_authentications": authenticated - counts["authenticated_at_step1"],
        "disconnects": len(report["disconnects"]), "client_errors": len(report["errors"]),
        "auth_failed": stack.counter("auth_failed"), "broker_failed_authentications": len(failed_on_broker),
        "records": {"sent": len(report["sent"]), "delivered": report["delivered"],
                    "consumed": len(report["consumed"])}})
    # A connection opened now authenticates with the new key.
    from confluent_kafka import Producer
    after = Producer(dict(stack.client_conf("producer"), acks="all"))
    after.produce("orders", b"after-rotation")
    assert after.flush(30) == 0
    assert wait_for_text(envoy_log, "token=ES256:new outcome=authenticated")
    assert stack.counter("auth_failed") == 0
