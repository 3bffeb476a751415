"""`ecp keys|policy|grant`: true --help, working commands, one-line errors."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ecp.authority._clock import FixedClock
from ecp.authority._grant import CallBinding, issue_grant
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._policy import PolicyBundle, PolicyRequest
from ecp.authority.errors import SignatureInvalidError
from ecp.cli import app
from tests.authority.support import ENV_DIGEST, EXAMPLE_BUNDLE, T0

runner = CliRunner()
REQUESTS = EXAMPLE_BUNDLE / "requests"


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def one_error_line(stderr: str, name: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"error: {name}: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["keys", "--help"], ["init", "list", "revoke"]),
        (["keys", "init", "--help"], ["--dir", "--approver-name", "0600"]),
        (["keys", "list", "--help"], ["--dir"]),
        (["keys", "revoke", "--help"], ["KEY_ID"]),
        (["policy", "--help"], ["validate", "eval"]),
        (["policy", "validate", "--help"], ["BUNDLE", "schema"]),
        (["policy", "eval", "--help"], ["--request", "decision"]),
        (["grant", "--help"], ["verify"]),
        (["grant", "verify", "--help"], ["--trust", "--call", "--replay-db", "--at"]),
    ],
)
def test_help_is_true(argv: list[str], words: list[str]) -> None:
    code, out, _ = run(*argv)
    assert code == 0
    flat = " ".join(out.split())
    for w in words:
        assert w.lower() in flat.lower(), (w, out)


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    code, _out, err = run("keys", "init", "--dir", str(d))
    assert code == 0, err
    return d


def test_keys_init_list_revoke(keydir: Path) -> None:
    for role in ("authority", "approver", "log", "worker", "recorder", "halt"):
        mode = stat.S_IMODE((keydir / f"{role}.key").stat().st_mode)
        assert mode == 0o600
    code, out, _ = run("keys", "list", "--dir", str(keydir))
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 6
    assert all("active" in line for line in lines)
    assert any("approver" in line and "carol" in line for line in lines)
    # No private key material is ever printed.
    assert "PRIVATE" not in out
    key_id = next(line.split()[0] for line in lines if " authority " in line)
    code, out, _ = run("keys", "revoke", key_id, "--dir", str(keydir))
    assert code == 0
    _, out, _ = run("keys", "list", "--dir", str(keydir))
    assert any(key_id in line and "revoked" in line for line in out.splitlines())


def test_keys_init_refuses_to_overwrite(keydir: Path) -> None:
    before = (keydir / "authority.key").read_bytes()
    code, _, err = run("keys", "init", "--dir", str(keydir))
    assert code == 1
    assert "refusing to overwrite" in one_error_line(err, "KeyFileError")
    assert (keydir / "authority.key").read_bytes() == before


def test_keys_revoke_unknown_and_missing_store(keydir: Path, tmp_path: Path) -> None:
    code, _, err = run("keys", "revoke", "ed25519:00", "--dir", str(keydir))
    assert code == 1
    one_error_line(err, "UnknownKeyError")
    code, _, err = run("keys", "list", "--dir", str(tmp_path / "none"))
    assert code == 1
    assert "trust store not found" in one_error_line(err, "TrustStoreError")


def test_policy_validate_and_eval() -> None:
    code, out, _ = run("policy", "validate", str(EXAMPLE_BUNDLE))
    assert code == 0
    assert out.startswith("ok: ")
    bundle = PolicyBundle.load(EXAMPLE_BUNDLE)
    for f in sorted(REQUESTS.glob("*.json")):
        code, out, _ = run("policy", "eval", str(EXAMPLE_BUNDLE), "--request", str(f))
        assert code == 0
        req = PolicyRequest.model_validate_json(f.read_text())
        assert out.strip().encode() == bundle.evaluate(req).to_json()


def test_policy_validate_rejects_schema_violation(tmp_path: Path) -> None:
    b = tmp_path / "b"
    shutil.copytree(EXAMPLE_BUNDLE, b)
    with (b / "policies.cedar").open("a") as fh:
        fh.write(
            '\n@id("typo")\npermit (principal, action == Action::"payout", resource)'
            " when { context.arguments.amout > 1 };\n"
        )
    code, _, err = run("policy", "validate", str(b))
    assert code == 1
    line = one_error_line(err, "PolicyBundleError")
    assert "policies.cedar" in line
    assert "'typo'" in line


@pytest.mark.parametrize(
    ("content", "name", "needle"),
    [
        ("{not json", "CliError", "not valid JSON"),
        ('{"action": "payout", "action": "x"}', "CliError", "duplicate"),
        (
            '{"action": "payout", "initiator": "a", "arguments": {}, "extra": 1}',
            "CliError",
            "extra",
        ),
        ("[1, 2]", "CliError", "must be a JSON object"),
    ],
    ids=["not-json", "duplicate-key", "extra-field", "not-object"],
)
def test_policy_eval_bad_request_files(
    tmp_path: Path, content: str, name: str, needle: str
) -> None:
    f = tmp_path / "req.json"
    f.write_text(content)
    code, _, err = run("policy", "eval", str(EXAMPLE_BUNDLE), "--request", str(f))
    assert code == 1
    line = one_error_line(err, name)
    assert str(f) in line
    assert needle.lower() in line.lower()


def test_policy_commands_name_a_broken_bundle(tmp_path: Path) -> None:
    b = tmp_path / "b"
    shutil.copytree(EXAMPLE_BUNDLE, b)
    (b / "entities.json").write_text("{")
    code, _, err = run("policy", "eval", str(b), "--request", str(REQUESTS / "payout-small.json"))
    assert code == 1
    assert "entities.json" in one_error_line(err, "PolicyBundleError")


@pytest.fixture
def grant_files(keydir: Path, tmp_path: Path) -> tuple[Path, Path]:
    bundle = PolicyBundle.load(EXAMPLE_BUNDLE)
    req = PolicyRequest.model_validate_json((REQUESTS / "payout-small.json").read_text())
    decision = bundle.evaluate(req)
    call = CallBinding(
        activity_type="payout",
        args_digest=req.digest(),
        namespace="default",
        workflow_id="wf",
        run_id="run",
        activity_id="1",
    )
    signer = Ed25519FileSigner.from_file(keydir / "authority.key")
    env = issue_grant(
        decision,
        call,
        initiator="alice",
        environment_digest=ENV_DIGEST,
        signer=signer,
        clock=FixedClock(T0),
        ttl=timedelta(minutes=5),
    )
    grant = tmp_path / "grant.json"
    grant.write_bytes(env.to_json())
    call_file = tmp_path / "call.json"
    call_file.write_text(
        json.dumps(
            {
                **call.model_dump(),
                "environment_digest": ENV_DIGEST,
                "attempt": 1,
                "initiator": "alice",
                "policy_digest": bundle.digest,
            }
        )
    )
    return grant, call_file


AT = "2030-01-01T12:01:00Z"


def test_grant_verify_valid(keydir: Path, grant_files: tuple[Path, Path], tmp_path: Path) -> None:
    grant, call = grant_files
    code, out, err = run(
        "grant", "verify", str(grant), "--trust", str(keydir), "--call", str(call), "--at", AT
    )
    assert code == 0, err
    assert out.count("\n") == 1
    assert out.startswith("valid: grant ")
    assert "not consumed" in out
    db = f"sqlite:///{tmp_path / 'replay.db'}"
    args = [
        "grant",
        "verify",
        str(grant),
        "--trust",
        str(keydir),
        "--call",
        str(call),
        "--at",
        AT,
        "--replay-db",
        db,
    ]
    assert run(*args)[0] == 0
    code, _, err = run(*args)
    assert code == 1
    one_error_line(err, "GrantReplayedError")


def test_grant_verify_denials_are_one_line(
    keydir: Path, grant_files: tuple[Path, Path], tmp_path: Path
) -> None:
    grant, call = grant_files
    base = ["grant", "verify", str(grant), "--trust", str(keydir), "--call", str(call)]
    # Expired by now (the grant was issued in 2030 for 5 minutes; verify in 2031).
    code, _, err = run(*base, "--at", "2031-01-01T00:00:00Z")
    assert code == 1
    one_error_line(err, "GrantExpiredError")
    doc = json.loads(grant.read_bytes())
    doc["signatures"][0]["sig"] = doc["signatures"][0]["sig"][:-6] + "AAAA=="
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    code, _, err = run(
        "grant", "verify", str(bad), "--trust", str(keydir), "--call", str(call), "--at", AT
    )
    assert code == 1
    one_error_line(err, SignatureInvalidError.__name__)
    other = json.loads(call.read_text()) | {"workflow_id": "other"}
    call2 = tmp_path / "call2.json"
    call2.write_text(json.dumps(other))
    code, _, err = run(
        "grant", "verify", str(grant), "--trust", str(keydir), "--call", str(call2), "--at", AT
    )
    one_error_line(err, "WorkflowMismatchError")


def test_grant_verify_bad_inputs(
    keydir: Path, grant_files: tuple[Path, Path], tmp_path: Path
) -> None:
    grant, call = grant_files
    # Missing key: a trust store without the authority key.
    other = tmp_path / "other-keys"
    assert run("keys", "init", "--dir", str(other))[0] == 0
    code, _, err = run(
        "grant", "verify", str(grant), "--trust", str(other), "--call", str(call), "--at", AT
    )
    assert code == 1
    one_error_line(err, "UnknownKeyError")
    # Unreadable trust store: the file is a directory.
    broken = tmp_path / "broken"
    (broken / "truststore.json").mkdir(parents=True)
    code, _, err = run("grant", "verify", str(grant), "--trust", str(broken), "--call", str(call))
    assert "cannot read trust store" in one_error_line(err, "TrustStoreError")
    # Malformed trust store.
    (tmp_path / "ts.json").write_text(
        '{"format": "ecp.truststore/v1", "keys": [{"public_key": "!!"}]}'
    )
    code, _, err = run(
        "grant", "verify", str(grant), "--trust", str(tmp_path / "ts.json"), "--call", str(call)
    )
    assert "ts.json" in one_error_line(err, "TrustStoreError")
    # Malformed grant file and missing call file.
    (tmp_path / "g.json").write_text("{]")
    code, _, err = run(
        "grant", "verify", str(tmp_path / "g.json"), "--trust", str(keydir), "--call", str(call)
    )
    one_error_line(err, "MalformedEnvelopeError")
    code, _, err = run(
        "grant", "verify", str(grant), "--trust", str(keydir), "--call", str(tmp_path / "nope.json")
    )
    assert "not found" in one_error_line(err, "CliError")
    (tmp_path / "c.json").write_text('{"activity_type": "payout"}')
    code, _, err = run(
        "grant", "verify", str(grant), "--trust", str(keydir), "--call", str(tmp_path / "c.json")
    )
    assert "c.json" in one_error_line(err, "CliError")
    code, _, err = run(
        "grant",
        "verify",
        str(grant),
        "--trust",
        str(keydir),
        "--call",
        str(call),
        "--at",
        "yesterday",
    )
    one_error_line(err, "CliError")


def test_real_process_no_traceback_unless_debug(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "ecp.cli", "keys", "list", "--dir", str(tmp_path / "missing")]
    ecp = [sys.executable, "-c", "from ecp.cli import main; main()"]
    plain = subprocess.run([*ecp, *cmd[3:]], capture_output=True, text=True)
    assert plain.returncode == 1
    one_error_line(plain.stderr, "TrustStoreError")
    debug = subprocess.run([*ecp, "--debug", *cmd[3:]], capture_output=True, text=True)
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr
