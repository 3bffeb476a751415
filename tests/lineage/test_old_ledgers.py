"""A ledger written before batched appends still verifies, grows, and its receipts still hold.

``data/ledger-v1.sql`` is the SQL dump of the SQLite ledger the code of
commit 7ff320e (one head lock per entry) wrote with
``data/make_ledger_v1.py``; ``data/receipt-v1.json`` is the receipt it
issued for entry 5. On PostgreSQL the same rows are copied
into a fresh database.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime
from pathlib import Path

import psycopg

from ecp.lineage.ledger._merkle import verify_consistency
from ecp.lineage.ledger._receipt import verify_receipt
from tests.lineage.data.make_ledger_v1 import keys
from tests.lineage.support import make_envelope, open_unverified

DATA = Path(__file__).parent / "data"
_TABLES = ("ledger_entry", "ledger_node", "ledger_head", "ledger_checkpoint")


def _old_sqlite(tmp_path: Path) -> Path:
    """The old ledger as a database file, loaded from its committed dump."""
    path = tmp_path / "ledger-v1.db"
    with sqlite3.connect(path) as con:
        con.executescript((DATA / "ledger-v1.sql").read_text())
    return path


def _install(ledger_url: str, tmp_path: Path) -> str:
    if ledger_url.startswith("sqlite"):
        return f"sqlite:///{_old_sqlite(tmp_path)}"
    open_unverified(ledger_url).close()  # the schema
    src = sqlite3.connect(_old_sqlite(tmp_path))
    dsn = ledger_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as dst:
        dst.execute("DELETE FROM ledger_head")
        for table in _TABLES:
            cur = src.execute(f"SELECT * FROM {table}")
            cols = [d[0] for d in cur.description]
            for row in cur:
                values = [
                    datetime.fromisoformat(v) if c in ("recorded_at", "created_at") else v
                    for c, v in zip(cols, row, strict=True)
                ]
                dst.execute(
                    f"INSERT INTO {table} ({', '.join(cols)}) "
                    f"VALUES ({', '.join(['%s'] * len(cols))})",
                    values,
                )
        dst.execute(
            "SELECT setval(pg_get_serial_sequence('ledger_checkpoint', 'id'), "
            "(SELECT max(id) FROM ledger_checkpoint))"
        )
    src.close()
    return ledger_url


def test_an_old_ledger_verifies_grows_and_keeps_its_receipts(ledger_url: str, tmp_path) -> None:
    worker, log = keys()
    url = _install(ledger_url, tmp_path)
    old_receipt = (DATA / "receipt-v1.json").read_bytes()
    assert verify_receipt(old_receipt, log.public_key).log_index == 5
    with open_unverified(url) as ledger:
        assert ledger.verify_all(log.public_key).size == 30
        assert ledger.verify_all(log.public_key, deep=True).checkpoints == 2
        old_cp = ledger.latest_checkpoint()
        assert old_cp is not None
        assert old_cp.checkpoint.size == 30
        # The old entries are repeats; new ones are sequenced in batches after them.
        results: dict[int, tuple[int, bool]] = {}

        def run(t: int) -> None:
            for i in range(t, 50, 5):
                r = ledger.append(make_envelope(i, worker))
                results[i] = (r.index, r.created)

        ts = [threading.Thread(target=run, args=(t,)) for t in range(5)]
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        assert all(results[i] == (i, False) for i in range(30))
        assert sorted(results[i][0] for i in range(30, 50)) == list(range(30, 50))
        new_cp = ledger.checkpoint(log)
        assert new_cp.checkpoint.size == 50
        proof = ledger.consistency_proof(30, 50)
        verify_consistency(30, 50, old_cp.checkpoint.root_hash, new_cp.checkpoint.root_hash, proof)
        assert ledger.verify_all(log.public_key).checkpoints == 3
        ledger.verify_all(log.public_key, deep=True)
        assert verify_receipt(ledger.receipt(5).to_json(), log.public_key).tree_size == 50
    # The receipt issued by the old code still verifies, against its own checkpoint.
    assert verify_receipt(old_receipt, log.public_key).tree_size == 30
