"""Exports: PROV-JSON against the W3C schema and through a ``prov`` round
trip, PROV-N, OpenLineage RunEvents against the spec (offline ``$ref``s) and
the custom facet against its own schema, GraphML, node-link JSON, DOT, SVG,
Mermaid; atomic writes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import networkx as nx
import pytest
from prov.model import ProvDocument
from referencing import Registry, Resource

from ecp.lineage.graph import _render as render
from ecp.lineage.graph._build import build_graph
from ecp.lineage.graph._export import ExportFormat, export_graph, render_graph
from ecp.lineage.graph._openlineage import (
    GOVERNANCE_FACET_SCHEMA,
    GOVERNANCE_FACET_SCHEMA_URL,
    openlineage_events,
    openlineage_json,
)
from ecp.lineage.graph._prov import prov_json, prov_n, to_prov
from ecp.lineage.graph.errors import ExportFormatError, RendererMissingError
from tests.lineage_graph.conftest import ALL, load
from tests.vectors import vectors_dir

GROUPS = {
    "pipeline": ("pipeline_run1", "pipeline_run2", "pipeline_child"),
    "governed": ("governed_payout",),
    "denied": ("direct_denied",),
    "all": ALL,
}


@pytest.fixture(scope="module", params=sorted(GROUPS))
def graph(request: pytest.FixtureRequest) -> nx.DiGraph:
    return build_graph(load(*GROUPS[request.param]))


# --- PROV ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def prov_validator() -> jsonschema.Draft4Validator:
    schema = json.loads((vectors_dir() / "prov" / "schemas" / "prov-json.schema.json").read_text())
    return jsonschema.Draft4Validator(
        schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
    )


def test_prov_json_validates_and_round_trips(
    graph: nx.DiGraph, prov_validator: jsonschema.Draft4Validator
) -> None:
    text = prov_json(graph)
    doc = json.loads(text)
    errors = sorted(prov_validator.iter_errors(doc), key=str)
    assert not errors, errors[0]
    # The schema misspells wasEndedBy ("wasEndedby") and knows no other
    # relation names: only ones it spells like the PROV data model are used.
    known = set(prov_validator.schema["properties"])
    assert set(doc) <= known - {"wasEndedby"}
    parsed = ProvDocument.deserialize(content=text, format="json")
    assert parsed == to_prov(graph)
    assert json.loads(parsed.serialize(format="json")) == doc


def test_prov_maps_kinds_and_relations() -> None:
    g = build_graph(load("governed_payout"))
    doc = json.loads(prov_json(g))
    assert {
        "used",
        "wasGeneratedBy",
        "wasAssociatedWith",
        "wasInformedBy",
        "wasDerivedFrom",
        "wasAttributedTo",
    } <= set(doc)
    # The grant is attributed to the authority key that signed it.
    (attribution,) = doc["wasAttributedTo"].values()
    assert attribution["prov:entity"].startswith("ecp:grant_")
    agent = doc["agent"][attribution["prov:agent"]]
    assert agent["prov:type"]["$"] == "ecp:authority"
    text = prov_n(g)
    assert text.startswith("document")
    assert "wasInformedBy(" in text
    assert "used(" in text


def test_prov_attributes_approvals_to_the_approver() -> None:
    # A synthetic graph: an approval update, as GovernedExecution records one.
    g = nx.DiGraph()
    g.add_node("data:a", kind="artifact", digest="sha256:" + "a" * 64, label="approval")
    g.add_node(
        "update:x",
        kind="update",
        label="approval by carol",
        approver="carol",
        time="2025-01-01T00:00:00Z",
    )
    g.add_node("grant:g", kind="grant", grant_id="g", issuer="k1")
    g.add_edge("data:a", "update:x", rel="used")
    g.add_edge("update:x", "grant:g", rel="approved")
    doc = json.loads(prov_json(g))
    agents = {v["prov:label"]: k for k, v in doc["agent"].items()}
    attributed = {(a["prov:entity"], a["prov:agent"]) for a in doc["wasAttributedTo"].values()}
    assert ("ecp:data_a", agents["carol"]) in attributed
    assert ("ecp:grant_g", agents["authority key k1"]) in attributed
    assert any(a["prov:agent"] == agents["carol"] for a in doc["wasAssociatedWith"].values())


# --- OpenLineage --------------------------------------------------------------


def _registry() -> Registry[Any]:
    base = vectors_dir() / "openlineage"
    resources = []
    for path in [*(base / "website" / "static" / "spec").rglob("*.json"), GOVERNANCE_FACET_SCHEMA]:
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and "$id" in doc:
            resources.append((doc["$id"], Resource.from_contents(doc)))
    return Registry().with_resources(resources)


@pytest.fixture(scope="module")
def registry() -> Registry[Any]:
    return _registry()


def _validator(registry: Registry[Any], ref: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        {"$ref": ref},
        registry=registry,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def test_openlineage_events_validate_against_the_spec(
    graph: nx.DiGraph, registry: Registry[Any]
) -> None:
    spec = json.loads((vectors_dir() / "openlineage" / "spec" / "OpenLineage.json").read_text())
    run_event = _validator(registry, spec["$id"] + "#/$defs/RunEvent")
    lines = openlineage_json(openlineage_events(graph)).splitlines()
    assert lines
    facets_seen: set[str] = set()
    for line in lines:
        event = json.loads(line)
        errors = list(run_event.iter_errors(event))
        assert not errors, errors[0]
        for name, facet in event["run"]["facets"].items():
            facets_seen.add(name)
            url = facet["_schemaURL"]
            v = _validator(registry, url)
            errs = list(v.iter_errors(facet))
            assert not errs, (name, errs[0])


def test_governance_facet_against_its_own_schema(registry: Registry[Any]) -> None:
    g = build_graph(load("governed_payout"))
    events = [json.loads(x) for x in openlineage_json(openlineage_events(g)).splitlines()]
    facets = [
        e["run"]["facets"]["ecp_governance"]
        for e in events
        if "ecp_governance" in e["run"]["facets"]
    ]
    assert len(facets) == 2  # START and COMPLETE of the governed payout
    own = json.loads(GOVERNANCE_FACET_SCHEMA.read_text())
    assert GOVERNANCE_FACET_SCHEMA_URL.startswith(own["$id"])
    whole = jsonschema.Draft202012Validator(
        own, registry=registry, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for f in facets:
        whole.validate({"ecp_governance": f})
        assert f["governed"] is True
        assert f["decision"] == "allow"
        assert f["grantId"]
        assert f["receipt"]["ledgerIndex"] == 0
    # The schema is not vacuous: a wrong decision or a missing grant id fails.
    bad = dict(facets[0], decision="maybe")
    with pytest.raises(jsonschema.ValidationError):
        whole.validate({"ecp_governance": bad})
    missing = {k: v for k, v in facets[0].items() if k != "grantId"}
    with pytest.raises(jsonschema.ValidationError):
        whole.validate({"ecp_governance": missing})


def test_openlineage_start_and_end_states() -> None:
    g = build_graph(load("direct_denied", "governed_payout"))
    events = [json.loads(x) for x in openlineage_json(openlineage_events(g)).splitlines()]
    by_job: dict[str, list[str]] = {}
    for e in events:
        by_job.setdefault(e["job"]["name"], []).append(e["eventType"])
    assert by_job["DirectCall"] == ["START", "FAIL"]
    assert by_job["DirectCall.payout"] == ["START", "FAIL"]
    assert by_job["GovernedExecution.payout"] == ["START", "COMPLETE"]
    assert by_job["GovernedExecution"] == ["START", "COMPLETE"]


# --- graph interchange and pictures -------------------------------------------


def test_graphml_and_node_link_round_trip(graph: nx.DiGraph, tmp_path: Path) -> None:
    export_graph(graph, "graphml", tmp_path / "g.graphml")
    back = nx.read_graphml(tmp_path / "g.graphml")
    assert set(back.nodes) == set(graph.nodes)
    assert set(back.edges) == set(graph.edges)
    assert all(back.nodes[n] == graph.nodes[n] for n in graph.nodes)
    data = json.loads(render_graph(graph, ExportFormat.JSON))
    again = nx.node_link_graph(data, edges="edges")
    assert set(again.edges) == set(graph.edges)


def test_dot_and_mermaid(graph: nx.DiGraph) -> None:
    dot = render_graph(graph, "dot")
    assert dot.startswith("digraph lineage {")
    assert dot.rstrip().endswith("}")
    assert dot.count(" -> ") == graph.number_of_edges()
    mermaid = render_graph(graph, "mermaid")
    assert mermaid.startswith("flowchart TD\n")
    assert mermaid.count("-->") + mermaid.count("-.->") == graph.number_of_edges()


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz dot not installed")
def test_svg_for_a_fifty_step_history() -> None:
    g = build_graph(load(*ALL))
    assert g.number_of_nodes() >= 50
    svg = render_graph(g, "svg")
    assert svg.count('class="node"') == g.number_of_nodes()
    # Readable: one page-ish picture (clusters keep it compact), text not shrunk.
    size = re.search(r'<svg width="([0-9.]+)pt" height="([0-9.]+)pt"', svg)
    assert size is not None
    width, height = float(size.group(1)), float(size.group(2))
    assert width < 4000, width
    assert height < 2500, height
    sizes = {float(x) for x in re.findall(r'font-size="([0-9.]+)"', svg)}
    assert sizes
    assert min(sizes) >= 8


def test_svg_without_dot_is_a_typed_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(render.shutil, "which", lambda _name: None)
    g = build_graph(load("direct_denied"))
    out = tmp_path / "g.svg"
    with pytest.raises(RendererMissingError):
        export_graph(g, "svg", out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_and_unwritable_target(tmp_path: Path) -> None:
    g = build_graph(load("direct_denied"))
    with pytest.raises(ExportFormatError):
        export_graph(g, "pdf", tmp_path / "g.pdf")
    with pytest.raises(ExportFormatError):
        export_graph(g, "dot", tmp_path / "missing-dir" / "g.dot")
    assert list(tmp_path.iterdir()) == []
