"""Approvals (m-of-n, binding, expiry, approver identity) and grant issuance, end to end."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.converter import default as default_converter

from ecp.authority._approval import (
    APPROVAL_PAYLOAD_TYPE,
    VerifiedApproval,
    check_approval,
    sign_approval,
    verify_approvals,
)
from ecp.authority._calldigest import digest_values
from ecp.authority._canonical import canonical_json, digest_bytes
from ecp.authority._clock import FixedClock
from ecp.authority._dsse import Envelope, sign_envelope
from ecp.authority._grant import CallBinding, Grant, issue_grant
from ecp.authority._policy import Decision, Effect, PolicyBundle, PolicyRequest
from ecp.authority._replay import InMemoryReplayGuard
from ecp.authority._verify import ExpectedCall, verify_grant
from ecp.authority.errors import (
    ApprovalExpiredError,
    ApprovalInsufficientError,
    ApprovalMismatchError,
    ApprovalNotYetValidError,
    ApprovalSchemaError,
    ApproverNotAuthorizedError,
    GrantRefusedError,
    KeyRoleError,
    PayloadTypeError,
)
from tests.authority.support import ENV_DIGEST, T0, Keys

ARGS = {"amount": 250_000, "currency": "EUR", "recipient": "acme"}
TTL = timedelta(minutes=15)

EXEC = "default/wf-approve/run-1"


def _request(amount: int = 250_000) -> PolicyRequest:
    return PolicyRequest(
        action="payout", initiator="alice", arguments={**ARGS, "amount": amount}, purpose="contract"
    )


def _call(amount: int = 250_000) -> CallBinding:
    return CallBinding(
        activity_type="payout",
        args_digest=digest_values(
            [{**ARGS, "amount": amount}], default_converter().payload_converter
        ),
        namespace="default",
        workflow_id="wf-9",
        run_id="run-9",
        activity_id="payout-1",
    )


def _expected(call: CallBinding, attempt: int = 1) -> ExpectedCall:
    return ExpectedCall(
        activity_type=call.activity_type,
        args_digest=call.args_digest,
        namespace=call.namespace,
        workflow_id=call.workflow_id,
        run_id=call.run_id,
        activity_id=call.activity_id,
        environment_digest=ENV_DIGEST,
        attempt=attempt,
        initiator="alice",
    )


@pytest.fixture
def needs_approval(bundle: PolicyBundle) -> Decision:
    d = bundle.evaluate(_request())
    assert d.effect is Effect.ALLOW_AFTER_APPROVAL
    return d


def test_full_path_allow_after_approval(
    keys: Keys, bundle: PolicyBundle, needs_approval: Decision
) -> None:
    clock = FixedClock(T0)
    approval = sign_approval(
        execution=EXEC,
        decision=needs_approval,
        approver="carol",
        signer=keys.carol,
        clock=clock,
        ttl=TTL,
    )
    verified = verify_approvals(
        [approval.to_json()], needs_approval, keys.trust, clock, execution=EXEC
    )
    assert [v.approval.approver for v in verified] == ["carol"]
    envelope = issue_grant(
        needs_approval,
        _call(),
        initiator="alice",
        environment_digest=ENV_DIGEST,
        signer=keys.authority,
        clock=clock,
        ttl=TTL,
        approvals=verified,
    )
    clock.advance(timedelta(seconds=30))
    vg = verify_grant(
        envelope.to_json(),
        trust=keys.trust,
        expected=_expected(_call()),
        clock=clock,
        replay=InMemoryReplayGuard(),
    )
    assert vg.grant.approvals == (digest_bytes(approval.payload),)
    assert vg.grant.decision_id == needs_approval.decision_id
    assert vg.grant.policy_digest == bundle.digest
    assert vg.grant.scope.max_attempts == 3
    # The payload is exactly the JCS of the model: nothing re-serialised.
    assert (
        canonical_json(Grant.model_validate_json(envelope.payload).model_dump(mode="json"))
        == envelope.payload
    )


def test_plain_allow_issues_without_approvals(keys: Keys, bundle: PolicyBundle) -> None:
    d = bundle.evaluate(_request(500))
    clock = FixedClock(T0)
    env = issue_grant(
        d,
        _call(500),
        initiator="alice",
        environment_digest=ENV_DIGEST,
        signer=keys.authority,
        clock=clock,
        ttl=TTL,
    )
    vg = verify_grant(
        env.to_json(),
        trust=keys.trust,
        expected=_expected(_call(500)),
        clock=clock,
        replay=InMemoryReplayGuard(),
    )
    assert vg.grant.scope.constraints == {"max_amount": 1000}
    assert vg.grant.expires_at - vg.grant.not_before == TTL
    assert "BEGIN" not in env.payload.decode()  # no key material in a grant


def test_grant_ids_are_unique(keys: Keys, bundle: PolicyBundle) -> None:
    d = bundle.evaluate(_request(500))
    ids = {
        Grant.model_validate_json(
            issue_grant(
                d,
                _call(500),
                initiator="alice",
                environment_digest=ENV_DIGEST,
                signer=keys.authority,
                clock=FixedClock(T0),
                ttl=TTL,
            ).payload
        ).grant_id
        for _ in range(50)
    }
    assert len(ids) == 50


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (
            lambda d, c: (
                d,
                c.model_copy(update={"activity_type": "change_infrastructure"}),
                "alice",
            ),
            GrantRefusedError,
        ),
        (lambda d, c: (d, c, "bob"), GrantRefusedError),
        (lambda d, c: (d, c, "alice"), ApprovalInsufficientError),
    ],
    ids=["other-action", "other-initiator", "approval-missing"],
)
def test_issue_refusals(keys: Keys, needs_approval: Decision, mutate, error) -> None:  # type: ignore[no-untyped-def]
    decision, call, initiator = mutate(needs_approval, _call())
    with pytest.raises(error):
        issue_grant(
            decision,
            call,
            initiator=initiator,
            environment_digest=ENV_DIGEST,
            signer=keys.authority,
            clock=FixedClock(T0),
            ttl=TTL,
        )


def test_deny_never_yields_a_grant(keys: Keys, bundle: PolicyBundle) -> None:
    d = bundle.evaluate(_request().model_copy(update={"initiator": "eve"}))
    with pytest.raises(GrantRefusedError, match="denies"):
        issue_grant(
            d,
            _call(),
            initiator="eve",
            environment_digest=ENV_DIGEST,
            signer=keys.authority,
            clock=FixedClock(T0),
            ttl=TTL,
        )
    with pytest.raises(GrantRefusedError):
        issue_grant(
            bundle.evaluate(_request(5)),
            _call(5),
            initiator="alice",
            environment_digest=ENV_DIGEST,
            signer=keys.authority,
            clock=FixedClock(T0),
            ttl=timedelta(0),
        )


def test_two_of_n_counts_distinct_approvers(keys: Keys, needs_approval: Decision) -> None:
    two = needs_approval.model_copy(
        update={"approval": needs_approval.approval.model_copy(update={"count": 2})}
    )  # type: ignore[union-attr]
    clock = FixedClock(T0)
    carol1 = sign_approval(
        execution=EXEC, decision=two, approver="carol", signer=keys.carol, clock=clock, ttl=TTL
    )
    carol2 = sign_approval(
        execution=EXEC, decision=two, approver="carol", signer=keys.carol, clock=clock, ttl=TTL
    )
    dave = sign_approval(
        execution=EXEC, decision=two, approver="dave", signer=keys.dave, clock=clock, ttl=TTL
    )
    with pytest.raises(ApprovalInsufficientError):
        verify_approvals([carol1, carol2], two, keys.trust, clock, execution=EXEC)
    got = verify_approvals([carol1, dave, carol2], two, keys.trust, clock, execution=EXEC)
    assert [v.approval.approver for v in got] == ["carol", "dave"]


def _forge(keys: Keys, decision: Decision, **changes: object) -> Envelope:
    env = sign_approval(
        execution=EXEC,
        decision=decision,
        approver="carol",
        signer=keys.carol,
        clock=FixedClock(T0),
        ttl=TTL,
    )
    doc = {**__import__("json").loads(env.payload), **changes}
    return sign_envelope(APPROVAL_PAYLOAD_TYPE, canonical_json(doc), keys.carol)


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda k, d: _forge(k, d, decision_id=digest_bytes(b"x")), ApprovalMismatchError),
        (lambda k, d: _forge(k, d, request_digest=digest_bytes(b"x")), ApprovalMismatchError),
        (lambda k, d: _forge(k, d, policy_digest=digest_bytes(b"x")), ApprovalMismatchError),
        (lambda k, d: _forge(k, d, role="operators"), ApprovalMismatchError),
        (lambda k, d: _forge(k, d, expires_at="2030-01-01T12:00:00Z"), ApprovalExpiredError),
        (lambda k, d: _forge(k, d, issued_at="2030-01-01T12:00:01Z"), ApprovalNotYetValidError),
        (lambda k, d: _forge(k, d, approver="dave"), ApproverNotAuthorizedError),
        (lambda k, d: _forge(k, d, extra=1), ApprovalSchemaError),
        (lambda k, d: _forge(k, d, schema_version="ecp.approval/v9"), ApprovalSchemaError),
        (
            lambda k, d: sign_approval(
                execution=EXEC,
                decision=d,
                approver="mallory",
                signer=k.mallory,
                clock=FixedClock(T0),
                ttl=TTL,
            ),
            ApproverNotAuthorizedError,
        ),
        (
            lambda k, d: sign_approval(
                execution=EXEC,
                decision=d,
                approver="authority",
                signer=k.authority,
                clock=FixedClock(T0),
                ttl=TTL,
            ),
            KeyRoleError,
        ),
        (
            lambda k, d: sign_envelope("application/json", _forge(k, d).payload, k.carol),
            PayloadTypeError,
        ),
    ],
    ids=[
        "decision",
        "request",
        "policy",
        "role",
        "expired",
        "not-yet-valid",
        "impersonation",
        "extra-field",
        "schema-version",
        "not-in-role",
        "not-an-approver-key",
        "payload-type",
    ],
)
def test_bad_approvals(keys: Keys, needs_approval: Decision, build, error) -> None:  # type: ignore[no-untyped-def]
    env = build(keys, needs_approval)
    with pytest.raises(error) as info:
        check_approval(
            env.to_json(), decision=needs_approval, execution=EXEC, trust=keys.trust, at=T0
        )
    assert type(info.value) is error
    with pytest.raises(error):
        verify_approvals([env], needs_approval, keys.trust, FixedClock(T0), execution=EXEC)


def test_approval_for_other_request_cannot_be_reused(keys: Keys, bundle: PolicyBundle) -> None:
    clock = FixedClock(T0)
    first = bundle.evaluate(_request(250_000))
    other = bundle.evaluate(_request(260_000))
    env = sign_approval(
        execution=EXEC, decision=first, approver="carol", signer=keys.carol, clock=clock, ttl=TTL
    )
    with pytest.raises(ApprovalMismatchError):
        verify_approvals([env], other, keys.trust, clock, execution=EXEC)
    verified = verify_approvals([env], first, keys.trust, clock, execution=EXEC)
    with pytest.raises(ApprovalMismatchError):
        issue_grant(
            other,
            _call(260_000),
            initiator="alice",
            environment_digest=ENV_DIGEST,
            signer=keys.authority,
            clock=clock,
            ttl=TTL,
            approvals=verified,
        )


def test_sign_approval_refuses_plain_decisions(keys: Keys, bundle: PolicyBundle) -> None:
    with pytest.raises(GrantRefusedError):
        sign_approval(
            execution=EXEC,
            decision=bundle.evaluate(_request(5)),
            approver="carol",
            signer=keys.carol,
            clock=FixedClock(T0),
            ttl=TTL,
        )


def test_verified_approval_is_frozen(keys: Keys, needs_approval: Decision) -> None:
    env = sign_approval(
        execution=EXEC,
        decision=needs_approval,
        approver="dave",
        signer=keys.dave,
        clock=FixedClock(T0),
        ttl=TTL,
    )
    v = check_approval(env, decision=needs_approval, execution=EXEC, trust=keys.trust, at=T0)
    assert isinstance(v, VerifiedApproval)
    with pytest.raises(AttributeError):
        v.digest = digest_bytes(b"x")  # type: ignore[misc]


def test_approval_is_bound_to_one_execution(keys: Keys, needs_approval: Decision) -> None:
    # The same request submitted twice has the same decision id; carol's
    # approval of the first run must not approve the second.
    env = sign_approval(
        needs_approval,
        execution=EXEC,
        approver="carol",
        signer=keys.carol,
        clock=FixedClock(T0),
        ttl=TTL,
    )
    with pytest.raises(ApprovalMismatchError, match="execution"):
        check_approval(
            env,
            decision=needs_approval,
            execution="default/wf-approve/run-2",
            trust=keys.trust,
            at=T0,
        )


def test_nobody_approves_their_own_request(keys: Keys, needs_approval: Decision) -> None:
    own = needs_approval.model_copy(update={"initiator": "carol"})
    env = sign_approval(
        own, execution=EXEC, approver="carol", signer=keys.carol, clock=FixedClock(T0), ttl=TTL
    )
    with pytest.raises(ApproverNotAuthorizedError, match="own request"):
        check_approval(env, decision=own, execution=EXEC, trust=keys.trust, at=T0)
