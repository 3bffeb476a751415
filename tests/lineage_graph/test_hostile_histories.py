"""The lineage tools survive any content in a workflow history.

Whoever can start a workflow chooses its activity inputs and results, its
update arguments, headers and ids, and a ``--history`` file can hold anything
at all. ``ecp lineage show/verify/export`` and the console's Lineage Explorer
read all of it: hostile content must come out as an unread value, a
cross-check finding or a typed :class:`CorruptHistoryError`, never a crash,
and every export must stay a valid document.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.api.history.v1 import HistoryEvent

from ecp._wire import APPROVE_UPDATE
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._truststore import TrustStore
from ecp.lineage._crosscheck import Violation, cross_check
from ecp.lineage.graph._build import NodeKind, build_graph
from ecp.lineage.graph._export import ExportFormat, export_graph, render_graph
from ecp.lineage.graph._history import RunHistory, load_history_file, load_history_json
from ecp.lineage.graph._render import to_graphml
from ecp.lineage.graph.errors import CorruptHistoryError
from ecp.lineage.ledger._ledger import Ledger
from tests.lineage_graph.conftest import FIXTURES

Doc = dict[str, Any]
_JSON_PLAIN = base64.b64encode(b"json/plain").decode()
_GRANT_HEADER = "ecp-grant"


def _doc(name: str) -> Doc:
    doc: Doc = json.loads((FIXTURES / f"{name}.json").read_text())
    return doc


def _load(doc: Doc) -> RunHistory:
    return load_history_json(json.dumps(doc), namespace="default")


def _attrs(event: Doc) -> Doc:
    (key,) = [k for k in event if k.endswith("EventAttributes")]
    attrs: Doc = event[key]
    return attrs


def _events(doc: Doc, event_type: str) -> list[Doc]:
    return [e for e in doc["events"] if e["eventType"] == f"EVENT_TYPE_{event_type}"]


def _payload(data: bytes) -> Doc:
    return {"metadata": {"encoding": _JSON_PLAIN}, "data": base64.b64encode(data).decode()}


def _valid_documents(g: nx.DiGraph, tmp_path: Path | None = None) -> None:
    """Every export format renders, as a document its format's parser accepts."""
    for fmt in ExportFormat:
        if fmt is ExportFormat.SVG and not shutil.which("dot"):
            continue
        text = render_graph(g, fmt)
        text.encode("utf-8")  # what export_graph writes
        if fmt in (ExportFormat.GRAPHML, ExportFormat.SVG):
            ElementTree.fromstring(text)
        elif fmt in (ExportFormat.JSON, ExportFormat.PROV_JSON):
            json.loads(text)
        elif fmt is ExportFormat.OPENLINEAGE:
            for line in text.splitlines():
                json.loads(line)
        if tmp_path is not None:
            assert export_graph(g, fmt, tmp_path / f"lineage.{fmt.value}").exists()


# --- payloads: activity results and inputs, update arguments ---------------------

#: JSON payload bytes no strict reader takes as a value.
HOSTILE_JSON = {
    "5000-brackets": b"[" * 5000,
    "5000-braces": b'{"a":' * 5000,
    "deep-but-valid": b"[" * 900 + b"]" * 900,
    "5000-digits": b"9" * 5000,
    "lone-surrogate": b'{"decision_id":"\\ud800","grant_id":"\\udfff","index":1}',
    "infinity": b'{"index":Infinity,"tree_size":1e400}',
    "duplicate-keys": b'{"decision_id":"a","decision_id":"b"}',
    "invalid-utf8": b'{"grant_id":"\xff"}',
}

#: Readable JSON of the wrong shape for a governance result.
WRONG_TYPES = {
    "evaluate-types": b'{"decision_id":"d1","effect":["allow"],"approvals_required":"lots",'
    b'"reasons":[{"a":1},' + b"[" * 400 + b"]" * 400 + b',"ok"],"policy_digest":7}',
    "prove-bool-index": b'{"index":true,"tree_size":"big"}',
    "prove-types": b'{"index":5,"tree_size":[1]}',
    "authorize-types": b'{"grant_id":"\\u0000&#27;","expires_at":{}}',
}


