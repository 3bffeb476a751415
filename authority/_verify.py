"""The one grant verifier the gate calls before a governed activity runs.

:func:`verify_grant` returns a :class:`VerifiedGrant` or raises a specific
:class:`~ecp.authority.errors.AuthorityError`; it never returns a bool. Order:
parse → key lookup → signature over PAE → strict schema → validity window →
binding to the actual call → environment → single use. The single-use record
is written last, so a grant refused for any other reason is not burnt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ecp.authority._clock import Clock, now_utc
from ecp.authority._dsse import Envelope, verify_envelope
from ecp.authority._grant import GRANT_MAX_BYTES, GRANT_PAYLOAD_TYPE, GRANT_SCHEMA_VERSION, Grant
from ecp.authority._replay import ReplayGuard, request_key, unknown_after_expiry
from ecp.authority._signed import read_signed_model
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.authority.errors import (
    ActivityMismatchError,
    ActivityTypeMismatchError,
    ArgumentsMismatchError,
    BindingMismatchError,
    DecisionMismatchError,
    EnvironmentMismatchError,
    GrantExpiredError,
    GrantNotYetValidError,
    GrantSchemaError,
    InitiatorMismatchError,
    NamespaceMismatchError,
    OutcomeUnknownError,
    PolicyDigestMismatchError,
    RunMismatchError,
    UnknownSchemaVersionError,
    WorkflowMismatchError,
)

__all__ = ["NOT_BEFORE_LEEWAY", "ExpectedCall", "VerifiedGrant", "verify_grant"]


@dataclass(frozen=True, slots=True)
class ExpectedCall:
    """What the gate actually observes about the call about to run.

    The optional fields are checked only when given: the gate knows the call
    and its own environment; a caller that also knows the initiator, the
    policy or the decision can pin those too.
    """

    activity_type: str
    args_digest: str
    namespace: str
    workflow_id: str
    run_id: str
    activity_id: str
    environment_digest: str
    attempt: int
    initiator: str | None = None
    policy_digest: str | None = None
    decision_id: str | None = None
    accepted_policy_digests: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class VerifiedGrant:
    """A grant that verified for one call. Only :func:`verify_grant` makes these."""

    grant: Grant
    envelope: Envelope
    key: TrustedKey
    #: When the lease taken for this attempt ends (``None``: no lease, a
    #: scoped call), as the store wrote it. Time spent after that (the
    #: commit, staging the artifacts) leaves the body less than the policy's
    #: execute timeout: the body's lifetime must end by then, or a retry
    #: could overlap it.
    lease_until: datetime | None = None


_Check = tuple[
    str, Callable[[Grant], str], Callable[[ExpectedCall], str | None], type[BindingMismatchError]
]

# One specific error per bound field, in the order they are compared.
_BINDINGS: tuple[_Check, ...] = (
    (
        "activity type",
        lambda g: g.call.activity_type,
        lambda e: e.activity_type,
        ActivityTypeMismatchError,
    ),
    (
        "argument digest",
        lambda g: g.call.args_digest,
        lambda e: e.args_digest,
        ArgumentsMismatchError,
    ),
    ("namespace", lambda g: g.call.namespace, lambda e: e.namespace, NamespaceMismatchError),
    ("workflow id", lambda g: g.call.workflow_id, lambda e: e.workflow_id, WorkflowMismatchError),
    ("run id", lambda g: g.call.run_id, lambda e: e.run_id, RunMismatchError),
    ("activity id", lambda g: g.call.activity_id, lambda e: e.activity_id, ActivityMismatchError),
    ("initiator", lambda g: g.initiator, lambda e: e.initiator, InitiatorMismatchError),
    (
        "policy digest",
        lambda g: g.policy_digest,
        lambda e: e.policy_digest,
        PolicyDigestMismatchError,
    ),
    ("decision id", lambda g: g.decision_id, lambda e: e.decision_id, DecisionMismatchError),
)


#: Clock skew tolerated on a grant's not-before (not on its expiry).
NOT_BEFORE_LEEWAY = timedelta(seconds=30)


def verify_grant(
    envelope_bytes: bytes,
    *,
    trust: TrustStore,
    expected: ExpectedCall,
    clock: Clock,
    replay: ReplayGuard,
) -> VerifiedGrant:
    """Verify a serialised grant envelope for the call described by ``expected``.

    Raises:
        EnvelopeTooLargeError: more than :data:`GRANT_MAX_BYTES`.
        DuplicateKeyEnvelopeError: the envelope JSON repeats a key.
        MalformedEnvelopeError, MalformedBase64Error: not a DSSE envelope.
        PayloadTypeError: not a grant envelope.
        UnknownKeyError, RevokedKeyError, KeyExpiredError, KeyRoleError:
            the signing key may not issue grants now.
        MalformedSignatureError: a signature is not 64 bytes.
        SignatureInvalidError: the signature does not verify over the exact payload.
        NonCanonicalPayloadError: the payload is not RFC 8785 canonical.
        UnknownSchemaVersionError: another grant schema version.
        GrantSchemaError: missing, extra or mistyped fields; an issuer field
            that is not the signing key; a window that ends before it starts.
        GrantNotYetValidError, GrantExpiredError: outside the validity window.
        ActivityTypeMismatchError, ArgumentsMismatchError,
            NamespaceMismatchError, WorkflowMismatchError, RunMismatchError,
            ActivityMismatchError, InitiatorMismatchError,
            PolicyDigestMismatchError, DecisionMismatchError: bound to another call.
        EnvironmentMismatchError: issued for another worker environment.
        GrantAttemptsExhaustedError: the attempt exceeds the grant's max_attempts.
        OutcomeUnknownError: the same, or the grant expired, and an attempt
            that took a use never ended (its body may have run) or completed
            (its completion was lost); carries the verified grant.
        GrantReplayedError: this attempt of the grant was used before.
        RequestReplayedError: another grant already ran this request.
        AttemptInProgressError: another attempt of the grant may still be
            running (retryable).
        ReplayStoreUnavailableError: single use cannot be established (retryable).
        ClockError: the clock is not time-zone aware.
    """
    # 1. parse
    envelope = Envelope.from_json(envelope_bytes, max_bytes=GRANT_MAX_BYTES)
    now = now_utc(clock)
    # 2-3. payloadType, key lookup (unknown/revoked/expired/role), signature over PAE
    verified = verify_envelope(
        envelope, payload_type=GRANT_PAYLOAD_TYPE, trust=trust, role=KeyRole.AUTHORITY, at=now
    )
    # 4. strict schema over the exact signed bytes
    grant = read_signed_model(
        envelope.payload,
        Grant,
        what="grant",
        schema_version=GRANT_SCHEMA_VERSION,
        schema_error=GrantSchemaError,
        version_error=UnknownSchemaVersionError,
    )
    if grant.issuer != verified.key.key_id:
        raise GrantSchemaError(
            f"grant names issuer {grant.issuer} but is signed by {verified.key.key_id}"
        )
    if not grant.not_before < grant.expires_at:
        raise GrantSchemaError("grant validity window is empty")
    # 5. validity window. The start tolerates a little clock skew between the
    # authority and this worker (not-before is the authority's second, rounded
    # down); the end does not: an expired grant is never honoured.
    if now + NOT_BEFORE_LEEWAY < grant.not_before:
        raise GrantNotYetValidError(
            f"grant {grant.grant_id} is not valid before {grant.not_before}"
        )
    # Expiry is decided after the binding (below): an expired grant bound to
    # this very call, under which an earlier attempt ran (or may have), is an
    # unknown outcome rather than a denial.
    expired = now >= grant.expires_at
    # 6. binding to the actual call
    for what, granted, actual, error in _BINDINGS:
        want = actual(expected)
        if want is not None and granted(grant) != want:
            raise error(f"grant is bound to {what} {granted(grant)!r}, the call has {want!r}")
    if (
        expected.accepted_policy_digests is not None
        and grant.policy_digest not in expected.accepted_policy_digests
    ):
        raise PolicyDigestMismatchError(
            f"grant was issued under policy {grant.policy_digest}, "
            "which this worker does not accept"
        )
    # 7. environment
    if grant.environment_digest != expected.environment_digest:
        raise EnvironmentMismatchError(
            f"grant is bound to environment {grant.environment_digest}, "
            f"this worker measures {expected.environment_digest}"
        )
    if expired:
        unended, completed = replay.unfinished(grant.grant_id)
        if unended or completed:
            exc = unknown_after_expiry(grant.grant_id, unended, completed)
            exc.verified = VerifiedGrant(grant, envelope, verified.key)
            raise exc
        raise GrantExpiredError(f"grant {grant.grant_id} expired at {grant.expires_at}")
    # 8. single use, last: only a grant that passed everything else is burnt.
    # One grant per request first (a reset or re-submission gets a new grant
    # for the same request), then one slot of that grant's attempts.
    c = grant.call
    requests = [request_key(c.namespace, c.workflow_id, c.activity_type, c.activity_id)]
    if grant.request_id:
        # One body per signed request too, whichever activity id carries it.
        requests.append(request_key(c.namespace, "signed-request", grant.request_id, ""))
    # No two attempts of one grant at once: the lease lasts as long as the
    # policy lets one attempt run. All of it in one atomic step.
    until = now + timedelta(seconds=grant.scope.execute_timeout_seconds)
    try:
        until = replay.admit(
            requests, grant.grant_id, expected.attempt, until, grant.scope.max_attempts
        )
    except OutcomeUnknownError as exc:
        # Everything above verified: the gate may record the unknown outcome
        # under this grant (and only then; a refusal of anything unverified
        # never carries one).
        exc.verified = VerifiedGrant(grant, envelope, verified.key)
        raise
    return VerifiedGrant(grant, envelope, verified.key, lease_until=until)
