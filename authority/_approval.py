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

An approver may also approve with a passkey: a *passkey approval*
(``ecp.passkey-approval/v1``, :func:`passkey_approval_json`) carries the same
approval payload and a WebAuthn assertion whose challenge is
:func:`passkey_challenge` of it, the SHA-256 of the very bytes an Ed25519
approver signs. It binds the same decision and execution, and is checked by
the same :func:`check_approval`, against the trust store's passkey
credentials instead of its keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Final, Literal, NewType

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from ecp.authority._canonical import Digest, canonical_json, digest_bytes, parse_json_strict
from ecp.authority._clock import Clock, now_utc
from ecp.authority._dsse import (
    DEFAULT_MAX_ENVELOPE_BYTES,
    Envelope,
    pae,
    sign_envelope,
    verify_envelope,
)
from ecp.authority._keys import Signer
from ecp.authority._policy import Decision, DecisionId, Effect
from ecp.authority._signed import DIGEST_PATTERN, read_signed_model
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.authority._webauthn import (
    PasskeyAssertion,
    PasskeyCredential,
    b64url_decode,
    b64url_encode,
    verify_assertion,
)
from ecp.authority.errors import (
    ApprovalExpiredError,
    ApprovalInsufficientError,
    ApprovalMismatchError,
    ApprovalNotYetValidError,
    ApprovalSchemaError,
    ApproverNotAuthorizedError,
    AuthorityError,
    CanonicalizationError,
    GrantRefusedError,
)

__all__ = [
    "APPROVAL_PAYLOAD_TYPE",
    "APPROVAL_SCHEMA_VERSION",
    "PASSKEY_APPROVAL_FORMAT",
    "Approval",
    "ApprovalId",
    "VerifiedApproval",
    "approval_payload",
    "check_approval",
    "check_approvals_satisfy",
    "execution_ref",
    "passkey_approval_json",
    "passkey_challenge",
    "sign_approval",
    "verify_approvals",
]

APPROVAL_PAYLOAD_TYPE: Final = "application/vnd.ecp.approval.v1+json"
APPROVAL_SCHEMA_VERSION: Final = "ecp.approval/v1"
PASSKEY_APPROVAL_FORMAT: Final = "ecp.passkey-approval/v1"
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
    #: The DSSE envelope, for an approval signed with an Ed25519 key; ``None``
    #: for a passkey approval (see :attr:`assertion`).
    envelope: Envelope | None
    #: The trust store entry that made the signature or the assertion.
    key: TrustedKey | PasskeyCredential
    #: ``sha256:`` of the exact approval payload; what grants list.
    digest: Digest
    #: The WebAuthn assertion, for a passkey approval.
    assertion: PasskeyAssertion | None = None


def execution_ref(namespace: str, workflow_id: str, run_id: str) -> str:
    """The execution an approval binds: ``namespace/workflow id/run id``."""
    return f"{namespace}/{workflow_id}/{run_id}"


def passkey_challenge(payload: bytes) -> bytes:
    """The WebAuthn challenge of a passkey approval of ``payload``.

    SHA-256 of ``PAE(APPROVAL_PAYLOAD_TYPE, payload)``: the exact message an
    Ed25519 approver signs, so a passkey approval binds what a signed one does.
    """
    return hashlib.sha256(pae(APPROVAL_PAYLOAD_TYPE, payload)).digest()


