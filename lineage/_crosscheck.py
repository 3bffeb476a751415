"""Cross-checking histories against grants and the evidence ledger.

For every governed activity execution in the histories: was a grant present,
does it verify for exactly that call (signature, key, window at the time the
attempt started, binding, environment, attempts), is there a ledger entry for
it, does the entry agree with the history, and does its receipt verify
against a signed checkpoint. Evidence for a workflow that names an execution
the histories do not contain is a violation too (unless it records a denial
before execution).

One kind of such evidence the history does account for: Temporal keeps only
the *last* attempt of an activity, so the gate's record of an earlier attempt
whose body ran (and whose completion never reached Temporal: the worker died
after the record, or the server dropped the report) names an attempt the
history no longer shows. When the record verifies, names the same activity
and grant, and the history shows a later attempt of that very activity, it is
listed as a *note* (:class:`Note`), not a violation; anything short of that
stays ``evidence_without_execution``. A note never hides a body that ran too
often: the gate's signed records that say the body ran under the grant (and
the history's last attempt) are counted against the grant's ``max_attempts``
(``ran_more_than_granted``), and a run after a completed attempt is
``ran_after_completion`` — the single-use store that should prevent both is
unsigned, and a database operator can empty it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import networkx as nx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Row, select
from temporalio.api.enums.v1 import EventType as E
from temporalio.api.history.v1 import HistoryEvent

from ecp._wire import (
    ACTIVITY_PREPARE,
    ACTIVITY_PROVE,
    GOVERNANCE_ACTIVITIES,
    INTERRUPTED_TYPE,
    OUTCOME_UNKNOWN_TYPE,
    SCOPE_ACTIVITY_ID_PREFIX,
    SCOPE_HEADER,
    is_denial_type,
)
from ecp.authority._calldigest import digest_payloads
from ecp.authority._canonical import parse_json_strict
from ecp.authority._clock import FixedClock
from ecp.authority._dsse import Envelope, verify_envelope
from ecp.authority._replay import InMemoryReplayGuard
from ecp.authority._scope import verify_scope
from ecp.authority._truststore import KeyRole, TrustStore
from ecp.authority._verify import ExpectedCall, verify_grant
from ecp.authority.errors import AuthorityError
from ecp.lineage.graph._grant_header import grant_claims, grant_envelope
from ecp.lineage.graph._history import RunHistory
from ecp.lineage.ledger._cosignature import WitnessPolicy
from ecp.lineage.ledger._evidence import (
    INTOTO_PAYLOAD_TYPE,
    Evidence,
    parse_evidence,
    verify_evidence_signature,
)
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger._receipt import Receipt, verify_receipt
from ecp.lineage.ledger._store import ENTRY
from ecp.lineage.ledger.errors import (
    EvidenceError,
    LineageError,
    NoCheckpointError,
    NoteError,
    ProofError,
    ReceiptError,
)

__all__ = [
    "CrossCheckReport",
    "Finding",
    "GovernanceStatus",
    "Note",
    "Violation",
    "annotate_graph",
    "cross_check",
]


class GovernanceStatus:
    """Values of :attr:`Finding.status`."""

    OK = "ok"  # ran (or failed) under a verifying grant, with verifying evidence
    DENIED = "denied"  # refused before the body ran, with evidence of the denial
    #: The gate recorded an unknown outcome (a body may have run, nobody saw
    #: it end): not a violation of governance, but flagged for a person.
    UNKNOWN = "unknown"
    #: Evidence of an earlier attempt the history accounts for (see :class:`Note`).
    NOTED = "noted"
    VIOLATION = "violation"


class Note:
    """Stable codes of findings that are listed but are not violations."""

    #: The gate's record of an earlier attempt whose body ran and whose end
    #: (completed, or interrupted) never reached Temporal: the history shows
    #: a later attempt of the same activity under the same grant.
    RETRIED_AFTER_LOST_COMPLETION = "retried_after_lost_completion"
    #: The gate's record of an earlier attempt whose body failed; Temporal
    #: retried it (the history shows a later attempt, same activity and grant).
    RETRIED_AFTER_FAILURE = "retried_after_failure"
    #: The gate's ``unknown`` record of an earlier attempt whose refusal never
    #: reached Temporal; the history's later attempt ended ``unknown`` too.
    UNKNOWN_REPEATED = "unknown_repeated"
    #: The gate's denial of an earlier attempt (a retryable refusal, or one
    #: whose report never reached Temporal); the history shows a later attempt.
    RETRIED_AFTER_REFUSAL = "retried_after_refusal"


class Violation:
    """Stable codes of what the cross-check can find wrong."""

    UNGRANTED = "ungranted_execution"
    GRANT_INVALID = "grant_invalid"
    EVIDENCE_MISSING = "evidence_missing"
    EVIDENCE_INVALID = "evidence_invalid"
    EVIDENCE_MISMATCH = "evidence_mismatch"
    RECEIPT_INVALID = "receipt_invalid"
    NO_CHECKPOINT = "no_checkpoint"
    EVIDENCE_WITHOUT_EXECUTION = "evidence_without_execution"
    #: A prove step reported a receipt or an outcome the ledger does not hold
    #: (a rogue poller answered it, or its record was never written).
    PROOF_NOT_IN_LOG = "proof_not_in_log"
    #: The gate's records and the history show a body ran under one grant
    #: more often than its ``max_attempts`` (the unsigned single-use store
    #: was tampered with, or failed), or under a grant whose limit is unreadable.
    RAN_MORE_THAN_GRANTED = "ran_more_than_granted"
    #: A body ran again after an attempt of it completed under the same grant
    #: (a completed body closes its grant).
    RAN_AFTER_COMPLETION = "ran_after_completion"
    #: The receipt's checkpoint lacks the cosignatures the caller's witness
    #: policy requires (unwitnessed, or a fork no honest witness cosigned).
    UNWITNESSED = "checkpoint_unwitnessed"


@dataclass(frozen=True, slots=True)
class Finding:
    """What the cross-check established about one governed execution.

    Attributes:
        node: The graph node id (``activity:...``), or ``ledger:<i>`` for
            evidence that names no execution in the histories.
        workflow_id, run_id, activity_id, activity_type: The execution.
        outcome: ``completed``, ``failed``, ``interrupted``, ``unknown``, ``denied``
            or ``not_started``.
        grant: ``verified``, ``missing``, ``n/a`` or the verifier's error code.
        grant_id: The grant's id (from the header, or the evidence).
        evidence: ``verified``, ``missing`` or what is wrong with it.
        ledger_index: The entry's index, or -1.
        status: One of :class:`GovernanceStatus`.
        violations: Codes from :class:`Violation`, with detail after a colon.
        notes: Codes from :class:`Note`, with detail after a colon (never violations).
    """

    node: str
    workflow_id: str
    run_id: str
    activity_id: str
    activity_type: str
    outcome: str
    grant: str
    grant_id: str
    evidence: str
    ledger_index: int
    status: str
    violations: tuple[str, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CrossCheckReport:
    """All findings; :attr:`ok` is false if any is a violation."""

    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        """No violation was found."""
        return all(f.status != GovernanceStatus.VIOLATION for f in self.findings)

    @property
    def violations(self) -> tuple[Finding, ...]:
        """The findings that are violations."""
        return tuple(f for f in self.findings if f.status == GovernanceStatus.VIOLATION)


@dataclass
class _Execution:
    namespace: str
    workflow_id: str
    run_id: str
    scheduled: HistoryEvent
    attempt: int = 0
    started_at: datetime | None = None
    outcome: str = "not_started"
    environment_digest: str = ""


def _executions(h: RunHistory) -> tuple[list[_Execution], str]:
    by_sched: dict[int, _Execution] = {}
    env = ""
    for e in h.events:
        t = e.event_type
        if t == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            by_sched[e.event_id] = _Execution(h.namespace, h.workflow_id, h.run_id, e)
        elif t == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            a = e.activity_task_started_event_attributes
            x = by_sched[a.scheduled_event_id]
            x.attempt, x.started_at = a.attempt, e.event_time.ToDatetime(UTC)
        elif t == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            x = by_sched[e.activity_task_completed_event_attributes.scheduled_event_id]
            x.outcome = "completed"
            sched = x.scheduled.activity_task_scheduled_event_attributes
            if sched.activity_type.name == ACTIVITY_PREPARE:
                env = _attested_digest(e) or env
        elif t == E.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            f = e.activity_task_failed_event_attributes
            ftype = f.failure.application_failure_info.type
            by_sched[f.scheduled_event_id].outcome = (
                "interrupted"
                if ftype == INTERRUPTED_TYPE
                else "unknown"
                if ftype == OUTCOME_UNKNOWN_TYPE
                else "denied"
                if is_denial_type(ftype)
                else "failed"
            )
        elif t in (E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT, E.EVENT_TYPE_ACTIVITY_TASK_CANCELED):
            x = by_sched[
                e.activity_task_timed_out_event_attributes.scheduled_event_id
                if t == E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT
                else e.activity_task_canceled_event_attributes.scheduled_event_id
            ]
            x.outcome = "failed" if x.attempt else "not_started"
    for x in by_sched.values():
        x.environment_digest = env
    return list(by_sched.values()), env


def _attested_digest(e: HistoryEvent) -> str:
    import json

    payloads = e.activity_task_completed_event_attributes.result.payloads
    try:
        v = json.loads(payloads[0].data) if payloads else None
    except ValueError:
        return ""
    d = v.get("environment_digest") if isinstance(v, dict) else None
    return d if isinstance(d, str) else ""


@dataclass(frozen=True, slots=True)
class _Context:
    ledger: Ledger
    trust: TrustStore
    log_key: Ed25519PublicKey
    origin: str | None
    witnesses: WitnessPolicy | None = None

    def check_witnesses(self, note: str, problems: list[str]) -> None:
        """Add a violation when the checkpoint lacks the required cosignatures."""
        if self.witnesses is None:
            return
        try:
            self.witnesses.check(note)
        except LineageError as exc:
            problems.append(f"{Violation.UNWITNESSED}: {exc}")


def _is_governed(x: _Execution, governed_types: frozenset[str], ledger: Ledger) -> bool:
    a = x.scheduled.activity_task_scheduled_event_attributes
    if a.activity_type.name in GOVERNANCE_ACTIVITIES:
        return False
    if (
        grant_envelope(a.header) is not None
        or a.activity_id.startswith("execute:")
        or a.activity_id.startswith(SCOPE_ACTIVITY_ID_PREFIX)
        or a.activity_type.name in governed_types
        or x.outcome == "denied"
    ):
        return True
    return ledger.find_activity(x.namespace, x.workflow_id, x.run_id, a.activity_id) is not None


def _check_grant(x: _Execution, envelope: bytes, ctx: _Context) -> str:
    a = x.scheduled.activity_task_scheduled_event_attributes
    claims = grant_claims(envelope) or {}
    env = x.environment_digest or str(claims.get("environment_digest", ""))
    assert x.started_at is not None
    try:
        # History holds whatever input the workflow sent: one that cannot be
        # digested cannot be checked against any grant.
        args_digest = digest_payloads(list(a.input.payloads))
    except AuthorityError as exc:
        return f"unverifiable: {exc.code}: {exc}"
    expected = ExpectedCall(
        activity_type=a.activity_type.name,
        args_digest=args_digest,
        namespace=x.namespace,
        workflow_id=x.workflow_id,
        run_id=x.run_id,
        activity_id=a.activity_id,
        environment_digest=env,
        attempt=x.attempt,
    )
    try:
        # A fresh replay guard: the gate burnt the grant when it ran; here we
        # only ask whether that one use was legitimate.
        verify_grant(
            envelope,
            trust=ctx.trust,
            expected=expected,
            clock=FixedClock(x.started_at),
            replay=InMemoryReplayGuard(),
        )
    except AuthorityError as exc:
        return f"{exc.code}: {exc}"
    return "verified"


def _check_scope(x: _Execution, envelope: bytes, ctx: _Context) -> tuple[str, str]:
    """A call under a scope: the scope grant verifies for this execution and action.

    The gate also checked the call's arguments against the scope and the
    policy; its record (the evidence) names the decision it made.
    """
    a = x.scheduled.activity_task_scheduled_event_attributes
    if x.started_at is None:
        return "n/a", ""
    try:
        claims = parse_json_strict(Envelope.from_json(envelope).payload)
        env = x.environment_digest or str(
            claims.get("environment_digest", "") if isinstance(claims, dict) else ""
        )
        vs = verify_scope(
            envelope,
            trust=ctx.trust,
            at=x.started_at,
            namespace=x.namespace,
            workflow_id=x.workflow_id,
            run_id=x.run_id,
            activity_type=a.activity_type.name,
            environment_digest=env,
            accepted_policy_digests=None,
        )
    except AuthorityError as exc:
        return f"{exc.code}: {exc}", ""
    return "verified", vs.scope.scope_id


def _check_evidence(x: _Execution, grant_id: str, ctx: _Context) -> tuple[str, int, list[str]]:
    a = x.scheduled.activity_task_scheduled_event_attributes
    idx = ctx.ledger.find_activity(x.namespace, x.workflow_id, x.run_id, a.activity_id)
    if idx is None:
        return "missing", -1, [Violation.EVIDENCE_MISSING]
    problems: list[str] = []
    try:
        entry = ctx.ledger.entry(idx)
        ev = parse_evidence(entry.envelope)
        verify_evidence_signature(ev, ctx.trust, datetime.now(UTC))
    except (EvidenceError, AuthorityError) as exc:
        return f"invalid: {exc}", idx, [f"{Violation.EVIDENCE_INVALID}: {exc}"]
    p = ev.predicate
    if p.outcome.status.value != x.outcome:
        problems.append(
            f"{Violation.EVIDENCE_MISMATCH}: ledger says {p.outcome.status.value}, "
            f"history says {x.outcome}"
        )
    if grant_id and p.grant_id and p.grant_id != grant_id:
        problems.append(
            f"{Violation.EVIDENCE_MISMATCH}: ledger names grant {p.grant_id}, "
            f"the call carried {grant_id}"
        )
    try:
        receipt = ctx.ledger.receipt(idx)
        verify_receipt(receipt, ctx.log_key, origin=ctx.origin)
        ctx.check_witnesses(receipt.checkpoint_note, problems)
    except NoCheckpointError as exc:
        problems.append(f"{Violation.NO_CHECKPOINT}: {exc}")
    except (ReceiptError, ProofError, NoteError) as exc:
        problems.append(f"{Violation.RECEIPT_INVALID}: {exc}")
    return ("verified" if not problems else "; ".join(problems)), idx, problems


def _finding(x: _Execution, ctx: _Context) -> Finding:
    a = x.scheduled.activity_task_scheduled_event_attributes
    envelope = grant_envelope(a.header)
    claims = grant_claims(envelope) if envelope is not None else None
    grant_id = str(claims.get("grant_id", "")) if claims else ""
    violations: list[str] = []
    # Unknown: this attempt was refused, but an earlier one under the same
    # grant may have run the body, so the grant must hold as for a run.
    body_ran = x.outcome in ("completed", "failed", "interrupted", "unknown")
    scoped = a.header.fields.get(SCOPE_HEADER)
    if envelope is None and scoped is not None:
        grant, grant_id = _check_scope(x, bytes(scoped.data), ctx)
        if grant != "verified" and body_ran:
            violations.append(f"{Violation.GRANT_INVALID}: {grant}")
    elif envelope is None:
        grant = "missing"
        if body_ran:
            violations.append(f"{Violation.UNGRANTED}: ran without a grant header")
    elif x.started_at is None:
        grant = "n/a"
    else:
        grant = _check_grant(x, envelope, ctx)
        if grant != "verified" and body_ran:
            violations.append(f"{Violation.GRANT_INVALID}: {grant}")
    evidence, idx, problems = (
        ("n/a", -1, []) if x.outcome == "not_started" else _check_evidence(x, grant_id, ctx)
    )
    violations.extend(problems)
    status = (
        GovernanceStatus.VIOLATION
        if violations
        else GovernanceStatus.DENIED
        if x.outcome in ("denied", "not_started")
        else GovernanceStatus.UNKNOWN
        if x.outcome == "unknown"
        else GovernanceStatus.OK
    )
    return Finding(
        node=f"activity:{x.workflow_id}/{x.run_id}/{x.scheduled.event_id}",
        workflow_id=x.workflow_id,
        run_id=x.run_id,
        activity_id=a.activity_id,
        activity_type=a.activity_type.name,
        outcome=x.outcome,
        grant=grant,
        grant_id=grant_id,
        evidence=evidence,
        ledger_index=idx,
        status=status,
        violations=tuple(violations),
    )


#: What the gate's records can say about a body: it ran (and how it ended).
_RAN: Final = ("completed", "failed", "interrupted")


@dataclass(frozen=True, slots=True)
class _LastAttempt:
    """The history's last attempt of one activity, and the grant its header carried."""

    attempt: int
    activity_type: str
    grant_id: str
    outcome: str
    #: The grant's ``scope.max_attempts`` (read, not verified: the finding of
    #: the execution itself says whether the grant verifies); ``None`` when
    #: the header has no readable grant.
    max_attempts: int | None


