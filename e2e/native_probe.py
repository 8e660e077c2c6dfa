"""The native module (issue 22) in a real Envoy without Kafka and without fixed ports.

One Envoy on ephemeral ports loads the dynamic module in front of a TCP server that records
what reaches the "broker". Checks, each against what Envoy and that server saw:
  1. an mTLS client with a workload certificate: the broker gets SaslHandshake and
     SaslAuthenticate (a token whose sub is the client's SPIFFE ID) in front of the client's
     own first request; the broker's SASL answers are hidden from the client, which gets
     exactly the answer to its own request; `authenticated` counted, the line logged;
  2. a TLS client without a certificate: refused, nothing reaches the broker,
     `rejected_no_identity` counted, the refusal logged;
  3. with --panic-module (a `--features panic-test` build): a client sending PANIC! makes the
     read hook panic; that connection is closed, nothing of it reaches the broker, `panics`
     is counted, Envoy keeps running and serves the next client as in 1.

usage: python e2e/native_probe.py --envoy BIN --module F.so [--panic-module F.so] --state DIR
Exit status 0 when every check passes. Light (one Envoy, one worker): no e2e lock needed.
"""
import argparse
import base64
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PRODUCER = "spiffe://cluster.local/ns/apps/sa/producer"
SASL_HANDSHAKE, SASL_AUTHENTICATE, API_VERSIONS = 17, 36, 18


def api_versions_request():
    body = struct.pack(">hhi", API_VERSIONS, 3, 1) + struct.pack(">h", 5) + b"probe" + b"\x00"
    body += b"\x06probe\x041.0\x00"
    return struct.pack(">i", len(body)) + body


def frames(stream):
    """(api key, frame) of each whole request in `stream`."""
    out = []
    while len(stream) >= 6:
        (size,) = struct.unpack(">i", stream[:4])
        if len(stream) < 4 + size:
            break
        out.append((struct.unpack(">h", stream[4:6])[0], stream[: 4 + size]))
        stream = stream[4 + size:]
    return out


def answer(request):
    """What a broker that accepts the filter's SASL would answer to `request` (a whole
    frame): SaslHandshake v1 (OAUTHBEARER), SaslAuthenticate v0-v2 (a 60 s session), and for
    anything else a frame with the request's correlation id and the body CLIENT-ANSWER."""
    key, version, corr = struct.unpack(">hhi", request[4:12])
    if key == SASL_HANDSHAKE:
        body = struct.pack(">ih", corr, 0) + struct.pack(">i", 1)
        body += struct.pack(">h", 11) + b"OAUTHBEARER"
    elif key == SASL_AUTHENTICATE and version >= 2:
        # Flexible: response header v1 (tagged fields), compact null message, compact empty bytes.
        body = struct.pack(">i", corr) + b"\x00" + struct.pack(">h", 0) + b"\x00" + b"\x01"
        body += struct.pack(">q", 60_000) + b"\x00"
    elif key == SASL_AUTHENTICATE:
        body = struct.pack(">ihhi", corr, 0, -1, 0)
        if version >= 1:
            body += struct.pack(">q", 60_000)
    else:
        body = struct.pack(">i", corr) + CLIENT_ANSWER
    return struct.pack(">i", len(body)) + body


CLIENT_ANSWER = b"CLIENT-ANSWER"


