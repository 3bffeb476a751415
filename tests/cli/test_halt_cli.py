"""`ecp halt|resume|revoke-grant|halts`: the kill switch as an operator types it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from ecp.cli import app

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


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["halt", "--help"], ["ACTION", "--all", "--reason", "--key", "--db", "ecp resume"]),
        (["resume", "--help"], ["ACTION", "--all", "--key"]),
        (["revoke-grant", "--help"], ["GRANT_ID", "--reason"]),
        (["halts", "--help"], ["Verify", "--db"]),
    ],
)
def test_help_is_true(argv: list[str], words: list[str]) -> None:
    code, out, _ = run(*argv)
    assert code == 0
    flat = " ".join(out.split())
    for w in words:
        assert w.lower() in flat.lower(), (w, out)


def test_halt_list_resume(home: Path) -> None:
    code, out, err = run("halt", "payout", "--reason", "incident 4711")
    assert code == 0, err
    assert "control statement #1" in out
    assert "gates apply it within 2 s" in out  # a halt waits for each gate's next read
    code, out, _ = run("halts")
    assert code == 0
    assert "halted   payout: incident 4711" in out
    assert "signed by operator" in out
    code, out, _ = run("halt", "--all", "--reason", "freeze")
    assert code == 0
    code, out, _ = run("resume", "payout")
    assert code == 0
    # Confirmed before a refusal, by a gate that can read the log.
    assert "gates apply it for the next governed call (once they can read" in out
    code, out, _ = run("halts")
    assert "halted   every action: freeze" in out
    assert "payout" not in out.split("chain verified", 1)[1]
    code, out, _ = run("revoke-grant", "g-123", "--reason", "leaked")
    assert code == 0
    code, out, _ = run("halts")
    assert "revoked  grant g-123: leaked" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["halt"], "name one action to halt, or --all"),
        (["halt", "payout", "--all"], "name one action to halt, or --all"),
        (["halt", "*"], "use --all"),
    ],
)
def test_bad_targets_are_one_line_errors(home: Path, argv: list[str], message: str) -> None:
    code, _, err = run(*argv)
    assert code != 0
    assert err.strip().count("\n") == 0
    assert message in err


def test_a_key_without_the_halt_role_is_refused_and_nothing_is_written(home: Path) -> None:
    code, _, err = run("halt", "--all", "--key", str(home / "keys" / "approver.key"))
    assert code != 0
    assert "may not sign as halt" in err
    _, out, _ = run("halts")
    assert "0 statement(s)" in out


def test_a_rewritten_log_is_reported_not_trusted(home: Path) -> None:
    for target in ("a", "b"):
        assert run("halt", target)[0] == 0
    engine = create_engine(f"sqlite:///{home / 'ecp.db'}")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM ecp_control_log WHERE seq = 1"))
    engine.dispose()
    code, _, err = run("halts")
    assert code != 0
    assert "ControlLogTamperedError" in err
    assert "was rewritten" in err or "belongs" in err
    # And nobody signs on top of it.
    code, _, err = run("resume", "a")
    assert code != 0
    assert "ControlLogTamperedError" in err
