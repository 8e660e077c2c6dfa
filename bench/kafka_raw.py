"""A minimal Kafka client on raw sockets, for the connection benchmarks.

Hand-encoded, non-flexible request versions only: ApiVersions v2, Metadata v8, Produce v8
(one record batch, magic 2), SaslHandshake v1, SaslAuthenticate v1. Enough to time "connect
to first acknowledgement" without a client library's own set-up cost in the way.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import struct
import time

API_PRODUCE, API_METADATA, API_API_VERSIONS = 0, 3, 18
API_SASL_HANDSHAKE, API_SASL_AUTHENTICATE = 17, 36
CLIENT_ID = b"kafka-identity-bench"


class KafkaError(Exception):
    pass


def _str(s: bytes | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    return struct.pack(">h", len(s)) + s


def _bytes(b: bytes) -> bytes:
    return struct.pack(">i", len(b)) + b


def _varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)  # zig-zag
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def record_batch(value: bytes, timestamp_ms: int) -> bytes:
    """A v2 record batch with one record (no key, no headers)."""
    body = b"\x00" + _varint(0) + _varint(0) + _varint(-1) + _varint(len(value)) + value + _varint(0)
    record = _varint(len(body)) + body
    after_crc = (
        struct.pack(">hiqqqhii", 0, 0, timestamp_ms, timestamp_ms, -1, -1, -1, 1) + record
    )
    crc = crc32c(after_crc)
    after_len = struct.pack(">ibI", -1, 2, crc) + after_crc  # partition leader epoch, magic, crc
    return struct.pack(">qi", 0, len(after_len)) + after_len


def produce_body(topic: str, partition: int, batch: bytes, acks: int = -1) -> bytes:
    return (
        _str(None)
        + struct.pack(">hi", acks, 30_000)
        + struct.pack(">i", 1)
        + _str(topic.encode())
        + struct.pack(">i", 1)
        + struct.pack(">i", partition)
        + _bytes(batch)
    )


def metadata_body(topic: str) -> bytes:
    return struct.pack(">i", 1) + _str(topic.encode()) + b"\x00\x00\x00"


def unsecured_jwt(sub: str, lifetime_s: int = 3600) -> str:
    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d, separators=(",", ":")).encode()).decode().rstrip("=")

    now = int(time.time())
    return f"{b64({'alg': 'none'})}.{b64({'sub': sub, 'iat': now, 'exp': now + lifetime_s})}."


def client_first(token: str) -> bytes:
    """RFC 7628 client-first message."""
    return f"n,,\x01auth=Bearer {token}\x01\x01".encode()


def _authenticate_answer(resp: bytes) -> bytes:
    """A SaslAuthenticate v1 answer: raises on its error code, else returns its auth_bytes
    (which come after the error code and the nullable error message)."""
    (err, n) = struct.unpack_from(">hh", resp, 0)
    msg_end = 4 + max(n, 0)
    if err:
        raise KafkaError(f"SaslAuthenticate error {err}: {resp[4:msg_end].decode(errors='replace')}")
    (size,) = struct.unpack_from(">i", resp, msg_end)
    return resp[msg_end + 4:msg_end + 4 + max(size, 0)]


class Conn:
    """One Kafka connection (plain TCP or TLS), requests sent and answered one at a time."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.corr = 0

    def request(self, api_key: int, version: int, body: bytes) -> bytes:
        self.corr += 1
        header = struct.pack(">hhi", api_key, version, self.corr) + _str(CLIENT_ID)
        payload = header + body
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)
        resp = self._frame()
        (corr,) = struct.unpack_from(">i", resp, 0)
        if corr != self.corr:
            raise KafkaError(f"correlation id {corr}, expected {self.corr}")
        return resp[4:]

    def _recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise KafkaError("connection closed by peer")
            buf += chunk
        return bytes(buf)

    def _frame(self) -> bytes:
        (size,) = struct.unpack(">i", self._recv(4))
        return self._recv(size)

    def api_versions(self) -> None:
        resp = self.request(API_API_VERSIONS, 2, b"")
        (err,) = struct.unpack_from(">h", resp, 0)
        if err:
            raise KafkaError(f"ApiVersions error {err}")

    def metadata(self, topic: str) -> int:
        """Metadata for one topic; returns that topic's error code (0: it exists and we may see it)."""
        resp = self.request(API_METADATA, 8, metadata_body(topic))
        off = 4  # throttle_time_ms
        (brokers,) = struct.unpack_from(">i", resp, off)
        off += 4
        for _ in range(brokers):
            off += 4  # node_id
            (host_len,) = struct.unpack_from(">h", resp, off)
            off += 2 + host_len + 4  # host, port
            (rack_len,) = struct.unpack_from(">h", resp, off)
            off += 2 + max(rack_len, 0)
        (cluster_len,) = struct.unpack_from(">h", resp, off)
        off += 2 + max(cluster_len, 0) + 4  # cluster_id, controller_id
        (topics,) = struct.unpack_from(">i", resp, off)
        if topics != 1:
            raise KafkaError(f"Metadata answered {topics} topics, asked for 1")
        (err,) = struct.unpack_from(">h", resp, off + 4)
        return err

    def produce(self, topic: str, partition: int, batch: bytes) -> None:
        resp = self.request(API_PRODUCE, 8, produce_body(topic, partition, batch))
        # responses[0].name, partitions[0].index, .error_code
        off = 4
        (name_len,) = struct.unpack_from(">h", resp, off)
        off += 2 + name_len + 4 + 4
        (err,) = struct.unpack_from(">h", resp, off)
        if err:
            raise KafkaError(f"Produce error {err}")

    def sasl_oauthbearer(self, sub: str, token: str | None = None) -> None:
        """SaslHandshake, then SaslAuthenticate, each waiting for its answer (as a client does)."""
        resp = self.request(API_SASL_HANDSHAKE, 1, _str(b"OAUTHBEARER"))
        (err,) = struct.unpack_from(">h", resp, 0)
        if err:
            raise KafkaError(f"SaslHandshake error {err}")
        resp = self.request(API_SASL_AUTHENTICATE, 1, _bytes(client_first(token or unsecured_jwt(sub))))
        challenge = _authenticate_answer(resp)
        if challenge:
            # RFC 7628 §3.2.2: a refused token comes back as an error challenge with error code 0;
            # the client answers with a lone 0x01 and the broker then closes with the error.
            _authenticate_answer(self.request(API_SASL_AUTHENTICATE, 1, _bytes(b"\x01")))
            raise KafkaError(f"SaslAuthenticate refused: {challenge.decode(errors='replace')}")

    def sasl_pipelined_api_versions(self, token: str) -> None:
        """SaslHandshake + SaslAuthenticate + ApiVersions in one write, then their three answers:
        what the filter does on a client's first request, done by the client itself."""
        frames = b""
        for api_key, version, body in [
            (API_SASL_HANDSHAKE, 1, _str(b"OAUTHBEARER")),
            (API_SASL_AUTHENTICATE, 1, _bytes(client_first(token))),
            (API_API_VERSIONS, 2, b""),
        ]:
            self.corr += 1
            payload = struct.pack(">hhi", api_key, version, self.corr) + _str(CLIENT_ID) + body
            frames += struct.pack(">i", len(payload)) + payload
        self.sock.sendall(frames)
        first = self.corr - 2
        answers = [self._frame() for _ in range(3)]
        for i, resp in enumerate(answers):
            (corr,) = struct.unpack_from(">i", resp, 0)
            if corr != first + i:
                raise KafkaError(f"correlation id {corr}, expected {first + i}")
        (err,) = struct.unpack_from(">h", answers[0], 4)
        if err:
            raise KafkaError(f"SaslHandshake error {err}")
        _authenticate_answer(answers[1][4:])
        (err,) = struct.unpack_from(">h", answers[2], 4)
        if err:
            raise KafkaError(f"ApiVersions error {err}")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def tls_context(ca: str, cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.load_cert_chain(cert, key)
    return ctx


def connect(host: str, port: int, ctx: ssl.SSLContext | None, timeout: float = 10.0) -> Conn:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ctx is not None:
        sock = ctx.wrap_socket(sock, server_hostname="localhost")  # the handshake runs here
    return Conn(sock)
