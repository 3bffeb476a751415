"""The issue's attack: an operator holding log.key rewrites history and re-signs.

The payout at index PAYOUT is replaced by a denial in a rebuilt database and
a new checkpoint is signed. `ecp ledger verify` says ok (the rewritten log is
self-consistent) and the auditor's old receipt still verifies offline; each
test here is one of the places that must catch the rewrite anyway.
"""

from __future__ import annotations

import functools
import json
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ecp.authority._keys import Ed25519FileSigner, write_public_key
from ecp.authority._truststore import TrustStore
from ecp.cli import app
from ecp.lineage.ledger._cosignature import WitnessPolicy
from ecp.lineage.ledger._ledger import DEFAULT_ORIGIN
from ecp.lineage.ledger._note import NoteVerifier
from ecp.lineage.ledger._receipt import verify_receipt
from ecp.lineage.ledger._tiles import write_tiles
from ecp.lineage.ledger.errors import WitnessQuorumError
from tests.lineage.support import make_envelope, trust_of
from tests.witness.conftest import StartWitness
from tests.witness.support import PAYOUT, SIZE, build_log, rewrite_log


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture
def files(
    tmp_path: Path, worker: Ed25519FileSigner, log_signer: Ed25519FileSigner
) -> dict[str, Path]:
    write_public_key(log_signer.public_key, tmp_path / "log.pub")
    trust: TrustStore = trust_of(worker)
    trust.save(tmp_path / "truststore.json")
    return {
        "db": tmp_path / "log.db",
        "pub": tmp_path / "log.pub",
        "trust": tmp_path / "truststore.json",
    }


@pytest.mark.parametrize("extra", [0, 3], ids=["same-size", "grown"])
def test_the_witness_refuses_to_cosign_the_rewritten_log(
    files: dict[str, Path],
    worker: Ed25519FileSigner,
    log_signer: Ed25519FileSigner,
    start_witness: StartWitness,
    extra: int,
) -> None:
    server, client = start_witness("witness.example/w1")
    honest = build_log(files["db"], worker, log_signer, [client])
    head_before = server.witness.state.head(DEFAULT_ORIGIN)
    assert head_before is not None
    assert head_before.size == SIZE
    honest.close()
    forged = rewrite_log(files["db"], worker, log_signer, [client], extra=extra)
    cp = forged.latest_checkpoint()
    assert cp is not None
    forged_cp = forged.checkpoint(log_signer)
    assert forged_cp.witnessed is False
    assert forged.witnessing()[0].outcome == "refused"
    # 409 for the same size with another root, 422 for a bad consistency proof.
    assert ("409" if extra == 0 else "422") in forged.witnessing()[0].detail
    head_after = server.witness.state.head(DEFAULT_ORIGIN)
    assert head_after == head_before  # the witness did not move
    with pytest.raises(WitnessQuorumError):
        WitnessPolicy((client.verifier,), 1).check(forged_cp.note)


@pytest.mark.parametrize("extra", [0, 3], ids=["same-size", "grown"])
def test_audit_against_a_saved_checkpoint_catches_the_rewrite(
    files: dict[str, Path],
    tmp_path: Path,
    worker: Ed25519FileSigner,
    log_signer: Ed25519FileSigner,
    extra: int,
) -> None:
    honest = build_log(files["db"], worker, log_signer, [])
    saved = tmp_path / "saved.note"
    cp = honest.latest_checkpoint()
    assert cp is not None
    saved.write_text(cp.note)
    honest.close()
    db = f"sqlite:///{files['db']}"
    code, out, err = run(
        "ledger", "audit", "--checkpoint", str(saved), "--db", db, "--log-key", str(files["pub"])
    )
    assert code == 0, err
    assert out.startswith("ok:")
    rewrite_log(files["db"], worker, log_signer, [], extra=extra).close()
    # The premise: the rewritten log verifies on its own.
    code, out, err = run(
        "ledger",
        "verify",
        "--db",
        db,
        "--log-key",
        str(files["pub"]),
        "--trust-store",
        str(files["trust"]),
    )
    assert code == 0, err
    code, out, err = run(
        "ledger", "audit", "--checkpoint", str(saved), "--db", db, "--log-key", str(files["pub"])
    )
    assert code == 1
    assert "CheckpointForkError" in err
    assert "rewritten" in err


@pytest.mark.parametrize("extra", [0, 3], ids=["same-size", "grown"])
def test_the_cli_remembered_checkpoint_catches_the_rewrite(
    files: dict[str, Path],
    tmp_path: Path,
    worker: Ed25519FileSigner,
    log_signer: Ed25519FileSigner,
    extra: int,
) -> None:
    state = tmp_path / "state" / "checkpoints.json"
    honest = build_log(files["db"], worker, log_signer, [])
    old_receipt = tmp_path / "old.json"
    old_receipt.write_bytes(honest.receipt(PAYOUT).to_json())
    honest.close()
    db = f"sqlite:///{files['db']}"
    args = (
        "ledger",
        "verify-receipt",
        "--log-key",
        str(files["pub"]),
        "--state",
        str(state),
        "--db",
        db,
    )
    code, out, err = run(*args, str(old_receipt))
    assert "ok:" in out
    assert code == 0, err
    forged = rewrite_log(files["db"], worker, log_signer, [], extra=extra)
    new_receipt = tmp_path / "new.json"
    new_receipt.write_bytes(forged.receipt(PAYOUT).to_json())
    forged.close()
    # The premise: each receipt verifies on its own.
    verify_receipt(new_receipt.read_bytes(), log_signer.public_key)
    verify_receipt(old_receipt.read_bytes(), log_signer.public_key)
    code, _out, err = run(*args, str(new_receipt))
    assert code == 1
    assert "CheckpointForkError" in err
    # The remembered checkpoint is still the honest one.
    (remembered,) = json.loads(state.read_text())["logs"].values()
    assert remembered.split("\n")[1] == str(SIZE)


def test_verify_receipt_requires_k_of_n_witnesses(
    files: dict[str, Path],
    tmp_path: Path,
    worker: Ed25519FileSigner,
    log_signer: Ed25519FileSigner,
    start_witness: StartWitness,
) -> None:
    clients = [start_witness(f"w{i}.example/witness")[1] for i in range(2)]
    honest = build_log(files["db"], worker, log_signer, clients[:1])
    receipt = tmp_path / "r.json"
    receipt.write_bytes(honest.receipt(PAYOUT).to_json())
    vk = NoteVerifier.for_key(DEFAULT_ORIGIN, log_signer.public_key).vkey()
    base = ("ledger", "verify-receipt", "--log-key", vk, "--no-remember")
    w0, w1 = clients[0].verifier.vkey(), clients[1].verifier.vkey()
    code, out, err = run(
        *base, "--witness-key", w0, "--witness-key", w1, "--min-witnesses", "1", str(receipt)
    )
    assert code == 0, err
    assert "cosigned by w0.example/witness" in out
    code, out, err = run(*base, "--witness-key", w0, "--witness-key", w1, str(receipt))
    assert code == 1
    assert "WitnessQuorumError" in err


@pytest.fixture
def http_tiles(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A plain static web server over a tiles directory (any server would do)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/log"
    server.shutdown()
    server.server_close()


def test_tiles_served_over_http_are_a_proof_source_and_catch_the_rewrite(
    files: dict[str, Path],
    tmp_path: Path,
    worker: Ed25519FileSigner,
    log_signer: Ed25519FileSigner,
    http_tiles: tuple[Path, str],
) -> None:
    root, url = http_tiles
    state = tmp_path / "state.json"
    honest = build_log(files["db"], worker, log_signer, [])
    first = tmp_path / "first.json"
    first.write_bytes(honest.receipt(PAYOUT).to_json())
    saved = tmp_path / "saved.note"
    cp = honest.latest_checkpoint()
    assert cp is not None
    saved.write_text(cp.note)
    # The honest log grows; its tiles are published; a newer receipt is checked
    # against the remembered checkpoint with a proof computed from the tiles.
    honest.append_many([make_envelope(i, worker) for i in range(SIZE, SIZE + 300)])
    honest.checkpoint(log_signer)
    write_tiles(honest, root / "log")
    later = tmp_path / "later.json"
    later.write_bytes(honest.receipt(SIZE + 280).to_json())
    honest.close()
    pub = str(files["pub"])
    args = ("ledger", "verify-receipt", "--log-key", pub, "--state", str(state), "--tiles", url)
    assert run(*args, str(first))[0] == 0
    code, _, err = run(*args, str(later))
    assert code == 0, err
    assert "seen before" in err
    code, out, err = run(
        "ledger", "audit", "--checkpoint", str(saved), "--tiles", url, "--log-key", pub
    )
    assert code == 0, err
    assert out.startswith(f"ok: ecp.local/ledger at size {SIZE + 300} extends")
    # The operator rebuilds the log with the payout replaced, re-signs and republishes.
    forged = rewrite_log(files["db"], worker, log_signer, [], extra=400)
    shutil.rmtree(root / "log")
    write_tiles(forged, root / "log")
    forged_receipt = tmp_path / "forged.json"
    forged_receipt.write_bytes(forged.receipt(SIZE + 350).to_json())
    forged.close()
    code, _, err = run(
        "ledger", "audit", "--checkpoint", str(saved), "--tiles", url, "--log-key", pub
    )
    assert code == 1
    assert "CheckpointForkError" in err
    code, _, err = run(*args, str(forged_receipt))
    assert code == 1
    assert "CheckpointForkError" in err
