"""`ecp lineage` commands: show, verify and export the lineage of a workflow.

Histories come from the Temporal server named by the settings
(``ECP_TEMPORAL_ADDRESS``, ``ECP_NAMESPACE``), or from JSON files given with
``--history`` (as ``temporal workflow show --output json`` writes them).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import networkx as nx
import typer

from ecp._settings import Settings, load_settings
from ecp.cli._common import one_line_errors
from ecp.lineage._crosscheck import CrossCheckReport, Finding, GovernanceStatus
from ecp.lineage.graph._export import ExportFormat
from ecp.lineage.graph._history import RunHistory
from ecp.lineage.ledger._cosignature import WitnessPolicy

__all__ = [
    "ArtifactLineage",
    "AuditResult",
    "app",
    "artifact_lineage",
    "audit_workflow",
    "governed_activity_types",
    "load_lineage",
    "render_tree",
]

app = typer.Typer(
    help="Lineage of workflows: provenance graphs, governance cross-checks, exports.",
    no_args_is_help=True,
)

_HISTORY_HELP = (
    "Read this history JSON file instead of asking Temporal (repeatable: one file per run)."
)
_CHILDREN_HELP = "Include child workflows (recursively)."


def governed_activity_types() -> frozenset[str]:
    """Activity types marked ``@governed`` among the bundled example activities."""
    from ecp.activities import examples
    from ecp.activities._governed import is_governed

    names: set[str] = set()
    for value in vars(examples).values():
        defn = getattr(value, "__temporal_activity_definition", None)
        if defn is not None and is_governed(value):
            names.add(str(defn.name))
    return frozenset(names)


async def _fetch(settings: Settings, workflow_id: str, follow_children: bool) -> list[RunHistory]:
    from ecp._connect import connect
    from ecp.lineage.graph._history import fetch_histories

    client = await connect(settings)
    return await fetch_histories(client, workflow_id, follow_children=follow_children)


def load_lineage(
    settings: Settings,
    workflow_id: str,
    *,
    history_files: list[Path] | None = None,
    follow_children: bool = False,
    namespace: str | None = None,
) -> tuple[list[RunHistory], nx.DiGraph]:
    """The histories of ``workflow_id`` and their lineage graph.

    Raises:
        TemporalUnreachableError: the server does not answer.
        WorkflowNotFoundError: no such workflow (or not among the files).
        HistoryUnavailableError, CorruptHistoryError, HistoryNamespaceError:
            see :mod:`ecp.lineage.graph._history`.
    """
    from ecp.lineage.graph._build import build_graph
    from ecp.lineage.graph._history import load_history_file
    from ecp.lineage.graph.errors import WorkflowNotFoundError

    ns = namespace or settings.namespace
    if history_files:
        histories = [load_history_file(p, namespace=ns) for p in history_files]
        if not any(h.workflow_id == workflow_id for h in histories):
            raise WorkflowNotFoundError(f"no history of workflow {workflow_id!r} among the files")
    else:
        if namespace is not None and namespace != settings.namespace:
            settings = settings.model_copy(update={"namespace": namespace})
        histories = asyncio.run(_fetch(settings, workflow_id, follow_children))
    return histories, build_graph(histories)


def _cross_check(
    settings: Settings, histories: list[RunHistory], witnesses: WitnessPolicy | None = None
) -> CrossCheckReport:
    from ecp._keyring import KeyFiles
    from ecp.authority._keys import load_public_key
    from ecp.authority._truststore import TrustStore
    from ecp.lineage._crosscheck import cross_check
    from ecp.lineage.ledger._ledger import Ledger

    trust = TrustStore.load(settings.trust)
    log_key = load_public_key(KeyFiles(settings.keys).log)
    with Ledger.open(settings.db_url, create=False) as ledger:
        return cross_check(
            histories,
            ledger=ledger,
            trust=trust,
            log_key=log_key,
            origin=settings.log_origin,
            governed_types=governed_activity_types(),
            witnesses=witnesses,
        )


@dataclass(frozen=True)
class AuditResult:
    """What :func:`audit_workflow` wrote and found."""

    report: CrossCheckReport
    files: tuple[Path, ...]


def audit_workflow(
    settings: Settings,
    workflow_id: str,
    out_dir: Path,
    *,
    formats: tuple[ExportFormat, ...] = (
        ExportFormat.PROV_JSON,
        ExportFormat.OPENLINEAGE,
        ExportFormat.DOT,
        ExportFormat.MERMAID,
    ),
    follow_children: bool = True,
) -> AuditResult:
    """Cross-check a workflow's lineage and export it (for the end of ``ecp demo``).

    Synchronous (it runs its own event loop): call it from async code with
    ``await asyncio.to_thread(audit_workflow, settings, wf_id, out_dir)``.
    Files are named ``<workflow id>.<ext>`` in ``out_dir``.

    Raises:
        TemporalUnreachableError, WorkflowNotFoundError, HistoryUnavailableError,
        CorruptHistoryError: the history could not be read.
        LedgerUnavailableError: the ledger could not be read.
        TrustStoreError, KeyFileError: keys could not be loaded.
        ExportFormatError, RendererMissingError: an export failed.
    """
    from ecp.lineage._crosscheck import annotate_graph
    from ecp.lineage.graph._export import export_graph

    histories, g = load_lineage(settings, workflow_id, follow_children=follow_children)
    report = _cross_check(settings, histories)
    annotate_graph(g, report)
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in workflow_id)
    files = tuple(
        export_graph(g, f, out_dir / f"{safe}.{_EXTENSIONS[f]}", namespace=settings.namespace)
        for f in formats
    )
    return AuditResult(report, files)


_EXTENSIONS = {
    ExportFormat.PROV_JSON: "prov.json",
    ExportFormat.PROV_N: "provn",
    ExportFormat.OPENLINEAGE: "openlineage.jsonl",
    ExportFormat.GRAPHML: "graphml",
    ExportFormat.JSON: "json",
    ExportFormat.DOT: "dot",
    ExportFormat.SVG: "svg",
    ExportFormat.MERMAID: "mmd",
}


def _finding_line(f: Finding) -> str:
    mark = {"ok": "✓", "denied": "⊘", "violation": "✗", "noted": "↻"}.get(f.status, "?")
    where = f"{f.activity_type or f.activity_id} ({f.activity_id}) in {f.workflow_id}/{f.run_id}"
    line = f"{mark} {f.status:9} {where}: grant {f.grant}; evidence {f.evidence}"
    if f.ledger_index >= 0:
        line += f" [ledger #{f.ledger_index}]"
    return _plain(line)


@app.command("verify")
@one_line_errors
def verify(
    workflow_id: Annotated[str, typer.Argument(help="The workflow id.")],
    history: Annotated[list[Path] | None, typer.Option("--history", help=_HISTORY_HELP)] = None,
    follow_children: Annotated[
        bool, typer.Option("--follow-children", help=_CHILDREN_HELP)
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
    witness_key: Annotated[
        list[str] | None,
        typer.Option(
            "--witness-key",
            help="A trusted witness's verifier key (`ecp witness key`); repeat for several.",
        ),
    ] = None,
    min_witnesses: Annotated[
        int | None,
        typer.Option(
            "--min-witnesses",
            min=0,
            help="How many trusted witnesses must have cosigned each receipt's checkpoint "
            "(default: all given).",
        ),
    ] = None,
) -> None:
    """Cross-check every governed execution against its grant and the ledger.

    With --witness-key, each receipt's checkpoint must also carry cosignatures
    by --min-witnesses of those witnesses (else a checkpoint_unwitnessed
    violation). Exit code 0 if clean, 2 if any violation was found (1 on errors).
    """
    settings = load_settings()
    policy = WitnessPolicy.from_vkeys(witness_key, min_witnesses) if witness_key else None
    histories, _ = load_lineage(
        settings, workflow_id, history_files=history, follow_children=follow_children
    )
    report = _cross_check(settings, histories, policy)
    if as_json:
        typer.echo(json.dumps([_finding_dict(f) for f in report.findings], indent=2))
    else:
        for f in report.findings:
            typer.echo(_finding_line(f))
            for v in f.violations:
                typer.echo(_plain(f"    violation: {v}"))
            for note in f.notes:
                typer.echo(_plain(f"    note: {note}"))
        n = len(report.violations)
        typer.echo(
            f"{_plain(workflow_id)}: {len(report.findings)} governed execution(s), "
            + ("no violations" if report.ok else f"{n} violation(s)")
        )
    if not report.ok:
        raise typer.Exit(2)


def _finding_dict(f: Finding) -> dict[str, object]:
    return {
        "node": f.node,
        "workflowId": f.workflow_id,
        "runId": f.run_id,
        "activityId": f.activity_id,
        "activityType": f.activity_type,
        "outcome": f.outcome,
        "grant": f.grant,
        "grantId": f.grant_id,
        "evidence": f.evidence,
        "ledgerIndex": f.ledger_index,
        "status": f.status,
        "violations": list(f.violations),
        "notes": list(f.notes),
    }


def _lineage_graph(
    settings: Settings,
    workflow_id: str,
    history: list[Path] | None,
    follow_children: bool,
    verify_first: bool,
) -> nx.DiGraph:
    """The workflow's lineage graph, marked with the cross-check if asked."""
    from ecp.lineage._crosscheck import annotate_graph

    histories, g = load_lineage(
        settings, workflow_id, history_files=history, follow_children=follow_children
    )
    if verify_first:
        annotate_graph(g, _cross_check(settings, histories))
    return g


