"""Cosigned checkpoints verify with Go's golang.org/x/mod/sumdb/note (the reference).

The Go program (gocheck/main.go) is built offline by the ``go_build`` fixture;
without Go the test fails rather than skips.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ecp.authority._keys import Ed25519FileSigner
from ecp.lineage.ledger._checkpoint import Checkpoint
from ecp.lineage.ledger._cosignature import add_cosignatures, cosign, witness_verifier
from ecp.lineage.ledger._ledger import DEFAULT_ORIGIN
from ecp.lineage.ledger._note import NoteSignature, NoteVerifier, parse_note
from tests.lineage.support import make_envelope, open_unverified
from tests.witness.conftest import GoBuild, StartWitness


@pytest.fixture(scope="module")
def gocheck(go_build: GoBuild) -> Path:
    return go_build("gocheck")


def _go(gocheck: Path, tmp_path: Path, note: str, *vkeys: str) -> subprocess.CompletedProcess[str]:
    f = tmp_path / "note.txt"
    f.write_text(note, encoding="utf-8")
    return subprocess.run([str(gocheck), str(f), *vkeys], capture_output=True, text=True)


def test_go_verifies_the_log_signature_and_witness_cosignatures(
    gocheck: Path,
    tmp_path: Path,
    worker: Ed25519FileSigner,
    log_signer: Ed25519FileSigner,
    log_vkey: str,
    start_witness: StartWitness,
) -> None:
    clients = [start_witness(f"w{i}.example/witness")[1] for i in range(2)]
    ledger = open_unverified(f"sqlite:///{tmp_path / 'log.db'}", witnesses=clients)
    ledger.append_many([make_envelope(i, worker) for i in range(9)])
    ledger.checkpoint(log_signer)
    ledger.append_many([make_envelope(i, worker) for i in range(9, 20)])
    cp = ledger.checkpoint(log_signer)
    assert cp.witnessed is True
    wkeys = [c.verifier.vkey() for c in clients]
    r = _go(gocheck, tmp_path, cp.note, log_vkey, *wkeys)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:3] == [
        f"verified {DEFAULT_ORIGIN}",
        "verified w0.example/witness",
        "verified w1.example/witness",
    ]
    # Without the witness keys Go sees the cosignatures as unverified, not bad.
    r = _go(gocheck, tmp_path, cp.note, log_vkey)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("unverified w") == 2


def test_go_rejects_a_forged_cosignature(
    gocheck: Path, tmp_path: Path, log_signer: Ed25519FileSigner, log_vkey: str
) -> None:
    body = Checkpoint(DEFAULT_ORIGIN, 3, bytes(range(32))).to_text()
    w = Ed25519FileSigner.generate()
    v: NoteVerifier = witness_verifier("w.example/witness", w.public_key)
    good = add_cosignatures(
        Checkpoint.parse(body).sign(log_signer).note, [cosign(body, w, v.name, 42)]
    )
    assert _go(gocheck, tmp_path, good, log_vkey, v.vkey()).returncode == 0
    sig = parse_note(good).signatures[1]
    # The timestamp is part of the signed message: changing it must fail in Go too.
    moved = NoteSignature(sig.name, sig.key_id, (43).to_bytes(8, "big") + sig.signature[8:])
    bad = add_cosignatures(Checkpoint.parse(body).sign(log_signer).note, [moved])
    r = _go(gocheck, tmp_path, bad, log_vkey, v.vkey())
    assert r.returncode == 1
    assert "note.Open" in r.stderr
