"""Several writer processes at once; an unreachable database; recovery."""

from __future__ import annotations

import itertools
import multiprocessing as mp
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import event

from ecp.authority._keys import Ed25519FileSigner
from ecp.lineage.ledger._merkle import verify_consistency
from ecp.lineage.ledger.errors import LedgerUnavailableError
from tests.lineage.support import make_envelope, open_unverified

WRITERS = 4
PER_WRITER = 30


def _writer(url: str, wid: int, worker_pem: bytes, log_pem: bytes, q: mp.Queue) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    worker = Ed25519FileSigner(load_pem_private_key(worker_pem, None))  # type: ignore[arg-type]
    log = Ed25519FileSigner(load_pem_private_key(log_pem, None))  # type: ignore[arg-type]
    created = 0
    with open_unverified(url) as ledger:
        for k in range(PER_WRITER):
            r = ledger.append(make_envelope(wid * 1000 + k, worker))
            created += r.created
            # Everyone also re-records evidence of writer 0: races on idempotency.
            created += ledger.append(make_envelope(k, worker)).created if wid else 0
            if k % 7 == 3:
                ledger.checkpoint(log)
    q.put(created)


def _pem(signer: Ed25519FileSigner) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return signer.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_concurrent_writers(ledger_url: str, worker, log_signer) -> None:
    open_unverified(ledger_url).close()  # schema first, like a deployment would
    ctx = mp.get_context("fork")
    q: mp.Queue = ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(ledger_url, w, _pem(worker), _pem(log_signer), q))
        for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    created = sum(q.get() for _ in procs)
    with open_unverified(ledger_url) as ledger:
        assert created == WRITERS * PER_WRITER
        assert ledger.head().size == WRITERS * PER_WRITER
        report = ledger.verify_all(log_signer.public_key)  # gap-free seqs, all hashes
        assert report.checkpoints >= WRITERS
        cps = [c.checkpoint for c in ledger.checkpoints()]
        for a, b in itertools.combinations(cps, 2):
            assert a.size <= b.size
            if a.size:
                verify_consistency(
                    a.size,
                    b.size,
                    a.root_hash,
                    b.root_hash,
                    ledger.consistency_proof(a.size, b.size),
                )


def test_postgres_unreachable() -> None:
    with pytest.raises(LedgerUnavailableError) as info:
        open_unverified("postgresql+psycopg://postgres@127.0.0.1:1/nope")
    assert info.value.retryable


def test_postgres_connection_killed_mid_append(pg_url: str, worker, log_signer) -> None:
    with open_unverified(pg_url) as ledger:
        ledger.append_many([make_envelope(i, worker) for i in range(3)])
        ledger.checkpoint(log_signer)
        engine = ledger.database.engine
        dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")

        def kill(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
            if statement.startswith("INSERT INTO ledger_node"):
                pid = conn.connection.dbapi_connection.info.backend_pid
                with psycopg.connect(dsn, autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

        event.listen(engine, "before_cursor_execute", kill)
        # Entry 3 completes subtree (2, 0): its node insert is where the backend dies.
        with pytest.raises(LedgerUnavailableError):
            ledger.append(make_envelope(3, worker))
        event.remove(engine, "before_cursor_execute", kill)
        assert ledger.head().size == 3
        assert ledger.find(str(_eid(make_envelope(3, worker)))) is None
        r = ledger.append(make_envelope(3, worker))
        assert (r.index, r.created) == (3, True)
        ledger.checkpoint(log_signer)
        ledger.verify_all(log_signer.public_key)


def _eid(env):  # type: ignore[no-untyped-def]
    from ecp.lineage.ledger._evidence import parse_evidence

    return parse_evidence(env).evidence_id


def test_sqlite_directory_gone_then_back(tmp_path: Path, worker, log_signer) -> None:
    home = tmp_path / "data"
    url = f"sqlite:///{home / 'ecp.db'}"
    with open_unverified(url) as ledger:
        ledger.append_many([make_envelope(i, worker) for i in range(5)])
        home.rename(tmp_path / "moved")
        with pytest.raises(LedgerUnavailableError) as info:
            ledger.append(make_envelope(5, worker))
        assert info.value.retryable
        with pytest.raises(LedgerUnavailableError):
            ledger.checkpoint(log_signer)
        (tmp_path / "moved").rename(home)
        r = ledger.append(make_envelope(5, worker))
        assert (r.index, r.created) == (5, True)
        ledger.checkpoint(log_signer)
        assert ledger.verify_all(log_signer.public_key).size == 6
    with pytest.raises(LedgerUnavailableError):
        open_unverified(f"sqlite:///{tmp_path / 'absent' / 'x.db'}", create=False)
