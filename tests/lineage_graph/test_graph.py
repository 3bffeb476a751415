"""The graph builder on histories recorded from real workflows (see
``record_fixtures.py``): exact nodes and edges, acyclicity, and that the
final event's ancestors include every step that influenced the result."""

from __future__ import annotations

import re

import networkx as nx
import pytest

from ecp.lineage.graph._build import NodeKind, build_graph, final_node
from ecp.lineage.graph._grant_header import grant_claims, grant_envelope
from ecp.lineage.graph.errors import LineageGraphError
from tests.lineage_graph.conftest import ALL, load

STEP_KINDS = {
    NodeKind.RUN,
    NodeKind.CLOSE,
    NodeKind.ACTIVITY,
    NodeKind.TIMER,
    NodeKind.SIGNAL,
    NodeKind.UPDATE,
    NodeKind.CHILD,
    NodeKind.SIGNAL_OUT,
    NodeKind.MARKER,
}


def _short(g: nx.DiGraph, index: dict[str, dict[str, str]]) -> dict[str, str]:
    """Stable names: run ids by fixture name, artifacts by their value, updates by name."""
    out: dict[str, str] = {}
    for n, d in g.nodes(data=True):
        s = n
        for name, meta in index.items():
            s = s.replace(meta["run_id"], name)
        if d["kind"] == NodeKind.ARTIFACT:
            s = "data:" + str(d["label"]) + (n[n.index("#") :] if "#" in n else "")
        elif d["kind"] == NodeKind.UPDATE:
            s = re.sub(r"/[^/]+$", "/" + str(d["name"]), s)
        elif d["kind"] in (NodeKind.DECISION, NodeKind.GRANT):
            s = str(d["kind"])
        out[n] = s
    return out


Edges = set[tuple[str, str, str]]


def _named(g: nx.DiGraph, index: dict[str, dict[str, str]]) -> tuple[set[str], Edges]:
    m = _short(g, index)
    return {m[n] for n in g.nodes}, {(m[u], m[v], d["rel"]) for u, v, d in g.edges(data=True)}


P1, P2 = "lg-pipeline/pipeline_run1", "lg-pipeline/pipeline_run2"
C = "lg-pipeline-child/pipeline_child"

PIPELINE_NODES = {
    f"run:{P1}",
    f"signal:{P1}/3",
    f"update:{P1}/approve",
    f"activity:{P1}/8",
    f"activity:{P1}/14",
    f"timer:{P1}/20",
    f"child:{P1}/25",
    f"close:{P1}",
    f"run:{C}",
    f"activity:{C}/5",
    f"close:{C}",
    f"run:{P2}",
    f"activity:{P2}/5",
    f"activity:{P2}/11",
    f"close:{P2}",
    'data:{"iteration":0,"source":"warehouse"}',
    'data:"go ahead"',
    'data:"carol"',
    'data:"approved by carol"',
    'data:"warehouse"',
    'data:{"rows":[1,2,3],"source":"warehouse"}',
    'data:{"source":"warehouse","total":6}',
    "data:6",
    "data:12",
    "data:12#2",
    'data:{"iteration":1,"source":"12"}',
    'data:"published 12"',
    'data:"published 12"#2',
}

