"""An approval that is not valid Unicode gets the validator's usual typed rejection.

An update argument is JSON, which can spell a lone surrogate (``"\\ud800"``);
the worker decodes it into a Python ``str`` that cannot be encoded as UTF-8.
The ``ecp.approve`` validator must refuse it as a malformed approval
(``ecp.approval_rejected``), not die of ``UnicodeEncodeError`` first.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from ecp._wire import APPROVE_UPDATE, failure_type
from ecp.activities._contracts import ApproverKey, DecisionResult
from ecp.authority._approval import sign_approval
from ecp.authority._clock import FixedClock
from ecp.authority._keys import Ed25519FileSigner, public_key_to_b64
from ecp.authority._policy import Decision, PolicyBundle, PolicyRequest
from ecp.workflows._approval_check import ApprovalRejected, approver_of, check_approval
from tests.authority.support import EXAMPLE_BUNDLE
from tests.workflows.conftest import Stack
from tests.workflows.test_approvals import _signed_for, _start_large, _update_events

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EXEC = "default/wf-approve/run-1"
REJECTED = failure_type("approval_rejected")


@cache
def _carol() -> Ed25519FileSigner:
    return Ed25519FileSigner.generate()


@cache
def _decision() -> DecisionResult:
    """What ``ecp.evaluate`` returns for a payout that needs carol's approval."""
    decision = PolicyBundle.load(EXAMPLE_BUNDLE).evaluate(
        PolicyRequest(
            action="payout",
            initiator="alice",
            arguments={"amount": 250_000, "currency": "EUR", "recipient": "acme"},
            purpose="contract",
        )
    )
    assert decision.approval is not None
    assert "carol" in decision.approval.approvers
    key = _carol()
    return DecisionResult(
        decision_json=decision.to_json().decode(),
        decision_id=decision.decision_id,
        effect=decision.effect.value,
        policy_digest=decision.policy_digest,
        request_digest=decision.request_digest,
        reasons=list(decision.reasons),
        determining_policies=list(decision.policy_ids),
        approvals_required=decision.approval.count,
        approval_role=decision.approval.role,
        approvers=[ApproverKey(key.key_id, "carol", public_key_to_b64(key.public_key))],
    )


def _good() -> str:
    return (
        sign_approval(
            Decision.from_json(_decision().decision_json),
            execution=EXEC,
            approver="carol",
            signer=_carol(),
            clock=FixedClock(T0),
            ttl=timedelta(minutes=15),
        )
        .to_json()
        .decode()
    )


def _with_surrogates() -> dict[str, str]:
    good = _good()
    doc = json.loads(good)
    return {
        "bare-surrogate": "\ud800",
        "surrogate-in-json-string": json.dumps({"payload": "\udfff"}, ensure_ascii=False),
        "surrogate-in-payload-type": json.dumps(
            {**doc, "payloadType": doc["payloadType"] + "\ud800"}, ensure_ascii=False
        ),
        "surrogate-after-a-good-envelope": good + "\ud800",
        "surrogate-in-keyid": good.replace('"keyid":"', '"keyid":"\udc00', 1),
    }


def test_a_good_approval_passes_the_validator_check() -> None:
    # The real code path the surrogate tests go through, accepting.
    assert check_approval(_good(), _decision(), T0, EXEC) == "carol"
    assert approver_of(_good()) == "carol"


@pytest.mark.parametrize("name", _with_surrogates())
def test_a_lone_surrogate_is_a_typed_rejection(name: str) -> None:
    approval = _with_surrogates()[name]
    with pytest.raises(ApprovalRejected, match="MalformedEnvelopeError") as info:
        check_approval(approval, _decision(), T0, EXEC)
    assert info.value.type == REJECTED
    assert info.value.non_retryable
    with pytest.raises(ApprovalRejected) as info:
        approver_of(approval)
    assert info.value.type == REJECTED


async def test_a_lone_surrogate_approval_is_rejected_by_the_validator(stack: Stack) -> None:
    handle = await _start_large(stack)
    # The client writes it as the JSON escape \ud800; the worker decodes a lone surrogate.
    for approval in ("\ud800", (await _signed_for(stack, handle)) + "\udfff"):
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await handle.execute_update(APPROVE_UPDATE, approval)
        cause = info.value.cause
        assert isinstance(cause, ApplicationError)
        assert cause.type == REJECTED, cause
        assert "MalformedEnvelopeError" in cause.message
    assert await _update_events(handle) == 0
    status = await handle.query("ecp.status", result_type=dict)
    assert (status["step"], status["approvals"]) == ("approve", [])
    # A valid approval still goes through afterwards.
    await handle.execute_update(APPROVE_UPDATE, await _signed_for(stack, handle))
    assert (await handle.result()).outcome == "completed"