@dataclass(frozen=True)
class ArtifactLineage:
    """The lineage of every governed execution that produced or used one artifact."""

    digest: str
    graph: nx.DiGraph
    #: Where the histories and the ledger disagree about artifacts.
    problems: tuple[str, ...]
    workflows: tuple[str, ...]


def artifact_lineage(
    settings: Settings, digest: str, *, verify_first: bool = True
) -> ArtifactLineage:
    """One graph of the workflows whose governed executions produced or used ``digest``.

    The ledger says which executions those are (the gate records the
    artifacts it verified, refused and saw generated); their histories are
    fetched and built into one graph, in which the artifact is one node. The
    artifacts the grants name are cross-checked against the ledger, and with
    ``verify_first`` the governed executions are cross-checked as by
    ``ecp lineage verify``. Synchronous (it runs its own event loop).

    Raises:
        ArtifactNotFoundError: no ledger entry names the digest.
        LedgerUnavailableError: the ledger cannot be read.
        TemporalUnreachableError, WorkflowNotFoundError, HistoryUnavailableError,
        CorruptHistoryError: a history could not be read.
    """
    from ecp.lineage._crosscheck import annotate_graph
    from ecp.lineage.graph._artifacts import (
        check_artifacts,
        ledger_artifacts,
        link_ledger_artifacts,
    )
    from ecp.lineage.graph._build import build_graph
    from ecp.lineage.graph.errors import ArtifactNotFoundError
    from ecp.lineage.ledger._ledger import Ledger

    with Ledger.open(settings.db_url, create=False) as ledger:
        hits = ledger_artifacts(ledger, digest=digest)
        if not hits:
            raise ArtifactNotFoundError(f"no ledger evidence names artifact {digest}")
        workflows = tuple(sorted({r.workflow_id for r in hits}))
        records = [r for r in ledger_artifacts(ledger) if r.workflow_id in workflows]
    histories: list[RunHistory] = []
    for wf in workflows:
        histories.extend(asyncio.run(_fetch(settings, wf, False)))
    g = build_graph(histories)
    link_ledger_artifacts(g, records)
    problems = tuple(check_artifacts(g, records))
    if verify_first:
        annotate_graph(g, _cross_check(settings, histories))
    return ArtifactLineage(digest, g, problems, workflows)


