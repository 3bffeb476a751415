"""Pictures and interchange forms of a lineage graph.

GraphML, node-link JSON, Graphviz DOT, SVG (through Graphviz ``dot``) and Mermaid.

Ids and claims come from workflow histories, which hold whatever a workflow
wrote: every text written here goes through :func:`_clean`, so each export
is a valid document whatever the graph holds.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import defaultdict

import networkx as nx

from ecp.lineage.graph._build import NodeKind
from ecp.lineage.graph.errors import ExportFormatError, RendererMissingError

__all__ = ["to_dot", "to_graphml", "to_mermaid", "to_node_link", "to_svg"]

_SHAPES = {
    NodeKind.RUN: "box3d",
    NodeKind.CLOSE: "doubleoctagon",
    NodeKind.ACTIVITY: "box",
    NodeKind.TIMER: "ellipse",
    NodeKind.SIGNAL: "cds",
    NodeKind.SIGNAL_OUT: "cds",
    NodeKind.UPDATE: "cds",
    NodeKind.CHILD: "component",
    NodeKind.MARKER: "box",
    NodeKind.ARTIFACT: "note",
    NodeKind.DECISION: "diamond",
    NodeKind.GRANT: "hexagon",
    NodeKind.LEDGER: "cylinder",
}
_GOVERNANCE_COLOURS = {
    "ok": "#2e7d32",
    "denied": "#ef6c00",
    "violation": "#c62828",
    "unknown": "#e65100",
    "noted": "#0550ae",
}
_FILL = {
    NodeKind.ARTIFACT: "#f5f5f5",
    NodeKind.DECISION: "#e3f2fd",
    NodeKind.GRANT: "#e8f5e9",
    NodeKind.LEDGER: "#fff8e1",
    NodeKind.RUN: "#ede7f6",
    NodeKind.CLOSE: "#ede7f6",
}


#: What XML 1.0 cannot hold (C0 controls but tab, newline and carriage return;
#: lone surrogates; U+FFFE, U+FFFF), plus DEL and the C1 controls, which XML
#: allows but which act on a terminal showing the file.
_UNSAFE = re.compile("[^\t\n\r\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _clean(s: str) -> str:
    r"""``s`` with each character no export can hold written as ``\uXXXX``.

    Visible rather than dropped, so an auditor sees that an id held a NUL or
    an escape sequence.
    """
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", s)


def _label(d: dict[str, object]) -> str:
    label = str(d.get("label") or d.get("kind") or "")
    kind = d.get("kind")
    if kind == NodeKind.ARTIFACT:
        digest = str(d.get("digest", ""))
        label = f"{label[:28]}\n{digest[:19]}…" if label else digest[:19]
    elif kind == NodeKind.ACTIVITY:
        extra = [str(d.get("status", ""))]
        if int(str(d.get("attempts") or 0)) > 1:
            extra.append(f"{d['attempts']} attempts")
        if d.get("governance"):
            extra.append(f"governance: {d['governance']}")
        label = f"{label}\n{', '.join(x for x in extra if x)}"
    elif kind in (NodeKind.GRANT, NodeKind.DECISION) and len(label) > 32:
        label = label[:31] + "…"
    return label


def _clean_value(v: object) -> object:
    return _clean(v) if isinstance(v, str) else v


def _clean_attrs(d: dict[str, object]) -> dict[str, object]:
    return {_clean(str(k)): _clean_value(v) for k, v in d.items()}


def _xml_safe(g: nx.DiGraph) -> nx.DiGraph:
    """A copy of ``g`` whose ids, keys and text values XML can hold.

    Two ids that differ only where :func:`_clean` rewrote them would merge
    into one node; the later (in sorted order) gets a ``#n`` suffix instead.
    """
    ids: dict[object, object] = {n: n for n in g.nodes if not isinstance(n, str) or _clean(n) == n}
    taken = set(ids)
    for n in sorted(n for n in g.nodes if n not in ids):
        base = new = _clean(n)
        i = 1
        while new in taken:
            i += 1
            new = f"{base}#{i}"
        taken.add(new)
        ids[n] = new
    out = nx.DiGraph(**_clean_attrs(dict(g.graph)))
    out.add_nodes_from((ids[n], _clean_attrs(d)) for n, d in g.nodes(data=True))
    out.add_edges_from((ids[u], ids[v], _clean_attrs(d)) for u, v, d in g.edges(data=True))
    return out


def to_graphml(g: nx.DiGraph) -> str:
    """GraphML text (every node and edge attribute, typed).

    Characters XML cannot hold are written as escapes (see :func:`_clean`).

    Raises:
        ExportFormatError: an attribute value GraphML cannot hold.
    """
    try:
        return "\n".join(nx.generate_graphml(_xml_safe(g))) + "\n"
    except (nx.NetworkXError, KeyError, TypeError) as exc:
        raise ExportFormatError(f"graph cannot be written as GraphML: {exc}") from exc


def to_node_link(g: nx.DiGraph) -> str:
    """Networkx node-link JSON (``nodes``, ``edges``), deterministic."""
    data = nx.node_link_data(g, edges="edges")
    data["nodes"] = sorted(data["nodes"], key=lambda x: str(x["id"]))
    data["edges"] = sorted(data["edges"], key=lambda x: (str(x["source"]), str(x["target"])))
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


#: Graphviz refuses a quoted string over 16,384 bytes and a node wider than
#: 65,535 points. Tooltips (node ids, which the console maps the SVG back to
#: nodes by) keep 3,000 characters, at most 5 bytes each once quoted; labels,
#: which set a node's width, 500.
_DOT_TOOLTIP_CHARS = 3000
_DOT_LABEL_CHARS = 500


def _q(s: str, limit: int = _DOT_LABEL_CHARS) -> str:
    """A DOT quoted string showing ``s`` literally, cut to ``limit`` characters.

    Graphviz reads ``&...;`` in any string as an HTML entity, and writes the
    character into SVG: ``&#27;`` would make the SVG invalid XML, so ``&`` is
    escaped as ``&amp;`` (which Graphviz shows as ``&``).
    """
    s = _clean(s)
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    s = s.replace("&", "&amp;").replace("\\", "\\\\").replace('"', '\\"')
    return '"' + s.replace("\n", "\\n") + '"'


def to_dot(g: nx.DiGraph) -> str:
    """Graphviz DOT: one cluster per workflow run, shapes by kind.

    Governance status in colour (green ok, orange denied, red violation).
    """
    clusters: dict[str, list[str]] = defaultdict(list)
    loose: list[str] = []
    for n in sorted(g.nodes, key=lambda x: (g.nodes[x].get("time_ns", 0), x)):
        d = g.nodes[n]
        if d.get("kind") in (
            NodeKind.ARTIFACT,
            NodeKind.DECISION,
            NodeKind.GRANT,
            NodeKind.LEDGER,
        ) or not d.get("run_id"):
            loose.append(n)
        else:
            clusters[f"{d.get('workflow_id')}/{d.get('run_id')}"].append(n)
    ids = {n: f"n{i}" for i, n in enumerate(sorted(g.nodes))}
    lines = [
        "digraph lineage {",
        '  graph [rankdir=TB, fontname="Helvetica", fontsize=11, nodesep=0.25, ranksep=0.35,'
        " newrank=true];",
        '  node [fontname="Helvetica", fontsize=10, style="filled", fillcolor="#ffffff",'
        ' height=0.3, margin="0.08,0.04"];',
        '  edge [fontname="Helvetica", fontsize=8, color="#555555", arrowsize=0.6];',
    ]

    def node_line(n: str) -> str:
        d = g.nodes[n]
        kind = str(d.get("kind", ""))
        attrs = [
            f"label={_q(_label(dict(d)))}",
            f"shape={_SHAPES.get(kind, 'box')}",
            f"tooltip={_q(n, _DOT_TOOLTIP_CHARS)}",
        ]
        fill = _FILL.get(kind)
        if fill:
            attrs.append(f'fillcolor="{fill}"')
        colour = _GOVERNANCE_COLOURS.get(str(d.get("governance", "")))
        if colour:
            attrs.append(f'color="{colour}", penwidth=2.2')
        elif d.get("status") in ("failed", "denied", "interrupted", "unknown", "timed_out"):
            attrs.append('color="#c62828"')
        return f"    {ids[n]} [{', '.join(attrs)}];"

    for i, (key, members) in enumerate(sorted(clusters.items())):
        first = g.nodes.get(f"run:{key}", {})
        title = f"{first.get('workflow_type', 'workflow')} {key}"
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f'    label={_q(title)}; style="rounded"; color="#9e9e9e";')
        lines.extend(node_line(n) for n in members)
        lines.append("  }")
    lines.extend(node_line(n).removeprefix("  ") for n in loose)
    for u, v, d in sorted(g.edges(data=True)):
        rel = str(d.get("rel", ""))
        style = ' style="dashed"' if rel in ("used", "generated", "derived") else ""
        label = f" label={_q(rel)}" if rel not in ("informed", "used", "generated") else ""
        lines.append(
            f"  {ids[u]} -> {ids[v]} [{style.strip()}{label}];".replace("[]", "").replace(" ;", ";")
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_svg(g: nx.DiGraph, *, timeout: float = 60.0) -> str:
    """An SVG picture drawn by Graphviz ``dot``.

    Raises:
        RendererMissingError: ``dot`` is not installed (Debian: ``graphviz``).
        ExportFormatError: ``dot`` failed or took longer than ``timeout``.
    """
    dot = shutil.which("dot")
    if dot is None:
        raise RendererMissingError(
            "Graphviz 'dot' is not installed; install graphviz (apt-get install graphviz) "
            "or export --format dot"
        )
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [dot, "-Tsvg"],
            input=to_dot(g).encode(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ExportFormatError(f"dot took longer than {timeout:.0f} s") from exc
    if done.returncode != 0:
        first = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ExportFormatError(f"dot failed: {first[0] if first else done.returncode}")
    return done.stdout.decode("utf-8")


def _m(s: str) -> str:
    s = _clean(s).replace("\r\n", "\n").replace("\r", "\n")
    return s.replace('"', "#quot;").replace("\n", "<br/>")


_MERMAID_SHAPES = {
    NodeKind.ARTIFACT: ('[/"', '"/]'),
    NodeKind.DECISION: ('{"', '"}'),
    NodeKind.GRANT: ('{{"', '"}}'),
    NodeKind.LEDGER: ('[("', '")]'),
    NodeKind.RUN: ('[["', '"]]'),
    NodeKind.CLOSE: ('(["', '"])'),
}


def to_mermaid(g: nx.DiGraph) -> str:
    """A Mermaid ``flowchart`` for pasting into documents."""
    ids = {n: f"n{i}" for i, n in enumerate(sorted(g.nodes))}
    lines = ["flowchart TD"]
    for n in sorted(g.nodes):
        d = g.nodes[n]
        left, right = _MERMAID_SHAPES.get(str(d.get("kind")), ('["', '"]'))
        lines.append(f"  {ids[n]}{left}{_m(_label(dict(d)))}{right}")
    for u, v, d in sorted(g.edges(data=True)):
        rel = str(d.get("rel", ""))
        arrow = "-.->" if rel in ("used", "generated", "derived") else "-->"
        lines.append(f"  {ids[u]} {arrow}|{rel}| {ids[v]}")
    for status, colour in _GOVERNANCE_COLOURS.items():
        members = [ids[n] for n in sorted(g.nodes) if g.nodes[n].get("governance") == status]
        if members:
            lines.append(f"  classDef {status} stroke:{colour},stroke-width:3px")
            lines.append(f"  class {','.join(members)} {status}")
    return "\n".join(lines) + "\n"
