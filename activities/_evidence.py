"""Building an evidence predicate from what a governance step knows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from ecp._wire import failure_code
from ecp.lineage.ledger._evidence import (
    ActivityIdentity,
    ArtifactEvidence,
    EvidencePredicate,
    Outcome,
    OutcomeStatus,
    format_time,
)

__all__ = ["predicate_for"]

_MAX_CODE = 64
_MAX_REASON = 500


def _one_line(text: str) -> str:
    # Evidence says why in one clean line: no control characters (tabs,
    # newlines), no padding; exception texts often have both.
    first = (text.strip().splitlines() or [""])[0]
    return " ".join("".join(c if c >= " " else " " for c in first).split())


def predicate_for(
    *,
    namespace: str,
    workflow_id: str,
    run_id: str,
    activity_id: str,
    attempt: int,
    activity_type: str,
    status: OutcomeStatus,
    reason_code: str,
    reason: str,
    decision_id: str | None,
    policy_digest: str | None,
    grant_id: str | None,
    initiator: str | None,
    started_at: datetime,
    finished_at: datetime,
    initiator_auth: str | None = None,
    artifacts: Sequence[Mapping[str, object]] = (),
    admitted_at: datetime | None = None,
) -> EvidencePredicate:
    """The predicate of one evidence statement; empty ids count as unknown.

    Failures and denials carry a short lowercase code and the first line of
    the reason (evidence must say why in one line).

    Raises:
        pydantic.ValidationError: the values cannot form valid evidence.
    """
    if status is OutcomeStatus.COMPLETED:
        outcome = Outcome.model_validate({"status": status})
    else:
        code = (failure_code(reason_code) or reason_code or status.value).lower()[:_MAX_CODE]
        line = _one_line(reason)[:_MAX_REASON].strip() or code
        outcome = Outcome.model_validate({"status": status, "reasonCode": code, "reason": line})
    return EvidencePredicate.model_validate(
        {
            "decisionId": decision_id or None,
            "policyDigest": policy_digest or None,
            "grantId": grant_id or None,
            "initiator": initiator or None,
            "initiatorAuth": initiator_auth or None,
            "activity": ActivityIdentity.model_validate(
                {
                    "namespace": namespace,
                    "workflowId": workflow_id,
                    "runId": run_id,
                    "activityId": activity_id,
                    "attempt": attempt,
                    "activityType": activity_type,
                }
            ),
            "outcome": outcome,
            "startedAt": format_time(started_at),
            "finishedAt": format_time(finished_at),
            "artifacts": [ArtifactEvidence.model_validate(a) for a in artifacts] or None,
            "admittedAt": format_time(admitted_at) if admitted_at is not None else None,
        }
    )
