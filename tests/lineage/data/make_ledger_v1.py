"""Writes ledger-v1.sql and receipt-v1.json: a ledger made by the code before batched appends.

Run once from a checkout of commit 7ff320e (one head lock per entry), e.g.
``cd <that checkout> && PYTHONDONTWRITEBYTECODE=1 python <this file> <out dir>``.
The keys come from fixed seeds (see ``keys``), so the test can sign and
verify with the same ones. Kept for the record; the test never runs it.
"""

from __future__ import annotations

import hashlib
import sqlite3
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ecp.authority._keys import Ed25519FileSigner
from ecp.lineage.ledger._ledger import ACCEPT_UNVERIFIED, Ledger
from tests.lineage.support import make_envelope


def keys() -> tuple[Ed25519FileSigner, Ed25519FileSigner]:
    """(worker, log) signers of the fixture, from fixed seeds: test keys only."""

    def seeded(label: bytes) -> Ed25519FileSigner:
        seed = hashlib.sha256(b"ecp ledger-v1 fixture " + label).digest()
        return Ed25519FileSigner(Ed25519PrivateKey.from_private_bytes(seed))

    return seeded(b"worker"), seeded(b"log")


def main(out: Path) -> None:
    worker, log = keys()
    db = out / "ledger-v1.db"
    with Ledger.open(f"sqlite:///{db}", trust=ACCEPT_UNVERIFIED) as ledger:
        for i in range(10):
            ledger.append(make_envelope(i, worker))
        ledger.checkpoint(log)
        ledger.append_many([make_envelope(i, worker) for i in range(10, 30)])
        ledger.checkpoint(log)
        (out / "receipt-v1.json").write_bytes(ledger.receipt(5).to_json())
    # Committed as an SQL dump (text), not as a database file: the test loads it.
    con = sqlite3.connect(db)
    (out / "ledger-v1.sql").write_text("\n".join(con.iterdump()) + "\n")
    con.close()
    db.unlink()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
