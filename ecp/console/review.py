"""Outcomes a person must review: governed actions whose outcome is unknown.

The gate records ``unknown`` when every use of a grant was taken by attempts
whose worker died after the body was let in (``ecp.outcome_unknown``): the
body may have had its side effect and nobody saw how it ended. ECP never runs
it again; the console lists each one, with what to check, until a person
acknowledges it (``ecp review ack``, signed with an approver key).

Nothing listed is taken on the database's word: the outcomes come from the
review index (:mod:`ecp.console.review_index`, a resumable scan, so an old
outcome never drops off), and each one is re-read from the ledger and listed
only if it lies below the ledger's head and a worker key signed it. What the
gate recorded for *earlier* attempts is found by the ledger's lookup columns
(unsigned) and kept only if that record's own signed identity (namespace,
workflow, run, activity) and grant are the unknown record's, and a worker key
signed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import select

from ecp.authority._dsse import verify_envelope
from ecp.authority._truststore import KeyRole, TrustStore
from ecp.authority.errors import AuthorityError
from ecp.console.health import HealthItem, Status
from ecp.console.review_index import (
    REVIEW_SCAN_BUDGET,
    Acknowledgement,
    ReviewIndex,
    ReviewIndexUnavailableError,
    verified_unknown,
)
from ecp.lineage.ledger._evidence import INTOTO_PAYLOAD_TYPE, Evidence, parse_evidence
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger._store import ENTRY
from ecp.lineage.ledger.errors import LineageError

__all__ = ["ReviewList", "UnknownOutcome", "check_unknown_outcomes", "unknown_outcomes"]

#: How many unknown outcomes the health item lists by name.
_LISTED: Final = 20


@dataclass(frozen=True, slots=True)
class UnknownOutcome:
    """One governed action whose outcome is unknown, as the gate recorded it."""

    ledger_index: int
    workflow_id: str
    run_id: str
    activity_type: str
    activity_id: str
    attempt: int
    grant_id: str
    initiator: str
    reason: str
    recorded_at: datetime
    #: What the gate recorded for earlier attempts of the same execution,
    #: as ``(attempt, status)``: a ``completed`` one means the body finished
    #: and only the report to Temporal was lost (empty: nothing recorded).
    earlier: tuple[tuple[int, str], ...] = ()
    #: The record's evidence id (what an acknowledgement must name).
    evidence_id: str = ""

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "ledgerIndex": self.ledger_index,
            "workflowId": self.workflow_id,
            "runId": self.run_id,
            "activityType": self.activity_type,
            "activityId": self.activity_id,
            "refusedAttempt": self.attempt,
            "grantId": self.grant_id,
            "initiator": self.initiator,
            "reason": self.reason,
            "recordedAt": self.recorded_at.isoformat(),
            "earlierRecords": [{"attempt": a, "status": s} for a, s in self.earlier],
            "evidenceId": self.evidence_id,
        }


@dataclass(frozen=True, slots=True)
class ReviewList:
    """What the review list holds after one scan."""

    #: Unacknowledged unknown outcomes, newest first.
    pending: list[UnknownOutcome]
    #: Acknowledged ones, newest first, with who acknowledged them.
    acknowledged: list[tuple[UnknownOutcome, Acknowledgement]]
    #: The scan has read every entry below the ledger's head.
    complete: bool
    #: Entries below the head the scan has not read yet.
    unread: int


def _signed_by_gate(ev: Evidence, trust: TrustStore) -> bool:
    """A worker key signed it (a denial by the recorder is not the gate's record)."""
    try:
        at = datetime.fromisoformat(ev.predicate.finished_at.replace("Z", "+00:00"))
        verify_envelope(
            ev.envelope, payload_type=INTOTO_PAYLOAD_TYPE, trust=trust, role=KeyRole.WORKER, at=at
        )
    except (AuthorityError, ValueError):
        return False
    return True


def _outcome(ledger: Ledger, trust: TrustStore, seq: int, size: int) -> UnknownOutcome | None:
    """The listed form of entry ``seq``, or ``None`` if it is not a verified unknown record."""
    if seq >= size:
        return None  # beyond the head: in no tree, no receipt
    try:
        entry = ledger.entry(seq)
        ev = parse_evidence(entry.leaf)
    except LineageError:
        return None
    if not verified_unknown(ev, trust):
        return None
    p = ev.predicate
    a = p.activity
    at = entry.recorded_at if entry.recorded_at.tzinfo else entry.recorded_at.replace(tzinfo=UTC)
    with ledger.database.read() as conn:
        before = conn.execute(
            select(ENTRY.c.envelope)
            .where(
                ENTRY.c.namespace == a.namespace,
                ENTRY.c.workflow_id == a.workflow_id,
                ENTRY.c.run_id == a.run_id,
                ENTRY.c.activity_id == a.activity_id,
                ENTRY.c.seq < seq,
            )
            .order_by(ENTRY.c.seq)
        ).all()
    earlier: list[tuple[int, str]] = []
    for b in before:
        try:
            e = parse_evidence(bytes(b.envelope))
        except LineageError:
            continue
        q = e.predicate.activity
        if (
            (q.namespace, q.workflow_id, q.run_id, q.activity_id)
            != (a.namespace, a.workflow_id, a.run_id, a.activity_id)
            or e.predicate.grant_id != p.grant_id
            or not _signed_by_gate(e, trust)
        ):
            continue  # the lookup columns are not signed: another run's record, relabelled
        earlier.append((q.attempt, e.predicate.outcome.status.value))
    return UnknownOutcome(
        ledger_index=seq,
        workflow_id=a.workflow_id,
        run_id=a.run_id,
        activity_type=a.activity_type,
        activity_id=a.activity_id,
        attempt=a.attempt,
        grant_id=p.grant_id or "",
        initiator=p.initiator or "",
        reason=p.outcome.reason or "",
        recorded_at=at,
        earlier=tuple(earlier),
        evidence_id=ev.evidence_id,
    )


def unknown_outcomes(
    ledger: Ledger,
    trust: TrustStore,
    index: ReviewIndex,
    *,
    budget: int = REVIEW_SCAN_BUDGET,
) -> ReviewList:
    """Scan on from where the last scan stopped, then list every indexed unknown outcome.

    Raises:
        LineageError: the ledger cannot be read.
        ReviewIndexUnavailableError: the index cannot be used.
    """
    state = index.scan(ledger, trust, budget=budget)
    pending: list[UnknownOutcome] = []
    done: list[tuple[UnknownOutcome, Acknowledgement]] = []
    for row in index.outcomes(trust):
        u = _outcome(ledger, trust, row.ledger_index, state.size)
        if u is None:
            continue
        if row.acknowledged is None or row.evidence_id != u.evidence_id:
            # (An index row naming another record than the ledger holds at
            # that index: its acknowledgement is not this record's.)
            pending.append(u)
        else:
            done.append((u, row.acknowledged))
    return ReviewList(pending, done, state.complete, max(0, state.size - state.next_index))


def check_unknown_outcomes(
    ledger: Ledger | None, trust: TrustStore | None, index: ReviewIndex | None
) -> HealthItem:
    """Amber while an unknown outcome is unacknowledged, or the scan has not read everything.

    Not red: nothing is down and nothing ran twice; but a side effect may
    have happened that no record confirms, and only a person can check it.
    Never green on a partial scan: an outcome may be among the unread entries.
    """
    name = "outcomes to review"
    if ledger is None or index is None:
        return HealthItem(name, Status.AMBER, "Unknown: the ledger is not open.")
    if trust is None:
        return HealthItem(name, Status.AMBER, "Unknown: the trust store cannot be read.")
    try:
        found = unknown_outcomes(ledger, trust, index)
    except (LineageError, ReviewIndexUnavailableError) as exc:
        return HealthItem(name, Status.AMBER, f"The ledger cannot be read: {exc}.")
    pending = found.pending
    details: dict[str, object] = {
        "total": len(pending),
        "acknowledged": len(found.acknowledged),
        "complete": found.complete,
        "unread": found.unread,
        "outcomes": [u.to_dict() for u in pending[:_LISTED]],
    }
    partial = (
        ""
        if found.complete
        else f" so far ({found.unread} entries not yet scanned; the next check goes on)"
    )
    if not pending and found.complete:
        return HealthItem(name, Status.GREEN, "No unacknowledged unknown outcomes.", details)
    if not pending:
        return HealthItem(name, Status.AMBER, f"No unknown outcomes{partial}.", details)
    names = ", ".join(f"{u.workflow_id} ({u.activity_type})" for u in pending[:3])
    more = f" and {len(pending) - 3} more" if len(pending) > 3 else ""
    return HealthItem(
        name,
        Status.AMBER,
        f"{len(pending)} governed action(s) with an unknown outcome{partial}: {names}{more}. "
        "Their executor died after the body started; check each side effect before "
        "re-running (ECP never retries them), then `ecp review ack`.",
        details,
    )
