"""`ecp ledger checkpoints`: the stored signed checkpoints, newest first, on a
real SQLite ledger."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ecp.authority._keys import Ed25519FileSigner, write_private_key
from ecp.cli import app
from ecp.lineage.ledger._checkpoint import open_checkpoint
from ecp.lineage.ledger._ledger import Ledger
from tests.lineage.support import make_envelope, trust_of

WORKER = Ed25519FileSigner.generate()
LOG = Ed25519FileSigner.generate()


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("ECP_HOME", str(h))
    monkeypatch.delenv("ECP_DATABASE_URL", raising=False)
    write_private_key(LOG.private_key, h / "keys" / "log.key")
    trust_of(WORKER).save(h / "keys" / "truststore.json")
    return h


def _url(home: Path) -> str:
    return f"sqlite:///{home / 'ecp.db'}"


@pytest.fixture
def ledger_sizes(home: Path, tmp_path: Path) -> list[int]:
    """A ledger of 6 entries with checkpoints at sizes 1, 3 and 6 (via the CLI)."""
    sizes = []
    n = 0
    for batch in (1, 2, 3):
        for _ in range(batch):
            f = tmp_path / f"ev{n}.json"
            f.write_bytes(make_envelope(n, WORKER).to_json())
            code, _, err = run("ledger", "append", str(f))
            assert code == 0, err
            n += 1
        code, _, err = run("ledger", "checkpoint")
        assert code == 0, err
        sizes.append(n)
    return sizes


def test_lists_checkpoints_newest_first(home: Path, ledger_sizes: list[int]) -> None:
    started = datetime.now(UTC) - timedelta(minutes=5)
    code, out, err = run("ledger", "checkpoints")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    with Ledger.open(_url(home), create=False) as ledger:
        roots = {n: base64.b64encode(ledger.root_at(n)).decode() for n in ledger_sizes}
    for line, cp_id, size in zip(lines, (3, 2, 1), reversed(ledger_sizes), strict=True):
        fields = line.split()
        assert fields[0] == f"#{cp_id}"
        assert fields[1:3] == ["size", str(size)]
        assert fields[3:5] == ["root", roots[size]]
        when = datetime.fromisoformat(fields[5])
        assert when.tzinfo is not None
        assert started <= when <= datetime.now(UTC)

    code, out, err = run("ledger", "checkpoints", "--limit", "2")
    assert code == 0, err
    assert [ln.split()[0] for ln in out.splitlines()] == ["#3", "#2"]


def test_json_carries_the_signed_notes(home: Path, ledger_sizes: list[int]) -> None:
    code, out, err = run("ledger", "checkpoints", "--json")
    assert code == 0, err
    docs = json.loads(out)
    assert [d["id"] for d in docs] == [3, 2, 1]
    assert [d["size"] for d in docs] == ledger_sizes[::-1]
    for d in docs:
        assert set(d) == {"id", "origin", "size", "rootHash", "createdAt", "note", "witnessing"}
        assert d["origin"] == "ecp.local/ledger"
        assert datetime.fromisoformat(d["createdAt"]).tzinfo is not None
        # Each note is the checkpoint as signed by the log key.
        cp, _ = open_checkpoint(d["note"], LOG.public_key, origin=d["origin"])
        assert (cp.size, base64.b64encode(cp.root_hash).decode()) == (d["size"], d["rootHash"])
    code, out, err = run("ledger", "checkpoints", "--json", "--limit", "1")
    assert code == 0, err
    assert [d["size"] for d in json.loads(out)] == [6]


def test_read_only_method_matches_the_stored_checkpoints(home: Path) -> None:
    with Ledger.open(
        _url(home), trust=trust_of(WORKER), checkpoint_signer=LOG, checkpoint_every=2
    ) as ledger:
        for i in range(9):
            ledger.append(make_envelope(i, WORKER))
        stored = ledger.stored_checkpoints()
        assert [s.checkpoint for s in stored] == [c.checkpoint for c in ledger.checkpoints()][::-1]
        assert [s.checkpoint.size for s in stored] == [8, 6, 4, 2]
        assert [s.id for s in ledger.stored_checkpoints(2)] == [4, 3]
        assert [s.note for s in stored] == [c.note for c in ledger.checkpoints()][::-1]
        assert all(s.created_at.tzinfo is not None for s in stored)
    code, out, err = run("ledger", "checkpoints", "--limit", "3")
    assert code == 0, err
    assert [ln.split()[2] for ln in out.splitlines()] == ["8", "6", "4"]


def test_no_checkpoints_and_no_ledger(home: Path, tmp_path: Path) -> None:
    with Ledger.open(_url(home), trust=trust_of(WORKER)) as ledger:
        ledger.append(make_envelope(0, WORKER))
    code, out, err = run("ledger", "checkpoints")
    assert code == 0, err
    assert out.strip() == "no checkpoints yet; run `ecp ledger checkpoint`"
    code, out, err = run("ledger", "checkpoints", "--json")
    assert code == 0, err
    assert json.loads(out) == []
    code, _, err = run("ledger", "checkpoints", "--db", f"sqlite:///{tmp_path / 'none.db'}")
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: LedgerUnavailableError")
    code, _, _ = run("ledger", "checkpoints", "--limit", "0")
    assert code == 2