_ARTIFACT_HELP = (
    "Instead of one workflow: every workflow whose governed executions produced or used "
    "the artifact with this sha256: digest (found in the ledger), as one graph."
)


def _graph_for(
    settings: Settings,
    workflow_id: str | None,
    artifact: str | None,
    history: list[Path] | None,
    follow_children: bool,
    verify_first: bool,
) -> tuple[nx.DiGraph, str, tuple[str, ...]]:
    if artifact is not None:
        lin = artifact_lineage(settings, artifact, verify_first=verify_first)
        title = f"lineage of artifact {artifact} ({', '.join(lin.workflows)})"
        return lin.graph, title, lin.problems
    if workflow_id is None:
        raise typer.BadParameter("give a workflow id or --artifact DIGEST")
    g = _lineage_graph(settings, workflow_id, history, follow_children, verify_first)
    return g, f"lineage of {workflow_id}", ()


@app.command("export")
@one_line_errors
def export(
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="Output format.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (written atomically).")],
    workflow_id: Annotated[str | None, typer.Argument(help="The workflow id.")] = None,
    follow_children: Annotated[
        bool, typer.Option("--follow-children", help=_CHILDREN_HELP)
    ] = False,
    history: Annotated[list[Path] | None, typer.Option("--history", help=_HISTORY_HELP)] = None,
    verify_first: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Cross-check and mark governance status.")
    ] = False,
    artifact: Annotated[str | None, typer.Option("--artifact", help=_ARTIFACT_HELP)] = None,
) -> None:
    """Export the lineage graph (PROV, OpenLineage, GraphML, JSON, DOT, SVG, Mermaid)."""
    from ecp.lineage.graph._export import export_graph

    settings = load_settings()
    g, _, problems = _graph_for(
        settings, workflow_id, artifact, history, follow_children, verify_first
    )
    for p in problems:
        typer.echo(f"artifact cross-check: {_plain(p)}", err=True)
    export_graph(g, fmt, out, namespace=settings.namespace)
    typer.echo(
        f"wrote {out} ({fmt.value}, {g.number_of_nodes()} nodes, {g.number_of_edges()} edges)"
    )


