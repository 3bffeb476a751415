"""The gate: runs a governed activity only after its grant verifies.

A worker-side interceptor; the grant is checked against the actual call.

Fail-closed by construction: the body is reached through exactly one path,
after :func:`ecp.authority._verify.verify_grant` returned a ``VerifiedGrant``. Any
error on the way (a denial, or a dependency that cannot answer) raises before
that path. Denials are non-retryable with a stable type ``ecp.<code>``;
infrastructure faults are retryable (Temporal tries again later) but still
never run the body.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from ecp._failure import to_application_error
from ecp._wire import GATE_MARK, GRANT_HEADER, OUTAGE_TYPE, SCOPE_ACTIVITY_ID_PREFIX, SCOPE_HEADER
from ecp.activities._artifact_check import stage_for_body
from ecp.activities._authority_side import policy_arguments
from ecp.activities._control_watch import ControlWatch
from ecp.activities._governed import GateMissingError, admitted, is_governed
from ecp.activities._watchdog import Watchdog
from ecp.authority._calldigest import digest_values
from ecp.authority._canonical import Digest
from ecp.authority._clock import Clock, now_utc
from ecp.authority._dsse import Envelope
from ecp.authority._grant import CallBinding, Grant, GrantId, GrantScope
from ecp.authority._policy import PolicyBundle
from ecp.authority._replay import ReplayGuard, request_key
from ecp.authority._scope import ScopeConstraintError, decide_scoped_call, verify_scope
from ecp.authority._truststore import TrustStore
from ecp.authority._verify import ExpectedCall, VerifiedGrant, verify_grant
from ecp.authority.errors import (
    AuthorityError,
    CanonicalizationError,
    ExecutionInterruptedError,
    LeaseLapsedError,
    OutcomeUnknownError,
    VerificationError,
)
from ecp.errors import EcpError
from ecp.lineage.ledger._evidence import IDENTITY_MAX_CHARS

__all__ = [
    "EvidenceSink",
    "GateConfig",
    "GateInterceptor",
    "GateMissingError",
    "GateRecord",
    "IdentityUnrecordableError",
    "MissingGrantError",
    "RefusingGate",
]

log = logging.getLogger("ecp.gate")

#: ApplicationError.type of every gate denial is this prefix plus the error code.


Outcome = Literal["completed", "failed", "denied", "interrupted", "unknown"]


class MissingGrantError(VerificationError):
    """A governed activity was scheduled without a grant header."""

    code = "grant_missing"


class IdentityUnrecordableError(VerificationError):
    """The execution's ids cannot be recorded as evidence, so its body may not run."""

    code = "identity_unrecordable"


def _unrecordable(info: activity.Info) -> str | None:
    """Why evidence could not name this execution faithfully, if it could not."""
    ids = {
        "namespace": info.namespace,
        "workflow_id": info.workflow_id or "",
        "run_id": info.workflow_run_id or "",
        "activity_id": info.activity_id,
        "activity_type": info.activity_type,
    }
    for field, value in ids.items():
        limit = IDENTITY_MAX_CHARS[field]
        if not value or len(value) > limit:
            return f"{field} has {len(value)} characters; evidence records 1 to {limit}"
        if "\x00" in value:
            # PostgreSQL's text columns cannot hold NUL: its record would be refused.
            return f"{field} contains a NUL character, which the ledger cannot store"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{field} is not valid Unicode"
    return None


@dataclass(frozen=True, slots=True)
class GateRecord:
    """What the gate saw and decided about one activity attempt."""

    activity_type: str
    namespace: str
    workflow_id: str
    run_id: str
    activity_id: str
    attempt: int
    outcome: Outcome
    args_digest: Digest | None
    started_at: datetime
    finished_at: datetime
    grant: VerifiedGrant | None = None
    result_digest: Digest | None = None
    reason_code: str = ""
    reason: str = ""
    #: Artifacts used, generated or refused (``ecp.activities._artifact_check``).
    artifacts: Sequence[Mapping[str, object]] = ()
    #: When the gate admitted the body (its checks done); None if it never did.
    admitted_at: datetime | None = None


