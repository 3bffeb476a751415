"""The Lineage Explorer's data: a workflow's provenance graph.

Cross-checked against its grants and the ledger, drawn by Graphviz and made
clickable.

The picture is laid out on the server (``dot -Tsvg``) and rewritten so each
node carries a stable ``data-node`` id; the browser (``static/lineage.js``)
only pans, zooms, selects and highlights. Node details travel beside the
picture as a JSON data block (never executed: the page's CSP allows scripts
from this origin only).
"""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import networkx as nx
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from ecp._settings import Settings
from ecp.authority._truststore import KeyRole, TrustStore
from ecp.console._render import visible_text
from ecp.console.errors import (
    BadFilterError,
    ConsoleError,
    ExecutionNotFoundError,
    LedgerNotReadyError,
)
from ecp.console.limits import DEFAULT_LIMITS, LineageLimits, LineageTooLargeError, run_dot
from ecp.errors import EcpError
from ecp.lineage._crosscheck import CrossCheckReport, Finding, annotate_graph, cross_check
from ecp.lineage.graph._build import build_graph
from ecp.lineage.graph._export import ExportFormat, render_graph
from ecp.lineage.graph._history import RunHistory, _checked
from ecp.lineage.graph._render import _clean, to_dot
from ecp.lineage.graph.errors import (
    HistoryUnavailableError,
    LineageGraphError,
    RendererMissingError,
)
from ecp.lineage.graph.errors import WorkflowNotFoundError as GraphWorkflowNotFoundError
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger.errors import LineageError

__all__ = [
    "EXPORTS",
    "LineageUnavailableError",
    "LineageView",
    "export_lineage",
    "export_svg",
    "fetch_bounded_histories",
    "lineage_view",
    "load_lineage_graph",
]

_SVG_NS: Final = "http://www.w3.org/2000/svg"
_XLINK_NS: Final = "http://www.w3.org/1999/xlink"
ET.register_namespace("", _SVG_NS)
ET.register_namespace("xlink", _XLINK_NS)

#: Download name suffix and media type of every export format.
EXPORTS: Final[dict[ExportFormat, tuple[str, str]]] = {
    ExportFormat.PROV_JSON: ("prov.json", "application/json"),
    ExportFormat.PROV_N: ("provn", "text/provenance-notation; charset=utf-8"),
    ExportFormat.OPENLINEAGE: ("openlineage.jsonl", "application/x-ndjson"),
    ExportFormat.GRAPHML: ("graphml", "application/graphml+xml"),
    ExportFormat.JSON: ("json", "application/json"),
    ExportFormat.DOT: ("dot", "text/vnd.graphviz; charset=utf-8"),
    ExportFormat.SVG: ("svg", "image/svg+xml"),
    ExportFormat.MERMAID: ("mmd", "text/plain; charset=utf-8"),
}
# Node attributes shown first in the details panel, in this order.
_FIRST: Final = (
    "kind",
    "label",
    "workflow_id",
    "run_id",
    "activity_type",
    "activity_id",
    "event_id",
    "event_type",
    "status",
    "attempts",
    "digest",
    "grant_id",
    "index",
    "initiator_label",
    "approver",
    "approver_key_id",
    "governance",
    "governance_grant",
    "governance_evidence",
    "governance_violations",
)
_MARKS: Final = {
    "violation": "✗ VIOLATION",
    "denied": "⊘ denied",
    "ok": "✓ verified",
    "unknown": "? outcome unknown",
    "noted": "↻ earlier attempt",
}


class LineageUnavailableError(ConsoleError):
    """The lineage could not be read or drawn."""

    status = 503
    code = "lineage_unavailable"


@dataclass(frozen=True, slots=True)
class LineageView:
    """What the explorer page shows."""

    workflow_id: str
    follow_children: bool
    svg: str
    data: dict[str, object]
    node_count: int
    edge_count: int
    findings: tuple[Finding, ...]
    node_of: dict[str, str]  # graph node id -> data-node id
    check_error: str | None


