"""The strings both sides of a governed call must agree on, defined once.

The workflow side, the gate, the authority, the lineage tools and the console
each match on these. They live in a module that imports neither Temporal nor a
database driver, so every side (including the offline lineage tools) can
import them without pulling in the rest.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ACTIVITY_ATTEST",
    "ACTIVITY_AUTHORIZE",
    "ACTIVITY_AUTHORIZE_SCOPE",
    "ACTIVITY_EVALUATE",
    "ACTIVITY_PREPARE",
    "ACTIVITY_PROVE",
    "APPROVE_UPDATE",
    "DECISION_QUERY",
    "EXECUTE_ACTIVITY_ID_PREFIX",
    "FAILURE_TYPE_PREFIX",
    "GATE_MARK",
    "GOVERNANCE_ACTIVITIES",
    "GRANT_HEADER",
    "INTERRUPTED_TYPE",
    "OUTAGE_TYPE",
    "OUTCOME_UNKNOWN_TYPE",
    "SCOPE_ACTIVITY_ID_PREFIX",
    "SCOPE_HEADER",
    "STATUS_QUERY",
    "execute_activity_id",
    "failure_code",
    "failure_type",
    "is_denial_type",
]

#: Temporal activity header that carries the grant envelope (clear text in
#: history: grants hold no secrets).
GRANT_HEADER: Final = "ecp-grant"

ACTIVITY_PREPARE: Final = "ecp.prepare"
ACTIVITY_EVALUATE: Final = "ecp.evaluate"
ACTIVITY_AUTHORIZE: Final = "ecp.authorize"
ACTIVITY_PROVE: Final = "ecp.prove"
#: The governance steps themselves (never governed, never the "execute" step).
GOVERNANCE_ACTIVITIES: Final = (
    "ecp.attest",
    "ecp.authorize_scope",
    ACTIVITY_PREPARE,
    ACTIVITY_EVALUATE,
    ACTIVITY_AUTHORIZE,
    ACTIVITY_PROVE,
)
APPROVE_UPDATE: Final = "ecp.approve"
STATUS_QUERY: Final = "ecp.status"
DECISION_QUERY: Final = "ecp.decision"

#: Activity-type-free header carrying a scope grant (calls under a scope).
SCOPE_HEADER: Final = "ecp-scope"
#: A call under a scope has activity id ``scope:<scope id>:<n>``.
SCOPE_ACTIVITY_ID_PREFIX: Final = "scope:"
ACTIVITY_AUTHORIZE_SCOPE: Final = "ecp.authorize_scope"
ACTIVITY_ATTEST: Final = "ecp.attest"

#: The execute step's activity id is this prefix plus the action; the grant
#: binds the activity id, so both sides must build it the same way.
EXECUTE_ACTIVITY_ID_PREFIX: Final = "execute:"

#: Every ECP failure's ``ApplicationError.type`` is this prefix plus the
#: error's stable ``code``.
FAILURE_TYPE_PREFIX: Final = "ecp."
#: A governance dependency could not answer: retryable, the body did not run.
OUTAGE_TYPE: Final = FAILURE_TYPE_PREFIX + "governance_unavailable"

#: The gate stopped a running body whose grant stopped holding (the body ran).
INTERRUPTED_TYPE: Final = FAILURE_TYPE_PREFIX + "interrupted"

#: Every use of the grant was taken by attempts that never ended: the body may
#: have run, nobody saw how it ended; never retried, flagged for a person.
OUTCOME_UNKNOWN_TYPE: Final = FAILURE_TYPE_PREFIX + "outcome_unknown"

#: First detail of every refusal the gate raises, so callers can tell a gate
#: refusal from a body that happens to raise an ``ecp.``-typed error.
GATE_MARK: Final = "ecp.gate"


def execute_activity_id(action: str) -> str:
    """The activity id the execute step uses (and the grant binds)."""
    return EXECUTE_ACTIVITY_ID_PREFIX + action


def failure_type(code: str) -> str:
    """The ``ApplicationError.type`` for an ECP error code."""
    return FAILURE_TYPE_PREFIX + code


def failure_code(kind: str | None) -> str | None:
    """The ECP error code of an ``ApplicationError.type``; ``None`` if not ECP's."""
    if kind is None or not kind.startswith(FAILURE_TYPE_PREFIX):
        return None
    return kind.removeprefix(FAILURE_TYPE_PREFIX)


def is_denial_type(kind: str | None) -> bool:
    """Whether an ``ApplicationError.type`` is an ECP denial (not an outage)."""
    return failure_code(kind) is not None and kind != OUTAGE_TYPE
