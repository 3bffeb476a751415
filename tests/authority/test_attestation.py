"""Environment attestation: stable digest, claims, worker signatures."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ecp.authority._attestation import (
    ATTESTATION_PAYLOAD_TYPE,
    measure_environment,
    sign_attestation,
    verify_attestation,
)
from ecp.authority._canonical import canonical_json
from ecp.authority._clock import FixedClock
from ecp.authority._dsse import Envelope, sign_envelope
from ecp.authority._policy import Effect, PolicyBundle, PolicyRequest
from ecp.authority.errors import AttestationError, KeyRoleError, SignatureInvalidError
from tests.authority.support import T0, Keys

MODULES = ["ecp.authority._grant", "ecp.authority"]


def test_digest_is_stable_across_processes() -> None:
    here = measure_environment(MODULES, build_id="b-1", environ={})
    code = (
        "from ecp.authority._attestation import measure_environment as m;"
        f"print(m({MODULES!r}, build_id='b-1', environ={{}}).digest)"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == here.digest


def test_measurement_contents_and_env_defaults() -> None:
    att = measure_environment(
        MODULES, environ={"ECP_BUILD_ID": "build-7", "ECP_IMAGE_DIGEST": "sha256:ab"}
    )
    assert att.build_id == "build-7"
    assert att.image_digest == "sha256:ab"
    assert att.python.endswith(
        ".".join(map(str, sys.version_info[:2])) + "." + str(sys.version_info[2])
    )
    assert set(att.distributions) >= {"temporalio", "temporal-ecp", "cryptography"}
    # The distribution as installed (not a stale name): its version is known.
    assert att.distributions["temporal-ecp"] != "(not installed)"
    assert set(att.modules) == set(MODULES)
    assert att.digest != measure_environment(MODULES, build_id="other", environ={}).digest
    claims = att.claims()
    assert claims["attested"] is False
    assert claims["build_id"] == "build-7"


def test_source_change_changes_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "govpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "pay.py").write_text("def pay(): return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = measure_environment(["govpkg"], environ={}).digest
    (pkg / "pay.py").write_text("def pay(): return 2\n")
    assert measure_environment(["govpkg"], environ={}).digest != before


def test_unknown_module_is_an_error() -> None:
    with pytest.raises(AttestationError):
        measure_environment(["no_such_module_ecp_test"], environ={})


def test_signed_attestation_gives_attested_claims(keys: Keys, bundle: PolicyBundle) -> None:
    att = measure_environment(MODULES, build_id="build-42", environ={})
    env = sign_attestation(att, keys.worker)
    verified = verify_attestation(env.to_json(), keys.trust, FixedClock(T0))
    assert verified.digest == att.digest
    claims = verified.claims()
    assert claims["attested"] is True
    request = PolicyRequest(
        action="change_infrastructure",
        initiator="bob",
        arguments={"target": "db", "environment": "production", "change": "resize"},
        environment=claims,
    )
    assert bundle.evaluate(request).effect is Effect.ALLOW
    unverified = request.model_copy(update={"environment": att.claims()})
    assert bundle.evaluate(unverified).effect is Effect.DENY


def _flip_first_byte(b64: str) -> str:
    """``b64`` decoded, its first byte changed, encoded again: same length, valid base64."""
    raw = bytearray(base64.b64decode(b64, validate=True))
    raw[0] ^= 0x01
    return base64.b64encode(raw).decode("ascii")


def _tampered(env: Envelope, *, payload: bool = False, sig: bool = False) -> bytes:
    doc = env.to_dict()
    if payload:
        doc["payload"] = _flip_first_byte(str(doc["payload"]))
    if sig:
        sigs = doc["signatures"]
        assert isinstance(sigs, list)
        sigs[0]["sig"] = _flip_first_byte(sigs[0]["sig"])
    return json.dumps(doc).encode()


def test_attestation_must_come_from_a_worker_key(keys: Keys) -> None:
    att = measure_environment(MODULES, environ={})
    env = sign_attestation(att, keys.worker)
    verify_attestation(env.to_json(), keys.trust, FixedClock(T0))
    # The same bytes signed by a trusted key of another role.
    by_authority = sign_envelope(ATTESTATION_PAYLOAD_TYPE, env.payload, keys.authority)
    with pytest.raises(KeyRoleError):
        verify_attestation(by_authority, keys.trust, FixedClock(T0))
    # Tampering re-encodes whole bytes, so the base64 stays valid whatever the
    # payload's length and only the signature check can catch it.
    with pytest.raises(SignatureInvalidError):
        verify_attestation(_tampered(env, payload=True), keys.trust, FixedClock(T0))
    with pytest.raises(SignatureInvalidError):
        verify_attestation(_tampered(env, sig=True), keys.trust, FixedClock(T0))
    bogus = sign_envelope(
        ATTESTATION_PAYLOAD_TYPE, canonical_json({"schema_version": "x"}), keys.worker
    )
    with pytest.raises(AttestationError):
        verify_attestation(bogus, keys.trust, FixedClock(T0))
