"""The lineage tools survive any grant header bytes in a recorded history.

A workflow writes its activity headers itself, so history can hold anything
there. ``ecp lineage show/verify/export`` read those headers; garbage must
come out as an unreadable grant (and a cross-check finding), never a crash.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent

from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._truststore import TrustStore
from ecp.lineage._crosscheck import Violation, annotate_graph, cross_check
from ecp.lineage.graph._build import NodeKind, build_graph
from ecp.lineage.graph._export import ExportFormat, export_graph, render_graph
from ecp.lineage.graph._grant_header import GRANT_HEADER
from ecp.lineage.graph._history import RunHistory, load_history_json
from ecp.lineage.graph.errors import ExportFormatError
from ecp.lineage.ledger._ledger import Ledger
from tests.lineage_graph.conftest import FIXTURES

FIXTURE = "governed_payout"
_RAW: dict[str, Any] = json.loads((FIXTURES / f"{FIXTURE}.json").read_text())

GARBAGE = {
    "5000-brackets": b"[" * 5000,
    "5000-braces": b'{"a":' * 5000,
    "empty": b"",
    "invalid-utf8": b"\xff\xfe\x00",
    "huge-int": b"9" * 5000,
    "payload-5000-brackets": b'{"payload":"' + base64.b64encode(b"[" * 5000) + b'"}',
    "payload-huge-int": b'{"payload":"' + base64.b64encode(b"1" * 5000) + b'"}',
    "payload-surrogate": b'{"payload":"'
    + base64.b64encode(b'{"grant_id":"\\ud800","call":{"namespace":"\\udfff"}}')
    + b'","payloadType":"application/vnd.ecp.grant.v1+json","signatures":[{"sig":"AA=="}]}',
    "payload-not-base64": b'{"payload":"\xe2\x80\x94!","payloadType":"x","signatures":[]}',
    "type-confusion": b'{"payload":["a"],"payloadType":{},"signatures":"x"}',
}

#: Readable grants whose claims are hostile text: they must render, not crash.
_SIGS = b'","payloadType":"application/vnd.ecp.grant.v1+json","signatures":[{"sig":"AA=="}]}'
HOSTILE = {
    "control-chars": b'{"payload":"'
    + base64.b64encode(b'{"grant_id":"\\u0000\\u001b[31m","issuer":"\\u2028"}')
    + _SIGS,
    "markup": b'{"payload":"'
    + base64.b64encode(b'{"grant_id":"</script><x a=\\"&\\">\\"}]]>","decision_id":"\\"\\n}"}')
    + _SIGS,
    "wrong-types": b'{"payload":"'
    + base64.b64encode(b'{"grant_id":["x"],"call":{"namespace":1},"approvals":[{},null,1e300]}')
    + _SIGS,
}


def _grant_fields(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for e in doc["events"]:
        attrs = e.get("activityTaskScheduledEventAttributes", {})
        field = attrs.get("header", {}).get("fields", {}).get(GRANT_HEADER)
        if field is not None:
            out.append(field)
    return out


def _history_with(header: bytes) -> RunHistory:
    """The recorded history, its grant header replaced, loaded like a --history file."""
    doc = copy.deepcopy(_RAW)
    fields = _grant_fields(doc)
    assert fields, "the fixture carries a grant header"
    for f in fields:
        f["data"] = base64.b64encode(header).decode()
    return load_history_json(json.dumps(doc), namespace="default")


def _in_memory(h: RunHistory, header: bytes) -> RunHistory:
    events = []
    for e in h.events:
        c = HistoryEvent()
        c.CopyFrom(e)
        a = c.activity_task_scheduled_event_attributes
        if (
            c.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and GRANT_HEADER in a.header.fields
        ):
            a.header.fields[GRANT_HEADER].data = header
        events.append(c)
    return RunHistory(h.namespace, h.workflow_id, h.run_id, events)


_FORMATS = [f for f in ExportFormat if f is not ExportFormat.SVG or shutil.which("dot")]


def _governed_nodes(g: nx.DiGraph) -> list[dict[str, Any]]:
    return [d for _, d in g.nodes(data=True) if d.get("has_grant_header")]


def test_the_fixture_grant_reads_normally() -> None:
    g = build_graph([_history_with(base64.b64decode(_grant_fields(_RAW)[0]["data"]))])
    (payout,) = _governed_nodes(g)
    assert payout["grant_id"]
    assert any(d.get("kind") == NodeKind.GRANT for _, d in g.nodes(data=True))


@pytest.mark.parametrize("header", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_grant_header_is_an_unreadable_grant(header: bytes, tmp_path: Path) -> None:
    h = _history_with(header)
    g = build_graph([h])
    (payout,) = _governed_nodes(g)
    # Read as "carried a header, but no grant in it": no grant node, no id.
    assert payout["governed"] is True
    assert payout["grant_id"] == ""
    assert not any(
        d.get("kind") == NodeKind.GRANT and "header" in str(d.get("label"))
        for _, d in g.nodes(data=True)
    )
    _render_all(g)
    assert export_graph(g, ExportFormat.JSON, tmp_path / "lineage.json").exists()
    # The same header edited in memory gives the same graph.
    g2 = build_graph([_in_memory(load_history_json(json.dumps(_RAW), namespace="default"), header)])
    assert nx.utils.graphs_equal(g, g2)


def _render_all(g: nx.DiGraph) -> None:
    for fmt in _FORMATS:
        try:
            assert isinstance(render_graph(g, fmt), str)
        except ExportFormatError:
            # Typed, so no crash; but see test_hostile_claims_export_valid_documents.
            assert fmt is ExportFormat.SVG
            continue


@pytest.mark.parametrize("header", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_grant_claims_render(header: bytes, tmp_path: Path) -> None:
    g = build_graph([_history_with(header)])
    (payout,) = _governed_nodes(g)
    assert payout["governed"] is True
    _render_all(g)
    assert export_graph(g, ExportFormat.GRAPHML, tmp_path / "lineage.graphml").exists()


def test_hostile_claims_export_valid_documents() -> None:
    g = build_graph([_history_with(HOSTILE["control-chars"])])
    ElementTree.fromstring(render_graph(g, ExportFormat.GRAPHML))
    if shutil.which("dot"):
        render_graph(g, ExportFormat.SVG)


@pytest.mark.parametrize(
    "header",
    [GARBAGE["5000-brackets"], GARBAGE["payload-surrogate"], HOSTILE["control-chars"]],
    ids=["5000-brackets", "payload-surrogate", "control-chars"],
)
def test_cross_check_reports_garbage_grant_as_a_finding(header: bytes, tmp_path: Path) -> None:
    # What ``ecp lineage verify`` does: the garbage is a grant_invalid violation.
    h = _history_with(header)
    log = Ed25519FileSigner.generate()
    with Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        report = cross_check([h], ledger=ledger, trust=TrustStore(), log_key=log.public_key)
    (finding,) = [f for f in report.findings if f.activity_type == "payout"]
    # The verifier's error code, e.g. envelope_malformed or key_unknown.
    assert re.fullmatch(r"[a-z_]+: .+", finding.grant), finding.grant
    assert any(v.startswith(Violation.GRANT_INVALID) for v in finding.violations)
    assert not report.ok
    g = build_graph([h])
    annotate_graph(g, report)
    _render_all(g)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    header=st.one_of(
        st.binary(max_size=200),
        st.binary(max_size=64).map(lambda p: b'{"payload":"' + base64.b64encode(p) + b'"}'),
        st.sampled_from([*GARBAGE.values(), *HOSTILE.values()]),
    )
)
def test_fuzz_grant_header_in_history(header: bytes) -> None:
    g = build_graph([_history_with(header)])
    render_graph(g, ExportFormat.JSON)
    render_graph(g, ExportFormat.PROV_JSON)
    render_graph(g, ExportFormat.GRAPHML)
