"""Inputs and outputs of the governance activities.

The wire contract between ``GovernedExecution`` and the authority and executor workers.

Plain dataclasses of JSON types: they cross the workflow sandbox and land in
history, so they hold digests, ids and signed envelopes, never keys.

No ``from __future__ import annotations`` here, on purpose: Temporal's
converter calls ``typing.get_type_hints`` on a dataclass every time it
decodes one, and string annotations make each call compile and evaluate
every field's type again (about a third of a millisecond per decode, a
dozen decodes per governed action). With the types evaluated once at
import, that call only reads them.
"""

from dataclasses import dataclass, field
from typing import Any

from ecp._wire import (
    ACTIVITY_AUTHORIZE,
    ACTIVITY_EVALUATE,
    ACTIVITY_PREPARE,
    ACTIVITY_PROVE,
    GATE_MARK,
)

__all__ = [
    "ACTIVITY_AUTHORIZE",
    "ACTIVITY_EVALUATE",
    "ACTIVITY_PREPARE",
    "ACTIVITY_PROVE",
    "GATE_MARK",
    "ApproverKey",
    "ApproverPasskey",
    "AttestResult",
    "AuthorizeInput",
    "DecisionResult",
    "EvaluateInput",
    "GrantResult",
    "PrepareInput",
    "PrepareResult",
    "ProveInput",
    "ProveResult",
    "ScopeInput",
    "ScopeResult",
]

#: A JSON value as Temporal's converter decodes it. ``Any`` because the
#: converter cannot decode into ``object`` or a recursive alias.
JSON = Any


@dataclass(frozen=True)
class PrepareInput:
    """The action and arguments as submitted."""

    action: str
    args: list[JSON]


@dataclass(frozen=True)
class PrepareResult:
    """The executor's signed environment attestation and the normalised call.

    ``args`` are the submitted arguments decoded into the governed activity's
    parameter types and encoded again: exactly the values the gate will see
    (defaults filled in, unknown fields refused), so the policy decides on,
    and the grant binds, what will really run.
    """

    attestation: str
    environment_digest: str
    args: list[JSON]
    #: The governed activity's positional parameter names, in order: the
    #: authority shows several arguments to the policy by name. Empty in
    #: histories recorded before the field existed.
    param_names: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EvaluateInput:
    """What the verify step asks the policy."""

    action: str
    args: list[JSON]
    initiator: str
    purpose: str
    attestation: str  # DSSE envelope JSON, "" when the executor gave none
    #: Proof of who asks (a signed request or ``oidc:<ID token>``; "" for none).
    initiator_proof: str = ""
    #: The arguments as submitted (what a signed request's digest covers).
    request_args: list[JSON] = field(default_factory=list)
    #: For calls made inside a workflow: the digest of that workflow's input
    #: (a session proof binds it). "" from GovernedExecution.
    workflow_input_digest: str = ""
    #: The governed activity's parameter names (from prepare; empty: unknown).
    param_names: list[str] = field(default_factory=list)
    #: The artifacts the call will use: ``{name, kind, uri, digest, size,
    #: media_type, attestations}`` each (``ecp.authority._artifact``).
    artifacts: list[JSON] = field(default_factory=list)


@dataclass(frozen=True)
class ApproverKey:
    """A public key allowed to approve this decision (for the update validator)."""

    key_id: str
    name: str
    public_key: str  # base64 raw Ed25519


@dataclass(frozen=True)
class ApproverPasskey:
    """A passkey credential allowed to approve this decision (for the update validator)."""

    key_id: str
    name: str
    credential_id: str  # base64url
    public_key: str  # base64url COSE_Key
    rp_id: str
    origins: list[str]


@dataclass(frozen=True)
class DecisionResult:
    """The policy decision, with what the workflow needs to act on it."""

    decision_json: str
    decision_id: str
    effect: str  # allow | deny | allow_after_approval
    policy_digest: str
    request_digest: str
    reasons: list[str]
    determining_policies: list[str]
    approvals_required: int = 0
    approval_role: str = ""
    approvers: list[ApproverKey] = field(default_factory=list)
    #: Eligible approvers' passkey credentials (a default: histories written
    #: before passkeys decode unchanged).
    approver_passkeys: list[ApproverPasskey] = field(default_factory=list)
    max_attempts: int = 1
    #: How the authority established the initiator.
    authentication: str = "unauthenticated"


@dataclass(frozen=True)
class AuthorizeInput:
    """What the authorize step needs to bind a grant to the execute call."""

    decision_json: str
    approvals: list[str]
    action: str
    args: list[JSON]
    initiator: str
    # The namespace, workflow id and run id are not inputs: the authority
    # binds the execution that calls it, as Temporal reports it.
    activity_id: str
    purpose: str
    attestation: str  # the executor's signed attestation; the grant binds its digest
    initiator_proof: str = ""
    request_args: list[JSON] = field(default_factory=list)
    workflow_input_digest: str = ""
    #: The governed activity's parameter names (from prepare; empty: unknown).
    param_names: list[str] = field(default_factory=list)
    #: The artifacts, as at evaluate: the grant binds their digests.
    artifacts: list[JSON] = field(default_factory=list)


@dataclass(frozen=True)
class GrantResult:
    """A signed grant and what ops need to see of it."""

    envelope: str
    grant_id: str
    expires_at: str
    max_attempts: int
    #: From the policy, never from the submitter (default for histories
    #: recorded before the field existed).
    execute_timeout_seconds: int = 300
    #: Long-running actions only: the workflow's heartbeat timeout (the gate
    #: interrupts a body silent for longer).
    heartbeat_seconds: int | None = None


@dataclass(frozen=True)
class ProveInput:
    """What the prove step records (denials) or looks up (executions)."""

    namespace: str
    workflow_id: str
    run_id: str
    activity_id: str
    action: str
    initiator: str
    decision_id: str
    policy_digest: str
    outcome: str  # completed | failed | denied
    reason_code: str = ""
    reason: str = ""
    grant_id: str = ""
    args: list[JSON] = field(default_factory=list)
    #: How the initiator was established (recorded with a denial).
    authentication: str = ""


@dataclass(frozen=True)
class ProveResult:
    """The receipt: entry + inclusion proof + checkpoint, as JSON."""

    index: int
    receipt: str
    tree_size: int


@dataclass(frozen=True)
class AttestResult:
    """The executor's signed environment attestation (for a scope)."""

    attestation: str
    environment_digest: str


@dataclass(frozen=True)
class ScopeInput:
    """What the authority needs to sign a scope for the calling workflow.

    ``constraints``: action -> argument field -> ``{"max", "min", "in", "prefix"}``.
    """

    actions: list[str]
    max_uses: int
    constraints: dict[str, dict[str, dict[str, JSON]]]
    lifetime_seconds: float
    initiator: str
    purpose: str
    attestation: str
    initiator_proof: str = ""
    workflow_input_digest: str = ""
    #: Artifacts every call under the scope may use (as ``EvaluateInput.artifacts``).
    artifacts: list[JSON] = field(default_factory=list)


@dataclass(frozen=True)
class ScopeResult:
    """A signed scope grant."""

    envelope: str
    scope_id: str
    expires_at: str
    max_uses: int