class Recorder:
    """The 'broker': accepts connections, keeps what each one sent and answers each request
    (see `answer`)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            record = bytearray()
            with self.lock:
                self.connections.append(record)
            threading.Thread(target=self._read, args=(conn, record), daemon=True).start()

    def _read(self, conn, record):
        answered = 0
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                with self.lock:
                    record.extend(data)
                    requests = frames(bytes(record))
                for _, frame in requests[answered:]:
                    conn.sendall(answer(frame))
                answered = len(requests)

    def received(self):
        with self.lock:
            return [bytes(r) for r in self.connections]


def issue_certs(state):
    certs = os.path.join(state, "certs")
    tool = os.path.join(HERE, "local", "issue_cert.py")
    for args in (["istio-system", "envoy", "--name", "envoy", "--ip", "127.0.0.1"],
                 ["apps", "producer"]):
        subprocess.run([sys.executable, tool, *args, "--out", certs, "--state", state],
                       check=True, stdout=subprocess.DEVNULL)
    return certs, os.path.join(state, "ca", "ca.crt")


def envoy_config(upstream_port, certs, ca, filter_config):
    tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": False,
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": f"{certs}/envoy.crt"},
                                  "private_key": {"filename": f"{certs}/envoy.key"}}],
            "validation_context": {"trusted_ca": {"filename": ca}}}}}
    module = {"name": "envoy.filters.network.dynamic_modules", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.dynamic_modules.v3."
                 "DynamicModuleNetworkFilter",
        "dynamic_module_config": {"name": "kafka_identity_native"},
        "filter_name": "kafka_identity",
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                          "value": json.dumps(filter_config)}}}
    proxy = {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": "to_broker", "cluster": "broker"}}
    address = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
    return {
        "admin": {"address": address},
        "static_resources": {
            "listeners": [{"name": "inbound", "address": address,
                           "filter_chains": [{"transport_socket": tls,
                                              "filters": [module, proxy]}]}],
            "clusters": [{"name": "broker", "type": "STATIC", "connect_timeout": "2s",
                          "load_assignment": {"cluster_name": "broker", "endpoints": [{
                              "lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                                  "address": "127.0.0.1", "port_value": upstream_port}}}}]}]}}]}}


class Envoy:
    def __init__(self, binary, module, workdir, config):
        self.dir = workdir
        os.makedirs(os.path.join(workdir, "module"), exist_ok=True)
        # Envoy finds a module by name, lib<name>.so, on ENVOY_DYNAMIC_MODULES_SEARCH_PATH.
        so = os.path.join(workdir, "module", "libkafka_identity_native.so")
        with open(module, "rb") as src, open(so, "wb") as dst:
            dst.write(src.read())
        with open(os.path.join(workdir, "envoy.json"), "w") as f:
            json.dump(config, f, indent=1)
        self.admin_path = os.path.join(workdir, "admin.addr")
        if os.path.exists(self.admin_path):
            os.remove(self.admin_path)
        self.log = os.path.join(workdir, "envoy.log")
        env = dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=os.path.dirname(so))
        self.proc = subprocess.Popen(
            [binary, "-c", os.path.join(workdir, "envoy.json"), "--disable-hot-restart",
             "--concurrency", "1", "-l", "info", "--admin-address-path", self.admin_path,
             "--log-path", self.log, "--file-flush-interval-msec", "100"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.admin = None
        for _ in range(300):
            if self.proc.poll() is not None:
                raise SystemExit(f"envoy exited during startup, see {self.log}")
            if os.path.exists(self.admin_path) and open(self.admin_path).read().strip():
                admin = "http://" + open(self.admin_path).read().strip()
                try:
                    if urllib.request.urlopen(admin + "/ready", timeout=1).read().startswith(b"LIVE"):
                        self.admin = admin
                        break
                except OSError:
                    pass
            time.sleep(0.1)
        if self.admin is None:
            raise SystemExit(f"envoy not ready, see {self.log}")
        listeners = json.load(urllib.request.urlopen(self.admin + "/listeners?format=json"))
        self.port = listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]

    def counter(self, name):
        text = urllib.request.urlopen(self.admin + "/stats?filter=kafka_identity").read().decode()
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key.endswith("kafka_identity." + name):
                return int(value)
        return None

    def logged(self, text):
        with open(self.log) as f:
            return text in f.read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)


def connect(port, certs, ca, client_cert, first_bytes):
    """A TLS client: sends `first_bytes`, then reads until Envoy closes, the broker's answer
    to the client's request is in, or 2 s pass. Returns what it got (b"" when closed)."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    if client_cert:
        ctx.load_cert_chain(f"{certs}/{client_cert}.crt", f"{certs}/{client_cert}.key")
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw) as tls:
            tls.sendall(first_bytes)
            tls.settimeout(2)
            while CLIENT_ANSWER not in got:
                try:
                    data = tls.recv(4096)
                except (TimeoutError, socket.timeout):
                    break
                except OSError:
                    return got
                if not data:
                    return got
                got += data
    return got