PIPELINE_EDGES = {
    # workflow task causality: what a task saw -> what it commanded
    (f"run:{P1}", f"activity:{P1}/8", "informed"),
    (f"signal:{P1}/3", f"activity:{P1}/8", "informed"),
    (f"update:{P1}/approve", f"activity:{P1}/8", "informed"),
    (f"activity:{P1}/8", f"activity:{P1}/14", "informed"),
    (f"activity:{P1}/14", f"timer:{P1}/20", "informed"),
    (f"timer:{P1}/20", f"child:{P1}/25", "informed"),
    (f"child:{P1}/25", f"close:{P1}", "informed"),
    (f"close:{C}", f"close:{P1}", "informed"),
    (f"run:{C}", f"activity:{C}/5", "informed"),
    (f"activity:{C}/5", f"close:{C}", "informed"),
    (f"run:{P2}", f"activity:{P2}/5", "informed"),
    (f"activity:{P2}/5", f"activity:{P2}/11", "informed"),
    (f"activity:{P2}/11", f"close:{P2}", "informed"),
    # parent/child and continue-as-new
    (f"child:{P1}/25", f"run:{C}", "started"),
    (f"close:{P1}", f"run:{P2}", "started"),
    # data flow, also across workflows
    ('data:{"iteration":0,"source":"warehouse"}', f"run:{P1}", "used"),
    ('data:"go ahead"', f"signal:{P1}/3", "used"),
    ('data:"carol"', f"update:{P1}/approve", "used"),
    (f"update:{P1}/approve", 'data:"approved by carol"', "generated"),
    ('data:"warehouse"', f"activity:{P1}/8", "used"),
    (f"activity:{P1}/8", 'data:{"rows":[1,2,3],"source":"warehouse"}', "generated"),
    ('data:{"rows":[1,2,3],"source":"warehouse"}', f"activity:{P1}/14", "used"),
    (f"activity:{P1}/14", 'data:{"source":"warehouse","total":6}', "generated"),
    ("data:6", f"child:{P1}/25", "used"),
    ("data:6", f"run:{C}", "used"),
    ("data:6", f"activity:{C}/5", "used"),
    (f"activity:{C}/5", "data:12", "generated"),
    (f"close:{C}", "data:12#2", "generated"),
    ("data:12", "data:12#2", "derived"),
    ("data:12#2", f"activity:{P2}/5", "used"),
    ("data:12#2", f"activity:{P2}/11", "used"),
    (f"close:{P1}", 'data:{"iteration":1,"source":"12"}', "generated"),
    ('data:{"iteration":1,"source":"12"}', f"run:{P2}", "used"),
    (f"activity:{P2}/11", 'data:"published 12"', "generated"),
    (f"close:{P2}", 'data:"published 12"#2', "generated"),
    ('data:"published 12"', 'data:"published 12"#2', "derived"),
}


def test_pipeline_graph_has_exactly_the_expected_nodes_and_edges(
    index: dict[str, dict[str, str]],
) -> None:
    g = build_graph(load("pipeline_run1", "pipeline_run2", "pipeline_child"))
    nodes, edges = _named(g, index)
    assert nodes == PIPELINE_NODES
    assert edges == PIPELINE_EDGES
    assert nx.is_directed_acyclic_graph(g)


def test_pipeline_node_details(index: dict[str, dict[str, str]]) -> None:
    g = build_graph(load("pipeline_run1", "pipeline_run2", "pipeline_child"))
    p1, p2, c = (index[k]["run_id"] for k in ("pipeline_run1", "pipeline_run2", "pipeline_child"))
    flaky = g.nodes[f"activity:lg-pipeline-child/{c}/5"]
    assert (flaky["activity_type"], flaky["attempts"]) == ("lg.flaky", 3)
    assert flaky["status"] == "completed"
    assert flaky["last_failure"] == "transient fault on attempt 2"
    broken = g.nodes[f"activity:lg-pipeline/{p2}/5"]
    assert (broken["status"], broken["failure_type"]) == ("failed", "PublishError")
    timer = g.nodes[f"timer:lg-pipeline/{p1}/20"]
    assert (timer["status"], timer["duration_s"]) == ("fired", 0.1)
    assert g.nodes[f"close:lg-pipeline/{p1}"]["continued_as"] == p2
    assert g.nodes[f"run:lg-pipeline/{p2}"]["status"] == "completed"
    update = next(d for _, d in g.nodes(data=True) if d["kind"] == NodeKind.UPDATE)
    assert (update["name"], update["status"]) == ("approve", "completed")


def test_final_event_ancestors_include_every_step_across_runs_and_children() -> None:
    g = build_graph(load("pipeline_run1", "pipeline_run2", "pipeline_child"))
    final = final_node(g, "lg-pipeline")
    assert g.nodes[final]["status"] == "completed"
    ancestors = nx.ancestors(g, final)
    steps = {n for n, d in g.nodes(data=True) if d["kind"] in STEP_KINDS} - {final}
    assert steps <= ancestors
    # Every input that reached a step is an ancestor too; outputs nobody used are not.
    assert 'data:"approved by carol"' not in {g.nodes[n].get("label") for n in ancestors}
    used = {u for u, _, d in g.edges(data=True) if d["rel"] == "used"}
    assert used <= ancestors


