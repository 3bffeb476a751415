"""The numbers behind the console's charts, over the last hour or day.

Read from what the console already reads: Temporal visibility (ECP's search
attributes), governed histories (approval waits), and the ledger (denials by
reason code, gate latency, growth, checkpoints). Runs that ECP's own workers
do not run (a task queue outside the deployment's), and runs whose claims the
ledger's signed evidence does not back, are left out of the counts and
counted in the chart's note, as the list labels them unverified.

Every read is capped, so a chart costs a bounded amount whatever the traffic;
a chart says when a cap cut its data short.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from statistics import quantiles
from typing import Final

from sqlalchemy import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecution
from temporalio.common import SearchAttributeKey, TypedSearchAttributes
from temporalio.service import RPCError

from ecp._wire import ACTIVITY_EVALUATE, APPROVE_UPDATE
from ecp.console.errors import BadFilterError
from ecp.console.vouch import Claim, Vouch
from ecp.lineage.ledger._evidence import Evidence, OutcomeStatus, parse_evidence
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger._store import ENTRY
from ecp.lineage.ledger.errors import LineageError
from ecp.workflows._search_attributes import (
    SA_ACTION,
    SA_DECISION,
    SA_GRANT_ID,
    SA_INITIATOR,
    SA_OUTCOME,
    SA_POLICY_DIGEST,
)

__all__ = [
    "GOVERNANCE_CHARTS",
    "HEALTH_CHARTS",
    "WINDOWS",
    "Chart",
    "Judge",
    "Series",
    "Window",
    "approval_waits",
    "governed_activity",
    "ledger_charts",
    "window_named",
]


@dataclass(frozen=True, slots=True)
class Window:
    """A chart's time span and the width of one bar."""

    name: str
    label: str
    span: timedelta
    bucket: timedelta

    def edges(self, now: datetime) -> list[datetime]:
        """Bucket start times, oldest first; the last bucket ends at ``now``."""
        n = int(self.span / self.bucket)
        end = _floor(now, self.bucket) + self.bucket
        return [end - self.bucket * (n - i) for i in range(n)]