@pytest.mark.parametrize(
    "data", [*HOSTILE_JSON.values(), *WRONG_TYPES.values()], ids=[*HOSTILE_JSON, *WRONG_TYPES]
)
def test_hostile_activity_results_build_and_export(data: bytes, tmp_path: Path) -> None:
    doc = _doc("governed_payout")
    for e in _events(doc, "ACTIVITY_TASK_COMPLETED"):
        _attrs(e)["result"] = {"payloads": [_payload(data)]}
    g = build_graph([_load(doc)])
    activities = [d for _, d in g.nodes(data=True) if d.get("kind") == NodeKind.ACTIVITY]
    assert len(activities) == 5
    assert all(d["status"] == "completed" for d in activities)
    if data in HOSTILE_JSON.values():
        # Not a value: no decision or ledger entry is read from it.
        kinds = {d.get("kind") for _, d in g.nodes(data=True)}
        assert not kinds & {NodeKind.DECISION, NodeKind.LEDGER}
    _valid_documents(g, tmp_path)


def test_wrong_types_in_a_decision_are_not_read_as_values() -> None:
    doc = _doc("governed_payout")
    for e in _events(doc, "ACTIVITY_TASK_COMPLETED"):
        _attrs(e)["result"] = {"payloads": [_payload(WRONG_TYPES["evaluate-types"])]}
    g = build_graph([_load(doc)])
    d = g.nodes["decision:d1"]
    assert (d["effect"], d["approvals_required"], d["reasons"]) == ("", 0, "ok")
    assert d["policy_digest"] == ""


@pytest.mark.parametrize("data", HOSTILE_JSON.values(), ids=[f"input-{k}" for k in HOSTILE_JSON])
def test_hostile_activity_inputs_build_and_export(data: bytes) -> None:
    doc = _doc("governed_payout")
    for e in _events(doc, "ACTIVITY_TASK_SCHEDULED"):
        _attrs(e)["input"] = {"payloads": [_payload(data)]}
    g = build_graph([_load(doc)])
    # Still bound by a digest (of the exact bytes), so data flow is drawn.
    assert any(d.get("kind") == NodeKind.ARTIFACT for _, d in g.nodes(data=True))
    _valid_documents(g)


def _approval_envelope(payload: bytes, *, urlsafe: bool = False) -> bytes:
    enc = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return json.dumps(
        {
            "payload": enc(payload).decode().rstrip("=" if urlsafe else ""),
            "payloadType": "application/vnd.ecp.approval.v1+json",
            "signatures": [{"keyid": "k", "sig": "AA=="}],
        }
    ).encode()


def _with_approval_update(arg: bytes) -> Doc:
    """pipeline_run1, its update renamed ``ecp.approve`` and given ``arg`` (JSON bytes)."""
    doc = _doc("pipeline_run1")
    (accepted,) = _events(doc, "WORKFLOW_EXECUTION_UPDATE_ACCEPTED")
    request = _attrs(accepted)["acceptedRequest"]
    request["input"]["name"] = APPROVE_UPDATE
    request["input"]["args"] = {"payloads": [_payload(arg)]}
    return doc


def _update_node(g: nx.DiGraph) -> dict[str, Any]:
    (update,) = [d for _, d in g.nodes(data=True) if d.get("kind") == NodeKind.UPDATE]
    return update


_CLAIMS = b'{"approver":"carol","approval_id":"ap-1","decision_id":"sha256:' + b"0" * 64 + b'"}'


@pytest.mark.parametrize("urlsafe", [False, True], ids=["std-base64", "url-base64"])
def test_an_approval_update_names_its_approver(urlsafe: bool) -> None:
    arg = json.dumps(_approval_envelope(_CLAIMS, urlsafe=urlsafe).decode()).encode()
    update = _update_node(build_graph([_load(_with_approval_update(arg))]))
    assert (update["approver"], update["approval_id"]) == ("carol", "ap-1")
    assert update["label"] == "approval by carol"


HOSTILE_APPROVALS = {
    **{f"arg-{k}": v for k, v in HOSTILE_JSON.items()},
    **{
        f"payload-{k}": json.dumps(_approval_envelope(v).decode()).encode()
        for k, v in HOSTILE_JSON.items()
    },
    "envelope-5000-brackets": json.dumps("[" * 5000).encode(),
    "envelope-surrogate": b'"{\\"payload\\":\\"\\ud800\\"}"',
    "envelope-type-confusion": json.dumps(json.dumps({"payload": 5, "signatures": {}})).encode(),
    "envelope-no-signatures": json.dumps(
        json.dumps({"payload": base64.b64encode(_CLAIMS).decode(), "payloadType": "x"})
    ).encode(),
    "payload-not-an-object": json.dumps(_approval_envelope(b'["carol"]').decode()).encode(),
    "payload-control-chars": json.dumps(
        _approval_envelope(b'{"approver":"\\u0000\\u001b]0;owned\\u0007"}').decode()
    ).encode(),
}