class EvidenceSink(Protocol):
    """Where the gate records evidence (the ledger, in production).

    ``record`` is synchronous and may block; the gate calls it off the event
    loop. It raises an error with ``retryable = True`` when the store cannot
    be reached.
    """

    def record(self, record: GateRecord) -> None:
        """Persist ``record`` as evidence."""
        ...


@dataclass(frozen=True, slots=True)
class GateConfig:
    """Everything the gate needs; nothing here can sign a grant.

    Attributes:
        trust: Returns the current trust store. Called per attempt so a
            revocation takes effect without a restart; raising
            ``TrustStoreError`` makes the gate refuse (retryably).
        replay: The single-use store.
        evidence: Where outcomes and denials go.
        environment_digest: This worker's environment attestation digest.
        clock: Injected time source.
        controls: The halt list and grant revocations (the control log),
            checked before each body starts and while it runs.
        accepted_policy_digests: If set, grants issued under any other policy
            bundle are refused.
        governed_names: Activity types governed by name: the gate asks for a
            grant whichever function serves them, marked or not.
        bundle: The policy bundle scoped calls are checked against (the
            configured one; its digest must be the scope's).
        environment_claims: This worker's attested environment, as the
            policy sees it for scoped calls.
    """

    trust: Callable[[], TrustStore]
    replay: ReplayGuard
    evidence: EvidenceSink
    environment_digest: str
    clock: Clock
    controls: ControlWatch
    accepted_policy_digests: frozenset[str] | None = None
    governed_names: frozenset[str] = frozenset()
    bundle: PolicyBundle | None = None
    environment_claims: Mapping[str, object] = dataclasses.field(default_factory=dict)


class GateInterceptor(Interceptor):
    """Worker interceptor installing the gate on every activity."""

    #: This interceptor verifies grants (a worker with it may host governed activities).
    verifies_grants = True

    def __init__(self, config: GateConfig) -> None:
        self._config = config

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Gate(next, self._config)


class RefusingGate(Interceptor):
    """The gate of a worker that cannot verify grants.

    Refuses every governed activity (non-retryably) and lets everything else through.

    Installed wherever no real gate is configured, so that registering a
    governed activity on, say, an authority worker never runs it ungated.
    """

    verifies_grants = False

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Refuse(next)


