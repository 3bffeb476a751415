"""The ``ecp.approve`` validator's check of passkey approvals, against what the decision lists.

Pure function, no server: the browser and workflow paths are in
tests/console/test_passkey_approvals.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from ecp.activities._contracts import ApproverPasskey, DecisionResult
from ecp.authority._approval import approval_payload, passkey_approval_json, passkey_challenge
from ecp.authority._clock import FixedClock
from ecp.authority._policy import Decision, Effect, PolicyBundle, PolicyRequest
from ecp.authority._webauthn import b64url_encode
from ecp.workflows._approval_check import ApprovalRejected, approver_of, check_approval
from tests.authority.support import EXAMPLE_BUNDLE, T0
from tests.passkeys import SoftPasskey

ORIGIN = "https://ecp.example.com"
EXEC = "default/wf/run"


@pytest.fixture
def decision() -> Decision:
    bundle = PolicyBundle.load(EXAMPLE_BUNDLE)
    d = bundle.evaluate(
        PolicyRequest(
            action="payout",
            initiator="alice",
            arguments={"amount": 250_000, "currency": "EUR", "recipient": "acme"},
        )
    )
    assert d.effect is Effect.ALLOW_AFTER_APPROVAL
    return d


def _listed(decision: Decision, *passkeys: tuple[str, SoftPasskey]) -> DecisionResult:
    return DecisionResult(
        decision_json=decision.to_json().decode(),
        decision_id=decision.decision_id,
        effect=decision.effect.value,
        policy_digest=decision.policy_digest,
        request_digest=decision.request_digest,
        reasons=[],
        determining_policies=[],
        approvals_required=1,
        approval_role="finance",
        approver_passkeys=[
            ApproverPasskey(
                pk.credential(name, (ORIGIN,)).key_id,
                name,
                b64url_encode(pk.credential_id),
                b64url_encode(pk.cose_public_key()),
                pk.rp_id,
                [ORIGIN],
            )
            for name, pk in passkeys
        ],
    )


def _approval(decision: Decision, pk: SoftPasskey, approver: str) -> str:
    payload = approval_payload(
        decision,
        execution=EXEC,
        approver=approver,
        clock=FixedClock(T0),
        ttl=timedelta(minutes=5),
    )
    return passkey_approval_json(payload, pk.sign_assertion(passkey_challenge(payload), ORIGIN))


def test_a_listed_passkey_approves_and_the_handler_reads_its_approver(
    decision: Decision,
) -> None:
    carol = SoftPasskey(rp_id="ecp.example.com")
    doc = _approval(decision, carol, "carol")
    assert check_approval(doc, _listed(decision, ("carol", carol)), T0, EXEC) == "carol"
    # What the update handler (and a replay, which skips the validator) reads.
    assert approver_of(doc) == "carol"


def test_a_passkey_listed_for_someone_else_cannot_name_carol(decision: Decision) -> None:
    dave = SoftPasskey(rp_id="ecp.example.com")
    doc = _approval(decision, dave, "carol")
    with pytest.raises(ApprovalRejected, match="belongs to 'dave'"):
        check_approval(doc, _listed(decision, ("dave", dave)), T0, EXEC)


def test_an_unlisted_passkey_is_rejected(decision: Decision) -> None:
    carol, other = SoftPasskey(rp_id="ecp.example.com"), SoftPasskey(rp_id="ecp.example.com")
    with pytest.raises(ApprovalRejected, match="not in the trust store"):
        check_approval(
            _approval(decision, other, "carol"), _listed(decision, ("carol", carol)), T0, EXEC
        )


def test_a_malformed_listing_is_a_rejection_not_a_crash(decision: Decision) -> None:
    carol = SoftPasskey(rp_id="ecp.example.com")
    listed = _listed(decision, ("carol", carol))
    listed.approver_passkeys[0] = ApproverPasskey("k", "carol", "not base64url!", "x", "", [])
    with pytest.raises(ApprovalRejected):
        check_approval(_approval(decision, carol, "carol"), listed, T0, EXEC)
