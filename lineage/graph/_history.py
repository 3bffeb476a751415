"""Workflow histories as the graph builder reads them.

Fetched from Temporal, or loaded from the JSON that ``WorkflowHistory.to_json()``
and ``temporal workflow show --output json`` write.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.json_format import ParseError
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode

from ecp.lineage.graph.errors import (
    CorruptHistoryError,
    HistoryNamespaceError,
    HistoryUnavailableError,
    WorkflowNotFoundError,
)

__all__ = [
    "RunHistory",
    "fetch_histories",
    "load_history_file",
    "load_history_json",
]

#: Histories are ordered and gap-free; more than this many events is refused
#: rather than read into memory (Temporal's own hard limit is 51,200).
MAX_EVENTS = 1_000_000


@dataclass(frozen=True, slots=True)
class RunHistory:
    """The complete history of one workflow run.

    Attributes:
        namespace: The namespace the run lives in.
        workflow_id: The workflow id.
        run_id: The run id (the started event's original execution run id).
        events: The events, in order, ids 1..n.
    """

    namespace: str
    workflow_id: str
    run_id: str
    events: Sequence[HistoryEvent]


def _checked(namespace: str, workflow_id: str, events: Sequence[HistoryEvent]) -> RunHistory:
    if not events:
        raise CorruptHistoryError(f"history of {workflow_id} has no events")
    if len(events) > MAX_EVENTS:
        raise CorruptHistoryError(f"history of {workflow_id} has more than {MAX_EVENTS} events")
    first = events[0]
    if first.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
        raise CorruptHistoryError(
            f"history of {workflow_id} does not begin with WorkflowExecutionStarted"
        )
    for i, e in enumerate(events, start=1):
        if e.event_id != i:
            raise CorruptHistoryError(
                f"history of {workflow_id} is truncated or reordered at event {i} "
                f"(found event id {e.event_id})"
            )
    started = first.workflow_execution_started_event_attributes
    run_id = started.original_execution_run_id
    if not run_id:
        raise CorruptHistoryError(f"history of {workflow_id} names no run id")
    if started.workflow_id and workflow_id and started.workflow_id != workflow_id:
        raise CorruptHistoryError(
            f"history is of workflow {started.workflow_id!r}, not {workflow_id!r}"
        )
    wf_id = workflow_id or started.workflow_id
    if not wf_id:
        raise CorruptHistoryError("history does not name its workflow id; pass it explicitly")
    _check_namespace(namespace, wf_id, events)
    return RunHistory(namespace, wf_id, run_id, events)


def _check_namespace(namespace: str, workflow_id: str, events: Sequence[HistoryEvent]) -> None:
    # A history does not name its own namespace; the grants it carries do.
    from ecp.lineage.graph._grant_header import grant_namespace

    for e in events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            ns = grant_namespace(e.activity_task_scheduled_event_attributes.header)
            if ns is not None and ns != namespace:
                raise HistoryNamespaceError(
                    f"history of {workflow_id} belongs to namespace {ns!r}, not {namespace!r}"
                )


def load_history_json(data: str | bytes, *, namespace: str, workflow_id: str = "") -> RunHistory:
    """Parse one run's history from JSON.

    Accepts the output of ``WorkflowHistory.to_json()``, of ``temporal
    workflow show --output json``, and the same wrapped as
    ``{"namespace": ..., "workflowId": ..., "events": [...]}``.

    Args:
        data: The JSON text.
        namespace: The namespace the caller expects the run in.
        workflow_id: The workflow id, if the history does not name it.

    Raises:
        CorruptHistoryError: not JSON, not a history, truncated or reordered.
        HistoryNamespaceError: the history names another namespace.
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        # JSONDecodeError, or an integer beyond Python's 4,300-digit limit.
        raise CorruptHistoryError(
            f"history is not valid JSON: {str(exc).splitlines()[0][:200]}"
        ) from exc
    except RecursionError as exc:
        raise CorruptHistoryError("history JSON is nested too deeply") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
        raise CorruptHistoryError("history JSON must be an object with an 'events' list")
    declared = doc.get("namespace")
    if isinstance(declared, str) and declared != namespace:
        raise HistoryNamespaceError(f"history belongs to namespace {declared!r}, not {namespace!r}")
    wrapped_id = doc.get("workflowId")
    wf_id = workflow_id or (wrapped_id if isinstance(wrapped_id, str) else "")
    try:
        history = WorkflowHistory.from_json(wf_id, {"events": doc["events"]})
    except (ParseError, KeyError, TypeError, ValueError) as exc:
        raise CorruptHistoryError(f"history JSON is not a Temporal history: {exc}") from exc
    except RecursionError as exc:
        # The SDK copies and walks the events recursively before protobuf
        # (which caps nesting itself) sees them.
        raise CorruptHistoryError("history JSON is nested too deeply") from exc
    return _checked(namespace, wf_id, history.events)


def load_history_file(path: Path, *, namespace: str, workflow_id: str = "") -> RunHistory:
    """Load one run's history from a JSON file (see :func:`load_history_json`).

    Raises:
        CorruptHistoryError: unreadable, not JSON, not a history, truncated.
        HistoryNamespaceError: the history names another namespace.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptHistoryError(f"{path}: cannot read: {exc.strerror}") from exc
    return load_history_json(data, namespace=namespace, workflow_id=workflow_id)


async def _fetch_one(client: Client, workflow_id: str, run_id: str | None) -> RunHistory:
    try:
        h = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            raise WorkflowNotFoundError(
                f"no workflow {workflow_id!r}"
                + (f" run {run_id!r}" if run_id else "")
                + f" in namespace {client.namespace!r}"
            ) from exc
        raise HistoryUnavailableError(
            f"Temporal did not return the history of {workflow_id}: {exc.message}"
        ) from exc
    except RuntimeError as exc:
        raise HistoryUnavailableError(f"Temporal is unreachable: {exc}") from exc
    return _checked(client.namespace, workflow_id, h.events)


async def fetch_histories(
    client: Client,
    workflow_id: str,
    *,
    run_id: str | None = None,
    follow_children: bool = False,
    follow_continue_as_new: bool = True,
) -> list[RunHistory]:
    """Fetch a workflow run's history and its continue-as-new predecessors.

    Optionally also its child workflows' (recursively), from the client's namespace.

    Args:
        client: A connected client; its namespace is the one read.
        workflow_id: The workflow id.
        run_id: A specific run; the latest run if ``None``.
        follow_children: Also fetch every child workflow run started.
        follow_continue_as_new: Also fetch the runs this one continued from.

    Raises:
        WorkflowNotFoundError: no such workflow (or run) in the namespace.
        HistoryUnavailableError: the server cannot be reached or failed.
        CorruptHistoryError: the server returned an unusable history.
        HistoryNamespaceError: a grant in the history names another namespace.
    """
    seen: set[tuple[str, str]] = set()
    out: list[RunHistory] = []
    queue: list[tuple[str, str | None]] = [(workflow_id, run_id)]
    while queue:
        wf, run = queue.pop(0)
        h = await _fetch_one(client, wf, run)
        if (h.workflow_id, h.run_id) in seen:
            continue
        seen.add((h.workflow_id, h.run_id))
        out.append(h)
        started = h.events[0].workflow_execution_started_event_attributes
        prev = started.continued_execution_run_id
        if follow_continue_as_new and prev and (wf, prev) not in seen:
            queue.append((wf, prev))
        if follow_children:
            for e in h.events:
                if e.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
                    ex = e.child_workflow_execution_started_event_attributes.workflow_execution
                    if (ex.workflow_id, ex.run_id) not in seen:
                        queue.append((ex.workflow_id, ex.run_id))
    return out
