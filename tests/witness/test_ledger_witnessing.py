"""The log asks its witnesses after each checkpoint; unreachable ones leave it unwitnessed."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from ecp.authority._keys import Ed25519FileSigner
from ecp.lineage.ledger._cosignature import WitnessPolicy, cosignatures
from ecp.lineage.ledger._receipt import verify_receipt
from ecp.lineage.ledger.errors import WitnessQuorumError
from ecp.lineage.witness._client import WitnessClient
from ecp.lineage.witness._server import WitnessServer
from ecp.lineage.witness._state import WitnessState
from ecp.lineage.witness._witness import Witness
from tests.lineage.conftest import pg_database, pg_url  # noqa: F401 (PostgreSQL fixtures)
from tests.lineage.support import make_envelope, open_unverified
from tests.witness.conftest import StartWitness


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_each_checkpoint_is_cosigned_by_every_witness(
    tmp_path: Path,
    worker: Ed25519FileSigner,
    log_signer: Ed25519FileSigner,
    start_witness: StartWitness,
    request: pytest.FixtureRequest,
    backend: str,
) -> None:
    clients = [start_witness(f"w{i}.example/witness")[1] for i in range(3)]
    url = (
        f"sqlite:///{tmp_path / 'log.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    ledger = open_unverified(url, witnesses=clients)
    policy = WitnessPolicy(tuple(c.verifier for c in clients), 3)
    for step in range(3):
        ledger.append_many([make_envelope(step * 10 + i, worker) for i in range(7)])
        cp = ledger.checkpoint(log_signer)
        assert cp.witnessed is True
        assert len(policy.check(cp.note)) == 3
    # The stored note carries the cosignatures, so receipts do too.
    receipt = ledger.receipt(4)
    assert len(policy.check(receipt.checkpoint_note)) == 3
    v = verify_receipt(receipt.to_json(), log_signer.public_key, witnesses=policy.witnesses)
    assert len(v.note.verified) == 4
    assert {r.outcome for r in ledger.witnessing()} == {"cosigned"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_witness_leaves_checkpoints_unwitnessed_then_catches_up(
    tmp_path: Path, worker: Ed25519FileSigner, log_signer: Ed25519FileSigner, log_vkey: str
) -> None:
    state = WitnessState.init(tmp_path / "w", "witness.example/w1")
    state.add_log(log_vkey)
    port = _free_port()
    client = WitnessClient(f"http://127.0.0.1:{port}", state.verifier, timeout=2.0)
    ledger = open_unverified(f"sqlite:///{tmp_path / 'log.db'}", witnesses=[client])
    ledger.append_many([make_envelope(i, worker) for i in range(5)])
    # Nobody listens: entries are still accepted and a checkpoint is issued...
    cp = ledger.checkpoint(log_signer)
    assert cp.witnessed is False
    assert cp.checkpoint.size == 5
    assert ledger.witnessing()[0].outcome == "unreachable"
    # ...but a verifier requiring the witness refuses it.
    policy = WitnessPolicy((state.verifier,), 1)
    with pytest.raises(WitnessQuorumError):
        policy.check(ledger.receipt(2).checkpoint_note)
    assert ledger.append(make_envelope(5, worker)).index == 5
    # The witness comes up; the next checkpoint call asks again and gets it.
    server = WitnessServer(("127.0.0.1", port), Witness(state))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cp = ledger.checkpoint(log_signer)
        assert cp.witnessed is True
        assert cp.checkpoint.size == 6
        assert len(policy.check(ledger.receipt(2).checkpoint_note)) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_log_learns_the_witness_size_from_a_409(
    tmp_path: Path,
    worker: Ed25519FileSigner,
    log_signer: Ed25519FileSigner,
    start_witness: StartWitness,
) -> None:
    _, client = start_witness("witness.example/w1")
    first = open_unverified(f"sqlite:///{tmp_path / 'log.db'}", witnesses=[client])
    first.append_many([make_envelope(i, worker) for i in range(4)])
    assert first.checkpoint(log_signer).witnessed is True
    first.close()
    # The same log's records of witnessing are gone (say, a restored backup of
    # the table): the log starts at old size 0, hears 409 "4", retries from 4.
    second = open_unverified(f"sqlite:///{tmp_path / 'log.db'}", witnesses=[client])
    with second.database.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM ledger_witnessing")
    second.append_many([make_envelope(i, worker) for i in range(4, 9)])
    cp = second.checkpoint(log_signer)
    assert cp.witnessed is True
    assert len(cosignatures(cp.note, [client.verifier])) == 1


def test_automatic_checkpoints_on_append_are_witnessed(
    tmp_path: Path,
    worker: Ed25519FileSigner,
    log_signer: Ed25519FileSigner,
    start_witness: StartWitness,
) -> None:
    _, client = start_witness("witness.example/w1")
    ledger = open_unverified(
        f"sqlite:///{tmp_path / 'log.db'}",
        witnesses=[client],
        checkpoint_signer=log_signer,
        checkpoint_every=4,
    )
    results = ledger.append_many([make_envelope(i, worker) for i in range(4)])
    cp = results[-1].checkpoint
    assert cp is not None
    assert cp.witnessed is True
    assert len(cosignatures(cp.note, [client.verifier])) == 1
    stored = ledger.latest_checkpoint()
    assert stored is not None
    assert stored.note == cp.note
