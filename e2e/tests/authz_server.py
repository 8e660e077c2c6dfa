"""A slow authorization server for Envoy's network ext_authz filter: gRPC
`envoy.service.auth.v3.Authorization/Check` over cleartext HTTP/2, written on plain
sockets so the suite needs no gRPC or HTTP/2 library. Every check is allowed after
`delay` seconds, long enough for a client to pipeline requests while it is pending.

The server never decodes the request: it answers each request stream, once its body has
ended, with an HTTP/2 response whose header blocks use only literal HPACK fields (no
Huffman, no dynamic table) and whose message is an empty CheckResponse (status code 0,
OK). It keeps flow-control windows open and answers PINGs and SETTINGS."""

import socket
import struct
import threading
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x4, 0x6, 0x7, 0x8
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
# CheckResponse { status: google.rpc.Status { code: 0 } }: field 1, an empty message.
CHECK_OK = b"\x0a\x00"


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    """HPACK literal header field without indexing, new name, no Huffman coding."""
    name, value = name.encode(), value.encode()
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


class SlowAuthz:
    """Listens on `host` (default 127.0.0.1, a free port); `checks` counts the answered checks."""

    def __init__(self, delay, host="127.0.0.1", port=0):
        self.delay = delay
        self.checks = 0
        self.listener = socket.create_server((host, port))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.threads = []

    def start(self):
        self.listener.settimeout(0.5)
        self._spawn(self._accept)
        return self

    def stop(self):
        self.stopped.set()
        self.listener.close()
        for t in self.threads:
            t.join(timeout=5)

    def _spawn(self, target, *args):
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._spawn(self._serve, conn)

    def _serve(self, conn):
        lock = threading.Lock()

        def send(data):
            with lock:
                conn.sendall(data)

        conn.settimeout(0.5)
        try:
            if self._read(conn, len(PREFACE)) != PREFACE:
                return
            send(frame(SETTINGS, 0, 0))
            while not self.stopped.is_set():
                header = self._read(conn, 9)
                length = int.from_bytes(header[:3], "big")
                kind, flags = header[3], header[4]
                stream = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
                payload = self._read(conn, length)
                if kind == SETTINGS and not flags & ACK:
                    send(frame(SETTINGS, ACK, 0))
                elif kind == PING and not flags & ACK:
                    send(frame(PING, ACK, 0, payload))
                elif kind == DATA:
                    if length:
                        # Give back what the request used of both windows.
                        increment = struct.pack(">I", length)
                        send(frame(WINDOW_UPDATE, 0, 0, increment) + frame(WINDOW_UPDATE, 0, stream, increment))
                    if flags & END_STREAM:
                        self._spawn(self._answer, send, stream)
                elif kind == HEADERS and flags & END_STREAM:
                    self._spawn(self._answer, send, stream)
                elif kind == GOAWAY:
                    return
                # WINDOW_UPDATE, PRIORITY, RST_STREAM, CONTINUATION: nothing to do.
        except (ConnectionError, OSError):
            pass
        finally:
            conn.close()

    def _read(self, conn, n):
        data = b""
        while len(data) < n:
            if self.stopped.is_set():
                raise ConnectionError("stopped")
            try:
                chunk = conn.recv(n - len(data))
            except socket.timeout:
                continue
            if not chunk:
                raise ConnectionError("peer closed")
            data += chunk
        return data

    def _answer(self, send, stream):
        time.sleep(self.delay)
        headers = b"\x88" + literal("content-type", "application/grpc")  # :status 200
        message = b"\x00" + struct.pack(">I", len(CHECK_OK)) + CHECK_OK
        trailers = literal("grpc-status", "0")
        try:
            send(frame(HEADERS, END_HEADERS, stream, headers)
                 + frame(DATA, 0, stream, message)
                 + frame(HEADERS, END_HEADERS | END_STREAM, stream, trailers))
            self.checks += 1
        except OSError:
            pass


def main(argv):
    """`authz_server.py HOST PORT DELAY`: serve until SIGTERM (the mesh's CUSTOM provider)."""
    import signal
    import sys
    if len(argv) != 3:
        sys.exit("usage: authz_server.py HOST PORT DELAY_SECONDS")
    server = SlowAuthz(float(argv[2]), argv[0], int(argv[1])).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(f"authz: allowing every check after {server.delay} s on {argv[0]}:{server.port}", flush=True)
    while not done.wait(5):
        print(f"authz: {server.checks} checks answered", flush=True)
    server.stop()


if __name__ == "__main__":
    import sys as _sys
    main(_sys.argv[1:])
