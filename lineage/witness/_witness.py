r"""The witness's side of C2SP tlog-witness ``add-checkpoint``, without HTTP.

A request body is an ``old <size>`` line, at most 63 base64 consistency
proof lines, an empty line, then the signed checkpoint. The witness answers
(status codes as the spec fixes them):

* 400: malformed body, or old size above the checkpoint size;
* 404: unknown origin;
* 403: no signature by the log's trusted key verifies;
* 409 (``text/x.tlog.size``, body ``<size>\\n``): the old size is not the size
  it cosigned last, or the sizes are equal and the roots differ;
* 422: the consistency proof does not verify (or is not empty for old size 0);
* 200: one cosignature line, after the new head was stored.

The size check and the write of the new head are one transaction, so no
pair of requests can make it cosign a smaller tree after a larger one.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ecp.lineage.ledger._checkpoint import Checkpoint
from ecp.lineage.ledger._cosignature import cosign
from ecp.lineage.ledger._merkle import HASH_SIZE, Hash, verify_consistency
from ecp.lineage.ledger._note import parse_note, verify_note
from ecp.lineage.ledger.errors import LineageError, NoteError, ProofError
from ecp.lineage.witness._state import WitnessState

__all__ = ["MAX_PROOF_LINES", "MAX_REQUEST_BYTES", "SIZE_CONTENT_TYPE", "Answer", "Witness"]

MAX_PROOF_LINES: Final = 63
#: A checkpoint with a few signatures and 63 hashes is far below this.
MAX_REQUEST_BYTES: Final = 64 * 1024
SIZE_CONTENT_TYPE: Final = "text/x.tlog.size"
_TEXT: Final = "text/plain; charset=utf-8"

_log = logging.getLogger("ecp.witness")


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: status, content type, body."""

    status: int
    content_type: str
    body: bytes


def _error(status: int, message: str) -> Answer:
    return Answer(status, _TEXT, message.encode() + b"\n")


def _decimal(text: str) -> int | None:
    if not text.isascii() or not text.isdigit() or (text != "0" and text.startswith("0")):
        return None
    if len(text) > 20:
        return None
    return int(text)


class Witness:
    """Cosigns checkpoints of the logs in its state that extend what it cosigned last."""

    def __init__(self, state: WitnessState, *, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self._clock = clock

    def add_checkpoint(self, body: bytes) -> Answer:
        """Handle one ``add-checkpoint`` request body."""
        if len(body) > MAX_REQUEST_BYTES:
            return _error(400, f"request larger than {MAX_REQUEST_BYTES} bytes")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return _error(400, "request is not UTF-8")
        head, sep, note = text.partition("\n\n")
        if not sep:
            return _error(400, "request has no empty line before the checkpoint")
        lines = head.split("\n")
        word, _, size_s = lines[0].partition(" ")
        old = _decimal(size_s) if word == "old" else None
        if old is None:
            return _error(400, "first line must be `old <decimal size>`")
        if len(lines) - 1 > MAX_PROOF_LINES:
            return _error(400, f"more than {MAX_PROOF_LINES} consistency proof lines")
        proof: list[Hash] = []
        for line in lines[1:]:
            try:
                h = base64.b64decode(line, validate=True)
            except (binascii.Error, ValueError):
                return _error(400, "a consistency proof line is not base64")
            if len(h) != HASH_SIZE:
                return _error(400, f"a consistency proof hash is not {HASH_SIZE} bytes")
            proof.append(Hash(h))
        try:
            body_text = parse_note(note).text
            cp = Checkpoint.parse(body_text)
        except LineageError as exc:
            return _error(400, f"not a checkpoint: {exc}")
        log_key = self.state.log_key(cp.origin)
        if log_key is None:
            return _error(404, f"unknown log {cp.origin[:100]!r}")
        try:
            verified = verify_note(note, (log_key,))
        except NoteError as exc:
            return _error(403, f"checkpoint is not signed by the log's key: {exc}")
        if log_key.name not in verified.verified_by:
            return _error(403, "checkpoint is not signed by the log's key")
        if old > cp.size:
            return _error(400, f"old size {old} is above the checkpoint size {cp.size}")
        return self._advance(old, proof, cp, body_text, note)

    def _advance(
        self, old: int, proof: list[Hash], cp: Checkpoint, body_text: str, note: str
    ) -> Answer:
        with self.state.update(cp.origin) as (current, commit):
            known = current.size if current is not None else 0
            if old != known:
                return Answer(409, SIZE_CONTENT_TYPE, f"{known}\n".encode())
            if old == cp.size:
                if current is not None and current.root != cp.root_hash:
                    # Same size, another root: a fork. Keep the evidence in the log.
                    _log.warning("fork of %s at size %d: %s", cp.origin, cp.size, note)
                    return Answer(409, SIZE_CONTENT_TYPE, f"{known}\n".encode())
                if proof:
                    return _error(422, "consistency proof must be empty for equal sizes")
            elif old == 0:
                if proof:
                    return _error(422, "consistency proof must be empty when the old size is 0")
            else:
                assert current is not None  # old == known > 0
                try:
                    verify_consistency(old, cp.size, current.root, cp.root_hash, proof)
                except ProofError as exc:
                    _log.warning(
                        "inconsistent checkpoint of %s (%d -> %d): %s",
                        cp.origin,
                        old,
                        cp.size,
                        note,
                    )
                    return _error(422, f"consistency proof does not verify: {exc}")
            commit(cp.size, cp.root_hash, note)
            # The exact body signed by the log, extension lines included.
            sig = cosign(body_text, self.state.signer, self.state.name, int(self._clock()))
        # Persisted (committed) before answering, as the spec requires.
        return Answer(200, _TEXT, (sig.line() + "\n").encode())