def passkey_approval_json(payload: bytes, assertion: PasskeyAssertion) -> str:
    """The ``ecp.passkey-approval/v1`` document an ``ecp.approve`` update carries."""
    doc = {
        "format": PASSKEY_APPROVAL_FORMAT,
        "payload": base64.b64encode(payload).decode("ascii"),
        "credential_id": b64url_encode(assertion.credential_id),
        "authenticator_data": b64url_encode(assertion.authenticator_data),
        "client_data_json": b64url_encode(assertion.client_data_json),
        "signature": b64url_encode(assertion.signature),
        "user_handle": (
            None if assertion.user_handle is None else b64url_encode(assertion.user_handle)
        ),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


_PASSKEY_FIELDS: Final = frozenset(
    {
        "format",
        "payload",
        "credential_id",
        "authenticator_data",
        "client_data_json",
        "signature",
        "user_handle",
    }
)


def _passkey_doc(text: bytes | str) -> dict[str, object] | None:
    """The passkey approval document ``text`` is, or ``None`` if it is not one."""
    if len(text) > DEFAULT_MAX_ENVELOPE_BYTES:
        return None  # Envelope.from_json then refuses it as too large.
    try:
        doc = parse_json_strict(text)
    except (AuthorityError, ValueError, UnicodeError):
        return None
    if isinstance(doc, dict) and doc.get("format") == PASSKEY_APPROVAL_FORMAT:
        return doc
    return None


def _read_passkey_approval(doc: dict[str, object]) -> tuple[bytes, PasskeyAssertion]:
    if set(doc) != _PASSKEY_FIELDS:
        raise ApprovalSchemaError(
            f"a passkey approval has exactly the fields {sorted(_PASSKEY_FIELDS)}"
        )
    payload_b64 = doc["payload"]
    if not isinstance(payload_b64, str):
        raise ApprovalSchemaError("passkey approval payload must be base64 text")
    try:
        payload = base64.b64decode(payload_b64.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise ApprovalSchemaError("passkey approval payload is not base64") from exc
    user_handle = doc["user_handle"]
    try:

        def field(name: str) -> bytes:
            value = doc[name]
            if not isinstance(value, str):
                raise ValueError(f"{name} must be base64url text")
            return b64url_decode(value, name)

        assertion = PasskeyAssertion(
            credential_id=field("credential_id"),
            authenticator_data=field("authenticator_data"),
            client_data_json=field("client_data_json"),
            signature=field("signature"),
            user_handle=None if user_handle is None else field("user_handle"),
        )
    except ValueError as exc:
        raise ApprovalSchemaError(f"passkey approval: {exc}") from exc
    return payload, assertion


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
    Text that is a passkey approval (``ecp.passkey-approval/v1``) is checked
    the same way against the trust store's passkey credentials: credential →
    WebAuthn assertion over :func:`passkey_challenge` → schema → binding →
    window → approver.

    Raises:
        EnvelopeError (and subclasses): malformed, oversized, wrong
            payloadType, bad signature.
        PasskeyAssertionError: a passkey approval's assertion does not
            verify (wrong credential, challenge, origin or rp id, no user
            verification, bad signature).
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
    if not isinstance(envelope, Envelope):
        doc = _passkey_doc(envelope)
        if doc is not None:
            return _check_passkey_approval(
                doc, decision=decision, execution=execution, trust=trust, at=at
            )
    env = (
        envelope
        if isinstance(envelope, Envelope)
        else Envelope.from_json(envelope, max_bytes=DEFAULT_MAX_ENVELOPE_BYTES)
    )
    verified = verify_envelope(
        env, payload_type=APPROVAL_PAYLOAD_TYPE, trust=trust, role=KeyRole.APPROVER, at=at
    )
    approval = _read_approval(env.payload)
    _check_bound(approval, decision=decision, execution=execution, at=at)
    _check_approver(
        approval, decision=decision, holder=verified.key.name, key_id=verified.key.key_id
    )
    return VerifiedApproval(approval, env, verified.key, digest_bytes(env.payload))


def _check_passkey_approval(
    doc: dict[str, object],
    *,
    decision: Decision,
    execution: str,
    trust: TrustStore,
    at: datetime,
) -> VerifiedApproval:
    # Same order as for an envelope: who made it, is it theirs, then what it says.
    payload, assertion = _read_passkey_approval(doc)
    credential = trust.require_passkey(assertion.credential_id, at=at)
    verify_assertion(assertion, credential, challenge=passkey_challenge(payload))
    approval = _read_approval(payload)
    _check_bound(approval, decision=decision, execution=execution, at=at)
    _check_approver(approval, decision=decision, holder=credential.name, key_id=credential.key_id)
    return VerifiedApproval(approval, None, credential, digest_bytes(payload), assertion)


def _read_approval(payload: bytes) -> Approval:
    return read_signed_model(
        payload,
        Approval,
        what="approval",
        schema_version=APPROVAL_SCHEMA_VERSION,
        schema_error=ApprovalSchemaError,
        version_error=ApprovalSchemaError,
    )


def _check_bound(approval: Approval, *, decision: Decision, execution: str, at: datetime) -> None:
    """The approval is for this decision, request, policy, execution and role, and current."""
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


def _check_approver(approval: Approval, *, decision: Decision, holder: str, key_id: str) -> None:
    """The approval names the key's holder, who is an eligible approver of ``decision``."""
    if approval.approver != holder:
        # Otherwise any approver key could speak for another approver.
        raise ApproverNotAuthorizedError(
            f"approval names {approval.approver!r} but key {key_id} belongs to {holder!r}"
        )
    if approval.approver == decision.initiator:
        # Separation of duties: nobody approves their own request.
        raise ApproverNotAuthorizedError(f"{approval.approver!r} may not approve own request")
    requirement = decision.approval
    if requirement is None or approval.approver not in requirement.approvers:
        role = requirement.role if requirement else ""
        raise ApproverNotAuthorizedError(f"{approval.approver!r} is not a member of role {role!r}")


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
