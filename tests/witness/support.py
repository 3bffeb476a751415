"""The operator-rewrite scenario and witness fixtures' helpers, shared by the witness tests."""

from __future__ import annotations

import os
from pathlib import Path

from ecp.authority._keys import Ed25519FileSigner
from ecp.lineage.ledger._evidence import OutcomeStatus
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.witness._client import WitnessClient
from tests.lineage.support import make_envelope, open_unverified

__all__ = ["PAYOUT", "SIZE", "build_log", "rewrite_log"]

#: The completed 666 EUR payout the operator deletes (its entry index).
PAYOUT = 6
SIZE = 10


def build_log(
    path: Path, worker: Ed25519FileSigner, log: Ed25519FileSigner, witnesses: list[WitnessClient]
) -> Ledger:
    """An honest log of ``SIZE`` entries, the payout at ``PAYOUT``, checkpointed (and witnessed)."""
    ledger = open_unverified(f"sqlite:///{path}", witnesses=witnesses)
    ledger.append_many([make_envelope(i, worker) for i in range(SIZE)])
    ledger.checkpoint(log)
    return ledger


def rewrite_log(
    path: Path,
    worker: Ed25519FileSigner,
    log: Ed25519FileSigner,
    witnesses: list[WitnessClient],
    *,
    extra: int = 0,
) -> Ledger:
    """The operator holding ``log.key``: the payout replaced by a denial, re-signed.

    A new database with the same entries except the payout (a denial in its
    place, plus ``extra`` later entries) is swapped in for the old file, and a
    new checkpoint is signed with the log key. The rewritten log is
    self-consistent: ``verify_all`` passes.
    """
    tmp = path.with_suffix(".rewritten")
    forged = open_unverified(f"sqlite:///{tmp}")
    entries = [
        make_envelope(i, worker, status=OutcomeStatus.DENIED)
        if i == PAYOUT
        else make_envelope(i, worker)
        for i in range(SIZE + extra)
    ]
    forged.append_many(entries)
    forged.close()
    os.replace(tmp, path)
    ledger = open_unverified(f"sqlite:///{path}", witnesses=witnesses)
    ledger.checkpoint(log)
    return ledger