_STATUS_STYLE = {
    GovernanceStatus.OK: "[green]✓ governed[/green]",
    GovernanceStatus.DENIED: "[yellow]⊘ denied[/yellow]",
    GovernanceStatus.VIOLATION: "[bold red]✗ VIOLATION[/bold red]",
    GovernanceStatus.UNKNOWN: "[bold yellow]? outcome unknown: review[/bold yellow]",
    GovernanceStatus.NOTED: "[cyan]↻ earlier attempt[/cyan]",
}

#: What must not reach a terminal raw: C0 controls (NUL, ESC, newline, ...),
#: DEL, C1 controls (CSI U+009B, OSC U+009D, ...), lone surrogates (which no
#: terminal encoding can write) and the bidirectional overrides and isolates
#: (which reorder the text around them).
_TERMINAL_UNSAFE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def _plain(value: object) -> str:
    r"""``value`` with control characters as visible ``\uXXXX`` (plain terminal output)."""
    return _TERMINAL_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", str(value))


def _term(value: object) -> str:
    r"""``value`` as text safe for a terminal and for rich markup.

    History holds whatever a workflow (or whoever picked its ids) wrote:
    control characters come out as visible ``\uXXXX`` escapes, as in the
    exports, and rich's markup brackets are escaped.
    """
    from rich.markup import escape

    text = _TERMINAL_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", str(value))
    return str(escape(text))


def _who(d: dict[str, object]) -> str:
    """The initiator of a decision, grant or ledger entry and how it was established."""
    from ecp.lineage.graph._build import UNAUTHENTICATED, authentication_method, identity_label

    who = d.get("initiator")
    if not isinstance(who, str) or not who:
        return ""
    auth = str(d.get("initiator_auth") or "")
    text = _term(identity_label(who, auth))
    method = authentication_method(auth)
    if method in ("key", "oidc"):
        return f" — initiator [green]{text}[/green]"
    # Nobody established who asked (or the history does not say how).
    mark = "⚠ " if method == UNAUTHENTICATED else "? "
    return f" — initiator [bold yellow]{mark}{text}[/bold yellow]"


def _artifact_line(d: dict[str, object]) -> str:
    return (
        f"{_term(d.get('artifact_name'))} ({_term(d.get('artifact_kind'))}) "
        f"{_term(d.get('digest'))}"
    )


