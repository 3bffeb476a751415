"""`ecp ledger …` end to end on a SQLite file in a temporary ECP_HOME."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ecp.authority._keys import Ed25519FileSigner, write_private_key, write_public_key
from ecp.cli import app
from tests.lineage.support import make_envelope, trust_of


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ECP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ECP_DATABASE_URL", raising=False)
    key = Ed25519FileSigner.generate()
    write_private_key(key.private_key, tmp_path / "home" / "keys" / "log.key")
    write_public_key(key.public_key, tmp_path / "home" / "keys" / "log.pub")
    trust_of(WORKER).save(tmp_path / "home" / "keys" / "truststore.json")
    return tmp_path / "home"


#: The one executor key the home's trust store names.
WORKER = Ed25519FileSigner.generate()


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_ledger_cli_round_trip(home: Path, tmp_path: Path) -> None:
    worker = WORKER
    files = []
    for i in range(5):
        f = tmp_path / f"ev{i}.json"
        f.write_bytes(make_envelope(i, worker).to_json())
        files.append(f)
        code, out, _ = run("ledger", "append", str(f))
        assert code == 0
        assert json.loads(out)["index"] == i
    code, out, _ = run("ledger", "append", str(files[2]))
    assert code == 0
    assert json.loads(out) | {"leafHash": ""} == json.loads(out) | {
        "leafHash": "",
        "index": 2,
        "created": False,
    }
    code, out, _ = run("ledger", "checkpoint")
    assert code == 0
    assert out.startswith("ecp.local/ledger\n5\n")
    code, out, _ = run("ledger", "prove", "3")
    assert code == 0
    receipt = tmp_path / "r.json"
    receipt.write_text(out)
    code, out, _ = run(
        "ledger",
        "verify-receipt",
        str(receipt),
        "--log-key",
        str(home / "keys" / "log.pub"),
        "--origin",
        "ecp.local/ledger",
    )
    assert code == 0
    assert "entry 3" in out
    code, out, _ = run("ledger", "consistency", "2", "5")
    assert code == 0
    assert len(json.loads(out)["hashes"]) > 0
    code, out, _ = run("ledger", "verify")
    assert code == 0
    assert out.startswith("ok: 5 entries")

    # Bad receipts and keys: one line, non-zero.
    other = Ed25519FileSigner.generate()
    write_public_key(other.public_key, tmp_path / "other.pub")
    code, _, err = run(
        "ledger", "verify-receipt", str(receipt), "--log-key", str(tmp_path / "other.pub")
    )
    assert code == 1
    assert err.startswith("error: ReceiptKeyError")
    assert err.count("\n") == 1
    code, _, err = run("ledger", "verify-receipt", str(receipt), "--log-key", str(receipt))
    assert code == 1
    assert "KeyFileError" in err
    code, _, err = run(
        "ledger",
        "verify-receipt",
        str(receipt),
        "--log-key",
        str(home / "keys" / "log.pub"),
        "--origin",
        "other/log",
    )
    assert code == 1
    assert "ReceiptOriginMismatchError" in err

    # Tamper: verify names the first bad index.
    con = sqlite3.connect(home / "ecp.db")
    con.execute("UPDATE ledger_entry SET envelope = envelope || x'20' WHERE seq = 3")
    con.commit()
    con.close()
    code, _, err = run("ledger", "verify")
    assert code == 1
    assert "entry 3" in err
    assert err.count("\n") == 1


def test_bad_input_appends_nothing(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    for content in [b"{", b"[]", b'{"payload":"","payloadType":"x","signatures":[]}']:
        bad.write_bytes(content)
        code, out, err = run("ledger", "append", str(bad))
        assert code == 1
        assert err.startswith("error: ")
        assert err.count("\n") == 1
        assert out == ""
    # Well-formed evidence signed by a key the trust store does not name.
    forged = tmp_path / "forged.json"
    forged.write_bytes(make_envelope(0, Ed25519FileSigner.generate()).to_json())
    code, out, err = run("ledger", "append", str(forged))
    assert code == 1
    assert "EvidenceSignatureError" in err
    assert out == ""
    code, _, err = run("ledger", "append", str(tmp_path / "missing.json"))
    assert code == 1
    assert "cannot read" in err
    code, _, err = run("ledger", "prove", "0")
    assert code == 1
    assert "EntryNotFoundError" in err
    code, _, err = run("ledger", "checkpoint", "--log-key", str(bad))
    assert code == 1
    assert "KeyFileError" in err
    code, out, _ = run("ledger", "verify")
    assert code == 0
    assert out.startswith("ok: 0 entries")


def test_help_is_real() -> None:
    code, out, _ = run("ledger", "--help")
    assert code == 0
    for cmd in ("append", "checkpoint", "prove", "consistency", "verify", "verify-receipt"):
        assert cmd in out
        code, sub, _ = run("ledger", cmd, "--help")
        assert code == 0
        assert "Usage" in sub
