"""Tamper detection: every kind of edit to a stored log is named by verify_all."""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger._store import node_key
from ecp.lineage.ledger.errors import TamperError
from tests.lineage.support import make_envelope, open_unverified

N = 23


def _build(url: str, worker, log_signer) -> Ledger:
    ledger = open_unverified(url)
    ledger.append_many([make_envelope(i, worker) for i in range(N // 2)])
    ledger.checkpoint(log_signer)
    ledger.append_many([make_envelope(i, worker) for i in range(N // 2, N)])
    ledger.checkpoint(log_signer)
    ledger.verify_all(log_signer.public_key)
    return ledger


def _exec(ledger: Ledger, sql: str, **params: object) -> None:
    with ledger.database.engine.begin() as conn:
        conn.execute(text(sql), params)


def _flip(ledger: Ledger, seq: int, column: str, pos: int) -> None:
    with ledger.database.engine.begin() as conn:
        data = bytearray(
            conn.execute(
                text(f"SELECT {column} FROM ledger_entry WHERE seq = :s"), {"s": seq}
            ).scalar_one()
        )
        data[pos % len(data)] ^= 0x01
        conn.execute(
            text(f"UPDATE ledger_entry SET {column} = :d WHERE seq = :s"),
            {"d": bytes(data), "s": seq},
        )


def _swap(ledger: Ledger, i: int, j: int) -> None:
    # Swap contents but keep sequence numbers (a unique column needs a detour).
    cols = "evidence_id, leaf_hash, root_after, envelope"
    with ledger.database.engine.begin() as conn:
        a = conn.execute(text(f"SELECT {cols} FROM ledger_entry WHERE seq = :s"), {"s": i}).one()
        b = conn.execute(text(f"SELECT {cols} FROM ledger_entry WHERE seq = :s"), {"s": j}).one()
        upd = text(
            "UPDATE ledger_entry SET evidence_id = :e, leaf_hash = :l, root_after = :r, "
            "envelope = :v WHERE seq = :s"
        )
        conn.execute(upd, {"e": "tmp", "l": b[1], "r": b[2], "v": b[3], "s": i})
        conn.execute(upd, {"e": a[0], "l": a[1], "r": a[2], "v": a[3], "s": j})
        conn.execute(
            text("UPDATE ledger_entry SET evidence_id = :e WHERE seq = :s"), {"e": b[0], "s": i}
        )


def _expect(ledger: Ledger, key, index: int | None) -> None:
    with pytest.raises(TamperError) as info:
        ledger.verify_all(key)
    assert info.value.index == index, str(info.value)


@pytest.mark.parametrize("k", [0, 7, N - 1])
def test_one_byte_changed_in_entry(ledger_url: str, worker, log_signer, k: int) -> None:
    with _build(ledger_url, worker, log_signer) as ledger:
        _flip(ledger, k, "envelope", 100)
        _expect(ledger, log_signer.public_key, k)


def test_entry_deleted(ledger_url: str, worker, log_signer) -> None:
    with _build(ledger_url, worker, log_signer) as ledger:
        _exec(ledger, "DELETE FROM ledger_entry WHERE seq = 9")
        _expect(ledger, log_signer.public_key, 9)


def test_last_entry_deleted_under_checkpoint(ledger_url: str, worker, log_signer) -> None:
    with _build(ledger_url, worker, log_signer) as ledger:
        _exec(ledger, f"DELETE FROM ledger_entry WHERE seq = {N - 1}")
        _expect(ledger, log_signer.public_key, N - 1)


def test_two_entries_swapped(ledger_url: str, worker, log_signer) -> None:
    with _build(ledger_url, worker, log_signer) as ledger:
        _swap(ledger, 4, 15)
        _expect(ledger, log_signer.public_key, 4)


def test_stored_leaf_hash_rewritten(ledger_url: str, worker, log_signer) -> None:
    with _build(ledger_url, worker, log_signer) as ledger:
        _flip(ledger, 12, "leaf_hash", 3)
        _expect(ledger, log_signer.public_key, 12)


def test_stored_root_after_rewritten(ledger_url: str, worker, log_signer) -> None:
    # The root after an entry is read by nothing but verification. The fast
    # pass compares it where a checkpoint or the head sits; the deep pass
    # recomputes it after every entry.
    with _build(ledger_url, worker, log_signer) as ledger:
        _flip(ledger, 12, "root_after", 3)
        with pytest.raises(TamperError) as info:
            ledger.verify_all(log_signer.public_key, deep=True)
        assert info.value.index == 12
        _flip(ledger, 12, "root_after", 3)  # flipped back
        ledger.verify_all(log_signer.public_key, deep=True)
        _flip(ledger, N // 2 - 1, "root_after", 3)  # the first checkpoint is at size N // 2
        _expect(ledger, log_signer.public_key, N // 2 - 1)
        _flip(ledger, N // 2 - 1, "root_after", 3)
        _flip(ledger, N - 1, "root_after", 3)  # the head
        _expect(ledger, log_signer.public_key, N - 1)


def test_stored_subtree_hash_rewritten(ledger_url: str, worker, log_signer) -> None:
    with _build(ledger_url, worker, log_signer) as ledger:
        # (level 2, index 2) covers entries 8..11 and is completed by entry 11.
        _exec(
            ledger,
            "UPDATE ledger_node SET hash = :h WHERE node_id = :k",
            h=b"\x00" * 32,
            k=node_key(2, 2),
        )
        _expect(ledger, log_signer.public_key, 11)


def test_checkpoint_note_rewritten(ledger_url: str, worker, log_signer) -> None:
    with _build(ledger_url, worker, log_signer) as ledger:
        _exec(ledger, "UPDATE ledger_checkpoint SET note = replace(note, '\n23\n', '\n22\n')")
        with pytest.raises(TamperError, match="checkpoint"):
            ledger.verify_all(log_signer.public_key)


# --- randomized: many trials on copies of one real SQLite log ------------------------

_KINDS = [
    "flip_envelope",
    "flip_leaf",
    "flip_root",
    "flip_node",
    "delete",
    "swap",
    "evidence_id",
    "head",
    "truncate_tail",
]


def test_random_mutations_are_all_caught(tmp_path: Path, worker, log_signer) -> None:
    base = tmp_path / "base.db"
    with open_unverified(f"sqlite:///{base}") as ledger:
        ledger.append_many([make_envelope(i, worker) for i in range(61)])
        ledger.checkpoint(log_signer)
    con = sqlite3.connect(base)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    rng = random.Random(6962)
    caught = 0
    trials = 120
    for t in range(trials):
        db = tmp_path / f"t{t}.db"
        shutil.copy(base, db)
        con = sqlite3.connect(db)
        kind = rng.choice(_KINDS)
        i = rng.randrange(61)
        expected: int | None = i
        if kind == "flip_envelope":
            (env,) = con.execute("SELECT envelope FROM ledger_entry WHERE seq=?", (i,)).fetchone()
            b = bytearray(env)
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            con.execute("UPDATE ledger_entry SET envelope=? WHERE seq=?", (bytes(b), i))
        elif kind in ("flip_leaf", "flip_root"):
            col = "leaf_hash" if kind == "flip_leaf" else "root_after"
            (h,) = con.execute(f"SELECT {col} FROM ledger_entry WHERE seq=?", (i,)).fetchone()
            b = bytearray(h)
            b[rng.randrange(32)] ^= 1 << rng.randrange(8)
            con.execute(f"UPDATE ledger_entry SET {col}=? WHERE seq=?", (bytes(b), i))
        elif kind == "flip_node":
            (nid, h) = rng.choice(con.execute("SELECT node_id, hash FROM ledger_node").fetchall())
            b = bytearray(h)
            b[rng.randrange(32)] ^= 1 << rng.randrange(8)
            con.execute("UPDATE ledger_node SET hash=? WHERE node_id=?", (bytes(b), nid))
            expected = None  # checked below: some entry index is named
        elif kind == "delete":
            con.execute("DELETE FROM ledger_entry WHERE seq=?", (i,))
        elif kind == "swap":
            j = rng.randrange(61)
            while j == i:
                j = rng.randrange(61)
            i, j = min(i, j), max(i, j)
            expected = i
            a = con.execute(
                "SELECT evidence_id, leaf_hash, root_after, envelope FROM ledger_entry WHERE seq=?",
                (i,),
            ).fetchone()
            b2 = con.execute(
                "SELECT evidence_id, leaf_hash, root_after, envelope FROM ledger_entry WHERE seq=?",
                (j,),
            ).fetchone()
            con.execute("UPDATE ledger_entry SET evidence_id='x' WHERE seq=?", (i,))
            con.execute(
                "UPDATE ledger_entry SET evidence_id=?, leaf_hash=?, envelope=? WHERE seq=?",
                (a[0], a[1], a[3], j),
            )
            con.execute(
                "UPDATE ledger_entry SET evidence_id=?, leaf_hash=?, envelope=? WHERE seq=?",
                (b2[0], b2[1], b2[3], i),
            )
        elif kind == "evidence_id":
            con.execute(
                "UPDATE ledger_entry SET evidence_id=? WHERE seq=?", ("sha256:" + "0" * 64, i)
            )
        elif kind == "head":
            con.execute("UPDATE ledger_head SET root_hash=? WHERE id=1", (bytes(32),))
            expected = None
        else:  # truncate_tail: drop the newest entries and fix the head
            con.execute("DELETE FROM ledger_entry WHERE seq>=?", (i,))
            con.execute("UPDATE ledger_head SET size=? WHERE id=1", (i,))
            expected = None
        con.commit()
        con.close()
        with (
            open_unverified(f"sqlite:///{db}", create=False) as ledger,
            pytest.raises(TamperError) as info,
        ):
            # A rewritten root after an entry off any checkpoint is the deep pass's to find.
            ledger.verify_all(log_signer.public_key, deep=kind == "flip_root")
        if expected is not None:
            assert info.value.index == expected, (kind, str(info.value))
        caught += 1
        db.unlink()
    assert caught == trials
