"""Passkey approvals: a WebAuthn assertion over the approval's digest, checked like a signature.

A software authenticator (``tests/passkeys.py``) signs exactly as a real one
does; py_webauthn verifies. The browser, the virtual authenticator and the
workflow are in tests/console/test_passkey_approvals.py.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import timedelta

import pytest

from ecp.authority._approval import (
    approval_payload,
    check_approval,
    passkey_approval_json,
    passkey_challenge,
    verify_approvals,
)
from ecp.authority._canonical import digest_bytes
from ecp.authority._clock import FixedClock
from ecp.authority._policy import Decision, Effect, PolicyBundle, PolicyRequest
from ecp.authority._truststore import TrustStore
from ecp.authority.errors import (
    ApprovalMismatchError,
    ApprovalSchemaError,
    ApproverNotAuthorizedError,
    KeyExpiredError,
    PasskeyAssertionError,
    RevokedKeyError,
    TrustStoreError,
    UnknownKeyError,
)
from tests.authority.support import T0, Keys
from tests.passkeys import SoftPasskey

ORIGIN = "https://console.example.com"
RP = "console.example.com"
EXEC = "default/wf-passkey/run-1"
TTL = timedelta(minutes=15)


@pytest.fixture
def needs_approval(bundle: PolicyBundle) -> Decision:
    d = bundle.evaluate(
        PolicyRequest(
            action="payout",
            initiator="alice",
            arguments={"amount": 250_000, "currency": "EUR", "recipient": "acme"},
            purpose="contract",
        )
    )
    assert d.effect is Effect.ALLOW_AFTER_APPROVAL
    return d


@pytest.fixture
def carol_pk() -> SoftPasskey:
    return SoftPasskey(rp_id=RP)


@pytest.fixture
def trust(keys: Keys, carol_pk: SoftPasskey) -> TrustStore:
    return keys.trust.with_passkey(carol_pk.credential("carol", (ORIGIN,)))


def _approve(
    pk: SoftPasskey,
    decision: Decision,
    *,
    approver: str = "carol",
    execution: str = EXEC,
    origin: str = ORIGIN,
    flags: int = 0x05,
) -> str:
    payload = approval_payload(
        decision, execution=execution, approver=approver, clock=FixedClock(T0), ttl=TTL
    )
    return passkey_approval_json(
        payload, pk.sign_assertion(passkey_challenge(payload), origin, flags=flags)
    )


def test_a_passkey_approval_verifies_and_counts(
    needs_approval: Decision, trust: TrustStore, carol_pk: SoftPasskey
) -> None:
    doc = _approve(carol_pk, needs_approval)
    (v,) = verify_approvals([doc], needs_approval, trust, FixedClock(T0), execution=EXEC)
    assert v.approval.approver == "carol"
    assert v.envelope is None
    assert v.assertion is not None
    assert v.key.key_id == trust.passkeys()[0].key_id
    payload = base64.b64decode(json.loads(doc)["payload"])
    assert v.digest == digest_bytes(payload)


def test_an_unknown_credential_is_refused(needs_approval: Decision, trust: TrustStore) -> None:
    stranger = SoftPasskey(rp_id=RP)
    with pytest.raises(UnknownKeyError):
        check_approval(
            _approve(stranger, needs_approval),
            decision=needs_approval,
            execution=EXEC,
            trust=trust,
            at=T0,
        )


def test_a_revoked_passkey_is_refused(
    needs_approval: Decision, trust: TrustStore, carol_pk: SoftPasskey
) -> None:
    doc = _approve(carol_pk, needs_approval)
    revoked = trust.revoked(trust.passkeys()[0].key_id, T0 + timedelta(days=1))
    # Revocation is absolute, like a key's: even for a time before it.
    with pytest.raises(RevokedKeyError):
        check_approval(doc, decision=needs_approval, execution=EXEC, trust=revoked, at=T0)


def test_an_expired_passkey_is_refused(
    needs_approval: Decision, trust: TrustStore, carol_pk: SoftPasskey
) -> None:
    doc = _approve(carol_pk, needs_approval)
    expired = trust.with_passkey(replace(trust.passkeys()[0], not_after=T0))
    with pytest.raises(KeyExpiredError):
        check_approval(doc, decision=needs_approval, execution=EXEC, trust=expired, at=T0)


def test_an_assertion_for_another_execution_is_refused(
    needs_approval: Decision, trust: TrustStore, carol_pk: SoftPasskey
) -> None:
    doc = _approve(carol_pk, needs_approval, execution="default/other/run-2")
    with pytest.raises(ApprovalMismatchError):
        check_approval(doc, decision=needs_approval, execution=EXEC, trust=trust, at=T0)


def test_an_assertion_moved_onto_another_payload_is_refused(
    needs_approval: Decision, trust: TrustStore, carol_pk: SoftPasskey
) -> None:
    # The assertion is good, but over another approval (another execution):
    # re-pointing the payload breaks the challenge.
    doc = json.loads(_approve(carol_pk, needs_approval, execution="default/other/run-2"))
    payload = approval_payload(
        needs_approval, execution=EXEC, approver="carol", clock=FixedClock(T0), ttl=TTL
    )
    doc["payload"] = base64.b64encode(payload).decode()
    with pytest.raises(PasskeyAssertionError, match="challenge"):
        check_approval(json.dumps(doc), decision=needs_approval, execution=EXEC, trust=trust, at=T0)


def test_user_verification_is_required(
    needs_approval: Decision, trust: TrustStore, carol_pk: SoftPasskey
) -> None:
    doc = _approve(carol_pk, needs_approval, flags=0x01)  # present, not verified
    with pytest.raises(PasskeyAssertionError, match="verif"):
        check_approval(doc, decision=needs_approval, execution=EXEC, trust=trust, at=T0)


def test_another_origin_is_refused(
    needs_approval: Decision, trust: TrustStore, carol_pk: SoftPasskey
) -> None:
    doc = _approve(carol_pk, needs_approval, origin="https://evil.example")
    with pytest.raises(PasskeyAssertionError, match="origin"):
        check_approval(doc, decision=needs_approval, execution=EXEC, trust=trust, at=T0)


def test_a_passkey_speaks_only_for_its_holder(needs_approval: Decision, trust: TrustStore) -> None:
    # mallory's passkey is trusted as an approver but mallory is not in finance;
    # naming carol does not help either.
    mallory = SoftPasskey(rp_id=RP)
    store = trust.with_passkey(mallory.credential("mallory", (ORIGIN,)))
    for approver in ("mallory", "carol"):
        with pytest.raises(ApproverNotAuthorizedError):
            check_approval(
                _approve(mallory, needs_approval, approver=approver),
                decision=needs_approval,
                execution=EXEC,
                trust=store,
                at=T0,
            )


def test_a_tampered_signature_is_refused(
    needs_approval: Decision, trust: TrustStore, carol_pk: SoftPasskey
) -> None:
    doc = json.loads(_approve(carol_pk, needs_approval))
    other = json.loads(_approve(carol_pk, needs_approval))
    doc["signature"] = other["signature"]  # a real signature, over other client data
    with pytest.raises(PasskeyAssertionError):
        check_approval(json.dumps(doc), decision=needs_approval, execution=EXEC, trust=trust, at=T0)


def test_extra_fields_are_refused(
    needs_approval: Decision, trust: TrustStore, carol_pk: SoftPasskey
) -> None:
    doc = json.loads(_approve(carol_pk, needs_approval))
    doc["note"] = "x"
    with pytest.raises(ApprovalSchemaError):
        check_approval(json.dumps(doc), decision=needs_approval, execution=EXEC, trust=trust, at=T0)


def test_the_trust_store_keeps_passkeys_and_old_stores_are_unchanged(
    keys: Keys, trust: TrustStore, carol_pk: SoftPasskey
) -> None:
    # A store without passkeys is written exactly as before passkeys existed.
    assert b"passkeys" not in keys.trust.to_json()
    again = TrustStore.from_json(trust.to_json(), "t")
    (cred,) = again.passkeys()
    assert cred == trust.passkeys()[0]
    assert cred.public_key == carol_pk.cose_public_key()
    assert again.to_json() == trust.to_json()
    assert len(again) == len(keys.trust)  # iteration: the Ed25519 keys only


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"roles": ["approver", "authority"]}, "exactly"),
        ({"key_id": "webauthn:" + "0" * 32}, "key_id"),
        ({"origins": ["http://console.example.com"]}, "https or localhost"),
        ({"origins": ["http://localhost.evil.example"]}, "https or localhost"),
        ({"origins": ["https://console.example.com/path"]}, "https or localhost"),
        ({"origins": []}, "at least one"),
        ({"rp_id": "10.0.0.1"}, "domain"),
        ({"rp_id": "console.example.com:443"}, "domain"),
        ({"public_key": "AAAA"}, "COSE"),
    ],
)
def test_malformed_passkey_entries_are_refused(
    trust: TrustStore, change: dict[str, object], message: str
) -> None:
    doc = json.loads(trust.to_json())
    doc["passkeys"][0].update(change)
    with pytest.raises(TrustStoreError, match=message):
        TrustStore.from_json(json.dumps(doc).encode(), "t")
