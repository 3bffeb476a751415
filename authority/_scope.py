"""Scoped grants: authorize a bounded set of calls once, check each at the gate.

A *scope* grant (DSSE, payloadType :data:`SCOPE_PAYLOAD_TYPE`, RFC 8785 JSON
of a :class:`ScopeGrant`, signed by the authority) lets one workflow
execution make up to ``max_uses`` calls of the named actions within a
validity window, for one initiator, under one policy bundle and one executor
environment. Each call then goes straight to the gate, which verifies the
scope, checks the call's arguments against the scope's constraints,
evaluates the *policy itself* on the call (so a scope can only narrow what
the policy allows, never widen it), counts the use durably and records
evidence, like any governed call.

Constraints are deliberately small and deterministic: per action, per
top-level argument field, ``max`` / ``min`` (integers), ``in`` (a set of
JSON values) and ``prefix`` (strings). A field a constraint names must be
present.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, ValidationError

from ecp.authority._artifact import MAX_ARTIFACTS, ArtifactRef
from ecp.authority._canonical import Digest, canonical_json
from ecp.authority._clock import Clock, now_utc
from ecp.authority._dsse import Envelope, sign_envelope, verify_envelope
from ecp.authority._keys import Signer
from ecp.authority._policy import Decision, Effect, PolicyBundle, PolicyRequest
from ecp.authority._signed import DIGEST_PATTERN, read_signed_model
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.authority.errors import (
    ActivityTypeMismatchError,
    EnvironmentMismatchError,
    GrantExpiredError,
    GrantNotYetValidError,
    GrantRefusedError,
    GrantSchemaError,
    NamespaceMismatchError,
    PolicyDigestMismatchError,
    RunMismatchError,
    UnknownSchemaVersionError,
    VerificationError,
    WorkflowMismatchError,
)

__all__ = [
    "MAX_SCOPE_USES",
    "SCOPE_PAYLOAD_TYPE",
    "ArgConstraint",
    "ScopeConstraintError",
    "ScopeGrant",
    "VerifiedScope",
    "check_constraints",
    "decide_scoped_call",
    "issue_scope",
    "verify_scope",
]

SCOPE_PAYLOAD_TYPE: Final = "application/vnd.ecp.scope.v1+json"
SCOPE_SCHEMA_VERSION: Final = "ecp.scope/v1"
MAX_SCOPE_USES: Final = 1000
_WIRE = ConfigDict(frozen=True, extra="forbid", strict=True, populate_by_name=True)
_Digest = Annotated[Digest, Field(pattern=DIGEST_PATTERN)]


class ScopeConstraintError(VerificationError):
    """A scoped call's arguments fall outside the scope's constraints."""

    code = "scope_constraint"


class ArgConstraint(BaseModel):
    """What one argument field may be."""

    model_config = _WIRE

    max: int | None = None
    min: int | None = None
    in_: tuple[JsonValue, ...] | None = Field(default=None, alias="in")
    prefix: str | None = None


class ScopeGrant(BaseModel):
    """The signed content of a scope grant."""

    model_config = _WIRE

    schema_version: Literal["ecp.scope/v1"] = SCOPE_SCHEMA_VERSION
    scope_id: Annotated[str, Field(min_length=1, max_length=128)]
    namespace: Annotated[str, Field(min_length=1, max_length=255)]
    workflow_id: Annotated[str, Field(min_length=1, max_length=1000)]
    run_id: Annotated[str, Field(min_length=1, max_length=255)]
    actions: Annotated[tuple[str, ...], Field(min_length=1, max_length=64)]
    constraints: dict[str, dict[str, ArgConstraint]] = Field(default_factory=dict)
    max_uses: int = Field(ge=1, le=MAX_SCOPE_USES)
    initiator: Annotated[str, Field(min_length=1, max_length=256)]
    initiator_auth: Annotated[str, Field(max_length=2048)]
    purpose: Annotated[str, Field(max_length=4096)] = ""
    policy_digest: _Digest
    environment_digest: _Digest
    issued_at: AwareDatetime
    not_before: AwareDatetime
    expires_at: AwareDatetime
    issuer: Annotated[str, Field(min_length=1, max_length=256)]
    #: The artifacts every call under the scope may use (the gate checks their
    #: bytes before each call), and what the policy sees of them: computed by
    #: the authority when it verified their attestations. Absent when none.
    artifacts: Annotated[tuple[ArtifactRef, ...], Field(max_length=MAX_ARTIFACTS)] = ()
    artifact_views: dict[str, JsonValue] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VerifiedScope:
    """A scope grant that verified for one execution. Only :func:`verify_scope` makes these."""

    scope: ScopeGrant
    envelope: Envelope
    key: TrustedKey


def issue_scope(
    *,
    actions: Sequence[str],
    constraints: Mapping[str, Mapping[str, ArgConstraint]],
    max_uses: int,
    namespace: str,
    workflow_id: str,
    run_id: str,
    initiator: str,
    initiator_auth: str,
    purpose: str,
    policy_digest: Digest,
    environment_digest: Digest,
    signer: Signer,
    clock: Clock,
    ttl: timedelta,
    artifacts: Sequence[ArtifactRef] = (),
    artifact_views: Mapping[str, JsonValue] | None = None,
) -> Envelope:
    """Sign a scope grant.

    Raises:
        GrantRefusedError: a value does not fit the scope schema (no actions,
            more than :data:`MAX_SCOPE_USES` uses, a constraint for an action
            not in the scope, a non-positive ``ttl``).
    """
    if ttl <= timedelta(0) or ttl > timedelta(days=1):
        raise GrantRefusedError("a scope lives more than zero seconds and at most one day")
    unknown = set(constraints) - set(actions)
    if unknown:
        raise GrantRefusedError(f"constraints for actions outside the scope: {sorted(unknown)}")
    now = now_utc(clock).replace(microsecond=0)
    try:
        body = ScopeGrant(
            scope_id=str(uuid.uuid4()),
            namespace=namespace,
            workflow_id=workflow_id,
            run_id=run_id,
            actions=tuple(actions),
            constraints={a: dict(c) for a, c in constraints.items()},
            max_uses=max_uses,
            initiator=initiator,
            initiator_auth=initiator_auth,
            purpose=purpose,
            policy_digest=policy_digest,
            environment_digest=environment_digest,
            issued_at=now,
            not_before=now,
            expires_at=now + ttl,
            issuer=signer.key_id,
            artifacts=tuple(sorted(artifacts, key=lambda a: a.name)),
            artifact_views=dict(artifact_views or {}),
        )
    except ValidationError as exc:
        raise GrantRefusedError(f"scope refused: {exc.errors()[0]['msg']}") from None
    doc = body.model_dump(mode="json", by_alias=True, exclude_none=True)
    if not body.artifacts:
        # A scope without artifacts is byte for byte the scope of before them.
        del doc["artifacts"], doc["artifact_views"]
    else:
        doc["artifacts"] = [a.model_dump(mode="json") for a in body.artifacts]
    payload = canonical_json(doc)
    return sign_envelope(SCOPE_PAYLOAD_TYPE, payload, signer)


def verify_scope(
    envelope_bytes: bytes,
    *,
    trust: TrustStore,
    at: datetime,
    namespace: str,
    workflow_id: str,
    run_id: str,
    activity_type: str,
    environment_digest: str,
    accepted_policy_digests: frozenset[str] | None,
) -> VerifiedScope:
    """Verify a scope grant for one call of ``activity_type`` by this execution.

    Raises:
        EnvelopeError (and subclasses), UnknownKeyError, RevokedKeyError,
            KeyExpiredError, KeyRoleError: not signed by a valid authority key.
        GrantSchemaError, UnknownSchemaVersionError: not a scope grant.
        GrantNotYetValidError, GrantExpiredError: outside its window.
        NamespaceMismatchError, WorkflowMismatchError, RunMismatchError: for
            another execution.
        ActivityTypeMismatchError: the action is not in the scope.
        PolicyDigestMismatchError: issued under a bundle this worker does not accept.
        EnvironmentMismatchError: issued for another executor environment.
    """
    envelope = Envelope.from_json(envelope_bytes)
    verified = verify_envelope(
        envelope, payload_type=SCOPE_PAYLOAD_TYPE, trust=trust, role=KeyRole.AUTHORITY, at=at
    )
    scope = read_signed_model(
        envelope.payload,
        ScopeGrant,
        what="scope grant",
        schema_version=SCOPE_SCHEMA_VERSION,
        schema_error=GrantSchemaError,
        version_error=UnknownSchemaVersionError,
    )
    if scope.issuer != verified.key.key_id:
        raise GrantSchemaError(f"scope names issuer {scope.issuer} but is signed by another key")
    if at + timedelta(seconds=30) < scope.not_before:
        raise GrantNotYetValidError(
            f"scope {scope.scope_id} is not valid before {scope.not_before}"
        )
    if at >= scope.expires_at:
        raise GrantExpiredError(f"scope {scope.scope_id} expired at {scope.expires_at}")
    for what, bound, actual, error in (
        ("namespace", scope.namespace, namespace, NamespaceMismatchError),
        ("workflow id", scope.workflow_id, workflow_id, WorkflowMismatchError),
        ("run id", scope.run_id, run_id, RunMismatchError),
    ):
        if bound != actual:
            raise error(f"scope is bound to {what} {bound!r}, the call has {actual!r}")
    if activity_type not in scope.actions:
        raise ActivityTypeMismatchError(
            f"{activity_type!r} is outside the scope (actions {list(scope.actions)})"
        )
    if accepted_policy_digests is not None and scope.policy_digest not in accepted_policy_digests:
        raise PolicyDigestMismatchError(
            f"scope was issued under policy {scope.policy_digest}, "
            "which this worker does not accept"
        )
    if scope.environment_digest != environment_digest:
        raise EnvironmentMismatchError("scope is bound to another executor environment")
    return VerifiedScope(scope, envelope, verified.key)


def check_constraints(
    constraints: Mapping[str, ArgConstraint], arguments: Mapping[str, object]
) -> None:
    """Check a call's arguments (as the policy sees them) against one action's constraints.

    Raises:
        ScopeConstraintError: a field is missing or outside its constraint.
    """
    for name, c in sorted(constraints.items()):
        if name not in arguments:
            raise ScopeConstraintError(f"argument {name!r} is missing; the scope constrains it")
        value = arguments[name]
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if (c.max is not None or c.min is not None) and not is_int:
            raise ScopeConstraintError(f"argument {name!r} must be an integer in this scope")
        if c.max is not None and is_int and value > c.max:  # type: ignore[operator]
            raise ScopeConstraintError(
                f"argument {name!r} is {value}, the scope allows at most {c.max}"
            )
        if c.min is not None and is_int and value < c.min:  # type: ignore[operator]
            raise ScopeConstraintError(
                f"argument {name!r} is {value}, the scope allows at least {c.min}"
            )
        if c.in_ is not None and canonical_json(value) not in {canonical_json(v) for v in c.in_}:
            raise ScopeConstraintError(f"argument {name!r} is not one of the scope's values")
        if c.prefix is not None and not (isinstance(value, str) and value.startswith(c.prefix)):
            raise ScopeConstraintError(f"argument {name!r} does not start with {c.prefix!r}")


def decide_scoped_call(
    bundle: PolicyBundle,
    scope: ScopeGrant,
    action: str,
    arguments: Mapping[str, object],
    environment: Mapping[str, object],
) -> Decision:
    """The gate's decision on one call under ``scope``: the scope's bounds, then the policy.

    Deterministic, and never wider than the policy: the same request the
    authority would evaluate for this call must be an ``allow``.

    Raises:
        ScopeConstraintError: the call is outside the scope, or the policy
            does not allow it (or would ask for approvals, which a scope
            cannot carry).
        PolicyDigestMismatchError: ``bundle`` is not the scope's.
    """
    if action not in scope.actions:
        raise ScopeConstraintError(f"{action!r} is outside the scope")
    check_constraints(scope.constraints.get(action, {}), arguments)
    if bundle.digest != scope.policy_digest:
        raise PolicyDigestMismatchError("the scope was issued under another policy bundle")
    decision = bundle.evaluate(
        PolicyRequest.model_validate(
            {
                "action": action,
                "initiator": scope.initiator,
                "arguments": dict(arguments),
                "purpose": scope.purpose,
                "environment": dict(environment),
                "authentication": scope.initiator_auth,
                "artifacts": dict(scope.artifact_views),
            },
            strict=False,
        )
    )
    if decision.effect is not Effect.ALLOW:
        raise ScopeConstraintError(
            f"the policy does not allow this call under a scope ({decision.effect.value}: "
            f"{'; '.join(decision.reasons)})"
        )
    return decision
