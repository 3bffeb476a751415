"""The witness over HTTP, status by status as c2sp.org/tlog-witness fixes them."""

from __future__ import annotations

import base64
import http.client
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ecp.authority._keys import Ed25519FileSigner
from ecp.lineage.ledger._checkpoint import Checkpoint
from ecp.lineage.ledger._cosignature import cosignatures
from ecp.lineage.ledger._ledger import DEFAULT_ORIGIN, Ledger
from ecp.lineage.ledger._note import NoteVerifier
from ecp.lineage.ledger.errors import (
    VerifierKeyError,
    WitnessConflictError,
    WitnessError,
    WitnessRefusedError,
)
from ecp.lineage.witness._client import WitnessClient
from ecp.lineage.witness._state import WitnessState
from tests.lineage.support import make_envelope, open_unverified
from tests.witness.conftest import StartWitness


def _post(url: str, body: bytes) -> tuple[int, str, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("POST", parts.path + "/add-checkpoint", body=body)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type", ""), r.read()
    finally:
        conn.close()


def _request(old: int, proof: Sequence[bytes], note: str) -> bytes:
    lines = "".join(base64.b64encode(h).decode() + "\n" for h in proof)
    return f"old {old}\n{lines}\n{note}".encode()


@pytest.fixture
def log(tmp_path: Path, worker: Ed25519FileSigner) -> Ledger:
    ledger = open_unverified(f"sqlite:///{tmp_path / 'log.db'}")
    ledger.append_many([make_envelope(i, worker) for i in range(12)])
    return ledger


def _note_at(log: Ledger, size: int, signer: Ed25519FileSigner) -> str:
    return Checkpoint(DEFAULT_ORIGIN, size, log.root_at(size)).sign(signer).note


def test_status_codes(
    log: Ledger, log_signer: Ed25519FileSigner, start_witness: StartWitness
) -> None:
    server, client = start_witness("witness.example/w1")
    url = server.url
    n5, n9 = _note_at(log, 5, log_signer), _note_at(log, 9, log_signer)
    # First contact: old size 0, empty proof.
    status, _, body = _post(url, _request(0, [], n5))
    assert status == 200
    assert body.startswith("— witness.example/w1 ".encode())
    assert len(cosignatures(n5 + body.decode(), [client.verifier])) == 1
    # Wrong old size: 409 with the witness's size as text/x.tlog.size.
    status, ctype, body = _post(url, _request(0, [], n9))
    assert (status, ctype, body) == (409, "text/x.tlog.size", b"5\n")
    # Right old size, a proof that does not verify: 422; the state stays at 5.
    bad = [bytes(32)] * len(log.consistency_proof(5, 9))
    assert _post(url, _request(5, bad, n9))[0] == 422
    assert _post(url, _request(5, log.consistency_proof(5, 9), n9))[0] == 200
    # Going backwards is a conflict: the witness is at 9 now.
    assert _post(url, _request(5, log.consistency_proof(5, 9), n9))[:3:2] == (409, b"9\n")
    # Same size, another root: 409 (a fork).
    fork = Checkpoint(DEFAULT_ORIGIN, 9, bytes(32)).sign(log_signer).note
    assert _post(url, _request(9, [], fork))[0] == 409
    # Same size, same root: cosigned again.
    assert _post(url, _request(9, [], n9))[0] == 200
    # old above the checkpoint size: 400.
    assert _post(url, _request(12, [], n9))[0] == 400
    # Unknown origin: 404; not signed by the trusted log key: 403.
    other = Checkpoint("other.example/log", 3, bytes(32)).sign(log_signer, "other.example/log")
    assert _post(url, _request(0, [], other.note))[0] == 404
    stranger = Ed25519FileSigner.generate()
    assert _post(url, _request(9, [], _note_at(log, 12, stranger)))[0] == 403
    # Malformed: 400.
    assert _post(url, b"new 3\n\n" + n9.encode())[0] == 400
    assert _post(url, b"old 5\nnot-base64!\n\n" + n9.encode())[0] == 400
    assert _post(url, b"old 05\n\n" + n9.encode())[0] == 400


def test_client_raises_typed_refusals(
    log: Ledger, log_signer: Ed25519FileSigner, start_witness: StartWitness
) -> None:
    _, client = start_witness("witness.example/w1")
    client.add_checkpoint(0, [], _note_at(log, 4, log_signer))
    with pytest.raises(WitnessConflictError) as conflict:
        client.add_checkpoint(0, [], _note_at(log, 8, log_signer))
    assert conflict.value.size == 4
    with pytest.raises(WitnessRefusedError) as refused:
        client.add_checkpoint(4, [bytes(32)] * 3, _note_at(log, 8, log_signer))
    assert refused.value.status == 422


def test_state_survives_restart_and_never_goes_back(
    tmp_path: Path, log: Ledger, log_signer: Ed25519FileSigner, log_vkey: str
) -> None:
    directory = tmp_path / "w"
    state = WitnessState.init(directory, "witness.example/w1")
    state.add_log(log_vkey)

    def client_for(url: str) -> WitnessClient:
        return WitnessClient(url, state.verifier)

    def start() -> tuple[subprocess.Popen[str], str]:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ecp",
                "witness",
                "serve",
                "--state",
                str(directory),
                "--port",
                "0",
            ],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("listening on "):
                return proc, line.split()[-1]
        raise AssertionError(f"witness did not start (exit {proc.wait()})")

    proc, url = start()
    try:
        client_for(url).add_checkpoint(0, [], _note_at(log, 10, log_signer))
    finally:
        proc.kill()
        proc.wait()
    proc, url = start()
    try:
        # After the restart it still knows size 10: a smaller tree is refused...
        with pytest.raises(WitnessConflictError) as exc:
            client_for(url).add_checkpoint(0, [], _note_at(log, 6, log_signer))
        assert exc.value.size == 10
        # ...and so is a forked one at size 10; the extension is cosigned.
        fork = Checkpoint(DEFAULT_ORIGIN, 10, bytes(32)).sign(log_signer).note
        with pytest.raises(WitnessConflictError):
            client_for(url).add_checkpoint(10, [], fork)
        proof = log.consistency_proof(10, 12)
        client_for(url).add_checkpoint(10, proof, _note_at(log, 12, log_signer))
    finally:
        proc.kill()
        proc.wait()
    head = WitnessState(directory).head(DEFAULT_ORIGIN)
    assert head is not None
    assert head.size == 12


def test_unknown_log_key_in_state_is_rejected(tmp_path: Path) -> None:
    state = WitnessState.init(tmp_path / "w", "witness.example/w1")
    with pytest.raises(VerifierKeyError, match="not an Ed25519 log key"):
        state.add_log(state.verifier.vkey())
    # A second init does not replace the witness's key.
    with pytest.raises(WitnessError, match="already holds a witness"):
        WitnessState.init(tmp_path / "w", "witness.example/w2")
    assert NoteVerifier.from_vkey(WitnessState(tmp_path / "w").verifier.vkey()) == state.verifier
