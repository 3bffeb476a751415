"""The approval check run inside the ``ecp.approve`` update validator.

It must be deterministic and do no I/O: it verifies the approver's signature
against the approver keys the authority listed with the decision (recorded in
history), at workflow time. The authorize step re-verifies every approval
against the full trust store (revocation included) before a grant is signed.
"""

from __future__ import annotations

from datetime import datetime

from temporalio.exceptions import ApplicationError

from ecp._wire import failure_type
from ecp.activities._contracts import DecisionResult
from ecp.authority._approval import check_approval as _check
from ecp.authority._canonical import parse_json_strict
from ecp.authority._dsse import Envelope
from ecp.authority._keys import public_key_from_b64
from ecp.authority._policy import Decision
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.authority.errors import AuthorityError

__all__ = ["ApprovalRejected", "approver_of", "check_approval"]


class ApprovalRejected(ApplicationError):
    """An approval update was refused; it never reaches history."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type=failure_type("approval_rejected"), non_retryable=True)


def check_approval(
    envelope_json: str, decision: DecisionResult, at: datetime, execution: str
) -> str:
    """Verify one approval for ``decision``; return the approver's identity.

    Raises:
        ApprovalRejected: the approval is malformed, unsigned by an eligible
            approver, bound to another decision, or expired.
    """
    try:
        trust = TrustStore(
            # Key ids are re-derived from the keys, never taken on trust.
            TrustedKey.create(public_key_from_b64(k.public_key), {KeyRole.APPROVER}, name=k.name)
            for k in decision.approvers
        )
        verified = _check(
            # As text: check_approval refuses text that is not valid Unicode (a
            # lone surrogate, which JSON can carry) as a malformed envelope.
            envelope_json,
            decision=Decision.from_json(decision.decision_json),
            execution=execution,
            trust=trust,
            at=at,
        )
    except AuthorityError as exc:
        raise ApprovalRejected(f"approval rejected: {type(exc).__name__}: {exc}") from exc
    return verified.approval.approver


def approver_of(envelope_json: str) -> str:
    """The approver named by an approval already verified by :func:`check_approval`.

    Raises:
        ApprovalRejected: the envelope does not parse (it cannot have been
            accepted by the validator then).
    """
    try:
        payload = parse_json_strict(Envelope.from_json(envelope_json).payload)
    except AuthorityError as exc:
        raise ApprovalRejected(f"approval rejected: {type(exc).__name__}: {exc}") from exc
    approver = payload.get("approver") if isinstance(payload, dict) else None
    if not isinstance(approver, str):
        raise ApprovalRejected("approval rejected: it names no approver")
    return approver
