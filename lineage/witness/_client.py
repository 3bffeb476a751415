"""The log's side of C2SP tlog-witness: ask a witness to cosign a checkpoint.

A :class:`WitnessClient` knows one witness: its submission URL prefix and its
cosignature/v1 verifier key. :meth:`WitnessClient.add_checkpoint` sends the
old size, a consistency proof and the signed checkpoint, and returns the
witness's cosignature, verified with the witness's key (an answer that does
not verify counts as no answer).
"""

from __future__ import annotations

import base64
import http.client
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from ecp.lineage.ledger._cosignature import Cosignature, add_cosignatures, cosignatures
from ecp.lineage.ledger._note import NoteKeyType, NoteVerifier
from ecp.lineage.ledger.errors import (
    LineageError,
    VerifierKeyError,
    WitnessConflictError,
    WitnessRefusedError,
    WitnessUnreachableError,
)

__all__ = ["DEFAULT_TIMEOUT_S", "WitnessClient", "parse_witness_spec"]

DEFAULT_TIMEOUT_S: Final = 5.0
_MAX_ANSWER_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class WitnessClient:
    """One witness, as the log reaches it."""

    url: str
    verifier: NoteVerifier
    timeout: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.verifier.key_type is not NoteKeyType.COSIGNATURE_V1:
            raise VerifierKeyError(f"{self.verifier.name!r} is not a cosignature/v1 witness key")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise VerifierKeyError(f"witness URL {self.url!r} is not http(s)://host[:port]/...")

    @property
    def name(self) -> str:
        """The witness's key name."""
        return self.verifier.name

    def add_checkpoint(self, old_size: int, proof: Sequence[bytes], note: str) -> Cosignature:
        """Submit ``note`` with a consistency proof from ``old_size``; return the cosignature.

        Raises:
            WitnessConflictError: 409, the witness is at another size (``size``).
            WitnessRefusedError: another 4xx answer (403, 404, 422, 400).
            WitnessUnreachableError: no connection, a timeout, a 5xx answer, or
                an answer without a valid cosignature by this witness.
        """
        body = (
            f"old {old_size}\n"
            + "".join(base64.b64encode(h).decode() + "\n" for h in proof)
            + "\n"
            + note
        ).encode("utf-8")
        status, ctype, answer = self._post(body)
        text = answer.decode("utf-8", "replace")
        if status == 409:
            size: int | None = None
            first = text.split("\n", 1)[0]
            if ctype.split(";")[0].strip() == "text/x.tlog.size" and first.isdigit():
                size = int(first)
            raise WitnessConflictError(
                size, f"{self.name} is at size {size if size is not None else '?'}"
            )
        if 400 <= status < 500:
            raise WitnessRefusedError(status, f"{self.name}: {text.strip()[:300]}")
        if status != 200:
            raise WitnessUnreachableError(f"witness {self.name} answered {status}")
        try:
            found = cosignatures(add_cosignatures(note, _lines(text)), (self.verifier,))
        except LineageError as exc:
            raise WitnessUnreachableError(
                f"witness {self.name} sent no valid cosignature: {exc}"
            ) from exc
        if not found:
            raise WitnessUnreachableError(f"witness {self.name} sent no cosignature by its key")
        return found[0]

    def _post(self, body: bytes) -> tuple[int, str, bytes]:
        parts = urlsplit(self.url)
        conn_cls = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        conn = conn_cls(parts.hostname or "", parts.port, timeout=self.timeout)
        try:
            conn.connect()
            # http.client sends the headers and the body in two writes: without
            # TCP_NODELAY the body waits for the witness's delayed ACK (~40 ms).
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.request(
                "POST",
                parts.path.rstrip("/") + "/add-checkpoint",
                body=body,
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )
            resp = conn.getresponse()
            data = resp.read(_MAX_ANSWER_BYTES)
            return resp.status, resp.getheader("Content-Type", ""), data
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise WitnessUnreachableError(f"witness {self.name} at {self.url}: {exc}") from exc
        finally:
            conn.close()


def _lines(text: str) -> list[str]:
    lines = [ln for ln in text.split("\n") if ln]
    if not lines:
        raise WitnessUnreachableError("empty answer")
    return lines


def parse_witness_spec(spec: str, timeout: float = DEFAULT_TIMEOUT_S) -> WitnessClient:
    """A client from ``VKEY@URL`` (the witness's verifier key, ``@``, its submission prefix).

    A verifier key holds no ``@``, so the first one separates the two.

    Raises:
        VerifierKeyError: malformed key or URL, or not a witness key.
    """
    vkey, sep, url = spec.strip().partition("@")
    if not sep:
        raise VerifierKeyError("a witness is given as VKEY@URL")
    return WitnessClient(url, NoteVerifier.from_vkey(vkey), timeout)
