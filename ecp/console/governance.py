"""Governed executions as Temporal visibility sees them: a filtered, paged list and one detail.

Everything here reads; the console never signals, updates or starts a workflow.
How each initiator was established (a key, an OpenID Connect issuer and
subject, or nobody) is read from the decision in the run's history and from
its grant: parsed, not verified (the Lineage Explorer's cross-check verifies).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import re
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from temporalio.api.common.v1 import Payload
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowQueryFailedError,
)
from temporalio.common import SearchAttributeKey, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from ecp._wire import ACTIVITY_EVALUATE, DECISION_QUERY, GRANT_HEADER, STATUS_QUERY
from ecp.activities._authority_side import policy_arguments
from ecp.activities._contracts import DecisionResult
from ecp.authority._approval import (
    APPROVAL_PAYLOAD_TYPE,
    approval_payload,
    execution_ref,
    passkey_challenge,
)
from ecp.authority._canonical import parse_json_strict
from ecp.authority._clock import system_clock
from ecp.authority._dsse import Envelope, pae
from ecp.authority._grant import GRANT_MAX_BYTES, GRANT_PAYLOAD_TYPE, Grant
from ecp.authority._policy import Decision
from ecp.authority._webauthn import b64url_encode
from ecp.authority.errors import AuthorityError
from ecp.console.errors import BadFilterError, ExecutionNotFoundError, TemporalQueryError
from ecp.console.vouch import Claim, Vouch
from ecp.lineage.graph._build import authentication_label, authentication_method, decision_identity
from ecp.workflows._models import GovernedRequest, GovernedResult
from ecp.workflows._search_attributes import (
    SA_ACTION,
    SA_DECISION,
    SA_GRANT_ID,
    SA_INITIATOR,
    SA_OUTCOME,
    SA_POLICY_DIGEST,
)

__all__ = [
    "BROWSER_APPROVAL_TTL",
    "PAGE_SIZE",
    "BrowserApproval",
    "ExecutionDetail",
    "ExecutionPage",
    "ExecutionRow",
    "GovernanceFilter",
    "GrantView",
    "IdentityView",
    "PendingApproval",
    "claim_of",
    "decision_identity_in_history",
    "describe_execution",
    "grants_in_history",
    "list_executions",
    "parse_grant_header",
    "pending_approval",
    "shell_quote",
    "unverified_reason",
    "with_ledger_word",
]

#: Rows per page: a long history pages instead of freezing the browser.
PAGE_SIZE: Final = 50
# Filter values go into a visibility query string. Rather than escape them
# for Temporal's SQL-like grammar, accept only characters that can never end
# a literal: a value outside this set is refused with a one-line message.
_SAFE_VALUE: Final = re.compile(r"[A-Za-z0-9_.:@/+\-]{1,200}")
# Every governed execution sets the action first (before any decision), so
# this selects exactly the executions ECP governs.
_BASE_QUERY: Final = f"{SA_ACTION.name} IS NOT NULL"
_MAX_TOKEN_BYTES: Final = 4096
_BAD_PAGE: Final = "The page token is not valid; start again from the first page."


@dataclass(frozen=True, slots=True)
class GovernanceFilter:
    """The list filters; empty strings mean "any"."""

    decision: str = ""
    action: str = ""
    initiator: str = ""
    policy: str = ""
    started_from: str = ""  # ISO 8601 date-time, UTC when no offset is given
    started_to: str = ""

    def query(self) -> str:
        """The visibility query for these filters.

        Raises:
            BadFilterError: a value holds characters a filter cannot contain,
                or a time is not a date and time.
        """
        clauses = [_BASE_QUERY]
        for key, value in (
            (SA_DECISION, self.decision),
            (SA_ACTION, self.action),
            (SA_INITIATOR, self.initiator),
            (SA_POLICY_DIGEST, self.policy),
        ):
            if not value:
                continue
            if not _SAFE_VALUE.fullmatch(value):
                raise BadFilterError(
                    f"The {key.name} filter may only hold letters, digits and . _ : @ / + -."
                )
            clauses.append(f"{key.name} = '{value}'")
        lo = _parse_time(self.started_from, "started from")
        hi = _parse_time(self.started_to, "started to")
        if lo is not None and hi is not None and lo > hi:
            raise BadFilterError("The started-from time is after the started-to time.")
        if lo is not None:
            clauses.append(f'StartTime >= "{_rfc3339(lo)}"')
        if hi is not None:
            clauses.append(f'StartTime <= "{_rfc3339(hi)}"')
        return " AND ".join(clauses)


def _parse_time(value: str, label: str) -> datetime | None:
    """``value`` as an aware datetime (UTC when it has no offset), None when empty.

    Raises:
        BadFilterError: not an ISO 8601 date and time.
    """
    if not value:
        return None
    try:
        if len(value) > 40 or not value.isascii():
            raise ValueError(value)
        when = datetime.fromisoformat(value)
        # 0001-01-01T00:00:00+14:00 parses, but is before year 1 in UTC.
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise BadFilterError(
            f"The {label} time must be a date and time such as 2026-01-31T13:45 (UTC)."
        ) from exc


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: How much of a key id (``ed25519:`` and 8 hex digits) the list shows.
_SHORT_KEY_ID: Final = 16


@dataclass(frozen=True, slots=True)
class IdentityView:
    """Who asked and how the authority established it, as history records it (unverified).

    ``method`` is ``key``, ``oidc``, ``unauthenticated``, ``unknown`` (a
    value no authority writes), ``none`` (the record does not say) or
    ``unread`` (the history could not be read); ``text`` says it in words.
    """

    initiator: str
    authentication: str
    method: str
    text: str

    @property
    def established(self) -> bool:
        """Whether a key or an identity provider established the initiator."""
        return self.method in ("key", "oidc")

    @property
    def short_text(self) -> str:
        """``text`` with a key id cut to its first hex digits (for the list)."""
        if self.method == "key" and len(self.text) > len("key ") + _SHORT_KEY_ID + 1:
            return self.text[: len("key ") + _SHORT_KEY_ID] + "…"
        return self.text

    @classmethod
    def of(cls, initiator: str, authentication: str) -> IdentityView:
        """The view of a recorded ``initiator_auth`` / ``authentication`` value."""
        return cls(
            initiator,
            authentication,
            authentication_method(authentication) or "none",
            authentication_label(authentication),
        )

    @classmethod
    def unread(cls, initiator: str) -> IdentityView:
        """The history could not be read: nobody knows how it was established."""
        return cls(initiator, "", "unread", "how it was established could not be read")


@dataclass(frozen=True, slots=True)
class ExecutionRow:
    """One governed execution in the list.

    ``identity`` comes from the decision in its history (None: it has none yet).
    """

    workflow_id: str
    run_id: str
    status: str
    start_time: datetime | None
    close_time: datetime | None
    action: str
    decision: str
    initiator: str
    outcome: str
    grant_id: str
    policy_digest: str
    identity: IdentityView | None = None
    task_queue: str = ""
    workflow_type: str = ""
    #: Why it is not ECP's own run (another task queue); empty when it is.
    #: Its queries are never read then: any worker could answer them.
    off_queue: str = ""
    #: Why its decision and outcome are not governance state, in one line
    #: (off ECP's queues, or no ledger evidence agrees); empty when they are.
    unverified: str = ""
    #: The ledger's word (``verified``, ``pending``, ``unverified``; empty: not checked yet).
    proof: str = ""
    #: While ``pending``: why (the run is open and has nothing proven yet).
    proof_note: str = ""
    #: The ledger index of the evidence compared, when there is one.
    evidence_index: int | None = None


@dataclass(frozen=True, slots=True)
class ExecutionPage:
    """One page of the list and the token of the next (None on the last)."""

    rows: tuple[ExecutionRow, ...]
    next_token: str | None


@dataclass(frozen=True, slots=True)
class PendingApproval:
    """What a waiting execution asks its approvers, as its own queries report it.

    The console shows the command an approver runs with their own key; it
    never holds, asks for or forwards an approver's key.
    """

    action: str
    purpose: str
    arguments_json: str  # the policy's view of the arguments (``context.arguments``)
    reasons: tuple[str, ...]
    decision_id: str
    approvals: tuple[str, ...]
    required: int
    role: str
    eligible: tuple[str, ...]
    command: str
    #: One unsigned approval per eligible approver, for signing in the browser.
    to_sign: tuple[BrowserApproval, ...] = ()


@dataclass(frozen=True, slots=True)
class BrowserApproval:
    """An approval prepared for one approver to sign in their browser.

    The approver's browser signs ``pae`` (DSSE's pre-authentication encoding
    of ``payload``) with a key it holds as non-extractable; the console only
    assembles the envelope around that signature and relays it.
    """

    approver: str
    payload_b64: str
    pae_b64: str
    #: The approver has an Ed25519 approver key listed (the key-file form).
    has_key: bool = True
    #: base64url WebAuthn challenge (SHA-256 of ``pae``) and the relying
    #: party of the approver's passkey, when they have one listed.
    challenge_b64url: str = ""
    rp_id: str = ""


@dataclass(frozen=True, slots=True)
class GrantView:
    """A grant as an activity header in history carries it: parsed, not verified.

    ``problem`` is set (and ``grant`` is None) when the header is unreadable.
    """

    event_id: int
    activity_type: str
    grant: Grant | None
    signers: tuple[str, ...] = ()
    problem: str | None = None

    @property
    def identity(self) -> IdentityView | None:
        """The initiator the grant names and how it says it was established."""
        if self.grant is None:
            return None
        return IdentityView.of(self.grant.initiator, self.grant.initiator_auth)


@dataclass(frozen=True, slots=True)
class ExecutionDetail:
    """One governed execution with its result once it has closed.

    ``pending`` is set while it waits for approvals; ``pending_error`` says
    why a running execution's state could not be read (no worker answered).
    """

    row: ExecutionRow
    result: GovernedResult | None
    pending: PendingApproval | None = None
    pending_error: str | None = None
    grants: tuple[GrantView, ...] = ()
    grants_error: str | None = None


def _sa(attrs: TypedSearchAttributes, key: SearchAttributeKey[str]) -> str:
    value = attrs.get(key)
    return value if isinstance(value, str) else ""


def _status(status: WorkflowExecutionStatus | None) -> str:
    return status.name.lower().replace("_", " ") if status is not None else "unknown"


def unverified_reason(task_queue: str, queues: frozenset[str]) -> str:
    """Why a run's ECP search attributes and query answers are only its own claims.

    Any workflow can set ``ECPAction`` and answer ``ecp.status``; only one
    that ECP's workers run (on the configured task queues) is held to what
    ECP does. Empty when the run is on one of ``queues``.
    """
    if task_queue in queues:
        return ""
    return (
        f"It runs on task queue {task_queue!r}, which is not one of this deployment's ECP "
        "queues: its decision, outcome and approval state are its own claims, not verified "
        "governance state."
    )


def claim_of(row: ExecutionRow) -> Claim:
    """What ``row`` says about itself, for the ledger to check (:mod:`ecp.console.vouch`)."""
    return Claim(
        workflow_id=row.workflow_id,
        run_id=row.run_id,
        open=row.close_time is None,
        action=row.action,
        decision=row.decision,
        outcome=row.outcome,
        grant_id=row.grant_id,
        initiator=row.initiator,
        policy_digest=row.policy_digest,
    )


def with_ledger_word(row: ExecutionRow, vouch: Vouch) -> ExecutionRow:
    """``row`` labelled by the ledger's word on it (a run off ECP's queues stays as it is)."""
    if row.off_queue:
        return row
    return dataclasses.replace(
        row,
        proof=vouch.state,
        unverified=vouch.reason if vouch.state == "unverified" else "",
        proof_note=vouch.reason if vouch.state == "pending" else "",
        evidence_index=vouch.index,
    )


def _row(
    workflow_id: str,
    run_id: str,
    status: WorkflowExecutionStatus | None,
    start: datetime | None,
    close: datetime | None,
    attrs: TypedSearchAttributes,
    *,
    task_queue: str,
    workflow_type: str,
    queues: frozenset[str],
) -> ExecutionRow:
    off_queue = unverified_reason(task_queue, queues)
    return ExecutionRow(
        task_queue=task_queue,
        workflow_type=workflow_type,
        off_queue=off_queue,
        unverified=off_queue,
        proof="unverified" if off_queue else "",
        workflow_id=workflow_id,
        run_id=run_id,
        status=_status(status),
        start_time=start,
        close_time=close,
        action=_sa(attrs, SA_ACTION),
        decision=_sa(attrs, SA_DECISION),
        initiator=_sa(attrs, SA_INITIATOR),
        outcome=_sa(attrs, SA_OUTCOME),
        grant_id=_sa(attrs, SA_GRANT_ID),
        policy_digest=_sa(attrs, SA_POLICY_DIGEST),
    )


def _decode_token(token: str) -> bytes | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise BadFilterError(_BAD_PAGE) from exc
    if not raw or len(raw) > _MAX_TOKEN_BYTES:
        raise BadFilterError(_BAD_PAGE)
    return raw


def _rpc_sentence(exc: RPCError) -> str:
    first = (exc.message or type(exc).__name__).splitlines()[0]
    return f"Temporal refused the query: {first}."


async def list_executions(
    client: Client,
    flt: GovernanceFilter,
    *,
    queues: frozenset[str],
    page_token: str = "",
    page_size: int = PAGE_SIZE,
) -> ExecutionPage:
    """One page of governed executions, newest first.

    A run outside ``queues`` (the deployment's ECP task queues) is listed
    with :attr:`ExecutionRow.unverified` set.

    Raises:
        BadFilterError: a filter value or the page token is not acceptable.
        TemporalQueryError: Temporal refused or did not answer the query.
    """
    query = flt.query()
    token = _decode_token(page_token)
    it = client.list_workflows(query, page_size=page_size, next_page_token=token)
    try:
        await it.fetch_next_page()
    except RPCError as exc:
        if exc.status is RPCStatusCode.INVALID_ARGUMENT and token is not None:
            raise BadFilterError(_BAD_PAGE) from exc
        raise TemporalQueryError(_rpc_sentence(exc)) from exc
    rows = tuple(
        _row(
            w.id,
            w.run_id,
            w.status,
            w.start_time,
            w.close_time,
            w.typed_search_attributes,
            task_queue=w.task_queue,
            workflow_type=w.workflow_type,
            queues=queues,
        )
        for w in (it.current_page or [])
    )
    rows = await _with_identities(client, rows)
    nxt = it.next_page_token
    return ExecutionPage(rows, base64.urlsafe_b64encode(nxt).decode().rstrip("=") if nxt else None)


async def describe_execution(
    client: Client, workflow_id: str, *, queues: frozenset[str]
) -> ExecutionDetail:
    """The latest run of ``workflow_id``, with its result if it completed.

    Its approval state and result are read only when ECP's own workers run
    it (its task queue is one of ``queues``); otherwise any worker could
    answer the queries with anything.

    Raises:
        ExecutionNotFoundError: no such workflow in the namespace.
        TemporalQueryError: Temporal refused or did not answer.
    """
    if not workflow_id or len(workflow_id) > 1000:
        raise ExecutionNotFoundError("No workflow has that id.")
    handle = client.get_workflow_handle(workflow_id, result_type=GovernedResult)
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise ExecutionNotFoundError(
                f"No workflow with id {workflow_id!r} exists in namespace {client.namespace!r}."
            ) from exc
        raise TemporalQueryError(_rpc_sentence(exc)) from exc
    row = _row(
        desc.id,
        desc.run_id,
        desc.status,
        desc.start_time,
        desc.close_time,
        desc.typed_search_attributes,
        task_queue=desc.task_queue,
        workflow_type=desc.workflow_type,
        queues=queues,
    )
    result: GovernedResult | None = None
    governed = desc.workflow_type == "GovernedExecution"
    # Its queue decides whether its queries may be read; the ledger's word
    # on its decision is added by the caller (``with_ledger_word``).
    own = not row.off_queue
    # Only a completed run has a result; asking an open one would wait for it.
    if own and governed and desc.status is WorkflowExecutionStatus.COMPLETED:
        try:
            result = await client.get_workflow_handle(
                workflow_id, run_id=desc.run_id, result_type=GovernedResult
            ).result()
        except WorkflowFailureError:
            result = None
        except RPCError as exc:
            raise TemporalQueryError(_rpc_sentence(exc)) from exc
        except Exception:  # noqa: BLE001 - the converter raises anything on a foreign payload
            result = None
    pending: PendingApproval | None = None
    pending_error: str | None = None
    if own and governed and desc.status is WorkflowExecutionStatus.RUNNING:
        try:
            pending = await pending_approval(client, workflow_id, desc.run_id, row.action)
        except (RPCError, WorkflowQueryFailedError, TemporalQueryError) as exc:
            pending_error = (
                "Its approval state cannot be read now (no workflow worker answered the query)."
                if not isinstance(exc, TemporalQueryError)
                else str(exc)
            )
        except Exception:  # noqa: BLE001 - a foreign query answer or input the converter refuses
            pending_error = "Its approval state is not in the form ECP's workflow reports it."
    grants: tuple[GrantView, ...] = ()
    grants_error: str | None = None
    if governed or row.decision:
        try:
            grants, identity = await _scan_history(
                client, workflow_id, desc.run_id, grants=governed
            )
        except RPCError as exc:
            grants_error = _rpc_sentence(exc) if governed else None
            row = dataclasses.replace(row, identity=IdentityView.unread(row.initiator))
        else:
            row = dataclasses.replace(row, identity=identity)
    return ExecutionDetail(row, result, pending, pending_error, grants, grants_error)


#: A governed run's history is a few dozen events; stop reading far beyond that.
_MAX_HISTORY_EVENTS: Final = 5000


def parse_grant_header(event_id: int, activity_type: str, data: bytes) -> GrantView:
    """The grant in one header payload, parsed strictly but not verified."""
    try:
        env = Envelope.from_json(data, max_bytes=GRANT_MAX_BYTES)
        if env.payload_type != GRANT_PAYLOAD_TYPE:
            raise ValueError(f"its payload type is {env.payload_type!r}, not a grant")
        grant = Grant.model_validate_json(env.payload, strict=True)
    except (AuthorityError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return GrantView(
            event_id, activity_type, None, problem=f"The grant header cannot be read: {first}."
        )
    return GrantView(event_id, activity_type, grant, tuple(sig.keyid for sig in env.signatures))


def _payload_json(p: Payload) -> object:
    """A JSON payload's value, read strictly; None if it is not one (never raises)."""
    if p.metadata.get("encoding", b"") != b"json/plain":
        return None
    try:
        return parse_json_strict(p.data)
    except AuthorityError:
        return None
    except (ValueError, TypeError, RecursionError):  # pragma: no cover - defence in depth
        return None


async def _scan_history(
    client: Client, workflow_id: str, run_id: str, *, grants: bool
) -> tuple[tuple[GrantView, ...], IdentityView | None]:
    """The run's grants (if ``grants``) and the identity its decision records.

    A workflow that makes several governed calls has several decisions: the
    last one is taken, as its search attributes show the last call.

    Raises:
        RPCError: the history could not be read.
    """
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    found: list[GrantView] = []
    identity: IdentityView | None = None
    evaluations: set[int] = set()
    n = 0
    async for event in handle.fetch_history_events():
        n += 1
        if n > _MAX_HISTORY_EVENTS:
            break
        if event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == ACTIVITY_EVALUATE:
                evaluations.add(event.event_id)
            payload = attrs.header.fields.get(GRANT_HEADER)
            if grants and payload is not None:
                found.append(
                    parse_grant_header(event.event_id, attrs.activity_type.name, payload.data)
                )
        elif event.HasField("activity_task_completed_event_attributes"):
            done = event.activity_task_completed_event_attributes
            if done.scheduled_event_id not in evaluations or not done.result.payloads:
                continue
            who = decision_identity(_payload_json(done.result.payloads[0]))
            if who is not None:
                identity = IdentityView.of(*who)
    return tuple(found), identity


async def grants_in_history(client: Client, workflow_id: str, run_id: str) -> tuple[GrantView, ...]:
    """Every grant an activity of this run was scheduled with, in history order.

    Raises:
        RPCError: the history could not be read.
    """
    found, _ = await _scan_history(client, workflow_id, run_id, grants=True)
    return found


async def decision_identity_in_history(
    client: Client, workflow_id: str, run_id: str
) -> IdentityView | None:
    """Who asked and how it was established, as the run's (last) decision records it.

    None when the history holds no decision (refused before the policy, or
    not decided yet).

    Raises:
        RPCError: the history could not be read.
    """
    _, identity = await _scan_history(client, workflow_id, run_id, grants=False)
    return identity


#: How many histories the list reads at once, and how long it waits for one.
_IDENTITY_READS: Final = 8
_IDENTITY_TIMEOUT: Final = 5.0


async def _with_identities(
    client: Client, rows: tuple[ExecutionRow, ...]
) -> tuple[ExecutionRow, ...]:
    """``rows`` with the identity each decided governed run's history records."""
    sem = asyncio.Semaphore(_IDENTITY_READS)

    async def one(r: ExecutionRow) -> ExecutionRow:
        # Visibility sets the decision once the policy has decided: no
        # decision yet, nothing in history to read. Any workflow type: a
        # workflow's own governed calls decide in its history too.
        if not r.decision:
            return r
        async with sem:
            try:
                identity = await asyncio.wait_for(
                    decision_identity_in_history(client, r.workflow_id, r.run_id),
                    _IDENTITY_TIMEOUT,
                )
            except (RPCError, TimeoutError):
                identity = IdentityView.unread(r.initiator)
        return dataclasses.replace(r, identity=identity)

    return tuple(await asyncio.gather(*(one(r) for r in rows)))


_SHELL_PLAIN: Final = re.compile(r"[\x20-\x7e]*")


def shell_quote(value: str) -> str:
    r"""``value`` quoted for a POSIX shell, visibly.

    Printable ASCII is quoted as :func:`shlex.quote` does; anything else
    (a control character, a bidirectional override) as bash's ``$'...'``
    with ``\xHH`` / ``\uHHHH`` escapes: the command shown is the command
    run, and no character in it can reorder what is shown.
    """
    if _SHELL_PLAIN.fullmatch(value):
        return shlex.quote(value)
    out = []
    for ch in value:
        o = ord(ch)
        if ch in "\\'":
            out.append("\\" + ch)
        elif 0x20 <= o <= 0x7E:
            out.append(ch)
        elif o < 0x80:
            out.append(f"\\x{o:02x}")
        elif o <= 0xFFFF:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    return "$'" + "".join(out) + "'"


#: How long an approval prepared for the browser stays valid once signed.
BROWSER_APPROVAL_TTL: Final = timedelta(minutes=30)
_MAX_BROWSER_FORMS: Final = 10

#: How long a status query may take: a query needs a live workflow worker.
_QUERY_TIMEOUT: Final = timedelta(seconds=5)


async def _request_of(client: Client, workflow_id: str, run_id: str) -> GovernedRequest | None:
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    async for event in handle.fetch_history_events():
        payloads = event.workflow_execution_started_event_attributes.input.payloads
        if not payloads:
            return None
        decoded = await client.data_converter.decode(list(payloads), [GovernedRequest])
        req = decoded[0] if decoded else None
        return req if isinstance(req, GovernedRequest) else None
    return None


async def pending_approval(
    client: Client, workflow_id: str, run_id: str, action: str
) -> PendingApproval | None:
    """What the execution waits for, or None when it is not waiting for approvals.

    Read-only: two workflow queries and the first history event.

    Raises:
        RPCError, WorkflowQueryFailedError: the query could not be answered.
    """
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    status = await handle.query(STATUS_QUERY, result_type=dict, rpc_timeout=_QUERY_TIMEOUT)
    if not isinstance(status, dict) or status.get("step") != "approve":
        return None
    decision = await handle.query(
        DECISION_QUERY, result_type=DecisionResult, rpc_timeout=_QUERY_TIMEOUT
    )
    if not isinstance(decision, DecisionResult):
        return None
    req = await _request_of(client, workflow_id, run_id)
    args: object = policy_arguments(list(req.args)) if req is not None else {}
    approvals = status.get("approvals") or []
    execution = execution_ref(client.namespace, workflow_id, run_id)
    to_sign = []
    keyed = {a.name for a in decision.approvers}
    rp_of = {p.name: p.rp_id for p in reversed(decision.approver_passkeys)}
    for name in sorted(keyed | set(rp_of))[:_MAX_BROWSER_FORMS]:
        try:
            payload = approval_payload(
                Decision.from_json(decision.decision_json),
                execution=execution,
                approver=name,
                clock=system_clock,
                ttl=BROWSER_APPROVAL_TTL,
            )
        except AuthorityError:
            continue
        to_sign.append(
            BrowserApproval(
                name,
                base64.b64encode(payload).decode(),
                base64.b64encode(pae(APPROVAL_PAYLOAD_TYPE, payload)).decode(),
                has_key=name in keyed,
                challenge_b64url=b64url_encode(passkey_challenge(payload)) if name in rp_of else "",
                rp_id=rp_of.get(name, ""),
            )
        )
    return PendingApproval(
        action=req.action if req is not None else action,
        purpose=req.purpose if req is not None else "",
        arguments_json=json.dumps(args, indent=2, sort_keys=True, ensure_ascii=False),
        reasons=tuple(decision.reasons),
        decision_id=decision.decision_id,
        approvals=tuple(str(a) for a in approvals) if isinstance(approvals, list) else (),
        required=decision.approvals_required,
        role=decision.approval_role,
        eligible=tuple(
            sorted(
                {a.name for a in decision.approvers} | {p.name for p in decision.approver_passkeys}
            )
        ),
        command=f"ecp approve {shell_quote(workflow_id)} --key FILE",
        to_sign=tuple(to_sign),
    )
