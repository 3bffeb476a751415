"""A worker with a broken deployment refuses to start: one clear line, exit 1.

Each case runs ``python -m ecp worker --role ...`` as its own process.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ecp._keyring import init_keyring

from .conftest import ecp_env, run_ecp


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    init_keyring(tmp_path / "keys")
    return tmp_path / "keys"


def _executor_only(keys: Path, tmp_path: Path) -> Path:
    d = tmp_path / "executor-keys"
    d.mkdir()
    for name in ("worker.key", "truststore.json"):
        shutil.copy(keys / name, d / name)
    return d


def _refuses(role: str, env: dict[str, str], expected: str) -> None:
    out = run_ecp(["worker", "--role", role], env)
    assert out.returncode == 1, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert expected in lines[0], lines[0]


def test_missing_key_file(keys: Path, tmp_path: Path) -> None:
    # An executor's key directory cannot run the authority.
    env = ecp_env(ECP_HOME=str(tmp_path), ECP_KEYS_DIR=str(_executor_only(keys, tmp_path)))
    _refuses("authority", env, "authority.key")


def test_unreachable_database(keys: Path, tmp_path: Path) -> None:
    # ECP_STARTUP_WAIT_SECONDS=0: no wait, the first failure as it is
    # (test_startup_wait covers the wait).
    env = ecp_env(
        ECP_HOME=str(tmp_path),
        ECP_DATABASE_URL="postgresql+psycopg://postgres:pw@127.0.0.1:1/nothing",
        ECP_STARTUP_WAIT_SECONDS="0",
    )
    _refuses("executor", env, "LedgerUnavailableError")


def test_malformed_database_url(keys: Path, tmp_path: Path) -> None:
    env = ecp_env(ECP_HOME=str(tmp_path), ECP_DATABASE_URL="postgres//oops")
    _refuses("executor", env, "invalid setting ECP_DATABASE_URL")


def test_unreachable_temporal(keys: Path, tmp_path: Path) -> None:
    env = ecp_env(
        ECP_HOME=str(tmp_path), ECP_TEMPORAL_ADDRESS="127.0.0.1:1", ECP_STARTUP_WAIT_SECONDS="0"
    )
    _refuses("executor", env, "cannot reach Temporal at 127.0.0.1:1")


def test_invalid_policy_bundle(keys: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "policy"
    shutil.copytree(Path(__file__).resolve().parents[2] / "ecp" / "examples" / "policy", bundle)
    (bundle / "policies.cedar").write_text("permit(principal, action,")
    env = ecp_env(ECP_HOME=str(tmp_path), ECP_POLICY_BUNDLE=str(bundle))
    _refuses("authority", env, "PolicyBundleError")


def test_invalid_setting(keys: Path, tmp_path: Path) -> None:
    env = ecp_env(ECP_HOME=str(tmp_path), ECP_OTEL_EXPORTER="zipkin")
    _refuses("executor", env, "invalid setting ECP_OTEL_EXPORTER")
