"""`ecp witness …` and `ecp ledger checkpoint --witness`, end to end through the CLI."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from typer.testing import CliRunner

from ecp.authority._keys import Ed25519FileSigner, write_private_key
from ecp.cli import app
from ecp.lineage.ledger._cosignature import WitnessPolicy
from ecp.lineage.witness._server import WitnessServer
from ecp.lineage.witness._state import WitnessState
from ecp.lineage.witness._witness import Witness
from tests.console.conftest import free_port
from tests.lineage.support import make_envelope, open_unverified


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_witness_cli_and_a_witnessed_then_unwitnessed_checkpoint(
    tmp_path: Path, worker: Ed25519FileSigner, log_signer: Ed25519FileSigner, log_vkey: str
) -> None:
    wdir = tmp_path / "witness"
    code, out, err = run("witness", "init", "--state", str(wdir), "--name", "witness.example/w1")
    assert code == 0, err
    wkey = out.strip()
    assert wkey.startswith("witness.example/w1+")
    code, _, err = run("witness", "init", "--state", str(wdir), "--name", "witness.example/w1")
    assert code == 1
    assert "already holds a witness" in err
    code, out, err = run("witness", "add-log", "--state", str(wdir), log_vkey)
    assert code == 0, err
    code, out, err = run("witness", "key", "--state", str(wdir))
    assert out.strip() == wkey

    server = WitnessServer(("127.0.0.1", 0), Witness(WitnessState(wdir)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    key_file = tmp_path / "log.key"
    write_private_key(log_signer.private_key, key_file)
    db = f"sqlite:///{tmp_path / 'log.db'}"
    ledger = open_unverified(db)
    ledger.append_many([make_envelope(i, worker) for i in range(4)])
    base = ("ledger", "checkpoint", "--db", db, "--log-key", str(key_file))
    try:
        code, out, err = run(*base, "--witness", f"{wkey}@{server.url}")
        assert code == 0, err
        assert len(WitnessPolicy.from_vkeys([wkey]).check(out)) == 1
        code, out, err = run("witness", "status", "--state", str(wdir))
        assert "ecp.local/ledger: size 4" in out
    finally:
        server.shutdown()
        server.server_close()
    ledger.append(make_envelope(4, worker))
    down = f"{wkey}@http://127.0.0.1:{free_port()}"
    code, out, err = run(*base, "--witness", down)
    assert code == 0, err  # the log keeps going...
    assert "warning: checkpoint is unwitnessed" in err  # ...and says so
    assert out.startswith("ecp.local/ledger\n5\n")
    code, out, err = run("ledger", "checkpoints", "--db", db)
    first, second = out.splitlines()
    assert first.endswith("  unwitnessed")
    assert second.endswith("  witnessed by witness.example/w1")
    code, out, err = run("ledger", "checkpoints", "--db", db, "--json")
    assert json.loads(out)[0]["witnessing"] == [
        {"witness": "witness.example/w1", "outcome": "unreachable"}
    ]