def render_tree(g: nx.DiGraph, title: str) -> object:
    """A rich ``Tree`` of the runs, their steps in order and their governance.

    Every id and label read from history is escaped for the terminal (see
    :func:`_term`), and each line is rich text already: no emoji code
    (``:warning:``) or highlighting is applied to it when printed.
    """
    from rich.text import Text
    from rich.tree import Tree

    from ecp.lineage.graph._build import NodeKind

    def line(markup: str) -> Text:
        return Text.from_markup(markup, emoji=False)

    root = Tree(line(f"[bold]{_term(title)}[/bold]"))
    runs = sorted(
        (d.get("time_ns", 0), n) for n, d in g.nodes(data=True) if d.get("kind") == NodeKind.RUN
    )
    for _, rn in runs:
        rd = g.nodes[rn]
        branch = root.add(
            line(
                f"[bold]{_term(rd.get('workflow_type', '?'))}[/bold] "
                f"{_term(rd.get('workflow_id'))} run {_term(rd.get('run_id'))} "
                f"— {_term(rd.get('status', 'not loaded' if not rd.get('loaded') else '?'))}"
            )
        )
        steps = sorted(
            (d.get("time_ns", 0), n)
            for n, d in g.nodes(data=True)
            if d.get("run_id") == rd.get("run_id")
            and d.get("workflow_id") == rd.get("workflow_id")
            and d.get("kind") not in (NodeKind.RUN, NodeKind.ARTIFACT)
            and "event_id" in d
        )
        for _, sn in steps:
            sd = g.nodes[sn]
            status = str(sd.get("status", ""))
            if sd.get("kind") == NodeKind.CLOSE:
                text = f"[bold]closed: {_term(status)}[/bold]"
            else:
                text = f"{_term(sd.get('label'))} [dim]{_term(status)}[/dim]"
            if int(str(sd.get("attempts") or 0)) > 1:
                text += f" [dim]({_term(sd['attempts'])} attempts)[/dim]"
            if sd.get("approver"):
                key = f" (key {_term(sd['approver_key_id'])})" if sd.get("approver_key_id") else ""
                text += f" [cyan]approver {_term(sd['approver'])}{key}[/cyan]"
            gov = sd.get("governance")
            if gov:
                text += " " + _STATUS_STYLE.get(str(gov), _term(gov))
            elif sd.get("governed"):
                text += " [dim](governed, not cross-checked)[/dim]"
            leaf = branch.add(line(text))
            if sd.get("governance_grant"):
                leaf.add(line(f"grant: {_term(sd['governance_grant'])}"))
            if sd.get("governance_evidence"):
                leaf.add(line(f"evidence: {_term(sd['governance_evidence'])}"))
            for v in str(sd.get("governance_violations") or "").splitlines():
                leaf.add(line(f"[red]{_term(v)}[/red]"))
            for s in sorted(g.successors(sn)):
                kd = g.nodes[s]
                if kd.get("kind") in (NodeKind.DECISION, NodeKind.GRANT, NodeKind.LEDGER):
                    leaf.add(line(f"→ {_term(kd.get('label'))}{_who(kd)}"))
                elif kd.get("governed_artifact"):
                    leaf.add(line(f"[magenta]generated {_artifact_line(kd)}[/magenta]"))
            for p in sorted(g.predecessors(sn)):
                kd = g.nodes[p]
                if kd.get("governed_artifact"):
                    rel = g.edges[p, sn].get("rel")
                    verb = "used" if rel == "used" else "named (not used)"
                    leaf.add(line(f"[magenta]{verb} {_artifact_line(kd)}[/magenta]"))
            if sd.get("artifact_refused"):
                leaf.add(line(f"[red]refused artifact {_term(sd['artifact_refused'])}[/red]"))
    return root


@app.command("show")
@one_line_errors
def show(
    workflow_id: Annotated[str | None, typer.Argument(help="The workflow id.")] = None,
    follow_children: Annotated[
        bool, typer.Option("--follow-children", help=_CHILDREN_HELP)
    ] = False,
    history: Annotated[list[Path] | None, typer.Option("--history", help=_HISTORY_HELP)] = None,
    verify_first: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Cross-check governed steps first.")
    ] = True,
    artifact: Annotated[str | None, typer.Option("--artifact", help=_ARTIFACT_HELP)] = None,
) -> None:
    """Print the lineage as a tree, with the governance status of each step.

    With ``--artifact DIGEST``: every workflow that produced or used that
    artifact, as one graph; exits 1 if the histories and the ledger disagree
    about an execution's artifacts.
    """
    from rich.console import Console

    settings = load_settings()
    g, title, problems = _graph_for(
        settings, workflow_id, artifact, history, follow_children, verify_first
    )
    console = Console()
    console.print(render_tree(g, title))
    for p in problems:
        console.print(f"[red]artifact cross-check: {_term(p)}[/red]")
    if problems:
        raise typer.Exit(1)
