"""`ecp keys add-passkey`: an operator trusts an approver's passkey; `list` and `revoke` see it."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import cbor2
from typer.testing import CliRunner

from ecp._keyring import init_keyring
from ecp.authority._truststore import TrustStore
from ecp.authority._webauthn import b64url_encode
from ecp.cli import app
from tests.passkeys import SoftPasskey

RP = "ecp.example.com"
ORIGIN = "https://ecp.example.com"


def _attestation_object(pk: SoftPasskey, rp_id: str = RP) -> bytes:
    """What credentials.create() returns (``fmt: none``): authData with attested credential data."""
    auth_data = (
        hashlib.sha256(rp_id.encode()).digest()
        + bytes([0x45])  # UP, UV, AT
        + struct.pack(">I", 0)
        + bytes(16)  # AAGUID
        + struct.pack(">H", len(pk.credential_id))
        + pk.credential_id
        + pk.cose_public_key()
    )
    return cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_add_list_and_revoke_a_passkey(tmp_path: Path) -> None:
    store = init_keyring(tmp_path / "keys").trust_store
    pk = SoftPasskey(rp_id=RP)
    code, out, err = _run(
        "keys", "add-passkey", "--dir", str(store), "--name", "carol", "--rp-id", RP,
        "--origin", ORIGIN, "--attestation-object", b64url_encode(_attestation_object(pk)),
    )  # fmt: skip
    assert code == 0, err
    (cred,) = TrustStore.load(store).passkeys()
    assert cred.credential_id == pk.credential_id
    assert cred.public_key == pk.cose_public_key()
    assert cred.name == "carol"
    assert cred.origins == (ORIGIN,)
    assert cred.key_id in out
    code, out, _ = _run("keys", "list", "--dir", str(store))
    assert code == 0
    assert f"{cred.key_id}  approver   carol         active" in out
    code, _, err = _run("keys", "revoke", cred.key_id, "--dir", str(store))
    assert code == 0, err
    (revoked,) = TrustStore.load(store).passkeys()
    assert revoked.revoked_at is not None


def test_a_passkey_made_for_another_relying_party_is_refused(tmp_path: Path) -> None:
    store = init_keyring(tmp_path / "keys").trust_store
    before = store.read_bytes()
    code, _, err = _run(
        "keys", "add-passkey", "--dir", str(store), "--name", "carol", "--rp-id", RP,
        "--origin", ORIGIN,
        "--attestation-object", b64url_encode(_attestation_object(SoftPasskey(), "evil.example")),
    )  # fmt: skip
    assert code != 0
    assert "relying party" in err
    assert store.read_bytes() == before


def test_a_credential_id_and_cose_key_can_be_given_directly(tmp_path: Path) -> None:
    store = init_keyring(tmp_path / "keys").trust_store
    pk = SoftPasskey(rp_id=RP)
    args = (
        "keys", "add-passkey", "--dir", str(store), "--name", "dave", "--rp-id", RP,
        "--origin", ORIGIN, "--credential-id", b64url_encode(pk.credential_id),
        "--public-key", b64url_encode(pk.cose_public_key()),
    )  # fmt: skip
    code, _, err = _run(*args)
    assert code == 0, err
    assert [p.name for p in TrustStore.load(store).passkeys()] == ["dave"]
    # A second registration of the same credential is refused, not merged.
    code, _, err = _run(*args)
    assert code != 0
    assert "already" in err