def _floor(when: datetime, step: timedelta) -> datetime:
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    return epoch + step * ((when - epoch) // step)


WINDOWS: Final = {
    "1h": Window("1h", "last hour", timedelta(hours=1), timedelta(minutes=5)),
    "24h": Window("24h", "last day", timedelta(hours=24), timedelta(hours=1)),
}
GOVERNANCE_CHARTS: Final = ("governed-decisions", "governed-outcomes", "approval-waits")
HEALTH_CHARTS: Final = ("denial-reasons", "attempt-duration", "ledger-size", "checkpoint-age")

#: At most this many executions are read from visibility per chart.
VISIBILITY_CAP: Final = 5000
#: At most this many approval histories are read (the newest).
APPROVAL_CAP: Final = 40
#: At most this many of the newest ledger entries are read.
LEDGER_CAP: Final = 5000


def window_named(name: str) -> Window:
    """The window called ``name`` (``1h`` when empty).

    Raises:
        BadFilterError: no such window.
    """
    w = WINDOWS.get(name or "1h")
    if w is None:
        raise BadFilterError("The chart window is 1h (the last hour) or 24h (the last day).")
    return w


@dataclass(frozen=True, slots=True)
class Series:
    """One named row of values, one per label (None: no data for it)."""

    name: str
    values: tuple[float | None, ...]


@dataclass(frozen=True, slots=True)
class Chart:
    """What one chart draws, and the same numbers for a table or a script.

    ``kind`` is ``stacked`` (bars per interval, series stacked), ``lines``
    (a value per interval per series) or ``categories`` (one bar per label).
    """

    name: str
    title: str
    kind: str
    unit: str
    labels: tuple[str, ...]
    series: tuple[Series, ...]
    window: str
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        """The chart as JSON (what ``/api/charts/<name>`` serves)."""
        return {
            "name": self.name,
            "title": self.title,
            "kind": self.kind,
            "unit": self.unit,
            "window": self.window,
            "labels": list(self.labels),
            "series": [{"name": s.name, "values": list(s.values)} for s in self.series],
            "note": self.note,
        }


def _bucket_labels(w: Window, edges: Sequence[datetime]) -> tuple[str, ...]:
    fmt = "%H:%M" if w.bucket < timedelta(hours=1) else "%d %H:00"
    return tuple(e.strftime(fmt) for e in edges)


def _index(edges: Sequence[datetime], bucket: timedelta, when: datetime) -> int | None:
    if not edges or when < edges[0] or when >= edges[-1] + bucket:
        return None
    return int((when - edges[0]) // bucket)


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: What the ledger says of a batch of runs (:func:`ecp.console.vouch.vouch_for`).
Judge = Callable[[list[Claim]], Awaitable[Mapping[tuple[str, str], Vouch]]]


def _text(attrs: TypedSearchAttributes, key: SearchAttributeKey[str]) -> str:
    value = attrs.get(key)
    return value if isinstance(value, str) else ""


def _claim(wf: WorkflowExecution) -> Claim:
    attrs = wf.typed_search_attributes
    return Claim(
        workflow_id=wf.id,
        run_id=wf.run_id,
        open=wf.close_time is None,
        action=_text(attrs, SA_ACTION),
        decision=_text(attrs, SA_DECISION),
        outcome=_text(attrs, SA_OUTCOME),
        grant_id=_text(attrs, SA_GRANT_ID),
        initiator=_text(attrs, SA_INITIATOR),
        policy_digest=_text(attrs, SA_POLICY_DIGEST),
    )


async def governed_activity(
    client: Client, queues: frozenset[str], w: Window, now: datetime, judge: Judge
) -> tuple[Chart, Chart]:
    """Governed executions started per interval, by decision and by outcome.

    Only runs on ECP's queues whose claims the ledger backs (``judge``:
    verified, or open with nothing to prove yet) are counted; the others are
    left out and counted in the note, as the list labels them unverified.

    Raises:
        RPCError: visibility could not be read.
    """
    edges = w.edges(now)
    query = f'{SA_ACTION.name} IS NOT NULL AND StartTime >= "{_rfc3339(edges[0])}"'
    by_decision: dict[str, list[float | None]] = {}
    by_outcome: dict[str, list[float | None]] = {}
    read = foreign = 0
    capped = False
    own: list[tuple[int, Claim, bool]] = []
    async for wf in client.list_workflows(query, page_size=1000):
        if read >= VISIBILITY_CAP:
            capped = True
            break
        read += 1
        if wf.task_queue not in queues:
            foreign += 1
            continue
        i = _index(edges, w.bucket, wf.start_time)
        if i is None:
            continue
        own.append((i, _claim(wf), wf.close_time is None))
    words = await judge([c for _, c, _ in own]) if own else {}
    unbacked = 0
    for i, c, is_open in own:
        word = words.get((c.workflow_id, c.run_id))
        if word is None or word.state == "unverified":
            unbacked += 1
            continue
        decision = c.decision or "undecided"
        outcome = c.outcome or ("running" if is_open else "none")
        for table, key in ((by_decision, decision), (by_outcome, outcome)):
            row = table.setdefault(key, [0.0] * len(edges))
            row[i] = (row[i] or 0.0) + 1
    notes = []
    if capped:
        notes.append(f"only the newest {VISIBILITY_CAP} executions are counted")
    if foreign:
        notes.append(f"{foreign} unverified execution(s) off ECP's task queues left out")
    if unbacked:
        notes.append(f"{unbacked} unverified execution(s) the ledger does not back left out")
    note = "; ".join(notes)
    labels = _bucket_labels(w, edges)

    def chart(name: str, title: str, table: dict[str, list[float | None]]) -> Chart:
        series = tuple(Series(k, tuple(v)) for k, v in sorted(table.items()))
        return Chart(name, title, "stacked", "executions", labels, series, w.name, note)

    return (
        chart("governed-decisions", "Governed executions started, by decision", by_decision),
        chart("governed-outcomes", "Governed executions started, by outcome", by_outcome),
    )


async def _approval_wait(
    client: Client, workflow_id: str, run_id: str, now: datetime
) -> tuple[float, bool] | None:
    """Seconds from the decision to the last approval (or to now while open), and if open."""
    decided: datetime | None = None
    approved: datetime | None = None
    closed = False
    scheduled: set[int] = set()
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    n = 0
    async for e in handle.fetch_history_events():
        n += 1
        if n > 5000:  # a governed run is a few dozen events
            return None
        when = e.event_time.ToDatetime(tzinfo=UTC)
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if e.activity_task_scheduled_event_attributes.activity_type.name == ACTIVITY_EVALUATE:
                scheduled.add(e.event_id)
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            if e.activity_task_completed_event_attributes.scheduled_event_id in scheduled:
                decided = when
        elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            name = e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
            if name == APPROVE_UPDATE:
                approved = when
        elif e.event_type in (
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
        ):
            closed = True
            if approved is None:
                approved = when  # it ended without every approval: waited until then
    if decided is None:
        return None
    if approved is None and not closed:
        return (now - decided).total_seconds(), True
    end = approved if approved is not None else now
    return max((end - decided).total_seconds(), 0.0), False


async def approval_waits(
    client: Client, queues: frozenset[str], w: Window, now: datetime, judge: Judge
) -> Chart:
    """How long each of the newest executions that needed approval waited for it.

    Only runs on ECP's queues whose claims the ledger backs (``judge``) are drawn.

    Raises:
        RPCError: visibility could not be read.
    """
    since = now - w.span
    query = f"{SA_DECISION.name} = 'allow_after_approval' AND StartTime >= \"{_rfc3339(since)}\""
    listed = []
    async for wf in client.list_workflows(query, page_size=APPROVAL_CAP):
        if wf.task_queue in queues:
            listed.append(wf)
        if len(listed) >= APPROVAL_CAP:
            break
    words = await judge([_claim(wf) for wf in listed]) if listed else {}
    rows = []
    for wf in listed:
        word = words.get((wf.id, wf.run_id))
        if word is not None and word.state != "unverified":
            rows.append(wf)
    unbacked = len(listed) - len(rows)
    sem = asyncio.Semaphore(8)

    async def one(wf_id: str, run_id: str) -> tuple[float, bool] | None:
        async with sem:
            try:
                return await asyncio.wait_for(_approval_wait(client, wf_id, run_id, now), 5.0)
            except (RPCError, TimeoutError):
                return None

    waits = await asyncio.gather(*(one(r.id, r.run_id) for r in rows))
    labels: list[str] = []
    done: list[float | None] = []
    waiting: list[float | None] = []
    for r, wait in zip(rows, waits, strict=True):
        if wait is None:
            continue
        labels.append(r.id)
        done.append(None if wait[1] else round(wait[0], 1))
        waiting.append(round(wait[0], 1) if wait[1] else None)
    finished = sorted(v for v in done if v is not None)
    note = ""
    if len(finished) >= 2:
        q = quantiles(finished, n=20, method="inclusive")
        note = f"approved: p50 {q[9]:.1f} s, p95 {q[18]:.1f} s over {len(finished)}"
    elif finished:
        note = f"approved: {finished[0]:.1f} s (one execution)"
    if unbacked:
        left = f"{unbacked} unverified execution(s) the ledger does not back left out"
        note = f"{note}; {left}" if note else left
    return Chart(
        "approval-waits",
        "Approval waiting time, newest executions that needed approval",
        "categories",
        "s",
        tuple(labels),
        (Series("approved after", tuple(done)), Series("still waiting", tuple(waiting))),
        w.name,
        note,
    )


def _pct(values: list[float], which: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0] * 1000, 1)
    return round(quantiles(values, n=20, method="inclusive")[which] * 1000, 1)


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _parse_time(text: str) -> datetime | None:
    try:
        return _aware(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        return None


def _gate_seconds(ev: Evidence, gate_keys: frozenset[str]) -> float | None:
    """How long the gate took on this attempt, as its signed evidence records it.

    An admitted attempt records when the gate admitted the body
    (``admittedAt``): its checks took ``admittedAt - startedAt``, whatever
    the body did next. A refusal signed by a gate (a worker key) took all of
    ``startedAt..finishedAt``. None for what says nothing of the gate: a
    denial the authority's recorder wrote, or an outcome recorded before
    ``admittedAt`` existed.
    """
    p = ev.predicate
    start = _parse_time(p.started_at)
    if start is None:
        return None
    if p.admitted_at is not None:
        at = _parse_time(p.admitted_at)
        return (at - start).total_seconds() if at is not None and at >= start else None
    signed_by_gate = any(sig.keyid in gate_keys for sig in ev.envelope.signatures)
    if p.outcome.status is OutcomeStatus.DENIED and signed_by_gate:
        end = _parse_time(p.finished_at)
        return (end - start).total_seconds() if end is not None and end >= start else None
    return None


def ledger_charts(
    ledger: Ledger, w: Window, now: datetime, gate_keys: frozenset[str] = frozenset()
) -> dict[str, Chart]:
    """Denials by reason code, gate latency, ledger size and checkpoint age.

    Read from the newest entries (at most :data:`LEDGER_CAP`) and checkpoints.
    ``gate_keys`` are the trust store's worker key ids: a denial one of them
    signed is a gate's refusal, and its duration the gate's.

    Raises:
        LineageError: the ledger cannot be read.
    """
    edges = w.edges(now)
    labels = _bucket_labels(w, edges)
    size = ledger.head().size
    reasons: Counter[str] = Counter()
    durations: list[list[float]] = [[] for _ in edges]
    untimed = 0
    appended = [0] * len(edges)
    scanned = 0
    capped = False
    with ledger.database.read() as conn:
        rows = conn.execute(
            select(ENTRY.c.envelope, ENTRY.c.recorded_at)
            .order_by(ENTRY.c.seq.desc())
            .limit(LEDGER_CAP + 1)
        )
        for row in rows:
            at = _aware(row.recorded_at)
            if at < edges[0]:
                break
            if scanned == LEDGER_CAP:
                capped = True
                break
            scanned += 1
            i = _index(edges, w.bucket, at)
            if i is None:
                continue
            appended[i] += 1
            try:
                ev = parse_evidence(bytes(row.envelope))
            except LineageError:
                continue
            p = ev.predicate
            if p.outcome.status is OutcomeStatus.DENIED:
                reasons[p.outcome.reason_code or "unspecified"] += 1
            took = _gate_seconds(ev, gate_keys)
            if took is not None:
                durations[i].append(took)
            elif p.outcome.status is not OutcomeStatus.DENIED:
                untimed += 1
    note = f"only the newest {LEDGER_CAP} entries are read" if capped else ""
    # Size at the end of each interval: the head minus what came after it.
    sizes: list[float | None] = []
    after = 0
    for i in range(len(edges) - 1, -1, -1):
        sizes.append(float(size - after))
        after += appended[i]
    sizes.reverse()
    checkpoints = ledger.stored_checkpoints(limit=2000)
    ages: list[float | None] = []
    for e in edges:
        end = min(e + w.bucket, now)
        before = [_aware(c.created_at) for c in checkpoints if _aware(c.created_at) <= end]
        ages.append(round((end - max(before)).total_seconds(), 1) if before else None)
    top = reasons.most_common(12)
    return {
        "denial-reasons": Chart(
            "denial-reasons",
            "Denials by reason code, gate and authority",
            "categories",
            "denials",
            tuple(k for k, _ in top),
            (Series("denials", tuple(float(v) for _, v in top)),),
            w.name,
            note,
        ),
        "attempt-duration": Chart(
            "attempt-duration",
            "Gate latency: start of the gate's checks to admission or refusal, p50 and p95",
            "lines",
            "ms",
            labels,
            (
                Series("p50", tuple(_pct(d, 9) for d in durations)),
                Series("p95", tuple(_pct(d, 18) for d in durations)),
            ),
            w.name,
            "; ".join(
                x
                for x in (
                    note,
                    f"{sum(len(d) for d in durations)} attempts timed from the gate's signed "
                    "evidence (admittedAt, or a gate refusal's own span)",
                    f"{untimed} outcome(s) recorded without admittedAt left out" if untimed else "",
                )
                if x
            ),
        ),
        "ledger-size": Chart(
            "ledger-size",
            "Ledger size at the end of each interval",
            "lines",
            "entries",
            labels,
            (Series("entries", tuple(sizes)),),
            w.name,
            note,
        ),
        "checkpoint-age": Chart(
            "checkpoint-age",
            "Age of the newest signed checkpoint at the end of each interval",
            "lines",
            "s",
            labels,
            (Series("age", tuple(ages)),),
            w.name,
            "",
        ),
    }