class _Refuse(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if is_governed(input.fn):
            name = activity.info().activity_type
            exc = GateMissingError(f"{name} is governed and this worker has no gate for grants")
            raise to_application_error(exc, str(exc), GATE_MARK)
        return await super().execute_activity(input)


class _HeartbeatTap(ActivityOutboundInterceptor):
    """Lets the watchdog see every heartbeat of a governed body (and answer it)."""

    def __init__(self, next: ActivityOutboundInterceptor, gate: _Gate) -> None:
        super().__init__(next)
        self._gate = gate

    def heartbeat(self, *details: Any) -> None:
        dog = self._gate.watchdog
        if dog is not None:
            # Raises CancelledError into the body once it was interrupted.
            dog.on_heartbeat()
        super().heartbeat(*details)


class _Gate(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, config: GateConfig) -> None:
        super().__init__(next)
        self._c = config
        #: Set while an admitted body runs (one execution per interceptor).
        self.watchdog: Watchdog | None = None

    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        super().init(_HeartbeatTap(outbound, self))

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if not (is_governed(input.fn) or info.activity_type in self._c.governed_names):
            return await super().execute_activity(input)
        problem = _unrecordable(info)
        if problem is not None:
            # Evidence could not name this execution, so neither its denial
            # nor its outcome could be recorded: refuse, and never run it.
            exc = IdentityUnrecordableError(f"not running {info.activity_type}: {problem}")
            log.warning("gate refused: %s", exc)
            raise to_application_error(exc, str(exc), GATE_MARK)
        started = self._c.clock()
        args_digest: Digest | None = None

        def record(outcome: Outcome, **kw: Any) -> GateRecord:
            return GateRecord(
                activity_type=info.activity_type,
                namespace=info.namespace,
                workflow_id=info.workflow_id or "",
                run_id=info.workflow_run_id or "",
                activity_id=info.activity_id,
                attempt=info.attempt,
                outcome=outcome,
                args_digest=args_digest,
                started_at=started,
                finished_at=self._c.clock(),
                **kw,
            )

        try:
            header = input.headers.get(GRANT_HEADER)
            scoped = input.headers.get(SCOPE_HEADER)
            if header is None and scoped is not None:
                args_digest = digest_values(input.args, activity.payload_converter())
                verified = await asyncio.to_thread(
                    self._verify_scoped, scoped.data, input, info, args_digest
                )
                return await self._run_scoped(input, info, verified, record)
            if header is None:
                raise MissingGrantError(
                    f"activity {info.activity_type} is governed and was scheduled without a grant"
                )
            args_digest = digest_values(input.args, activity.payload_converter())
            expected = ExpectedCall(
                activity_type=info.activity_type,
                args_digest=args_digest,
                namespace=info.namespace,
                workflow_id=info.workflow_id or "",
                run_id=info.workflow_run_id or "",
                activity_id=info.activity_id,
                environment_digest=self._c.environment_digest,
                attempt=info.attempt,
                accepted_policy_digests=self._c.accepted_policy_digests,
            )
            verified = await asyncio.to_thread(self._verify, header.data, expected)
        except OutcomeUnknownError as exc:
            if not isinstance(exc.verified, VerifiedGrant):
                # Not established by the verifier: an ordinary refusal.
                await self._deny(record("denied", reason_code=exc.code, reason=str(exc)), exc)
                raise AssertionError("unreachable") from exc
            await self._unknown(
                record("unknown", grant=exc.verified, reason_code=exc.code, reason=str(exc)), exc
            )
            raise AssertionError("unreachable") from exc  # _unknown always raises
        except AuthorityError as exc:
            await self._deny(record("denied", reason_code=exc.code, reason=str(exc)), exc)
            raise AssertionError("unreachable") from exc  # _deny always raises

        # The only path to the body: a VerifiedGrant in hand, and the body
        # admitted for exactly this execution (a @governed body checks that).
        # The grant's lease lasts the policy's execute timeout; an async body
        # still running then is cancelled, so no retry ever overlaps it.
        timeout = verified.grant.scope.execute_timeout_seconds
        try:
            result = await self._run_body(input, info, verified, record, timeout=timeout)
        except BaseException:
            # An attempt that ended completed was already ended: the store
            # keeps the first end of an attempt.
            await self._end_quietly(verified, info.attempt)
            raise
        return result

    async def _end_quietly(
        self, verified: VerifiedGrant, attempt: int, *, completed: bool = False
    ) -> None:
        # Releasing the lease early only lets a retry start sooner; if the
        # store cannot answer, the lease simply expires (and the attempt
        # counts as never ended: a later refusal says the outcome is unknown).
        try:
            await asyncio.to_thread(
                functools.partial(
                    self._c.replay.end, verified.grant.grant_id, attempt, completed=completed
                )
            )
        except AuthorityError as exc:
            log.error("could not release the lease of %s: %s", verified.grant.grant_id, exc)

    def _verify_scoped(
        self, envelope: bytes, input: ExecuteActivityInput, info: activity.Info, args_digest: Digest
    ) -> VerifiedGrant:
        """A call under a scope: the scope, its constraints and the policy itself.

        Returns the call's own grant (the scope's terms, bound to this call
        and the local decision), so that the body runs and is recorded exactly
        as under a per-call grant.
        """
        bundle = self._c.bundle
        if bundle is None:
            raise ScopeConstraintError(
                "this worker has no policy bundle to check scoped calls with"
            )
        now = now_utc(self._c.clock)
        vs = verify_scope(
            envelope,
            trust=self._c.trust(),
            at=now,
            namespace=info.namespace,
            workflow_id=info.workflow_id or "",
            run_id=info.workflow_run_id or "",
            activity_type=info.activity_type,
            environment_digest=self._c.environment_digest,
            accepted_policy_digests=self._c.accepted_policy_digests,
        )
        s = vs.scope
        self._check_controls(info.activity_type, s.scope_id)
        prefix = f"{SCOPE_ACTIVITY_ID_PREFIX}{s.scope_id}:"
        if not info.activity_id.startswith(prefix):
            raise ScopeConstraintError(f"a scoped call's activity id starts with {prefix!r}")
        values = [json.loads(p.data) for p in activity.payload_converter().to_payloads(input.args)]
        arguments = policy_arguments(values, _param_names(input.fn))
        # The scope only narrows: the policy decides on this very call too.
        decision = decide_scoped_call(
            bundle, s, info.activity_type, arguments, self._c.environment_claims
        )
        call_grant = Grant(
            grant_id=GrantId(s.scope_id),
            call=CallBinding(
                activity_type=info.activity_type,
                args_digest=args_digest,
                namespace=info.namespace,
                workflow_id=info.workflow_id or "",
                run_id=info.workflow_run_id or "",
                activity_id=info.activity_id,
            ),
            initiator=s.initiator,
            initiator_auth=s.initiator_auth,
            policy_digest=s.policy_digest,
            decision_id=decision.decision_id,
            environment_digest=s.environment_digest,
            # One attempt; the policy's lifetime and heartbeat for this call,
            # which the watchdog enforces as for a per-call grant.
            scope=GrantScope(
                max_attempts=1,
                execute_timeout_seconds=(
                    decision.scope.execute_timeout_seconds if decision.scope else 300
                ),
                heartbeat_seconds=decision.scope.heartbeat_seconds if decision.scope else None,
            ),
            issued_at=s.issued_at,
            not_before=s.not_before,
            expires_at=s.expires_at,
            issuer=s.issuer,
            artifacts=s.artifacts,
        )
        # One use of the scope per call (its activity id), at most max_uses.
        replay = self._c.replay
        replay.claim(
            request_key(
                info.namespace, info.workflow_id or "", info.activity_type, info.activity_id
            ),
            s.scope_id,
        )
        number = info.activity_id.removeprefix(prefix)
        if not (number.isascii() and number.isdigit() and len(number) <= 9):
            raise ScopeConstraintError(f"a scoped call's activity id is {prefix}<number>")
        use = int(number)
        replay.consume(s.scope_id, use, s.max_uses)
        return VerifiedGrant(call_grant, vs.envelope, vs.key)

    async def _run_scoped(
        self,
        input: ExecuteActivityInput,
        info: activity.Info,
        verified: VerifiedGrant,
        record: Callable[..., GateRecord],
    ) -> Any:
        # One use per call, no lease: a scoped call's body runs at most once.
        timeout = verified.grant.scope.execute_timeout_seconds
        return await self._run_body(input, info, verified, record, timeout=timeout)

    async def _run_body(
        self,
        input: ExecuteActivityInput,
        info: activity.Info,
        verified: VerifiedGrant,
        record: Callable[..., GateRecord],
        *,
        timeout: float | None,
    ) -> Any:
        """Run the admitted body and record its outcome (the one path to a body).

        While it runs, a watchdog re-checks the grant at each heartbeat (and
        its lifetime on a timer) and interrupts the body when the grant no
        longer holds: the body sees ``CancelledError``, the gate records an
        ``interrupted`` outcome naming the cause, and the call ends denied.
        """
        # The grant's artifacts, checked from the bytes the body will read
        # (a mismatch is a denial: the body never runs).
        staged = await stage_for_body(verified, record, self._deny)
        # Every check passed: from here on the time is the body's, not the
        # gate's (the evidence records both, so gate latency is measurable).
        admitted_at = self._c.clock()
        grant = verified.grant
        if timeout is not None and verified.lease_until is not None:
            # The lease started when the store ran the admission; its commit
            # and the staging since then came out of it. The body may run
            # only until the lease ends, never the full timeout from now, or
            # a retry could take the expired lease and run beside it. The
            # margin covers the watchdog's tick and the clocks of other
            # workers; with nothing left the body must not start at all (a
            # body cancelled at once has still begun).
            margin = min(_LEASE_MARGIN_SECONDS, _LEASE_MARGIN_SHARE * timeout)
            left = (verified.lease_until - now_utc(self._c.clock)).total_seconds() - margin
            if left <= 0:
                await staged.aclose()
                lapsed = LeaseLapsedError(
                    f"the lease of grant {grant.grant_id} for attempt {info.attempt} ended "
                    f"before its body could start (the single-use store or staging was slow); "
                    "the body did not run and the attempt is retried"
                )
                # The body never started: give its use back, so the retry
                # does not find the grant spent by an attempt that did
                # nothing. If the store cannot answer, the use stays taken
                # (fewer runs, never more) and the attempt is ended as usual.
                try:
                    await asyncio.to_thread(self._c.replay.release, grant.grant_id, info.attempt)
                except AuthorityError as exc:
                    log.error("could not give back the use of grant %s: %s", grant.grant_id, exc)
                await self._deny(
                    record("denied", reason_code=lapsed.code, reason=str(lapsed)), lapsed
                )
                raise AssertionError("unreachable")  # _deny always raises
            timeout = min(timeout, left)
        dog = Watchdog(
            action=info.activity_type,
            grant_id=str(grant.grant_id),
            issuer_key=verified.key.key_id,
            controls=self._c.controls,
            trust=self._c.trust,
            clock=self._c.clock,
            lifetime_seconds=timeout,
            heartbeat_seconds=grant.scope.heartbeat_seconds,
            is_async=inspect.iscoroutinefunction(input.fn),
            recheck_seconds=self._c.controls.refresh_seconds,
        )
        self.watchdog = dog
        try:
            with admitted(input.fn, info), staged.delivered():
                result = await dog.run(super().execute_activity(input))
        except BaseException as exc:
            cause = dog.verdict
            if cause is not None:
                await self._record_quietly(
                    record(
                        "interrupted",
                        grant=verified,
                        admitted_at=admitted_at,
                        reason_code=cause.code,
                        reason=str(cause),
                        artifacts=staged.used(),
                    )
                )
                raise _interrupted(info, cause) from None
            await self._record_quietly(
                record(
                    "failed",
                    grant=verified,
                    admitted_at=admitted_at,
                    reason_code=type(exc).__name__,
                    reason=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    artifacts=staged.used(),
                )
            )
            raise
        finally:
            self.watchdog = None
            dog.stop()
            await staged.aclose()
        cause = dog.verdict
        if cause is not None:
            # The body returned although it was interrupted (it swallowed the
            # cancellation, or a sync body never heartbeat again): its result
            # is not delivered as a success, and the record says what it did.
            await self._record_quietly(
                record(
                    "interrupted",
                    grant=verified,
                    admitted_at=admitted_at,
                    result_digest=_result_digest(result),
                    reason_code=cause.code,
                    reason=f"{cause} (the body returned after it was interrupted)",
                    artifacts=await staged.finish(),
                )
            )
            raise _interrupted(info, cause, returned=True) from None
        # Spend the grant before recording the completion: a worker killed
        # between the two then leaves a closed grant (the retry is refused as
        # an unknown outcome whose result was lost), never a retry that runs
        # the body again after it completed.
        await self._close_quietly(verified)
        await self._end_quietly(verified, info.attempt, completed=True)
        await self._record_quietly(
            record(
                "completed",
                grant=verified,
                admitted_at=admitted_at,
                result_digest=_result_digest(result),
                artifacts=await staged.finish(),
            )
        )
        return result

    def _verify(self, envelope: bytes, expected: ExpectedCall) -> VerifiedGrant:
        trust = self._c.trust()
        # Halts and revocations first: a halted action's grant keeps its uses.
        self._check_controls(expected.activity_type, claimed_grant_id(envelope))
        return verify_grant(
            envelope, trust=trust, expected=expected, clock=self._c.clock, replay=self._c.replay
        )

    def _check_controls(self, action: str, grant_id: str) -> None:
        # Not current().check: a cached view may predate an `ecp resume` that
        # returned before this call came; check confirms a halt first.
        self._c.controls.check(action, grant_id)

    async def _deny(self, rec: GateRecord, exc: AuthorityError) -> None:
        # Raised ``from None``: the message names the reason, and a chained
        # database traceback can exceed Temporal's failure size limit.
        log.warning(
            "gate refused %s (workflow %s, activity %s, attempt %d): %s: %s",
            rec.activity_type,
            rec.workflow_id,
            rec.activity_id,
            rec.attempt,
            rec.reason_code,
            rec.reason,
        )
        try:
            await asyncio.to_thread(self._c.evidence.record, rec)
        except Exception as rec_exc:  # noqa: BLE001 - the denial stands whatever the ledger says
            log.error("could not record denial evidence: %s", rec_exc)
            if not exc.retryable:
                # A denial we could not record: retry so the evidence lands;
                # the body still never runs.
                raise ApplicationError(
                    f"{rec.reason} (and the denial could not be recorded: {rec_exc})",
                    GATE_MARK,
                    type=OUTAGE_TYPE,
                ) from None
        if exc.retryable:
            raise ApplicationError(
                f"governance dependency unavailable, not running {rec.activity_type}: {rec.reason}",
                GATE_MARK,
                type=OUTAGE_TYPE,
            ) from None
        raise to_application_error(
            exc, f"denied {rec.activity_type}: {rec.reason}", GATE_MARK
        ) from None

    async def _unknown(self, rec: GateRecord, exc: OutcomeUnknownError) -> None:
        """Record that an earlier attempt's outcome is unknown, then fail for good.

        Only reached with a grant the verifier established (``exc.verified``),
        so nobody can file an unknown outcome against someone else's grant.
        This attempt's body does not run (at-most-once); the failure is
        non-retryable and names what a person must check.
        """
        log.error(
            "gate: outcome unknown for %s (workflow %s, activity %s, attempt %d): %s",
            rec.activity_type,
            rec.workflow_id,
            rec.activity_id,
            rec.attempt,
            rec.reason,
        )
        try:
            await asyncio.to_thread(self._c.evidence.record, rec)
        except Exception as rec_exc:  # noqa: BLE001 - the refusal stands whatever the ledger says
            log.error("could not record the unknown outcome: %s", rec_exc)
            # Retry so the record lands: the next attempt is refused the same way.
            raise ApplicationError(
                f"{rec.reason} (and this could not be recorded yet: {rec_exc})",
                GATE_MARK,
                type=OUTAGE_TYPE,
            ) from None
        raise to_application_error(
            exc, f"outcome unknown for {rec.activity_type}: {rec.reason}", GATE_MARK
        ) from None

    async def _close_quietly(self, verified: VerifiedGrant) -> None:
        # A completed body spends the grant's remaining uses. Best effort for
        # the same reason as recording: the body has run, never retry it.
        grant = verified.grant
        try:
            await asyncio.to_thread(self._c.replay.close, grant.grant_id, grant.scope.max_attempts)
        except AuthorityError as exc:
            log.error("could not close grant %s after completion: %s", grant.grant_id, exc)

    async def _record_quietly(self, rec: GateRecord) -> None:
        # The body already ran: failing the attempt now would make Temporal
        # run it again. Only this record can prove the outcome (the authority
        # never writes one), so keep trying for a while; if it still cannot
        # be written the outcome stays unproven, and the prove step and the
        # cross-check say so.
        await _record_after_body(self._c.evidence, rec)


#: Seconds of an attempt's lease a body never gets: the watchdog's tick (0.25 s)
#: and the clock difference between workers, so that a retry taking the
#: expired lease never finds the body still running.
_LEASE_MARGIN_SECONDS = 1.0
#: ... but never more than this share of a short lease (a 1 s timeout keeps 0.7 s).
_LEASE_MARGIN_SHARE = 0.3

#: Pauses between attempts to write the record of a body that ran (~15 s in all).
_RECORD_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)