def _one_line(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return first[0].upper() + first[1:] + ("" if first.endswith(".") else ".")


async def _fetch_bounded(
    client: Client, workflow_id: str, run_id: str | None, budget: int
) -> RunHistory:
    """One run's history, read only while it stays within ``budget`` events.

    Raises:
        LineageTooLargeError: the run has more than ``budget`` events.
        GraphWorkflowNotFoundError, HistoryUnavailableError: as fetch_histories.
    """
    events: list[HistoryEvent] = []
    try:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        async for e in handle.fetch_history_events():
            if len(events) >= budget:
                raise LineageTooLargeError("history over the event cap", events=len(events) + 1)
            events.append(e)
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            raise GraphWorkflowNotFoundError(f"no workflow {workflow_id!r}") from exc
        raise HistoryUnavailableError(
            f"Temporal did not return the history of {workflow_id}: {exc.message}"
        ) from exc
    except RuntimeError as exc:
        raise HistoryUnavailableError(f"Temporal is unreachable: {exc}") from exc
    return _checked(client.namespace, workflow_id, events)


async def fetch_bounded_histories(
    client: Client, workflow_id: str, *, follow_children: bool, max_events: int
) -> list[RunHistory]:
    """What :func:`fetch_histories` reads, stopping once ``max_events`` events are read.

    The same walk (continue-as-new predecessors, children on request), but
    the events are counted as they arrive, so a long history costs at most
    the cap, not its length.

    Raises:
        LineageTooLargeError: the runs hold more than ``max_events`` events together.
        GraphWorkflowNotFoundError, HistoryUnavailableError, CorruptHistoryError.
    """
    seen: set[tuple[str, str]] = set()
    out: list[RunHistory] = []
    queue: list[tuple[str, str | None]] = [(workflow_id, None)]
    read = 0
    while queue:
        wf, run = queue.pop(0)
        try:
            h = await _fetch_bounded(client, wf, run, max_events - read)
        except LineageTooLargeError as exc:
            raise LineageTooLargeError(
                f"The history holds more than {max_events:,} events, more than the console "
                "reads for one page.",
                events=read + exc.events,
            ) from None
        read += len(h.events)
        if (h.workflow_id, h.run_id) in seen:
            continue
        seen.add((h.workflow_id, h.run_id))
        out.append(h)
        started = h.events[0].workflow_execution_started_event_attributes
        prev = started.continued_execution_run_id
        if prev and (wf, prev) not in seen:
            queue.append((wf, prev))
        if follow_children:
            for e in h.events:
                if e.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
                    ex = e.child_workflow_execution_started_event_attributes.workflow_execution
                    if (ex.workflow_id, ex.run_id) not in seen:
                        queue.append((ex.workflow_id, ex.run_id))
    return out


async def _histories(
    client: Client, workflow_id: str, follow_children: bool, max_events: int
) -> list[RunHistory]:
    try:
        return await fetch_bounded_histories(
            client, workflow_id, follow_children=follow_children, max_events=max_events
        )
    except GraphWorkflowNotFoundError as exc:
        raise ExecutionNotFoundError(
            f"No workflow with id {workflow_id!r} exists in namespace {client.namespace!r}."
        ) from exc
    except HistoryUnavailableError as exc:
        raise LineageUnavailableError(_one_line(f"The history cannot be read: {exc}")) from exc
    except (LineageGraphError, LineageError) as exc:
        raise LineageUnavailableError(_one_line(f"The history is not usable: {exc}")) from exc


def _check(settings: Settings, ledger: Ledger, histories: list[RunHistory]) -> CrossCheckReport:
    """Cross-check with the trust store's log key (public material only)."""
    trust = TrustStore.load(settings.trust)
    now = datetime.now(UTC)
    logs = [k for k in trust.by_role(KeyRole.LOG) if k.revoked_at is None or k.revoked_at > now]
    if not logs:
        raise LedgerNotReadyError("The trust store holds no log key to check receipts with.")
    from ecp.cli.lineage import governed_activity_types

    return cross_check(
        histories,
        ledger=ledger,
        trust=trust,
        log_key=logs[0].public_key,
        origin=settings.log_origin,
        governed_types=governed_activity_types(),
    )


async def load_lineage_graph(
    client: Client,
    settings: Settings,
    ledger: Ledger | None,
    ledger_error: str | None,
    workflow_id: str,
    *,
    follow_children: bool,
    max_events: int = DEFAULT_LIMITS.max_events,
) -> tuple[nx.DiGraph, CrossCheckReport | None, str | None]:
    """The workflow's graph annotated with the cross-check, or with the reason it was not run.

    Raises:
        ExecutionNotFoundError: no such workflow.
        LineageUnavailableError: the history cannot be read.
        LineageTooLargeError: the history is longer than ``max_events``.
    """
    if not workflow_id or len(workflow_id) > 1000:
        raise ExecutionNotFoundError("No workflow has that id.")
    histories = await _histories(client, workflow_id, follow_children, max_events)
    try:
        g = await asyncio.to_thread(build_graph, histories)
    except (LineageGraphError, LineageError) as exc:
        raise LineageUnavailableError(_one_line(f"The graph cannot be built: {exc}")) from exc
    if ledger is None:
        return g, None, ledger_error or "The ledger is not open."
    try:
        report = await asyncio.to_thread(_check, settings, ledger, histories)
    except EcpError as exc:
        return g, None, _one_line(f"The cross-check could not run: {exc}")
    annotate_graph(g, report)
    return g, report, None


def _json_value(v: object) -> object:
    if isinstance(v, str):
        return visible_text(v)
    if isinstance(v, (int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    return visible_text(str(v))


def _marked(g: nx.DiGraph) -> nx.DiGraph:
    """A copy whose labels spell the governance status out (not colour alone)."""
    h = g.copy()
    for _, d in h.nodes(data=True):
        mark = _MARKS.get(str(d.get("governance", "")))
        label = str(d.get("label") or d.get("kind") or "")
        if mark and mark != "✓ verified":
            label = f"{mark}\n{label}"
        # Bidirectional controls are valid XML, so _clean keeps them: escape
        # them here so a label cannot reorder the picture's text.
        d["label"] = visible_text(label)
    return h


_TITLE_EDGE: Final = re.compile(r"^(n\d+)->(n\d+)$")


def _too_many_nodes(g: nx.DiGraph, limits: LineageLimits) -> LineageTooLargeError | None:
    n = g.number_of_nodes()
    if n <= limits.max_nodes:
        return None
    return LineageTooLargeError(
        f"The graph has {n:,} nodes, more than the {limits.max_nodes:,} the console draws; "
        "download it in one of the formats below instead.",
        nodes=n,
    )


def _missing_dot() -> Exception:
    return LineageUnavailableError(
        "Graphviz 'dot' is not installed on the console's host, so the graph cannot be "
        "drawn; the exports below still work."
    )


async def _draw(g: nx.DiGraph, limits: LineageLimits) -> str:
    """Graphviz's SVG of ``g``; ``dot`` is killed if the request is cancelled.

    Raises:
        LineageUnavailableError: Graphviz is missing, failed or took too long.
    """
    source = await asyncio.to_thread(to_dot, _marked(g))
    try:
        return await run_dot(source, limits.dot_timeout, _missing_dot)
    except TimeoutError as exc:
        raise LineageUnavailableError(
            f"Graphviz took longer than {limits.dot_timeout:.0f} s to lay the graph out; "
            "download it in one of the formats below instead."
        ) from exc
    except RuntimeError as exc:
        raise LineageUnavailableError(_one_line(f"The graph cannot be drawn: {exc}")) from exc


def _svg(g: nx.DiGraph, text: str) -> tuple[str, dict[str, str]]:
    """The picture with ``data-node`` on every node group; and node id -> dom id."""
    # Our own dot output (no external entities are resolved by ElementTree).
    root = ET.fromstring(text)  # noqa: S314
    root.attrib.pop("width", None)
    root.attrib.pop("height", None)
    root.set("id", "lineage-svg")
    root.set("role", "group")
    root.set("aria-label", "Lineage graph")
    node_of: dict[str, str] = {}
    title_tag, a_tag = f"{{{_SVG_NS}}}title", f"{{{_SVG_NS}}}a"
    for el in root.iter(f"{{{_SVG_NS}}}g"):
        cls = el.get("class", "")
        title = el.find(title_tag)
        if title is None or not title.text:
            continue
        if cls == "node":
            anchor = el.find(f".//{a_tag}")
            node_id = anchor.get(f"{{{_XLINK_NS}}}title", "") if anchor is not None else ""
            if node_id not in g:
                continue
            dom = title.text
            node_of[node_id] = dom
            d = g.nodes[node_id]
            el.set("data-node", dom)
            el.set("tabindex", "0")
            el.set("role", "button")
            # The label is read from history: control characters come out as
            # the escapes the picture itself shows (see _render._clean).
            label = str(d.get("label") or node_id)
            el.set("aria-label", _clean(label.replace("\n", " ")))
            gov = str(d.get("governance", ""))
            if gov:
                el.set("class", f"node gov-{gov}")
        elif cls == "edge":
            m = _TITLE_EDGE.match(title.text.replace("&#45;", "-"))
            if m:
                el.set("data-from", m.group(1))
                el.set("data-to", m.group(2))
    # Node ids (tooltips) and anything else Graphviz copied from history.
    for el in root.iter():
        if el.text:
            el.text = visible_text(el.text)
        if el.tail:
            el.tail = visible_text(el.tail)
        for k, v in el.attrib.items():
            el.set(k, visible_text(v))
    out = ET.tostring(root, encoding="unicode")
    return out, node_of


async def lineage_view(
    g: nx.DiGraph,
    report: CrossCheckReport | None,
    check_error: str | None,
    workflow_id: str,
    follow_children: bool,
    limits: LineageLimits = DEFAULT_LIMITS,
) -> LineageView:
    """Draw ``g`` and collect what the page's script needs.

    Raises:
        LineageTooLargeError: ``g`` has more nodes than ``limits`` lets the console draw.
        LineageUnavailableError: Graphviz is missing, failed or took too long.
    """
    too_large = _too_many_nodes(g, limits)
    if too_large is not None:
        raise too_large
    svg, node_of = await asyncio.to_thread(_svg, g, await _draw(g, limits))
    nodes: dict[str, object] = {}
    for n, d in g.nodes(data=True):
        dom = node_of.get(n)
        if dom is None:
            continue
        keys = [k for k in _FIRST if k in d] + sorted(k for k in d if k not in _FIRST)
        nodes[dom] = {"id": visible_text(str(n)), "attrs": [[k, _json_value(d[k])] for k in keys]}
    edges = [
        [node_of[u], node_of[v], visible_text(str(d.get("rel", "")))]
        for u, v, d in g.edges(data=True)
        if u in node_of and v in node_of
    ]
    findings = report.findings if report is not None else ()
    return LineageView(
        workflow_id=workflow_id,
        follow_children=follow_children,
        svg=svg,
        data={"nodes": nodes, "edges": edges},
        node_count=g.number_of_nodes(),
        edge_count=g.number_of_edges(),
        findings=tuple(findings),
        node_of=node_of,
        check_error=check_error,
    )


async def export_svg(g: nx.DiGraph, limits: LineageLimits = DEFAULT_LIMITS) -> str:
    """The SVG export, under the same node cap and ``dot`` bounds as the page.

    Raises:
        LineageTooLargeError, LineageUnavailableError: as :func:`lineage_view`.
    """
    too_large = _too_many_nodes(g, limits)
    if too_large is not None:
        raise too_large
    return await _draw(g, limits)


def export_lineage(g: nx.DiGraph, fmt: str, namespace: str) -> tuple[str, str, str]:
    """(text, media type, file suffix) of ``g`` in ``fmt``.

    Raises:
        LineageUnavailableError: unknown format, or the export failed.
    """
    try:
        f = ExportFormat(fmt)
    except ValueError as exc:
        known = ", ".join(x.value for x in ExportFormat)
        raise BadFilterError(f"There is no export format {fmt!r}; known: {known}.") from exc
    try:
        text = render_graph(g, f, namespace=namespace)
    except RendererMissingError as exc:
        raise LineageUnavailableError(
            "Graphviz 'dot' is not installed on the console's host; choose another format."
        ) from exc
    except (LineageGraphError, LineageError) as exc:
        raise LineageUnavailableError(_one_line(f"The export failed: {exc}")) from exc
    suffix, media = EXPORTS[f]
    return text, media, suffix