#: (namespace, workflow id, run id, activity id) -> the history's last attempt.
_LastAttempts = dict[tuple[str, str, str, str], _LastAttempt]
#: (namespace, workflow id, run id, activity id, grant id) -> (attempt, entry,
#: status) of each verified gate record saying the body ran under that grant,
#: keyed by the record's *signed* identity.
_RanRecords = dict[tuple[str, str, str, str, str], list[tuple[int, int, str]]]


def _max_attempts(claims: dict[str, object] | None) -> int | None:
    scope = claims.get("scope") if claims else None
    n = scope.get("max_attempts") if isinstance(scope, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else None


def _last_attempts(executions: Iterable[_Execution]) -> _LastAttempts:
    out: _LastAttempts = {}
    for x in executions:
        a = x.scheduled.activity_task_scheduled_event_attributes
        envelope = grant_envelope(a.header)
        claims = grant_claims(envelope) if envelope is not None else None
        grant_id = str(claims.get("grant_id", "")) if claims else ""
        key = (x.namespace, x.workflow_id, x.run_id, a.activity_id)
        seen = out.get(key)
        if seen is None or x.attempt > seen.attempt:
            out[key] = _LastAttempt(
                x.attempt, a.activity_type.name, grant_id, x.outcome, _max_attempts(claims)
            )
    return out


def _signed_by_worker(ev: Evidence, ctx: _Context) -> bool:
    """The gate (a worker key) signed this record; a recorder's denial is not the gate's."""
    try:
        verify_envelope(
            ev.envelope,
            payload_type=INTOTO_PAYLOAD_TYPE,
            trust=ctx.trust,
            role=KeyRole.WORKER,
            at=datetime.now(UTC),
        )
    except (EvidenceError, AuthorityError):
        return False
    return True


def _ran_records(records: Iterable[tuple[int, Evidence]], ctx: _Context) -> _RanRecords:
    """Every record a worker signed saying a body ran, by its signed identity and grant."""
    out: _RanRecords = {}
    for seq, ev in records:
        p = ev.predicate
        status = p.outcome.status.value
        if status not in _RAN or not p.grant_id or not _signed_by_worker(ev, ctx):
            continue
        a = p.activity
        key = (a.namespace, a.workflow_id, a.run_id, a.activity_id, p.grant_id)
        out.setdefault(key, []).append((a.attempt, seq, status))
    return out


def _overrun(ev: Evidence, seen: _LastAttempt, ran: _RanRecords) -> str | None:
    """A violation if the body ran more often than the grant allows, or after it completed.

    The records counted are those the gate signed that say the body ran
    (completed, failed, interrupted) under this grant for this activity,
    plus the history's last attempt if it ran and has no such record. The
    single-use store is not signed: a DB operator who deletes a grant's rows
    lets the gate run the body again, and only this count shows it. A
    completed body closes its grant, so any later attempt that ran is one
    too many (a later ``unknown`` is the gate's refusal, not a run).
    """
    p = ev.predicate
    a = p.activity
    assert p.grant_id is not None
    runs = list(ran.get((a.namespace, a.workflow_id, a.run_id, a.activity_id, p.grant_id), []))
    if seen.outcome in _RAN and all(att != seen.attempt for att, _, _ in runs):
        runs.append((seen.attempt, -1, seen.outcome))
    if seen.max_attempts is None or len(runs) > seen.max_attempts:
        allowed = "an unreadable number of" if seen.max_attempts is None else seen.max_attempts
        return (
            f"{Violation.RAN_MORE_THAN_GRANTED}: grant {p.grant_id} allows {allowed} "
            f"attempt(s); the gate's records and the history show the body of "
            f"{a.activity_id} ran {len(runs)} time(s) (attempts "
            f"{', '.join(str(att) for att, _, _ in sorted(runs))})"
        )
    if p.outcome.status.value == "completed":
        later = sorted(att for att, _, _ in runs if att > a.attempt)
        if later:
            return (
                f"{Violation.RAN_AFTER_COMPLETION}: attempt {a.attempt} of {a.activity_id} "
                f"completed, and the body ran again in attempt(s) "
                f"{', '.join(map(str, later))}"
            )
    return None


def _earlier_attempt(
    ns: str, wf: str, r: Row[Any, Any, Any], ev: Evidence, last: _LastAttempts, ctx: _Context
) -> str | None:
    """The note for an entry of an earlier attempt the history accounts for, if it is one.

    All of: the record's signed identity is the entry's (namespace, workflow,
    run, activity); it is signed by a worker key (the gate's own record: a
    recorder's denial never explains an attempt); the history shows a
    *later* attempt of the same activity id and activity type; the record
    names the grant that execution carried (a denial may name none: the
    gate names a grant only once it verified); and the record says the body
    ran (completed, failed, interrupted), or is the gate's denial of that
    attempt, or its ``unknown`` refusal when the later attempt ended
    ``unknown`` as well. Otherwise ``None``, and the entry stays a violation.
    (Whether the body ran more often than the grant allows is
    :func:`_overrun`'s question.)
    """
    p = ev.predicate
    status = p.outcome.status.value
    if status not in (*_RAN, "unknown", "denied"):
        return None
    a = p.activity
    if (a.namespace, a.workflow_id, a.run_id, a.activity_id) != (
        ns,
        wf,
        str(r.run_id),
        str(r.activity_id),
    ):
        return None  # the lookup columns are not signed
    seen = last.get((ns, wf, str(r.run_id), str(r.activity_id)))
    if seen is None:
        return None
    grant_id = seen.grant_id
    same_grant = p.grant_id == grant_id if status != "denied" else p.grant_id in (None, grant_id)
    if (
        a.activity_type != seen.activity_type
        or (not grant_id and status != "denied")
        or not same_grant
        or a.attempt >= seen.attempt
        # Once unknown, every later attempt is refused the same way.
        or (status == "unknown" and seen.outcome != "unknown")
    ):
        return None
    if not _signed_by_worker(ev, ctx):
        return None
    code = {
        "failed": Note.RETRIED_AFTER_FAILURE,
        "unknown": Note.UNKNOWN_REPEATED,
        "denied": Note.RETRIED_AFTER_REFUSAL,
    }.get(status, Note.RETRIED_AFTER_LOST_COMPLETION)
    return (
        f"{code}: entry {r.seq} records attempt {a.attempt} {status}; the history "
        f"shows attempt {seen.attempt} of {r.activity_id} under the same grant (Temporal "
        "keeps only an activity's last attempt)"
    )


def _unmatched_evidence(
    histories: Sequence[RunHistory],
    matched: set[int],
    proven: set[int],
    last: _LastAttempts,
    ctx: _Context,
) -> list[Finding]:
    out: list[Finding] = []
    workflows = {(h.namespace, h.workflow_id) for h in histories}
    runs = {(h.workflow_id, h.run_id) for h in histories}
    for ns, wf in sorted(workflows):
        with ctx.ledger.database.read() as conn:
            rows = conn.execute(
                select(ENTRY.c.seq, ENTRY.c.run_id, ENTRY.c.activity_id)
                .where(ENTRY.c.namespace == ns, ENTRY.c.workflow_id == wf)
                .order_by(ENTRY.c.seq)
            ).all()
        rows = [r for r in rows if (wf, r.run_id) in runs]  # runs not loaded are not ours
        parsed: dict[int, Evidence | LineageError] = {}
        for r in rows:
            try:
                parsed[int(r.seq)] = parse_evidence(ctx.ledger.entry(int(r.seq)).envelope)
            except LineageError as exc:
                parsed[int(r.seq)] = exc  # reported below, in order
        # Counted over every record, the history's matched ones included.
        ran = _ran_records(((seq, e) for seq, e in parsed.items() if isinstance(e, Evidence)), ctx)
        for r in rows:
            if r.seq in matched:
                continue
            ev_or_error = parsed[int(r.seq)]
            if isinstance(ev_or_error, LineageError):
                problem = ev_or_error
                out.append(
                    _orphan(
                        wf,
                        r,
                        "unknown",
                        "",
                        f"invalid: {problem}",
                        [f"{Violation.EVIDENCE_INVALID}: {problem}"],
                    )
                )
                continue
            ev = ev_or_error
            p = ev.predicate
            status = p.outcome.status.value
            note = _earlier_attempt(ns, wf, r, ev, last, ctx)
            overrun = (
                _overrun(ev, last[(ns, wf, str(r.run_id), str(r.activity_id))], ran)
                if note is not None and status in _RAN
                else None
            )
            if status == "denied" and int(r.seq) in proven:
                # A denial before anything was scheduled (policy, deadline),
                # certified by that run's own prove step.
                out.append(_orphan(wf, r, status, p.grant_id or "", "verified", []))
            elif overrun is not None:
                out.append(
                    dataclasses.replace(
                        _orphan(wf, r, status, p.grant_id or "", overrun, [overrun]),
                        activity_type=p.activity.activity_type,
                    )
                )
            elif note is not None:
                out.append(
                    dataclasses.replace(
                        _orphan(wf, r, status, p.grant_id or "", "verified", []),
                        activity_type=p.activity.activity_type,
                        status=GovernanceStatus.NOTED,
                        notes=(note,),
                    )
                )
            elif status == "denied":
                # Nothing in the history asked for this denial: someone wrote
                # it for a run that did not deny anything.
                out.append(
                    _orphan(
                        wf,
                        r,
                        status,
                        p.grant_id or "",
                        "no matching denial",
                        [
                            f"{Violation.EVIDENCE_WITHOUT_EXECUTION}: entry {r.seq} records a "
                            f"denial of {r.activity_id} that no step of the history reports"
                        ],
                    )
                )
            else:
                out.append(
                    _orphan(
                        wf,
                        r,
                        status,
                        p.grant_id or "",
                        "no matching execution",
                        [
                            f"{Violation.EVIDENCE_WITHOUT_EXECUTION}: entry {r.seq} records a "
                            f"{status} execution of {r.activity_id} that the history does not show"
                        ],
                    )
                )
    return out


def _orphan(
    wf: str,
    r: Row[Any, Any, Any],
    outcome: str,
    grant_id: str,
    evidence: str,
    violations: list[str],
) -> Finding:
    seq, run_id, activity_id = r.seq, r.run_id, r.activity_id
    return Finding(
        node=f"ledger:{seq}",
        workflow_id=wf,
        run_id=str(run_id),
        activity_id=str(activity_id),
        activity_type="",
        outcome=outcome,
        grant="n/a",
        grant_id=grant_id,
        evidence=evidence,
        ledger_index=int(seq),
        status=GovernanceStatus.VIOLATION if violations else GovernanceStatus.DENIED,
        violations=tuple(violations),
    )


def cross_check(
    histories: Iterable[RunHistory],
    *,
    ledger: Ledger,
    trust: TrustStore,
    log_key: Ed25519PublicKey,
    origin: str | None = None,
    governed_types: Iterable[str] = (),
    witnesses: WitnessPolicy | None = None,
) -> CrossCheckReport:
    """Cross-check every governed activity execution against its grant and evidence.

    An execution is governed if it carried a grant header, has an
    ``execute:`` activity id, was denied by a gate, has one of
    ``governed_types``, or has evidence in the ledger.

    Args:
        histories: The runs to check.
        ledger: The evidence ledger.
        trust: The trust store (authority keys for grants, worker keys for evidence).
        log_key: The log's public key, for receipts.
        origin: The log origin receipts must name.
        governed_types: Activity types known to be governed.
        witnesses: Trusted witnesses and how many must have cosigned each
            receipt's checkpoint; fewer is a ``checkpoint_unwitnessed`` violation.

    Raises:
        LedgerUnavailableError: the ledger cannot be read.
    """
    runs = list(histories)
    types = frozenset(governed_types)
    ctx = _Context(ledger, trust, log_key, origin, witnesses)
    findings: list[Finding] = []
    governed: list[_Execution] = []
    for h in runs:
        executions, _ = _executions(h)
        for x in executions:
            if _is_governed(x, types, ledger):
                governed.append(x)
                findings.append(_finding(x, ctx))
    matched = {f.ledger_index for f in findings if f.ledger_index >= 0}
    # What each prove step told the workflow must be what the log holds.
    proofs = [p for h in runs for p in _prove_findings(h, ctx)]
    proven = {p.ledger_index for p in proofs if p.ledger_index >= 0}
    findings.extend(_unmatched_evidence(runs, matched, proven, _last_attempts(governed), ctx))
    findings.extend(proofs)
    return CrossCheckReport(tuple(findings))


def _payload_json(payloads: Sequence[object]) -> object:
    data = getattr(payloads[0], "data", b"") if payloads else b""
    try:
        return parse_json_strict(data)
    except AuthorityError:
        return None


def _prove_findings(h: RunHistory, ctx: _Context) -> list[Finding]:
    """Check every ``ecp.prove`` step of a run against the ledger.

    The step's input names the execute activity and the outcome the workflow
    will report; its result is the receipt the workflow hands on. Both must be
    what the log holds: a record for that activity with that outcome, and a
    receipt that verifies with the log key and is that very entry. A rogue
    poller on the authority queue can answer a prove step, but not make it
    pass this check.
    """
    scheduled: dict[int, HistoryEvent] = {}
    out: list[Finding] = []
    for e in h.events:
        t = e.event_type
        if t == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            a = e.activity_task_scheduled_event_attributes
            if a.activity_type.name == ACTIVITY_PROVE:
                scheduled[e.event_id] = e
        elif t == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            c = e.activity_task_completed_event_attributes
            sched = scheduled.get(c.scheduled_event_id)
            if sched is not None:
                out.append(_prove_finding(h, sched, c.result.payloads, ctx))
    return out


def _prove_finding(
    h: RunHistory, sched: HistoryEvent, result: Sequence[object], ctx: _Context
) -> Finding:
    a = sched.activity_task_scheduled_event_attributes
    claim = _payload_json(list(a.input.payloads))
    got = _payload_json(result)
    claim = claim if isinstance(claim, dict) else {}
    got = got if isinstance(got, dict) else {}
    activity_id = str(claim.get("activity_id", ""))
    outcome = str(claim.get("outcome", ""))
    problems: list[str] = []
    idx = ctx.ledger.find_activity(h.namespace, h.workflow_id, h.run_id, activity_id)
    recorded = ""
    if idx is None:
        problems.append(
            f"{Violation.PROOF_NOT_IN_LOG}: the prove step reported {outcome or 'an outcome'} "
            f"for {activity_id or '?'}, the ledger has no record of it"
        )
    else:
        try:
            recorded = parse_evidence(ctx.ledger.entry(idx).envelope).predicate.outcome.status
        except LineageError as exc:
            problems.append(f"{Violation.EVIDENCE_INVALID}: {exc}")
        if recorded and recorded != outcome:
            problems.append(
                f"{Violation.EVIDENCE_MISMATCH}: the prove step reported {outcome}, "
                f"the ledger says {recorded}"
            )
    receipt = got.get("receipt")
    if isinstance(receipt, str) and receipt:
        try:
            v = verify_receipt(receipt, ctx.log_key, origin=ctx.origin)
            ctx.check_witnesses(Receipt.from_json(receipt).checkpoint_note, problems)
            if idx is None or v.log_index != idx:
                problems.append(
                    f"{Violation.PROOF_NOT_IN_LOG}: the receipt names entry {v.log_index}, "
                    f"the ledger's record is {idx}"
                )
        except LineageError as exc:
            problems.append(f"{Violation.RECEIPT_INVALID}: {type(exc).__name__}: {exc}")
    elif idx is not None:
        problems.append(f"{Violation.RECEIPT_INVALID}: the prove step returned no receipt")
    return Finding(
        node=f"activity:{h.workflow_id}/{h.run_id}/{sched.event_id}",
        workflow_id=h.workflow_id,
        run_id=h.run_id,
        activity_id=activity_id,
        activity_type=ACTIVITY_PROVE,
        outcome=outcome or "unknown",
        grant="n/a",
        grant_id=str(claim.get("grant_id", "")),
        evidence="verified" if not problems else "; ".join(problems),
        ledger_index=-1 if idx is None else idx,
        status=GovernanceStatus.VIOLATION if problems else GovernanceStatus.OK,
        violations=tuple(problems),
    )


def annotate_graph(g: nx.DiGraph, report: CrossCheckReport) -> None:
    """Write each finding onto its graph node.

    Attributes ``governance``, ``governance_grant``, ``governance_evidence``,
    ``governance_violations``; a ``ledger_entry`` node is added for evidence
    that names no execution.
    """
    for f in report.findings:
        if f.node not in g:
            g.add_node(
                f.node,
                kind="ledger_entry",
                label=f"ledger entry #{f.ledger_index}",
                index=f.ledger_index,
                workflow_id=f.workflow_id,
                run_id=f.run_id,
                activity_id=f.activity_id,
                outcome=f.outcome,
            )
        g.nodes[f.node].update(
            governance=f.status,
            governance_grant=f.grant,
            governance_evidence=f.evidence,
            governance_violations="\n".join(f.violations),
        )
        ledger = f"ledger:{f.ledger_index}"
        if f.ledger_index >= 0 and ledger in g and ledger != f.node:
            g.nodes[ledger]["governance"] = f.status