async def _record_after_body(
    sink: EvidenceSink, rec: GateRecord, delays: Sequence[float] = _RECORD_RETRY_DELAYS
) -> bool:
    """Write the evidence of a body that ran, retrying; True once it is written.

    Gives up early only on an ECP error that says retrying cannot help (not
    ``retryable``: the record cannot form valid evidence, or the ledger
    refused this entry's values). Any other exception is a fault nobody
    classified (a driver error the ledger does not map, a bug in a sink): it
    may pass, and giving up on it would lose the only proof of the outcome,
    so it is retried like an outage. Nothing is raised: see ``_record_quietly``.
    """
    last: Exception | None = None
    for attempt, delay in enumerate((*delays, None), start=1):
        try:
            await asyncio.to_thread(sink.record, rec)
            return True
        except Exception as exc:  # whatever it is, a done body is never retried
            last = exc
            final = isinstance(exc, EcpError) and not exc.retryable
            if final or delay is None:
                break
            if not isinstance(exc, EcpError):
                log.warning(
                    "unexpected error recording %s evidence for %s/%s (attempt %d), retrying",
                    rec.outcome,
                    rec.workflow_id,
                    rec.activity_id,
                    attempt,
                    exc_info=exc,
                )
            await asyncio.sleep(delay)
    log.error(
        "could not record %s evidence for %s/%s after %d attempt(s); the outcome is unproven: %s",
        rec.outcome,
        rec.workflow_id,
        rec.activity_id,
        attempt,
        last,
        exc_info=last if not isinstance(last, EcpError) else None,
    )
    return False


