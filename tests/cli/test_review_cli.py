"""`ecp review list|ack|scan`: unknown outcomes as an operator handles them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ecp._keyring import KeyFiles
from ecp.authority._keys import Ed25519FileSigner, load_private_key
from ecp.authority._truststore import TrustStore
from ecp.cli import app
from ecp.lineage.ledger._evidence import OutcomeStatus
from ecp.lineage.ledger._ledger import Ledger
from tests.lineage.support import make_envelope

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ECP_HOME", str(tmp_path))
    monkeypatch.setenv("ECP_DATABASE_URL", f"sqlite:///{tmp_path / 'ecp.db'}")
    result = runner.invoke(app, ["keys", "init"])
    assert result.exit_code == 0, result.stderr
    return tmp_path


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_help_is_true() -> None:
    code, out, _ = run("review", "--help")
    assert code == 0
    for w in ("list", "ack", "scan"):
        assert w in out
    code, out, _ = run("review", "ack", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for w in ("LEDGER_INDEX", "--note", "--key", "approver"):
        assert w in flat, (w, out)


def test_list_then_acknowledge_with_the_approver_key(home: Path) -> None:
    keys = KeyFiles(home / "keys")
    worker = Ed25519FileSigner(load_private_key(keys.worker))
    with Ledger.open(
        f"sqlite:///{home / 'ecp.db'}", create=True, trust=TrustStore.load(keys.directory)
    ) as led:
        led.append(make_envelope(1, worker, status=OutcomeStatus.DENIED))
        unknown = led.append(make_envelope(2, worker, status=OutcomeStatus.UNKNOWN)).index
    code, out, err = run("review", "list", "--json")
    assert code == 0, err
    assert [u["ledgerIndex"] for u in json.loads(out)["pending"]] == [unknown]
    # The executor's key has no approver role: refused, still listed.
    code, _, err = run("review", "ack", str(unknown), "--note", "x", "--key", str(keys.worker))
    assert code == 1
    assert "approver" in err
    code, out, err = run("review", "ack", str(unknown), "--note", "paid once, checked")
    assert code == 0, err
    assert f"#{unknown} acknowledged by" in out
    code, out, err = run("review", "list", "--json", "--acknowledged")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["pending"] == []
    assert [(u["ledgerIndex"], u["note"]) for u in doc["acknowledged"]] == [
        (unknown, "paid once, checked")
    ]
    # A rescan rebuilds the index; the acknowledgement is kept.
    code, out, err = run("review", "scan", "--rescan")
    assert code == 0, err
    assert "scanned 2 of 2 entries" in out
    code, out, _ = run("review", "list")
    assert "no unacknowledged unknown outcomes" in out
    code, _, err = run("review", "ack", "0", "--note", "x")
    assert code == 1
    assert "not an unacknowledged unknown outcome" in err
