"""Signed human approvals for ``allow_after_approval`` decisions.

An approval is a DSSE envelope (payloadType :data:`APPROVAL_PAYLOAD_TYPE`)
over the RFC 8785 bytes of an :class:`Approval`, signed by an approver key.
It is bound to the decision id, the request digest and the policy digest, so
it cannot be replayed onto another request. The approver's identity is the
trust store's name for the key; the policy's role membership (copied into the
decision as :attr:`ApprovalRequirement.approvers`) says who may approve.

:func:`check_approval` is pure and fast (no I/O beyond the passed trust
store), so a Temporal update validator can reject a bad approval before it
reaches history.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Final, Literal, NewType

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from ecp.authority._canonical import Digest, canonical_json, digest_bytes
from ecp.authority._clock import Clock, now_utc
from ecp.authority._dsse import DEFAULT_MAX_ENVELOPE_BYTES, Envelope, sign_envelope, verify_envelope
from ecp.authority._keys import Signer
from ecp.authority._policy import Decision, DecisionId, Effect
from ecp.authority._signed import DIGEST_PATTERN, read_signed_model
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.authority.errors import (
    ApprovalExpiredError,
    ApprovalInsufficientError,
    ApprovalMismatchError,
    ApprovalNotYetValidError,
    ApprovalSchemaError,
    ApproverNotAuthorizedError,
    CanonicalizationError,
    GrantRefusedError,
)

__all__ = [
    "APPROVAL_PAYLOAD_TYPE",
    "APPROVAL_SCHEMA_VERSION",
    "Approval",
    "ApprovalId",
    "VerifiedApproval",
    "approval_payload",
    "check_approval",
    "check_approvals_satisfy",
    "execution_ref",
    "sign_approval",
    "verify_approvals",
]

APPROVAL_PAYLOAD_TYPE: Final = "application/vnd.ecp.approval.v1+json"
APPROVAL_SCHEMA_VERSION: Final = "ecp.approval/v1"
ApprovalId = NewType("ApprovalId", str)

_WIRE = ConfigDict(frozen=True, extra="forbid", strict=True)
_Digest = Annotated[Digest, Field(pattern=DIGEST_PATTERN)]


class Approval(BaseModel):
    """The signed content of an approval."""

    model_config = _WIRE

    schema_version: Literal["ecp.approval/v1"] = APPROVAL_SCHEMA_VERSION
    approval_id: Annotated[ApprovalId, Field(min_length=1, max_length=128)]
    decision_id: Annotated[DecisionId, Field(pattern=DIGEST_PATTERN)]
    request_digest: _Digest
    policy_digest: _Digest
    #: The one execution this approval is for (``namespace/workflow id/run
    #: id``): a decision id alone would let one approval approve every
    #: identical request.
    execution: Annotated[str, Field(min_length=3, max_length=1024)]
    approver: Annotated[str, Field(min_length=1, max_length=256)]
    role: Annotated[str, Field(min_length=1, max_length=256)]
    comment: Annotated[str, Field(max_length=2048)] = ""
    issued_at: AwareDatetime
    expires_at: AwareDatetime


@dataclass(frozen=True, slots=True)
class VerifiedApproval:
    """An approval whose signature, binding, window and approver all checked out."""

    approval: Approval
    envelope: Envelope
    key: TrustedKey
    #: ``sha256:`` of the exact signed payload; what grants list.
    digest: Digest


def execution_ref(namespace: str, workflow_id: str, run_id: str) -> str:
    """The execution an approval binds: ``namespace/workflow id/run id``."""
    return f"{namespace}/{workflow_id}/{run_id}"


def approval_payload(
    decision: Decision,
    *,
    execution: str,
    approver: str,
    clock: Clock,
    ttl: timedelta,
    comment: str = "",
) -> bytes:
    """The canonical approval an approver signs (the DSSE payload), unsigned.

    For signers that sign elsewhere (an approver's browser): they sign
    ``pae(APPROVAL_PAYLOAD_TYPE, payload)`` and the envelope is assembled
    around their signature.

    Raises:
        GrantRefusedError, ApprovalSchemaError, ClockError: as :func:`sign_approval`.
    """
    if decision.effect is not Effect.ALLOW_AFTER_APPROVAL or decision.approval is None:
        raise GrantRefusedError(f"decision {decision.decision_id} does not ask for approval")
    now = now_utc(clock).replace(microsecond=0)
    try:
        approval = Approval(
            approval_id=ApprovalId(str(uuid.uuid4())),
            decision_id=decision.decision_id,
            request_digest=decision.request_digest,
            policy_digest=decision.policy_digest,
            execution=execution,
            approver=approver,
            role=decision.approval.role,
            comment=comment,
            issued_at=now,
            expires_at=(now + ttl).replace(microsecond=0),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise ApprovalSchemaError(f"approval field {where}: {first['msg']}") from exc
    except OverflowError as exc:
        raise ApprovalSchemaError(f"approval expiry is out of range: {exc}") from exc
    try:
        return canonical_json(approval.model_dump(mode="json"))
    except CanonicalizationError as exc:
        raise ApprovalSchemaError(f"approval cannot be canonical JSON: {exc}") from exc


def sign_approval(
    decision: Decision,
    *,
    execution: str,
    approver: str,
    signer: Signer,
    clock: Clock,
    ttl: timedelta,
    comment: str = "",
) -> Envelope:
    """Sign an approval of ``decision`` as ``approver``.

    Raises:
        GrantRefusedError: the decision does not ask for an approval.
        ApprovalSchemaError: ``execution``, ``approver`` or ``comment`` (or the
            decision's digests) do not fit the approval schema: empty, too
            long, not text (a lone surrogate), or an expiry beyond year 9999.
        ClockError: the clock is not time-zone aware.
    """
    payload = approval_payload(
        decision, execution=execution, approver=approver, clock=clock, ttl=ttl, comment=comment
    )
    return sign_envelope(APPROVAL_PAYLOAD_TYPE, payload, signer)


def check_approval(
    envelope: Envelope | bytes | str,
    *,
    decision: Decision,
    execution: str,
    trust: TrustStore,
    at: datetime,
) -> VerifiedApproval:
    """Verify one approval against ``decision``. Pure: suitable for an update validator.

    Order: parse → key (approver role) → signature → schema → binding →
    window → approver identity and eligibility.

    ``envelope`` may be the envelope JSON as text (as an update carries it):
    text that is not valid Unicode (a lone surrogate) is a malformed envelope.

    Raises:
        EnvelopeError (and subclasses): malformed, oversized, wrong
            payloadType, bad signature.
        UnknownKeyError, RevokedKeyError, KeyExpiredError, KeyRoleError:
            the signing key may not approve at ``at``.
        NonCanonicalPayloadError: the payload is not JCS.
        ApprovalSchemaError: not an approval document.
        ApprovalMismatchError: bound to another decision, request or policy,
            or to another role than the decision requires.
        ApprovalNotYetValidError, ApprovalExpiredError: outside its window.
        ApproverNotAuthorizedError: the named approver is not the key's
            holder, or not an eligible member of the approval role.
    """
    env = (
        envelope
        if isinstance(envelope, Envelope)
        else Envelope.from_json(envelope, max_bytes=DEFAULT_MAX_ENVELOPE_BYTES)
    )
    verified = verify_envelope(
        env, payload_type=APPROVAL_PAYLOAD_TYPE, trust=trust, role=KeyRole.APPROVER, at=at
    )
    approval = read_signed_model(
        env.payload,
        Approval,
        what="approval",
        schema_version=APPROVAL_SCHEMA_VERSION,
        schema_error=ApprovalSchemaError,
        version_error=ApprovalSchemaError,
    )
    if approval.decision_id != decision.decision_id:
        raise ApprovalMismatchError(
            f"approval is for decision {approval.decision_id}, not {decision.decision_id}"
        )
    if approval.request_digest != decision.request_digest:
        raise ApprovalMismatchError("approval is bound to another request digest")
    if approval.policy_digest != decision.policy_digest:
        raise ApprovalMismatchError("approval was made under another policy bundle")
    if approval.execution != execution:
        raise ApprovalMismatchError(
            f"approval is for execution {approval.execution!r}, not {execution!r}"
        )
    requirement = decision.approval
    if requirement is None:
        raise ApprovalMismatchError(f"decision {decision.decision_id} asks for no approval")
    if approval.role != requirement.role:
        raise ApprovalMismatchError(
            f"approval is in role {approval.role!r}, decision needs {requirement.role!r}"
        )
    if at < approval.issued_at:
        raise ApprovalNotYetValidError(f"approval is not valid before {approval.issued_at}")
    if at >= approval.expires_at:
        raise ApprovalExpiredError(f"approval expired at {approval.expires_at}")
    if approval.approver != verified.key.name:
        # Otherwise any approver key could speak for another approver.
        raise ApproverNotAuthorizedError(
            f"approval names {approval.approver!r} but key {verified.key.key_id} "
            f"belongs to {verified.key.name!r}"
        )
    if approval.approver == decision.initiator:
        # Separation of duties: nobody approves their own request.
        raise ApproverNotAuthorizedError(f"{approval.approver!r} may not approve own request")
    if approval.approver not in requirement.approvers:
        raise ApproverNotAuthorizedError(
            f"{approval.approver!r} is not a member of role {requirement.role!r}"
        )
    return VerifiedApproval(approval, env, verified.key, digest_bytes(env.payload))


def check_approvals_satisfy(
    decision: Decision, approvals: Sequence[VerifiedApproval]
) -> tuple[VerifiedApproval, ...]:
    """Check already verified approvals meet the decision's threshold.

    Returns the approvals counted (one per distinct approver, in name order),
    or ``()`` when the decision asks for none.

    Raises:
        ApprovalMismatchError: an approval belongs to another decision.
        ApprovalInsufficientError: fewer distinct eligible approvers than required.
    """
    requirement = decision.approval
    if decision.effect is not Effect.ALLOW_AFTER_APPROVAL or requirement is None:
        return ()
    by_approver: dict[str, VerifiedApproval] = {}
    for a in approvals:
        if a.approval.decision_id != decision.decision_id:
            raise ApprovalMismatchError(
                f"approval {a.approval.approval_id} is for another decision"
            )
        if a.approval.approver in requirement.approvers:
            by_approver.setdefault(a.approval.approver, a)
    if len(by_approver) < requirement.count:
        raise ApprovalInsufficientError(
            f"{len(by_approver)} of {requirement.count} required approvals from "
            f"role {requirement.role!r}"
        )
    return tuple(by_approver[name] for name in sorted(by_approver))


def verify_approvals(
    envelopes: Sequence[Envelope | bytes | str],
    decision: Decision,
    trust: TrustStore,
    clock: Clock,
    *,
    execution: str,
) -> tuple[VerifiedApproval, ...]:
    """Verify approvals and enforce the decision's m-of-n threshold.

    Every envelope must verify (one bad approval fails the whole set: it was
    submitted as evidence and cannot be silently dropped); the same approver
    approving twice counts once.

    Raises:
        ApprovalInsufficientError: fewer distinct eligible approvers than required.
        ClockError: the clock is not time-zone aware.
        Anything :func:`check_approval` raises, for the first bad approval.
    """
    at = now_utc(clock)
    verified = [
        check_approval(e, decision=decision, execution=execution, trust=trust, at=at)
        for e in envelopes
    ]
    return check_approvals_satisfy(decision, verified)
