"""Grants: the authority's signed permission for exactly one governed call.

A grant is a DSSE envelope (payloadType :data:`GRANT_PAYLOAD_TYPE`) over the
RFC 8785 bytes of a :class:`Grant`. It travels in a Temporal activity header,
which history stores in clear, so it holds digests and ids, never secrets.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Final, Literal, NewType

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

from ecp.authority._approval import VerifiedApproval, check_approvals_satisfy
from ecp.authority._artifact import MAX_ARTIFACTS, ArtifactRef
from ecp.authority._canonical import Digest, canonical_json
from ecp.authority._clock import Clock, now_utc
from ecp.authority._dsse import Envelope, sign_envelope
from ecp.authority._keys import KeyId, Signer
from ecp.authority._policy import Decision, DecisionId, Effect
from ecp.authority._signed import DIGEST_PATTERN
from ecp.authority.errors import GrantRefusedError

__all__ = [
    "GRANT_MAX_BYTES",
    "GRANT_PAYLOAD_TYPE",
    "GRANT_SCHEMA_VERSION",
    "CallBinding",
    "Grant",
    "GrantId",
    "GrantScope",
    "issue_grant",
]

GRANT_PAYLOAD_TYPE: Final = "application/vnd.ecp.grant.v1+json"
GRANT_SCHEMA_VERSION: Final = "ecp.grant/v1"
#: A grant is about 1 KB; anything far larger is refused before parsing.
GRANT_MAX_BYTES: Final = 16 * 1024
#: A random UUID (hex with dashes), unique per grant, consumed once per attempt.
GrantId = NewType("GrantId", str)

_WIRE = ConfigDict(frozen=True, extra="forbid", strict=True)
_Id = Annotated[str, Field(min_length=1, max_length=1024)]
_Digest = Annotated[Digest, Field(pattern=DIGEST_PATTERN)]


class CallBinding(BaseModel):
    """The one Temporal activity execution a grant is for."""

    model_config = _WIRE

    activity_type: _Id
    args_digest: _Digest
    namespace: _Id
    workflow_id: _Id
    run_id: _Id
    activity_id: _Id


class GrantScope(BaseModel):
    """Limits the policy imposed. Attempts, not an attempt number: retries reuse the header."""

    model_config = _WIRE

    max_attempts: int = Field(ge=1, le=1000)
    constraints: dict[str, JsonValue] = Field(default_factory=dict)
    #: How long one attempt may run: the workflow's start-to-close timeout and
    #: the gate's lease (no second attempt starts while a first may still run).
    execute_timeout_seconds: int = Field(300, ge=1, le=86400)
    #: Long-running actions: the longest silence between two heartbeats the
    #: gate allows before it interrupts the body (absent: not long-running).
    heartbeat_seconds: int | None = Field(None, ge=1, le=3600, exclude_if=lambda v: v is None)


class Grant(BaseModel):
    """The signed content of a grant."""

    model_config = _WIRE

    schema_version: Literal["ecp.grant/v1"] = GRANT_SCHEMA_VERSION
    grant_id: Annotated[GrantId, Field(min_length=1, max_length=128)]
    call: CallBinding
    initiator: _Id
    #: How the initiator was established (the decision's ``authentication``).
    initiator_auth: Annotated[str, Field(max_length=2048)] = "unauthenticated"
    #: The id of the initiator's signed request, if one proved who asked: one
    #: body runs per signed request, whatever activity id a caller picks.
    request_id: Annotated[str, Field(max_length=128)] = ""
    policy_digest: _Digest
    decision_id: Annotated[DecisionId, Field(pattern=DIGEST_PATTERN)]
    environment_digest: _Digest
    scope: GrantScope
    approvals: tuple[_Digest, ...] = ()
    issued_at: AwareDatetime
    not_before: AwareDatetime
    expires_at: AwareDatetime
    issuer: Annotated[KeyId, Field(min_length=1, max_length=256)]
    #: The artifacts the body may use, exactly as decided (sorted by name).
    #: The gate recomputes each digest from the bytes it hands the body.
    artifacts: Annotated[tuple[ArtifactRef, ...], Field(max_length=MAX_ARTIFACTS)] = ()

    @model_serializer(mode="wrap")
    def _omit_no_artifacts(self, handler: SerializerFunctionWrapHandler) -> object:
        # A grant without artifacts has no ``artifacts`` field: byte for byte
        # the grant of before they existed.
        doc = handler(self)
        if isinstance(doc, dict) and not self.artifacts:
            doc.pop("artifacts", None)
        return doc

    def to_payload(self) -> bytes:
        """The exact bytes to sign: RFC 8785 JSON of the grant.

        Raises:
            CanonicalizationError: a constraint value is not JCS-expressible.
        """
        return canonical_json(self.model_dump(mode="json"))


def _whole_seconds(t: datetime) -> datetime:
    # Whole seconds keep the RFC 3339 strings short and identical however
    # the verifier's platform formats fractions.
    return t.replace(microsecond=0)


def issue_grant(
    decision: Decision,
    call: CallBinding,
    *,
    initiator: str,
    environment_digest: Digest,
    signer: Signer,
    clock: Clock,
    ttl: timedelta,
    approvals: Sequence[VerifiedApproval] = (),
    request_id: str = "",
    artifacts: Sequence[ArtifactRef] = (),
) -> Envelope:
    """Sign a grant for ``call`` under ``decision``.

    Only an ``allow`` decision, or ``allow_after_approval`` with enough
    verified approvals (see :func:`ecp.authority._approval.verify_approvals`),
    yields a grant.

    Raises:
        GrantRefusedError: the decision denies, names another action or
            initiator, has no scope, ``ttl`` is not positive, or a value
            does not fit the grant schema (an empty initiator, a digest of
            the wrong form, an expiry beyond year 9999).
        ApprovalMismatchError: an approval belongs to another decision.
        ApprovalInsufficientError: fewer distinct eligible approvers than required.
        ClockError: the clock is not time-zone aware.
        CanonicalizationError: the scope constraints are not JCS-expressible.
    """
    if decision.effect is Effect.DENY or decision.scope is None:
        raise GrantRefusedError(
            f"decision {decision.decision_id} denies: {'; '.join(decision.reasons)}"
        )
    if decision.action != call.activity_type:
        raise GrantRefusedError(
            f"decision is for {decision.action!r}, the call is {call.activity_type!r}"
        )
    if decision.initiator != initiator:
        raise GrantRefusedError(
            f"decision is for initiator {decision.initiator!r}, not {initiator!r}"
        )
    if ttl <= timedelta(0):
        raise GrantRefusedError("grant ttl must be positive")
    used = check_approvals_satisfy(decision, approvals)
    now = _whole_seconds(now_utc(clock))
    try:
        grant = Grant(
            grant_id=GrantId(str(uuid.uuid4())),
            call=call,
            initiator=initiator,
            initiator_auth=decision.authentication,
            request_id=request_id,
            policy_digest=decision.policy_digest,
            decision_id=decision.decision_id,
            environment_digest=environment_digest,
            scope=GrantScope(
                max_attempts=decision.scope.max_attempts,
                constraints=decision.scope.constraints,
                execute_timeout_seconds=decision.scope.execute_timeout_seconds,
                heartbeat_seconds=decision.scope.heartbeat_seconds,
            ),
            approvals=tuple(a.digest for a in used),
            issued_at=now,
            not_before=now,
            expires_at=_whole_seconds(now + ttl),
            issuer=signer.key_id,
            artifacts=tuple(sorted(artifacts, key=lambda a: a.name)),
        )
    except ValidationError as exc:
        # The decision and the call come from elsewhere in the process; a
        # value the schema refuses is a refusal, not a crash.
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise GrantRefusedError(f"grant field {where}: {first['msg']}") from exc
    except OverflowError as exc:
        raise GrantRefusedError(f"grant expiry is out of range: {exc}") from exc
    return sign_envelope(GRANT_PAYLOAD_TYPE, grant.to_payload(), signer)
