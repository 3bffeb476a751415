"""Outcomes a person must review: governed actions whose outcome is unknown.

The gate records ``unknown`` when every use of a grant was taken by attempts
whose worker died after the body was let in (``ecp.outcome_unknown``): the
body may have had its side effect and nobody saw how it ended. ECP never runs
it again; the console lists each one, with what to check, until someone
looks. Nothing here writes: the list is read from the signed ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import select

from ecp.console.health import HealthItem, Status
from ecp.lineage.ledger._evidence import OutcomeStatus, parse_evidence
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger._store import ENTRY
from ecp.lineage.ledger.errors import LineageError

__all__ = ["REVIEW_SCAN_CAP", "UnknownOutcome", "check_unknown_outcomes", "unknown_outcomes"]

#: How many of the newest ledger entries the review list reads.
REVIEW_SCAN_CAP: Final = 5000
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
        }


def unknown_outcomes(
    ledger: Ledger, *, cap: int = REVIEW_SCAN_CAP
) -> tuple[list[UnknownOutcome], bool]:
    """The unknown outcomes among the newest ``cap`` entries, newest first.

    Returns the list and whether the scan read the whole ledger.

    Raises:
        LineageError: the ledger cannot be read.
    """
    found: list[UnknownOutcome] = []
    scanned = 0
    with ledger.database.read() as conn:
        rows = conn.execute(
            select(ENTRY.c.seq, ENTRY.c.envelope, ENTRY.c.recorded_at)
            .order_by(ENTRY.c.seq.desc())
            .limit(cap + 1)
        ).all()
    for row in rows[:cap]:
        scanned += 1
        try:
            ev = parse_evidence(bytes(row.envelope))
        except LineageError:
            continue  # the verification item reports unreadable entries
        p = ev.predicate
        if p.outcome.status is not OutcomeStatus.UNKNOWN:
            continue
        at = row.recorded_at if row.recorded_at.tzinfo else row.recorded_at.replace(tzinfo=UTC)
        with ledger.database.read() as conn:
            before = conn.execute(
                select(ENTRY.c.envelope)
                .where(
                    ENTRY.c.namespace == p.activity.namespace,
                    ENTRY.c.workflow_id == p.activity.workflow_id,
                    ENTRY.c.run_id == p.activity.run_id,
                    ENTRY.c.activity_id == p.activity.activity_id,
                    ENTRY.c.seq < row.seq,
                )
                .order_by(ENTRY.c.seq)
            ).all()
        earlier: list[tuple[int, str]] = []
        for b in before:
            try:
                q = parse_evidence(bytes(b.envelope)).predicate
            except LineageError:
                continue
            earlier.append((q.activity.attempt, q.outcome.status.value))
        found.append(
            UnknownOutcome(
                ledger_index=int(row.seq),
                workflow_id=p.activity.workflow_id,
                run_id=p.activity.run_id,
                activity_type=p.activity.activity_type,
                activity_id=p.activity.activity_id,
                attempt=p.activity.attempt,
                grant_id=p.grant_id or "",
                initiator=p.initiator or "",
                reason=p.outcome.reason or "",
                recorded_at=at,
                earlier=tuple(earlier),
            )
        )
    return found, len(rows) <= cap


def check_unknown_outcomes(ledger: Ledger | None) -> HealthItem:
    """Amber while the ledger holds unknown outcomes: each needs a person.

    Not red: nothing is down and nothing ran twice; but a side effect may
    have happened that no record confirms, and only a person can check it.
    """
    name = "outcomes to review"
    if ledger is None:
        return HealthItem(name, Status.AMBER, "Unknown: the ledger is not open.")
    try:
        found, complete = unknown_outcomes(ledger)
    except LineageError as exc:
        return HealthItem(name, Status.AMBER, f"The ledger cannot be read: {exc}.")
    details: dict[str, object] = {
        "total": len(found),
        "complete": complete,
        "outcomes": [u.to_dict() for u in found[:_LISTED]],
    }
    scope = "" if complete else f" among the newest {REVIEW_SCAN_CAP} entries"
    if not found:
        return HealthItem(name, Status.GREEN, f"No unknown outcomes{scope}.", details)
    names = ", ".join(f"{u.workflow_id} ({u.activity_type})" for u in found[:3])
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    return HealthItem(
        name,
        Status.AMBER,
        f"{len(found)} governed action(s) with an unknown outcome{scope}: {names}{more}. "
        "Their executor died after the body started; check each side effect before "
        "re-running (ECP never retries them).",
        details,
    )
