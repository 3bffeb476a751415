"""Governed artifacts in the lineage graph: PROV entities by digest, across workflows.

Two sources, joined by the artifact's ``sha256:`` digest:

* the histories: a grant header names the artifacts its call may use
  (:func:`link_grant_artifacts`, run by ``build_graph``): ``used`` edges to a
  completed execution, ``named`` to one that did not complete (a denied
  attempt never used them);
* the ledger: the gate's evidence says which artifacts it verified and handed
  the body (``used``), which outputs the body declared (``generated``) and
  which it refused (:func:`link_ledger_artifacts`). A generated artifact is
  ``derived`` from every artifact the same execution used.

One artifact is one node, ``artifact:sha256:<hex>``, whichever workflow
produced or used it, so a model trained in one workflow and deployed in
another is one graph. :func:`check_artifacts` cross-checks the two sources.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import networkx as nx

from ecp.lineage.graph._build import NodeKind
from ecp.lineage.ledger._evidence import ArtifactEvidence, parse_evidence
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger.errors import LedgerError

__all__ = [
    "ArtifactRecord",
    "artifact_node",
    "check_artifacts",
    "grant_artifacts",
    "ledger_artifacts",
    "link_grant_artifacts",
    "link_ledger_artifacts",
]


def artifact_node(digest: str) -> str:
    """The node id of the artifact with ``digest``."""
    return f"artifact:{digest}"


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    """The artifacts one ledger entry records for one execution."""

    index: int
    workflow_id: str
    run_id: str
    activity_id: str
    outcome: str
    artifacts: tuple[ArtifactEvidence, ...]


def ledger_artifacts(ledger: Ledger, *, digest: str | None = None) -> list[ArtifactRecord]:
    """Entries of the ledger that record artifacts (only those naming ``digest``, if given).

    A scan of the whole ledger: the ledger is indexed by execution, not by
    artifact. Entries that do not parse are skipped (``ecp ledger verify``
    is the place to find those).

    Raises:
        LedgerUnavailableError: the database cannot be read.
    """
    out: list[ArtifactRecord] = []
    for index in range(ledger.head().size):
        try:
            ev = parse_evidence(ledger.entry(index).envelope)
        except LedgerError:
            continue
        arts = tuple(ev.predicate.artifacts or ())
        if not arts:
            continue
        if digest is not None and not any(digest in (a.digest, a.found) for a in arts):
            continue
        act = ev.predicate.activity
        out.append(
            ArtifactRecord(
                index,
                act.workflow_id,
                act.run_id,
                act.activity_id,
                ev.predicate.outcome.status.value,
                arts,
            )
        )
    return out


def _artifact(g: nx.DiGraph, digest: str, **attrs: object) -> str:
    nid = artifact_node(digest)
    name, kind = attrs.get("artifact_name", ""), attrs.get("artifact_kind", "")
    clean = {k: v for k, v in attrs.items() if v not in (None, "")}
    if nid in g:
        g.nodes[nid].update(clean)
    else:
        g.add_node(
            nid,
            kind=NodeKind.ARTIFACT,
            digest=digest,
            governed_artifact=True,
            label=f"{name} ({kind})",
            **clean,
        )
    return nid


def _edge(g: nx.DiGraph, a: str, b: str, rel: str, **attrs: object) -> None:
    if a == b:
        return
    if g.has_edge(a, b):
        g.edges[a, b].update(attrs)
    else:
        g.add_edge(a, b, rel=rel, **attrs)


def link_grant_artifacts(g: nx.DiGraph) -> None:
    """Artifact nodes for the artifacts each grant header names (history only)."""
    for n, d in list(g.nodes(data=True)):
        arts = grant_artifacts(d)
        if not arts:
            continue
        completed = d.get("status") == "completed"
        for a in arts:
            digest = a.get("digest")
            if not isinstance(digest, str):
                continue
            nid = _artifact(
                g,
                digest,
                artifact_name=str(a.get("name", "")),
                artifact_kind=str(a.get("kind", "")),
                uri=str(a.get("uri", "")),
                size=a.get("size") if isinstance(a.get("size"), int) else None,
            )
            _edge(g, nid, n, "used" if completed else "named")


def grant_artifacts(d: Mapping[str, object]) -> list[dict[str, object]]:
    """The artifacts an activity node's grant header named (``[]`` if none)."""
    text = d.get("grant_artifacts")
    if d.get("kind") != NodeKind.ACTIVITY or not isinstance(text, str):
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return [a for a in value if isinstance(a, dict)] if isinstance(value, list) else []


def _activity(g: nx.DiGraph, rec: ArtifactRecord) -> str | None:
    for n, d in g.nodes(data=True):
        if (
            d.get("kind") == NodeKind.ACTIVITY
            and d.get("workflow_id") == rec.workflow_id
            and d.get("run_id") == rec.run_id
            and d.get("activity_id") == rec.activity_id
        ):
            return str(n)
    return None


def link_ledger_artifacts(g: nx.DiGraph, records: Iterable[ArtifactRecord]) -> None:
    """Add what the gate's evidence says about artifacts to ``g``.

    Records of executions the graph does not hold are left out: fetch their
    histories too to see them.
    """
    for rec in records:
        act = _activity(g, rec)
        if act is None:
            continue
        used: list[str] = []
        generated: list[str] = []
        for a in rec.artifacts:
            nid = _artifact(
                g,
                a.digest,
                artifact_name=a.name,
                artifact_kind=a.kind,
                uri=a.uri,
                size=a.size,
                media_type=a.media_type,
            )
            if a.role == "used":
                _edge(g, nid, act, "used", ledger_index=rec.index)
                used.append(nid)
            elif a.role == "generated":
                _edge(g, act, nid, "generated", ledger_index=rec.index)
                generated.append(nid)
            else:
                _edge(g, nid, act, "named", ledger_index=rec.index, refused=True)
                g.nodes[act]["artifact_refused"] = f"{a.name}: expected {a.digest}, found {a.found}"
        for out in generated:
            for src in used:
                _edge(g, src, out, "derived")


def check_artifacts(g: nx.DiGraph, records: Iterable[ArtifactRecord]) -> list[str]:
    """Where the histories and the ledger disagree about an execution's artifacts.

    A completed execution whose grant named artifacts must have gate evidence
    saying it used exactly those digests; evidence that says it used an
    artifact its grant did not name is reported too.
    """
    by_activity: dict[tuple[str, str, str], set[str]] = {}
    for rec in records:
        key = (rec.workflow_id, rec.run_id, rec.activity_id)
        by_activity.setdefault(key, set()).update(
            a.digest for a in rec.artifacts if a.role == "used"
        )
    problems: list[str] = []
    for _, d in sorted(g.nodes(data=True), key=lambda x: str(x[0])):
        arts = grant_artifacts(d)
        if not arts or d.get("status") != "completed":
            continue
        granted = {str(a.get("digest")) for a in arts if isinstance(a, Mapping)}
        key = (str(d.get("workflow_id")), str(d.get("run_id")), str(d.get("activity_id")))
        recorded = by_activity.get(key)
        where = f"{key[0]}/{key[2]}"
        if recorded is None:
            problems.append(f"{where}: the grant names artifacts, the ledger records none used")
        elif recorded != granted:
            problems.append(
                f"{where}: the grant names {sorted(granted)}, the ledger says {sorted(recorded)}"
            )
    return problems