@pytest.mark.parametrize("name", HOSTILE_APPROVALS)
def test_hostile_approval_updates_build_and_export(name: str) -> None:
    g = build_graph([_load(_with_approval_update(HOSTILE_APPROVALS[name]))])
    update = _update_node(g)
    assert update["name"] == APPROVE_UPDATE
    if name == "payload-control-chars":
        assert update["approver"] == "\x00\x1b]0;owned\x07"  # read, and exported escaped
    else:
        assert update.get("approver", "") == ""
        assert update["label"] == f"update {APPROVE_UPDATE}"
    _valid_documents(g)


# --- an inconsistent history --------------------------------------------------------

_REF = {
    "ACTIVITY_TASK_STARTED": "scheduledEventId",
    "ACTIVITY_TASK_COMPLETED": "scheduledEventId",
    "ACTIVITY_TASK_FAILED": "scheduledEventId",
    "TIMER_FIRED": "startedEventId",
    "CHILD_WORKFLOW_EXECUTION_STARTED": "initiatedEventId",
    "CHILD_WORKFLOW_EXECUTION_COMPLETED": "initiatedEventId",
}


def _dangling(event_type: str, ref: str) -> Callable[[], Doc]:
    def make() -> Doc:
        doc = _doc("pipeline_run2" if event_type == "ACTIVITY_TASK_FAILED" else "pipeline_run1")
        event = _events(doc, event_type)[0]
        if ref == "later":
            target = str(int(event["eventId"]) + 1)
        elif ref == "run-start":
            target = "1"
        elif ref == "wrong-kind":
            # An earlier step, but of another kind than the event refers to.
            other = "ACTIVITY_TASK_SCHEDULED" if event_type == "TIMER_FIRED" else "TIMER_STARTED"
            target = _events(doc, other)[0]["eventId"]
        else:
            target = ref
        _attrs(event)[_REF[event_type]] = target
        return doc

    return make


DANGLING = {
    f"{t.lower()}-{ref}": _dangling(t, ref)
    for t in _REF
    for ref in ("999", "0", "later", "run-start", "wrong-kind")
    # pipeline_run2, the only fixture with a failed activity, has no timer.
    if (t, ref) != ("ACTIVITY_TASK_FAILED", "wrong-kind")
}


@pytest.mark.parametrize("make", DANGLING.values(), ids=DANGLING.keys())
def test_a_dangling_event_reference_is_a_corrupt_history(make: Callable[[], Doc]) -> None:
    h = _load(make())  # loads: each event on its own is well formed
    with pytest.raises(CorruptHistoryError, match=r"inconsistent: event \d+ refers to event"):
        build_graph([h])


def test_a_run_history_built_in_memory_without_events_is_corrupt() -> None:
    with pytest.raises(CorruptHistoryError, match="does not begin"):
        build_graph([RunHistory("default", "wf", "run", [])])
    not_a_start = HistoryEvent(event_id=1)
    with pytest.raises(CorruptHistoryError, match="does not begin"):
        build_graph([RunHistory("default", "wf", "run", [not_a_start])])


def test_a_child_history_read_before_it_closed() -> None:
    # The parent's history says the child completed; the child's history,
    # exported earlier, still has it running.
    child = _doc("pipeline_child")
    (close,) = _events(child, "WORKFLOW_EXECUTION_COMPLETED")
    child["events"] = child["events"][: int(close["eventId"]) - 1]
    g = build_graph([_load(_doc("pipeline_run1")), _load(child)])
    assert g.nodes[f"run:lg-pipeline-child/{_run_id(child)}"]["status"] == "running"
    _valid_documents(g)


def _run_id(doc: Doc) -> str:
    run_id: str = doc["events"][0]["workflowExecutionStartedEventAttributes"][
        "originalExecutionRunId"
    ]
    return run_id


# --- history files -----------------------------------------------------------------


def _cause_chain(depth: int) -> Doc:
    doc = _doc("pipeline_run2")
    (failed,) = _events(doc, "ACTIVITY_TASK_FAILED")
    failure: Doc = {"message": "bottom"}
    for i in range(depth):
        failure = {"message": f"level {i}", "cause": failure}
    _attrs(failed)["failure"] = failure
    return doc


