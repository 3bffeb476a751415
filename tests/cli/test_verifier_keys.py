"""The log's C2SP verifier key: printed by `ecp ledger key` and `ecp keys list`,
taken by `--log-key` (inline or in a file) beside PEM keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ecp._keyring import KeyFiles
from ecp.authority._keys import Ed25519FileSigner, write_public_key
from ecp.cli import app
from ecp.lineage.ledger._note import NoteKeyType, NoteVerifier
from tests.lineage.support import make_envelope

ORIGIN = "ecp.local/ledger"


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def one_error_line(err: str, kind: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {kind}"), err
    return lines[0]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory with `ecp keys init` keys and a ledger of 3 entries, checkpointed."""
    h = tmp_path / "home"
    monkeypatch.setenv("ECP_HOME", str(h))
    for name in (
        "ECP_DATABASE_URL",
        "ECP_LOG_ORIGIN",
        "ECP_KEYS_DIR",
        "ECP_TRUST_STORE",
        "ECP_CONFIG_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    code, _, err = run("keys", "init")
    assert code == 0, err
    worker = Ed25519FileSigner.from_file(KeyFiles(h / "keys").worker)
    for i in range(3):
        f = tmp_path / f"ev{i}.json"
        f.write_bytes(make_envelope(i, worker).to_json())
        code, _, err = run("ledger", "append", str(f))
        assert code == 0, err
    code, _, err = run("ledger", "checkpoint")
    assert code == 0, err
    return h


@pytest.fixture
def receipt(home: Path, tmp_path: Path) -> Path:
    code, out, err = run("ledger", "prove", "1")
    assert code == 0, err
    path = tmp_path / "receipt.json"
    path.write_text(out)
    return path


def _log_signer(home: Path) -> Ed25519FileSigner:
    return Ed25519FileSigner.from_file(KeyFiles(home / "keys").log)


def test_printed_verifier_key_verifies_a_real_receipt(
    home: Path, receipt: Path, tmp_path: Path
) -> None:
    code, out, err = run("ledger", "key")
    assert code == 0, err
    vkey = out.strip()
    log = _log_signer(home)
    assert vkey == NoteVerifier.for_key(ORIGIN, log.public_key).vkey()
    assert vkey.startswith(ORIGIN + "+")
    # `ecp keys list` shows it on the log key's line, beside its key id.
    code, out, err = run("keys", "list")
    assert code == 0, err
    (line,) = [ln for ln in out.splitlines() if ln.startswith(log.key_id)]
    assert line.split()[1] == "log"
    assert line.split()[-1] == vkey
    assert sum(vkey in ln for ln in out.splitlines()) == 1

    code, out, err = run("ledger", "verify-receipt", str(receipt), "--log-key", vkey)
    assert code == 0, err
    assert out.strip() == f"ok: entry 1 is in {ORIGIN} at tree size 3"
    code, out, err = run(
        "ledger", "verify-receipt", str(receipt), "--log-key", vkey, "--origin", ORIGIN
    )
    assert code == 0, err
    # A file holding the verifier key (with its newline) works the same.
    vkey_file = tmp_path / "log.vkey"
    vkey_file.write_text(vkey + "\n")
    code, out, err = run("ledger", "verify-receipt", str(receipt), "--log-key", str(vkey_file))
    assert code == 0, err
    assert "entry 1" in out
    # And `ecp ledger verify` checks the stored checkpoints with it.
    for key in (vkey, str(vkey_file)):
        code, out, err = run("ledger", "verify", "--log-key", key)
        assert code == 0, err
        assert out.startswith("ok: 3 entries")
        assert "1 checkpoints verified" in out
    # PEM keys, public or private, still work.
    write_public_key(log.public_key, tmp_path / "log.pub")
    for pem in (tmp_path / "log.pub", KeyFiles(home / "keys").log):
        code, out, err = run("ledger", "verify-receipt", str(receipt), "--log-key", str(pem))
        assert code == 0, err
        code, out, err = run("ledger", "verify", "--log-key", str(pem))
        assert code == 0, err


def test_configured_origin_names_the_printed_key(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECP_LOG_ORIGIN", "example.com/log")
    code, out, err = run("ledger", "key")
    assert code == 0, err
    assert (
        out.strip() == NoteVerifier.for_key("example.com/log", _log_signer(home).public_key).vkey()
    )
    code, out2, err = run("keys", "list")
    assert code == 0, err
    assert out.strip() in out2
    code, out3, err = run("ledger", "key", "--origin", ORIGIN)
    assert code == 0, err
    assert out3.startswith(ORIGIN + "+")
    code, out4, err = run("keys", "list", "--origin", ORIGIN)
    assert code == 0, err
    assert out3.strip() in out4
    code, _, err = run("ledger", "key", "--log-key", str(home / "missing.key"))
    assert code == 1
    one_error_line(err, "KeyFileError")


def test_verifier_key_for_another_origin_is_refused(home: Path, receipt: Path) -> None:
    log = _log_signer(home)
    elsewhere = NoteVerifier.for_key("evil.example/log", log.public_key).vkey()
    # Named for another log: that is not this receipt's log.
    code, _, err = run("ledger", "verify-receipt", str(receipt), "--log-key", elsewhere)
    assert code == 1
    assert "expected 'evil.example/log'" in one_error_line(err, "ReceiptOriginMismatchError")
    code, _, err = run(
        "ledger", "verify-receipt", str(receipt), "--log-key", elsewhere, "--origin", ORIGIN
    )
    assert code == 1
    line = one_error_line(err, "CliError")
    assert "'evil.example/log'" in line
    assert f"not the log's origin '{ORIGIN}'" in line
    code, _, err = run("ledger", "verify", "--log-key", elsewhere)
    assert code == 1
    assert f"not the log's origin '{ORIGIN}'" in one_error_line(err, "CliError")
    # The right name on another key: the checkpoint is not signed by it.
    other = NoteVerifier.for_key(ORIGIN, Ed25519FileSigner.generate().public_key).vkey()
    code, _, err = run("ledger", "verify-receipt", str(receipt), "--log-key", other)
    assert code == 1
    one_error_line(err, "ReceiptKeyError")
    code, _, err = run("ledger", "verify", "--log-key", other)
    assert code == 1
    one_error_line(err, "TamperError")
    # A witness's cosignature key is no log key, even under the log's name.
    witness = NoteVerifier.for_key(ORIGIN, log.public_key, NoteKeyType.COSIGNATURE_V1).vkey()
    code, _, err = run("ledger", "verify-receipt", str(receipt), "--log-key", witness)
    assert code == 1
    assert "witness key" in one_error_line(err, "CliError")


@pytest.mark.parametrize(
    "bad",
    [
        f"{ORIGIN}+zz+AAAA",
        f"{ORIGIN}+0123abcd+AAAA",
        f"{ORIGIN}+0123abcd+not base64!",
        "+0123abcd+AUb3REmNG5dANEnHVlD17k7u2Ajm96/klk4Nwi+1Uc+p",
        f"{ORIGIN}+",
    ],
    ids=["bad-id", "short-key", "bad-base64", "empty-name", "truncated"],
)
def test_malformed_verifier_key_is_one_line(
    home: Path, receipt: Path, tmp_path: Path, bad: str
) -> None:
    code, _, err = run("ledger", "verify-receipt", str(receipt), "--log-key", bad)
    assert code == 1
    one_error_line(err, "VerifierKeyError")
    code, _, err = run("ledger", "verify", "--log-key", bad)
    assert code == 1
    one_error_line(err, "VerifierKeyError")


def test_mismatched_key_id_and_bad_files_are_one_line(
    home: Path, receipt: Path, tmp_path: Path
) -> None:
    name, key_id, b64 = (
        NoteVerifier.for_key(ORIGIN, _log_signer(home).public_key).vkey().split("+", 2)
    )
    flipped = f"{int(key_id, 16) ^ 1:08x}"
    code, _, err = run(
        "ledger", "verify-receipt", str(receipt), "--log-key", f"{name}+{flipped}+{b64}"
    )
    assert code == 1
    assert "does not match the key" in one_error_line(err, "VerifierKeyError")
    # A file holding a malformed verifier key names the problem in one line.
    bad_file = tmp_path / "bad.vkey"
    bad_file.write_text(f"{name}+{flipped}+{b64}\n")
    code, _, err = run("ledger", "verify-receipt", str(receipt), "--log-key", str(bad_file))
    assert code == 1
    one_error_line(err, "VerifierKeyError")
    # Neither PEM nor a verifier key (the receipt itself), or no such file.
    for path in (receipt, tmp_path / "none.pub"):
        code, _, err = run("ledger", "verify-receipt", str(receipt), "--log-key", str(path))
        assert code == 1
        one_error_line(err, "KeyFileError")
