"""Governed executions as Temporal visibility sees them: a filtered, paged list and one detail.

Everything here reads; the console never signals, updates or starts a workflow.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import SearchAttributeKey, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from ecp.console.errors import BadFilterError, TemporalQueryError, WorkflowNotFoundError
from workflows.models import GovernedResult
from workflows.search_attributes import (
    SA_ACTION,
    SA_DECISION,
    SA_GRANT_ID,
    SA_INITIATOR,
    SA_OUTCOME,
    SA_POLICY_DIGEST,
)

__all__ = [
    "PAGE_SIZE",
    "ExecutionDetail",
    "ExecutionPage",
    "ExecutionRow",
    "GovernanceFilter",
    "describe_execution",
    "list_executions",
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

    def query(self) -> str:
        """The visibility query for these filters.

        Raises:
            BadFilterError: a value holds characters a filter cannot contain.
        """
        clauses = [_BASE_QUERY]
        for key, value in (
            (SA_DECISION, self.decision),
            (SA_ACTION, self.action),
            (SA_INITIATOR, self.initiator),
        ):
            if not value:
                continue
            if not _SAFE_VALUE.fullmatch(value):
                raise BadFilterError(
                    f"The {key.name} filter may only hold letters, digits and . _ : @ / + -."
                )
            clauses.append(f"{key.name} = '{value}'")
        return " AND ".join(clauses)


@dataclass(frozen=True, slots=True)
class ExecutionRow:
    """One governed execution in the list."""

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


@dataclass(frozen=True, slots=True)
class ExecutionPage:
    """One page of the list and the token of the next (None on the last)."""

    rows: tuple[ExecutionRow, ...]
    next_token: str | None


@dataclass(frozen=True, slots=True)
class ExecutionDetail:
    """One governed execution with its result once it has closed."""

    row: ExecutionRow
    result: GovernedResult | None


def _sa(attrs: TypedSearchAttributes, key: SearchAttributeKey[str]) -> str:
    value = attrs.get(key)
    return value if isinstance(value, str) else ""


def _status(status: WorkflowExecutionStatus | None) -> str:
    return status.name.lower().replace("_", " ") if status is not None else "unknown"


def _row(
    workflow_id: str,
    run_id: str,
    status: WorkflowExecutionStatus | None,
    start: datetime | None,
    close: datetime | None,
    attrs: TypedSearchAttributes,
) -> ExecutionRow:
    return ExecutionRow(
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
    client: Client, flt: GovernanceFilter, *, page_token: str = "", page_size: int = PAGE_SIZE
) -> ExecutionPage:
    """One page of governed executions, newest first.

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
            w.id, w.run_id, w.status, w.start_time, w.close_time, w.typed_search_attributes
        )
        for w in (it.current_page or [])
    )
    nxt = it.next_page_token
    return ExecutionPage(rows, base64.urlsafe_b64encode(nxt).decode().rstrip("=") if nxt else None)


async def describe_execution(client: Client, workflow_id: str) -> ExecutionDetail:
    """The latest run of ``workflow_id``, with its result if it completed.

    Raises:
        WorkflowNotFoundError: no such workflow in the namespace.
        TemporalQueryError: Temporal refused or did not answer.
    """
    if not workflow_id or len(workflow_id) > 1000:
        raise WorkflowNotFoundError("No workflow has that id.")
    handle = client.get_workflow_handle(workflow_id, result_type=GovernedResult)
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise WorkflowNotFoundError(
                f"No workflow with id {workflow_id!r} exists in namespace {client.namespace!r}."
            ) from exc
        raise TemporalQueryError(_rpc_sentence(exc)) from exc
    row = _row(
        desc.id, desc.run_id, desc.status, desc.start_time, desc.close_time,
        desc.typed_search_attributes,
    )
    result: GovernedResult | None = None
    # Only a completed run has a result; asking an open one would wait for it.
    governed = desc.workflow_type == "GovernedExecution"
    if governed and desc.status is WorkflowExecutionStatus.COMPLETED:
        try:
            result = await client.get_workflow_handle(
                workflow_id, run_id=desc.run_id, result_type=GovernedResult
            ).result()
        except WorkflowFailureError:
            result = None
        except RPCError as exc:
            raise TemporalQueryError(_rpc_sentence(exc)) from exc
    return ExecutionDetail(row, result)