HOSTILE_FILES: dict[str, Callable[[], str]] = {
    "5000-brackets": lambda: "[" * 5000,
    "events-5000-brackets": lambda: '{"events":' + "[" * 5000,
    "100000-brackets-closed": lambda: "[" * 100_000 + "]" * 100_000,
    "deep-value-in-an-event": lambda: (
        '{"events":[{"eventId":"1","x":' + "[" * 900 + "]" * 900 + "}]}"
    ),
    "deep-failure-cause": lambda: json.dumps(_cause_chain(450)),
    "5000-digit-top-level": lambda: '{"events":[],"n":' + "9" * 5000 + "}",
    "5000-digit-event-id": lambda: '{"events":[{"eventId":' + "9" * 5000 + "}]}",
    "lone-surrogate-id": lambda: json.dumps(_doc("direct_denied")).replace(
        '"lg-direct-denied"', '"lg-\\ud800"', 1
    ),
}


@pytest.mark.parametrize("make", HOSTILE_FILES.values(), ids=HOSTILE_FILES.keys())
def test_a_hostile_history_file_is_a_corrupt_history(
    make: Callable[[], str], tmp_path: Path
) -> None:
    text = make()
    with pytest.raises(CorruptHistoryError):
        load_history_json(text, namespace="default")
    with pytest.raises(CorruptHistoryError):
        load_history_json(text.encode(), namespace="default")
    path = tmp_path / "history.json"
    path.write_text(text)
    with pytest.raises(CorruptHistoryError):
        load_history_file(path, namespace="default")


# --- cross-check ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [HOSTILE_JSON["5000-brackets"], HOSTILE_JSON["invalid-utf8"], b"1e400"],
    ids=["5000-brackets", "invalid-utf8", "overflowing-float"],
)
def test_an_undigestable_input_is_a_finding_not_an_aborted_report(
    data: bytes, tmp_path: Path
) -> None:
    doc = _doc("governed_payout")
    (payout,) = [
        e
        for e in _events(doc, "ACTIVITY_TASK_SCHEDULED")
        if _attrs(e)["activityType"]["name"] == "payout"
    ]
    _attrs(payout)["input"] = {"payloads": [_payload(data)]}
    hostile, other = _load(doc), _load(_doc("direct_denied"))
    log = Ed25519FileSigner.generate()
    with Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        report = cross_check(
            [hostile, other], ledger=ledger, trust=TrustStore(), log_key=log.public_key
        )
    by_workflow = {f.workflow_id: f for f in report.findings if f.activity_type == "payout"}
    finding = by_workflow[hostile.workflow_id]
    assert finding.grant.startswith("unverifiable: canonicalization_failed: "), finding.grant
    assert any(v.startswith(Violation.GRANT_INVALID) for v in finding.violations)
    # The report goes on to the other execution.
    assert other.workflow_id in by_workflow
    assert not report.ok


# --- exports of hostile ids and claims ---------------------------------------------

_SIGS = b'","payloadType":"application/vnd.ecp.grant.v1+json","signatures":[{"sig":"AA=="}]}'
#: Each breaks one export format if written raw: NUL and ESC are not XML;
#: ``&#27;`` is an entity Graphviz decodes into the SVG; dot refuses a quoted
#: string over 16 KiB; U+FFFE is not XML; DEL and C1 controls act on terminals.
HOSTILE_TEXT = {
    "nul": "a\x00b",
    "escape-sequence": "\x1b[31mred\x1b[0m\x07",
    "entity": "&#27;&#0;&#xFFFE;&amp;&bogus;",
    "noncharacter": "x\ufffey\uffff",
    "c1-and-del": "\x7f\x85\x9b",
    "newlines": 'a\r\nb\n"c"\\',
    "markup": '</key><![CDATA[x]]>"<script>',
    "long": "L" * 17_000,
    "wide-once-escaped": "\x00" * 3000,
}