def _interrupted(
    info: activity.Info, cause: AuthorityError, *, returned: bool = False
) -> ApplicationError:
    """The failure of a body the watchdog stopped (``returned``: it returned anyway).

    Typed ``ecp.interrupted`` whatever the cause: the body ran, so callers
    must not read it as a denial before execution.
    """
    log.warning(
        "gate interrupted %s (workflow %s): %s", info.activity_type, info.workflow_id, cause
    )
    tail = (
        "; the body returned after the interruption and its result is withheld" if returned else ""
    )
    return to_application_error(
        ExecutionInterruptedError(f"{cause.code}: {cause}"),
        f"interrupted {info.activity_type} ({cause.code}): {cause}{tail}",
        GATE_MARK,
    )


def claimed_grant_id(envelope: bytes) -> str:
    """The grant id an envelope *claims* (unverified; empty if unreadable).

    Only used to refuse early: a revoked id is refused whether or not the
    rest verifies, and anything unreadable is left to :func:`verify_grant`.
    """
    try:
        payload = Envelope.from_json(envelope).payload
        doc = json.loads(payload)
    except (AuthorityError, ValueError):
        return ""
    gid = doc.get("grant_id") if isinstance(doc, dict) else None
    return gid if isinstance(gid, str) else ""


def _param_names(fn: object) -> list[str]:
    try:
        sig = inspect.signature(fn)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values() if p.name != "self"]


def _result_digest(result: object) -> Digest | None:
    try:
        return digest_values([result], activity.payload_converter())
    except CanonicalizationError:
        return None
