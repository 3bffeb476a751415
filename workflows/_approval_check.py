"""The approval check run inside the ``ecp.approve`` update validator.

It must be deterministic and do no I/O: it verifies the approver's signature
(or, for a passkey approval, WebAuthn assertion) against the approver keys
and passkey credentials the authority listed with the decision (recorded in
history), at workflow time. The authorize step re-verifies every approval
against the full trust store (revocation included) before a grant is signed.

py_webauthn, which checks assertions, reads no clock and draws no random
numbers; it is imported with the rest of ECP through the sandbox's pass-through
(``workflows/_call.py`` imports this module inside ``imports_passed_through``).
"""

from __future__ import annotations

import base64
from datetime import datetime

from temporalio.exceptions import ApplicationError

from ecp._wire import failure_type
from ecp.activities._contracts import DecisionResult
from ecp.authority._approval import PASSKEY_APPROVAL_FORMAT
from ecp.authority._approval import check_approval as _check
from ecp.authority._canonical import parse_json_strict
from ecp.authority._dsse import Envelope
from ecp.authority._keys import public_key_from_b64
from ecp.authority._policy import Decision
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.authority._webauthn import PasskeyCredential, b64url_decode
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
            (
                TrustedKey.create(
                    public_key_from_b64(k.public_key), {KeyRole.APPROVER}, name=k.name
                )
                for k in decision.approvers
            ),
            (
                PasskeyCredential.create(
                    b64url_decode(p.credential_id, "credential_id"),
                    b64url_decode(p.public_key, "public_key"),
                    rp_id=p.rp_id,
                    origins=p.origins,
                    roles={KeyRole.APPROVER},
                    name=p.name,
                )
                for p in decision.approver_passkeys
            ),
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
    except (AuthorityError, ValueError) as exc:
        raise ApprovalRejected(f"approval rejected: {type(exc).__name__}: {exc}") from exc
    return verified.approval.approver


def approver_of(envelope_json: str) -> str:
    """The approver named by an approval already verified by :func:`check_approval`.

    Raises:
        ApprovalRejected: the envelope does not parse (it cannot have been
            accepted by the validator then).
    """
    try:
        doc = parse_json_strict(envelope_json)
        if isinstance(doc, dict) and doc.get("format") == PASSKEY_APPROVAL_FORMAT:
            signed = base64.b64decode(str(doc.get("payload", "")), validate=True)
        else:
            signed = Envelope.from_json(envelope_json).payload
        payload = parse_json_strict(signed)
    except (AuthorityError, ValueError) as exc:
        raise ApprovalRejected(f"approval rejected: {type(exc).__name__}: {exc}") from exc
    approver = payload.get("approver") if isinstance(payload, dict) else None
    if not isinstance(approver, str):
        raise ApprovalRejected("approval rejected: it names no approver")
    return approver
