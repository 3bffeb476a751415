"""Something at Temporal's address that answers every gRPC call with one fixed status.

Not Temporal: the smallest HTTP/2 server a gRPC client accepts (the server
preface, SETTINGS and PING acknowledged, one HEADERS frame ending each
stream), so a test can provoke what a real frontend or a proxy in front of
it says for good: ``grpc-status: 16`` (UNAUTHENTICATED: a wrong API key), or
an HTTP 404 (a proxy with no such route: gRPC reads it as UNIMPLEMENTED).
"""

from __future__ import annotations

import socket
import struct
import threading
from types import TracebackType

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HEADERS, _SETTINGS, _PING = 1, 4, 6
_END_STREAM, _ACK, _END_HEADERS = 0x1, 0x1, 0x4


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def _literal(name: str, value: str) -> bytes:
    # HPACK "literal header field without indexing, new name", no Huffman.
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


class GrpcStub:
    """Serve on 127.0.0.1 (a free port) until closed; ``address`` is host:port.

    Args:
        grpc_status: answer every call with this gRPC status (HTTP 200),
            or, if None, with HTTP ``http_status`` and no gRPC status at all.
    """

    def __init__(self, *, grpc_status: int | None = None, http_status: int = 404) -> None:
        if grpc_status is not None:
            # :status 200 is entry 8 of HPACK's static table.
            self._block = (
                b"\x88"
                + _literal("content-type", "application/grpc")
                + _literal("grpc-status", str(grpc_status))
                + _literal("grpc-message", "stub: refused")
            )
        else:
            self._block = _literal(":status", str(http_status))
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                buf = b""
                while len(buf) < len(_PREFACE):
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                buf = buf[len(_PREFACE) :]
                conn.sendall(_frame(_SETTINGS, 0, 0))
                while True:
                    while len(buf) < 9:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buf += chunk
                    length = int.from_bytes(buf[:3], "big")
                    kind, flags = buf[3], buf[4]
                    stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                    while len(buf) < 9 + length:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buf += chunk
                    payload, buf = buf[9 : 9 + length], buf[9 + length :]
                    if kind == _SETTINGS and not flags & _ACK:
                        conn.sendall(_frame(_SETTINGS, _ACK, 0))
                    elif kind == _PING and not flags & _ACK:
                        conn.sendall(_frame(_PING, _ACK, 0, payload))
                    elif kind == _HEADERS:
                        conn.sendall(
                            _frame(_HEADERS, _END_STREAM | _END_HEADERS, stream, self._block)
                        )
            except OSError:
                return

    def close(self) -> None:
        self._closed = True
        self._sock.close()

    def __enter__(self) -> GrpcStub:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
