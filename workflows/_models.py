"""What a team submits to ``GovernedExecution`` and what it gets back.

No ``from __future__ import annotations`` here, on purpose (as in
``ecp.activities._contracts``): Temporal's converter calls
``typing.get_type_hints`` on every decode, and string annotations would be
compiled and evaluated again each time.
"""

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ApprovalAck", "GovernedRequest", "GovernedResult", "TaskQueues"]

#: A JSON value as Temporal's converter decodes it. ``Any`` because the
#: converter cannot decode into ``object`` or a recursive alias.
JSON = Any


@dataclass(frozen=True)
class TaskQueues:
    """Where each side of the separation of duties listens."""

    authority: str = "ecp-authority"
    executor: str = "ecp-executor"


@dataclass(frozen=True)
class GovernedRequest:
    """One governed action.

    Attributes:
        action: The governed activity type to run (also the Cedar action).
        args: Its arguments, as JSON values.
        initiator: Who asks (a Cedar principal id).
        purpose: Why, in words; recorded with the decision.
        initiator_proof: Proof of who asks (see the attribute).
        approval_timeout_seconds: How long to wait for approvals before denying.
        queues: Task queues of the authority and executor workers.
        artifacts: The artifacts the action will use (see the attribute).
    """

    action: str
    args: list[JSON]
    initiator: str
    purpose: str = ""
    approval_timeout_seconds: float = 3600.0
    #: Proof of who asks: a request signed with the initiator's key
    #: (:func:`ecp.sign_request`, ``ecp submit --key``) or ``oidc:<ID token>``;
    #: "" for none (accepted only where unauthenticated initiators are allowed).
    initiator_proof: str = ""
    queues: TaskQueues = field(default_factory=TaskQueues)
    #: The artifacts the action will use, each ``{name, kind, uri, digest,
    #: size, media_type, attestations}`` (see ``ecp.describe_file``): the
    #: policy sees them, the grant binds them, the gate checks their bytes.
    artifacts: list[JSON] = field(default_factory=list)


@dataclass(frozen=True)
class GovernedResult:
    """The outcome of a governed action, with its proof."""

    decision: str
    decision_id: str
    policy_digest: str
    reasons: list[str]
    outcome: str  # completed | failed | denied | interrupted | unknown
    reason: str
    grant_id: str
    result: JSON
    ledger_index: int
    receipt: str


@dataclass(frozen=True)
class ApprovalAck:
    """What an accepted approval update returns."""

    approver: str
    approvals: int
    required: int