def token_sub(stream):
    match = re.search(rb"auth=Bearer ([A-Za-z0-9_\-]+)\.([A-Za-z0-9_\-]+)\.", stream)
    if not match:
        return None
    payload = match.group(2) + b"=" * (-len(match.group(2)) % 4)
    return json.loads(base64.urlsafe_b64decode(payload)).get("sub")


def wait_for(predicate, seconds=5.0):
    """Polls a condition on what the broker or Envoy saw; the checks assert on the result,
    not on the time it took."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--envoy", required=True)
    p.add_argument("--module", required=True)
    p.add_argument("--panic-module")
    p.add_argument("--state", required=True, help="a directory for certificates and logs")
    args = p.parse_args()
    os.makedirs(args.state, exist_ok=True)
    certs, ca = issue_certs(args.state)
    failed = []

    def check(what, ok):
        print(("PASS: " if ok else "FAIL: ") + what, flush=True)
        if not ok:
            failed.append(what)

    def producer_is_injected(envoy, broker):
        before = len(broker.received())
        authenticated = envoy.counter("authenticated")
        got = connect(envoy.port, certs, ca, "apps.producer", api_versions_request())
        wait_for(lambda: len(broker.received()) > before
                 and len(frames(broker.received()[-1])) >= 3)
        sent = broker.received()[-1] if len(broker.received()) > before else b""
        keys = [k for k, _ in frames(sent)]
        check(f"mTLS client: the broker got SaslHandshake, SaslAuthenticate, then the client's "
              f"ApiVersions (api keys {keys})", keys[:3] == [SASL_HANDSHAKE, SASL_AUTHENTICATE,
                                                             API_VERSIONS])
        check(f"the injected token's sub is the client's SPIFFE ID ({token_sub(sent)})",
              token_sub(sent) == PRODUCER)
        expected = answer(api_versions_request())
        check(f"the client got exactly the broker's answer to its request, the SASL answers "
              f"hidden ({got!r})", got == expected)
        check("authenticated counted",
              wait_for(lambda: envoy.counter("authenticated") == authenticated + 1))
        check("the authentication was logged with the principal", wait_for(lambda: envoy.logged(
            f"principal={PRODUCER} token=unsecured outcome=authenticated session_lifetime_ms=60000")))

    broker = Recorder()
    config = {"stat_prefix": "kafka_identity"}
    envoy = Envoy(args.envoy, args.module, os.path.join(args.state, "envoy"),
                  envoy_config(broker.port, certs, ca, config))
    try:
        producer_is_injected(envoy, broker)
        check("connections counted", wait_for(lambda: envoy.counter("connections") == 1))
        before = len(broker.received())
        got = connect(envoy.port, certs, ca, None, api_versions_request())
        check(f"TLS client without a certificate: closed by Envoy, got nothing ({got!r})",
              got == b"")
        check("rejected_no_identity counted",
              wait_for(lambda: envoy.counter("rejected_no_identity") == 1))
        check("nothing of it reached the broker",
              all(not r for r in broker.received()[before:]))
        check("the refusal was logged", wait_for(lambda: envoy.logged(
            "outcome=rejected_no_identity reason=\"no client certificate")))
        check("no panic counted", envoy.counter("panics") == 0)
    finally:
        envoy.stop()

    if args.panic_module:
        broker = Recorder()
        envoy = Envoy(args.envoy, args.panic_module, os.path.join(args.state, "envoy-panic"),
                      envoy_config(broker.port, certs, ca, config))
        try:
            got = connect(envoy.port, certs, ca, "apps.producer", b"PANIC!" + api_versions_request())
            check("a connection whose read hook panics is closed", got == b"")
            check("panics counted", wait_for(lambda: envoy.counter("panics") == 1))
            check("the panic was logged",
                  wait_for(lambda: envoy.logged("the filter panicked in read")))
            check("nothing of it reached the broker", all(not r for r in broker.received()))
            check("Envoy is still running", envoy.alive())
            producer_is_injected(envoy, broker)
        finally:
            envoy.stop()

    print("all checks passed" if not failed else f"{len(failed)} check(s) FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
