"""The witness's HTTP server: C2SP tlog-witness ``POST <prefix>/add-checkpoint``.

Standard library only (``http.server``, one thread per connection, HTTP/1.1
keep-alive). Besides the protocol endpoint, ``GET <prefix>/status`` answers
JSON with the witness's name, verifier key and the latest cosigned head of
each log, for health pages.
"""

from __future__ import annotations

import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

from ecp.lineage.witness._witness import MAX_REQUEST_BYTES, Answer, Witness

__all__ = ["WitnessServer", "serve"]

_log = logging.getLogger("ecp.witness")
_TIMEOUT_S: Final = 30.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits
    # for the client's delayed ACK (tens of ms on every cosignature).
    disable_nagle_algorithm = True
    # Per-connection socket timeout: an idle or trickling client cannot hold
    # a thread for ever.
    timeout = _TIMEOUT_S
    server: WitnessServer

    def _send(self, answer: Answer) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def do_POST(self) -> None:
        if self.path != self.server.prefix + "/add-checkpoint":
            self._send(Answer(404, "text/plain", b"not found\n"))
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(Answer(411, "text/plain", b"Content-Length required\n"))
            return
        if not 0 <= length <= MAX_REQUEST_BYTES:
            self.close_connection = True
            self._send(Answer(413, "text/plain", b"request too large\n"))
            return
        body = self.rfile.read(length)
        try:
            answer = self.server.witness.add_checkpoint(body)
        except Exception:  # noqa: BLE001 - keep serving; the client sees a 500
            _log.exception("add-checkpoint failed")
            answer = Answer(500, "text/plain", b"internal error\n")
        self._send(answer)

    def do_GET(self) -> None:
        if self.path != self.server.prefix + "/status":
            self._send(Answer(404, "text/plain", b"not found\n"))
            return
        state = self.server.witness.state
        doc = {
            "name": state.name,
            "vkey": state.verifier.vkey(),
            "logs": [
                {"origin": h.origin, "size": h.size, "cosignedAt": h.updated_at}
                for h in state.heads()
            ],
        }
        self._send(Answer(200, "application/json", json.dumps(doc).encode()))

    def log_message(self, format: str, *args: object) -> None:
        _log.info("%s " + format, self.address_string(), *args)


class WitnessServer(ThreadingHTTPServer):
    """An HTTP server in front of one :class:`Witness`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], witness: Witness, prefix: str = "") -> None:
        self.witness = witness
        self.prefix = prefix.rstrip("/")
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        """The submission prefix URL."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{self.prefix}"


def serve(witness: Witness, host: str, port: int, prefix: str = "") -> None:
    """Serve ``witness`` until interrupted."""
    with WitnessServer((host, port), witness, prefix) as server:
        _log.info("witness %s listening on %s", witness.state.name, server.url)
        server.serve_forever()