def _hostile_ids(text: str) -> Doc:
    doc = _doc("governed_payout")
    # Within the 64 KiB a grant envelope may have, even for "long".
    claims = json.dumps({"grant_id": f"g{text}", "decision_id": text}).encode()
    for e in _events(doc, "ACTIVITY_TASK_SCHEDULED"):
        a = _attrs(e)
        a["activityId"] = f"{a['activityId']}{text}"
        a["activityType"]["name"] = f"{a['activityType']['name']}{text}"
        field = a.get("header", {}).get("fields", {}).get(_GRANT_HEADER)
        if field is not None:
            field["data"] = base64.b64encode(
                b'{"payload":"' + base64.b64encode(claims) + _SIGS
            ).decode()
    started = _attrs(doc["events"][0])
    started["workflowType"]["name"] = f"wf{text}"
    return doc


@pytest.mark.parametrize("text", HOSTILE_TEXT.values(), ids=HOSTILE_TEXT.keys())
def test_hostile_ids_and_claims_export_valid_documents(text: str, tmp_path: Path) -> None:
    g = build_graph([_load(_hostile_ids(text))])
    assert f"grant:g{text}" in g
    _valid_documents(g, tmp_path)
    graphml = render_graph(g, ExportFormat.GRAPHML)
    assert not any(c in graphml for c in "\x00\x1b")
    assert len(ElementTree.fromstring(graphml).findall(".//{*}node")) == g.number_of_nodes()
    dot = render_graph(g, ExportFormat.DOT)
    assert not any(c in dot for c in "\x00\x1b\x7f\x85\x9b\ufffe")


@pytest.mark.skipif(not shutil.which("dot"), reason="Graphviz dot is not installed")
def test_svg_tooltips_are_the_node_ids() -> None:
    # The console finds each node of the SVG by its tooltip: entities in an id
    # must come out as written, not decoded by Graphviz.
    g = nx.DiGraph()
    # (Not backslashes: Graphviz 2.43 expands escapes in tooltips twice.)
    ids = ["grant:&#27;&amp;&lt;", 'a"b\nc', "x" * 2900]
    for n in ids:
        g.add_node(n, kind=NodeKind.GRANT, label=n)
    root = ElementTree.fromstring(render_graph(g, ExportFormat.SVG))
    anchors = root.iter("{http://www.w3.org/2000/svg}a")
    titles = {a.get("{http://www.w3.org/1999/xlink}title") for a in anchors}
    assert titles >= set(ids)


def test_graphml_shows_control_characters_as_escapes() -> None:
    g = nx.DiGraph()
    g.add_node("grant:\x00\x1b[31m", label="\ufffe")
    root = ElementTree.fromstring(to_graphml(g))
    (node,) = root.findall(".//{*}node")
    assert node.get("id") == "grant:\\u0000\\u001b[31m"
    assert [d.text for d in node.findall("{*}data")] == ["\\ufffe"]


def test_graphml_keeps_ids_apart_that_differ_only_in_control_characters() -> None:
    g = nx.DiGraph()
    g.add_edge("a\x00", "a\\u0000", rel="informed")
    g.add_edge("a\\u0000", "b", rel="used")
    root = ElementTree.fromstring(to_graphml(g))
    ids = sorted(str(n.get("id")) for n in root.findall(".//{*}node"))
    assert ids == ["a\\u0000", "a\\u0000#2", "b"]
    edges = {(e.get("source"), e.get("target")) for e in root.findall(".//{*}edge")}
    assert edges == {("a\\u0000#2", "a\\u0000"), ("a\\u0000", "b")}


# --- fuzz ------------------------------------------------------------------------------

_FUZZ_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@_FUZZ_SETTINGS
@given(
    result=st.one_of(st.binary(max_size=120), st.sampled_from([*HOSTILE_JSON.values()])),
    arg=st.one_of(st.binary(max_size=120), st.sampled_from([*HOSTILE_APPROVALS.values()])),
    text=st.text(max_size=12),
)
def test_fuzz_payloads_and_ids(result: bytes, arg: bytes, text: str) -> None:
    doc = _with_approval_update(arg)
    for e in _events(doc, "ACTIVITY_TASK_COMPLETED"):
        _attrs(e)["result"] = {"payloads": [_payload(result)]}
    for e in _events(doc, "ACTIVITY_TASK_SCHEDULED"):
        _attrs(e)["activityId"] = text
    g = build_graph([_load(doc), _load(_doc("pipeline_child"))])
    for fmt in (ExportFormat.GRAPHML, ExportFormat.JSON, ExportFormat.DOT, ExportFormat.MERMAID):
        out = render_graph(g, fmt)
        out.encode("utf-8")
        if fmt is ExportFormat.GRAPHML:
            ElementTree.fromstring(out)
