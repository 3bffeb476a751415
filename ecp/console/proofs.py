"""Proof material the console hands out for the browser to verify: read-only.

The server never gives a verdict on these; it only looks up two stored,
signed checkpoints and the RFC 9162 consistency proof between their sizes.
"""

from __future__ import annotations

import base64
from typing import Final

from ecp.console.errors import BadFilterError, LedgerNotReadyError, ProofNotFoundError
from ecp.lineage.ledger._checkpoint import SignedCheckpoint
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger.errors import LineageError

__all__ = ["CONSISTENCY_MEDIA_TYPE", "consistency_document", "parse_size"]

CONSISTENCY_MEDIA_TYPE: Final = "application/vnd.ecp.consistency.v1+json"


def parse_size(raw: str, label: str) -> int:
    """A tree size from a query parameter.

    Raises:
        BadFilterError: not a positive whole number.
    """
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 15 or int(text) == 0:
        raise BadFilterError(f"The {label} tree size must be a positive whole number.")
    return int(text)


def _checkpoint_of_size(cps: list[SignedCheckpoint], size: int) -> SignedCheckpoint:
    for cp in reversed(cps):
        if cp.checkpoint.size == size:
            return cp
    raise ProofNotFoundError(f"The ledger holds no signed checkpoint of tree size {size}.")


def consistency_document(ledger: Ledger, old: int, new: int | None) -> dict[str, object]:
    """The two signed checkpoints and the consistency proof between them.

    ``new`` None means the newest checkpoint.

    Raises:
        BadFilterError: ``old`` is larger than ``new``.
        ProofNotFoundError: no stored checkpoint has one of the sizes.
        LedgerNotReadyError: the ledger cannot be read.
    """
    try:
        cps = ledger.checkpoints()
        if not cps:
            raise ProofNotFoundError("The ledger has no signed checkpoint yet.")
        new_cp = cps[-1] if new is None else _checkpoint_of_size(cps, new)
        new_size = new_cp.checkpoint.size
        if old > new_size:
            raise BadFilterError(
                f"The old tree size {old} is larger than the new tree size {new_size}."
            )
        old_cp = _checkpoint_of_size(cps, old)
        proof = ledger.consistency_proof(old, new_size) if old < new_size else []
    except LineageError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LedgerNotReadyError(f"The ledger cannot be read: {first}.") from exc
    return {
        "mediaType": CONSISTENCY_MEDIA_TYPE,
        "oldCheckpoint": old_cp.note,
        "newCheckpoint": new_cp.note,
        "consistencyProof": [base64.b64encode(h).decode("ascii") for h in proof],
    }