GOVERNED_EDGES = {
    ("run", "attest", "informed"),
    ("attest", "evaluate", "informed"),
    ("evaluate", "authorize", "informed"),
    ("authorize", "payout", "informed"),
    ("payout", "prove", "informed"),
    ("prove", "close", "informed"),
    ("evaluate", "decision", "decided"),
    ("decision", "grant", "decided"),
    ("authorize", "grant", "granted"),
    ("grant", "payout", "authorized"),
    ("payout", "ledger:0", "recorded"),
    ("prove", "ledger:0", "recorded"),
    ("decision", "ledger:0", "recorded"),
}


def test_governed_run_graph(index: dict[str, dict[str, str]]) -> None:
    (h,) = load("governed_payout")
    g = build_graph([h])
    assert nx.is_directed_acyclic_graph(g)
    names = {f"run:lg-governed/{h.run_id}": "run", f"close:lg-governed/{h.run_id}": "close"}
    for n, d in g.nodes(data=True):
        if d["kind"] == NodeKind.ACTIVITY:
            names[n] = str(d["activity_type"]).removeprefix("ecp.")
        elif d["kind"] in (NodeKind.DECISION, NodeKind.GRANT):
            names[n] = str(d["kind"])
        elif d["kind"] == NodeKind.LEDGER:
            names[n] = n
    structural = {
        (names[u], names[v], d["rel"])
        for u, v, d in g.edges(data=True)
        if u in names and v in names
    }
    assert structural == GOVERNED_EDGES
    # Every step produced or consumed a payload: 11 artifacts, each linked once at least.
    artifacts = [n for n, d in g.nodes(data=True) if d["kind"] == NodeKind.ARTIFACT]
    assert len(artifacts) == 11
    assert all(g.degree(a) >= 1 for a in artifacts)
    decision = next(d for _, d in g.nodes(data=True) if d["kind"] == NodeKind.DECISION)
    assert decision["effect"] == "allow"
    # The payout's input artifact is exactly what the grant bound the arguments to.
    payout = next(n for n, d in g.nodes(data=True) if d.get("activity_type") == "payout")
    (arg,) = [p for p in g.predecessors(payout) if g.nodes[p]["kind"] == NodeKind.ARTIFACT]
    sched = h.events[g.nodes[payout]["event_id"] - 1].activity_task_scheduled_event_attributes
    env = grant_envelope(sched.header)
    assert env is not None
    claims = grant_claims(env)
    assert claims is not None
    assert isinstance(claims["call"], dict)
    assert g.nodes[arg]["digest"] == claims["call"]["args_digest"]
    assert g.nodes[payout]["grant_id"] == claims["grant_id"]
    ancestors = nx.ancestors(g, final_node(g, "lg-governed"))
    assert {
        n
        for n, d in g.nodes(data=True)
        if d["kind"] in (NodeKind.ACTIVITY, NodeKind.DECISION, NodeKind.GRANT, NodeKind.RUN)
    } <= ancestors


def test_denied_direct_call_graph(index: dict[str, dict[str, str]]) -> None:
    (h,) = load("direct_denied")
    g = build_graph([h])
    act = f"activity:lg-direct-denied/{h.run_id}/5"
    d = g.nodes[act]
    assert (d["status"], d["governed"], d["has_grant_header"]) == ("denied", True, False)
    assert d["failure_type"] == "ecp.grant_missing"
    close = final_node(g, "lg-direct-denied")
    assert g.nodes[close]["status"] == "failed"
    assert {act, f"run:lg-direct-denied/{h.run_id}"} <= nx.ancestors(g, close)
    assert not any(dd["kind"] in (NodeKind.GRANT, NodeKind.LEDGER) for _, dd in g.nodes(data=True))


def test_all_histories_together_share_artifacts_across_workflows() -> None:
    g = build_graph(load(*ALL))
    assert nx.is_directed_acyclic_graph(g)
    payout_args = [
        n
        for n, d in g.nodes(data=True)
        if d["kind"] == NodeKind.ARTIFACT
        and d["label"] == '{"amount":250,"currency":"EUR","recipient":"acme"}'
    ]
    assert len(payout_args) == 1
    users = {g.nodes[s]["workflow_id"] for s in g.successors(payout_args[0])}
    assert users == {"lg-governed", "lg-direct-denied"}


def test_builder_refuses_empty_and_duplicate_input() -> None:
    with pytest.raises(LineageGraphError):
        build_graph([])
    with pytest.raises(LineageGraphError):
        build_graph(load("direct_denied", "direct_denied"))
    with pytest.raises(LineageGraphError):
        final_node(build_graph(load("direct_denied")), "no-such-workflow")
