"""How each identity was established, through the lineage graph and its exports.

The decision (an ``ecp.evaluate`` result), the grant (the ``ecp-grant``
header) and the ledger entry (the ``ecp.prove`` input) name the initiator and
how the authority established it: ``key:<key id>``, ``oidc:<issuer>#<subject>``
or ``unauthenticated``. Approvals name their approver and signing key. All of
it is read from history, unverified: hostile values are read or dropped, and
every export stays valid.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from typing import Any

import jsonschema
import networkx as nx
import pytest
from referencing import Registry, Resource
from rich.console import Console

from ecp._wire import APPROVE_UPDATE
from ecp.cli.lineage import render_tree
from ecp.lineage.graph._build import (
    NodeKind,
    authentication_label,
    authentication_method,
    build_graph,
    decision_identity,
    identity_label,
)
from ecp.lineage.graph._export import ExportFormat, render_graph
from ecp.lineage.graph._history import RunHistory, load_history_json
from ecp.lineage.graph._openlineage import (
    GOVERNANCE_FACET_SCHEMA,
    openlineage_events,
    openlineage_json,
)
from ecp.lineage.graph._prov import prov_json, to_prov
from tests.lineage_graph.conftest import FIXTURES
from tests.vectors import vectors_dir

Doc = dict[str, Any]
_JSON_PLAIN = base64.b64encode(b"json/plain").decode()
KEY_ID = "ed25519:0123456789abcdef0123456789abcdef"
ISSUER = "https://id.example.test"
AUTHS = {
    "key": (f"key:{KEY_ID}", f"alice (key {KEY_ID})"),
    "oidc": (f"oidc:{ISSUER}#alice", f"alice (OIDC {ISSUER}, subject alice)"),
    "unauthenticated": ("unauthenticated", "alice (unauthenticated)"),
}


# --- history surgery ----------------------------------------------------------------


def _doc(name: str) -> Doc:
    doc: Doc = json.loads((FIXTURES / f"{name}.json").read_text())
    return doc


def _load(doc: Doc) -> RunHistory:
    return load_history_json(json.dumps(doc), namespace="default")


def _attrs(event: Doc) -> Doc:
    (key,) = [k for k in event if k.endswith("EventAttributes")]
    attrs: Doc = event[key]
    return attrs


def _payload(value: object) -> Doc:
    data = json.dumps(value).encode() if not isinstance(value, bytes) else value
    return {"metadata": {"encoding": _JSON_PLAIN}, "data": base64.b64encode(data).decode()}


def _read(p: Doc) -> Any:
    return json.loads(base64.b64decode(p["data"]))


def _scheduled(doc: Doc, activity_type: str) -> Doc:
    (e,) = [
        e
        for e in doc["events"]
        if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED"
        and _attrs(e)["activityType"]["name"] == activity_type
    ]
    return e


def _completed(doc: Doc, activity_type: str) -> Doc:
    sched = _scheduled(doc, activity_type)["eventId"]
    (e,) = [
        e
        for e in doc["events"]
        if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_COMPLETED"
        and str(_attrs(e)["scheduledEventId"]) == str(sched)
    ]
    return e


#: Leave a field as recorded (absent: the fixture predates authentication).
KEEP: Any = object()


def _governed(
    *,
    result_auth: object = KEEP,
    decision_auth: object = KEEP,
    grant_auth: object = KEEP,
    prove_auth: object = KEEP,
    initiator: str = "alice",
) -> Doc:
    """governed_payout, its initiator and these authentication values set."""
    doc = _doc("governed_payout")
    # The decision: the evaluate result and the decision document it holds.
    res = _attrs(_completed(doc, "ecp.evaluate"))["result"]["payloads"]
    value = _read(res[0])
    decision = json.loads(value["decision_json"])
    decision["initiator"] = initiator
    if decision_auth is not KEEP:
        decision["authentication"] = decision_auth
    value["decision_json"] = json.dumps(decision)
    if result_auth is not KEEP:
        value["authentication"] = result_auth
    res[0] = _payload(value)
    # The grant in the execute step's header (claims only: unverified here).
    header = _attrs(_scheduled(doc, "payout"))["header"]["fields"]["ecp-grant"]
    env = json.loads(base64.b64decode(header["data"]))
    claims = json.loads(base64.b64decode(env["payload"]))
    claims["initiator"] = initiator
    if grant_auth is not KEEP:
        claims["initiator_auth"] = grant_auth
    env["payload"] = base64.b64encode(json.dumps(claims).encode()).decode()
    header["data"] = base64.b64encode(json.dumps(env).encode()).decode()
    # The ledger entry: what the prove step's input says it records.
    inp = _attrs(_scheduled(doc, "ecp.prove"))["input"]["payloads"]
    prove = _read(inp[0])
    prove["initiator"] = initiator
    if prove_auth is not KEEP:
        prove["authentication"] = prove_auth
    inp[0] = _payload(prove)
    return doc


def _authenticated(auth: str) -> Doc:
    return _governed(result_auth=auth, decision_auth=auth, grant_auth=auth, prove_auth=auth)


def _of_kind(g: nx.DiGraph, kind: str) -> dict[str, Any]:
    (d,) = [d for _, d in g.nodes(data=True) if d.get("kind") == kind]
    return dict(d)


def _identity(d: dict[str, Any]) -> tuple[str, str, str]:
    return d["initiator"], d["initiator_auth"], d["initiator_label"]


# --- labels --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "method", "label"),
    [
        (f"key:{KEY_ID}", "key", f"key {KEY_ID}"),
        (f"oidc:{ISSUER}#alice", "oidc", f"OIDC {ISSUER}, subject alice"),
        # The issuer has no fragment; the subject may hold '#'.
        (f"oidc:{ISSUER}#a#b", "oidc", f"OIDC {ISSUER}, subject a#b"),
        ("oidc:no-subject", "oidc", "OIDC no-subject"),
        ("unauthenticated", "unauthenticated", "unauthenticated"),
        ("", "", "authentication not recorded"),
        ("key:", "unknown", "unrecognised authentication key:"),
        ("password:hunter2", "unknown", "unrecognised authentication password:hunter2"),
    ],
)
def test_authentication_in_words(auth: str, method: str, label: str) -> None:
    assert authentication_method(auth) == method
    assert authentication_label(auth) == label
    assert identity_label("alice", auth) == f"alice ({label})"
    assert identity_label("", auth) == ""


def test_decision_identity_reads_the_decision_document_first() -> None:
    doc = json.dumps({"initiator": "alice", "authentication": f"key:{KEY_ID}"})
    value = {"decision_id": "d", "decision_json": doc, "authentication": "unauthenticated"}
    assert decision_identity(value) == ("alice", f"key:{KEY_ID}")
    # An unreadable document: the result's own field; absent: the contract default.
    assert decision_identity({**value, "decision_json": "{"}) == ("", "unauthenticated")
    assert decision_identity({"decision_id": "d"}) == ("", "unauthenticated")
    # Present but not text: not recorded.
    assert decision_identity({"decision_id": "d", "authentication": 7}) == ("", "")
    for not_a_result in (None, [], "x", {"effect": "allow"}, {"decision_id": 5}):
        assert decision_identity(not_a_result) is None


# --- the graph -----------------------------------------------------------------------


@pytest.mark.parametrize("how", sorted(AUTHS))
def test_decision_grant_and_ledger_entry_say_how_the_initiator_was_established(
    how: str,
) -> None:
    auth, label = AUTHS[how]
    g = build_graph([_load(_authenticated(auth))])
    for kind in (NodeKind.DECISION, NodeKind.GRANT, NodeKind.LEDGER):
        assert _identity(_of_kind(g, kind)) == ("alice", auth, label), kind


def test_histories_recorded_before_authentication_read_as_their_contracts_say() -> None:
    g = build_graph([_load(_doc("governed_payout"))])
    # Decision and grant default to unauthenticated (as Decision and Grant do);
    # the prove input has no default: not recorded.
    for kind in (NodeKind.DECISION, NodeKind.GRANT):
        assert _identity(_of_kind(g, kind)) == (
            "alice",
            "unauthenticated",
            "alice (unauthenticated)",
        )
    ledger = _of_kind(g, NodeKind.LEDGER)
    assert _identity(ledger) == ("alice", "", "alice (authentication not recorded)")


def test_the_grant_and_the_decision_are_read_separately() -> None:
    # History is unverified: each node says what its own record says.
    g = build_graph([_load(_governed(decision_auth=f"key:{KEY_ID}", grant_auth="unauthenticated"))])
    assert _of_kind(g, NodeKind.DECISION)["initiator_auth"] == f"key:{KEY_ID}"
    assert _of_kind(g, NodeKind.GRANT)["initiator_auth"] == "unauthenticated"


HOSTILE_AUTH: dict[str, object] = {
    "number": 7,
    "list": ["key:x"],
    "object": {"key": KEY_ID},
    "null": None,
    "control-chars": "key:\x00\x1b]0;owned\x07\x9b31m\x7f",
    "markup": 'oidc:</script><x a="&">#[bold]x[/bold]',
    "long": "key:" + "k" * 5000,
    "bogus": "password:hunter2",
}


def _valid_exports(g: nx.DiGraph) -> None:
    for fmt in ExportFormat:
        if fmt is ExportFormat.SVG and not shutil.which("dot"):
            continue
        render_graph(g, fmt).encode("utf-8")


@pytest.mark.parametrize("name", HOSTILE_AUTH)
def test_hostile_authentication_values_are_read_or_dropped(
    name: str, facet_schema: jsonschema.Draft202012Validator
) -> None:
    bad = HOSTILE_AUTH[name]
    doc = _governed(result_auth=bad, decision_auth=bad, grant_auth=bad, prove_auth=bad)
    g = build_graph([_load(doc)])
    for kind in (NodeKind.DECISION, NodeKind.GRANT, NodeKind.LEDGER):
        who, auth, label = _identity(_of_kind(g, kind))
        assert who == "alice"
        # Text is read as is (and escaped by whoever prints it); anything else
        # is unreadable, so not recorded.
        assert auth == (bad if isinstance(bad, str) else ""), kind
        assert label.startswith("alice (")
    _valid_exports(g)
    facets = _facets(g)
    assert facets
    for facet in facets:
        facet_schema.validate({"ecp_governance": facet})
        # Only the forms an authority writes, within its length, reach the facet.
        kept = name in ("control-chars", "markup")
        assert facet["initiatorAuthentication"] == (bad if kept else "")


def _approval_doc(keyid: object) -> Doc:
    """pipeline_run1, its update an ``ecp.approve`` by carol signed with ``keyid``."""
    doc = _doc("pipeline_run1")
    (accepted,) = [
        e
        for e in doc["events"]
        if e["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED"
    ]
    claims = b'{"approver":"carol","approval_id":"ap-1","decision_id":"sha256:' + b"0" * 64 + b'"}'
    env = {
        "payload": base64.b64encode(claims).decode(),
        "payloadType": "application/vnd.ecp.approval.v1+json",
        "signatures": [{"keyid": keyid, "sig": "AA=="}],
    }
    request = _attrs(accepted)["acceptedRequest"]
    request["input"]["name"] = APPROVE_UPDATE
    request["input"]["args"] = {"payloads": [_payload(json.dumps(env))]}
    return doc


def test_an_approval_names_its_approver_and_key() -> None:
    g = build_graph([_load(_approval_doc(KEY_ID))])
    update = _of_kind(g, NodeKind.UPDATE)
    assert (update["approver"], update["approver_key_id"]) == ("carol", KEY_ID)
    assert update["label"] == "approval by carol"


@pytest.mark.parametrize("keyid", [5, None, ["k"], "\x1b[2J"])
def test_a_hostile_approval_key_id_is_read_or_refused(keyid: object) -> None:
    g = build_graph([_load(_approval_doc(keyid))])
    update = _of_kind(g, NodeKind.UPDATE)
    if isinstance(keyid, str):
        assert update["approver_key_id"] == keyid
    else:
        # The envelope parser refuses a key id that is not text: no approver at all.
        assert update.get("approver_key_id", "") == ""
    _valid_exports(g)


# --- PROV -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prov_validator() -> jsonschema.Draft4Validator:
    schema = json.loads((vectors_dir() / "prov" / "schemas" / "prov-json.schema.json").read_text())
    return jsonschema.Draft4Validator(
        schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
    )


def _prov(g: nx.DiGraph, validator: jsonschema.Draft4Validator) -> dict[str, Any]:
    from prov.model import ProvDocument

    text = prov_json(g)
    doc: dict[str, Any] = json.loads(text)
    errors = sorted(validator.iter_errors(doc), key=str)
    assert not errors, errors[0]
    assert ProvDocument.deserialize(content=text, format="json") == to_prov(g)
    return doc


def _value(v: object) -> object:
    return v["$"] if isinstance(v, dict) else v


@pytest.mark.parametrize("how", sorted(AUTHS))
def test_prov_initiator_is_an_agent_that_says_how_it_was_established(
    how: str, prov_validator: jsonschema.Draft4Validator
) -> None:
    auth, label = AUTHS[how]
    g = build_graph([_load(_authenticated(auth))])
    doc = _prov(g, prov_validator)
    initiators = {
        k: v for k, v in doc["agent"].items() if _value(v["prov:type"]) == "ecp:initiator"
    }
    (agent_id,) = initiators
    agent = initiators[agent_id]
    assert agent["prov:label"] == label
    assert agent["ecp:name"] == "alice"
    assert agent["ecp:authentication"] == auth
    assert agent["ecp:authenticationMethod"] == how
    influenced = {
        r["prov:influencee"]
        for r in doc["wasInfluencedBy"].values()
        if r["prov:influencer"] == agent_id
    }
    kinds = {_value(doc["entity"][e]["prov:type"]) for e in influenced}
    assert kinds == {"ecp:decision", "ecp:grant", "ecp:ledger_entry"}


def test_prov_keeps_a_proven_and_an_unproven_alice_apart(
    prov_validator: jsonschema.Draft4Validator,
) -> None:
    g = nx.DiGraph()
    g.add_node("grant:a", kind="grant", initiator="alice", initiator_auth=f"key:{KEY_ID}")
    g.add_node("grant:b", kind="grant", initiator="alice", initiator_auth="unauthenticated")
    g.add_node("grant:c", kind="grant", initiator="alice", initiator_auth=f"key:{KEY_ID}")
    # Nor do names and authentications that join to the same text merge.
    g.add_node("grant:d", kind="grant", initiator="a/b", initiator_auth="c")
    g.add_node("grant:e", kind="grant", initiator="a", initiator_auth="b/c")
    doc = _prov(g, prov_validator)
    labels = sorted(v["prov:label"] for v in doc["agent"].values())
    assert labels == [
        "a (unrecognised authentication b/c)",
        "a/b (unrecognised authentication c)",
        f"alice (key {KEY_ID})",
        "alice (unauthenticated)",
    ]


def test_prov_approver_is_an_agent_with_its_key(
    prov_validator: jsonschema.Draft4Validator,
) -> None:
    g = build_graph([_load(_approval_doc(KEY_ID))])
    doc = _prov(g, prov_validator)
    (approver,) = [
        (k, v) for k, v in doc["agent"].items() if _value(v["prov:type"]) == "ecp:approver"
    ]
    agent_id, agent = approver
    assert agent["prov:label"] == f"carol (key {KEY_ID})"
    assert (agent["ecp:name"], agent["ecp:keyId"]) == ("carol", KEY_ID)
    assert any(a["prov:agent"] == agent_id for a in doc["wasAssociatedWith"].values())


# --- OpenLineage ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> Registry[Any]:
    base = vectors_dir() / "openlineage"
    resources = []
    for path in [*(base / "website" / "static" / "spec").rglob("*.json"), GOVERNANCE_FACET_SCHEMA]:
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and "$id" in doc:
            resources.append((doc["$id"], Resource.from_contents(doc)))
    return Registry().with_resources(resources)


@pytest.fixture(scope="module")
def facet_schema(registry: Registry[Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        json.loads(GOVERNANCE_FACET_SCHEMA.read_text()),
        registry=registry,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def _facets(g: nx.DiGraph) -> list[dict[str, Any]]:
    events = [json.loads(x) for x in openlineage_json(openlineage_events(g)).splitlines()]
    return [
        e["run"]["facets"]["ecp_governance"]
        for e in events
        if "ecp_governance" in e["run"]["facets"]
    ]


@pytest.mark.parametrize("how", sorted(AUTHS))
def test_governance_facet_says_how_the_initiator_was_established(
    how: str, facet_schema: jsonschema.Draft202012Validator
) -> None:
    auth, _ = AUTHS[how]
    facets = _facets(build_graph([_load(_authenticated(auth))]))
    assert len(facets) == 2  # START and COMPLETE of the governed payout
    for f in facets:
        facet_schema.validate({"ecp_governance": f})
        assert (f["initiator"], f["initiatorAuthentication"]) == ("alice", auth)
    # The schema is not vacuous: a form no authority writes fails.
    bad = dict(facets[0], initiatorAuthentication="password:hunter2")
    with pytest.raises(jsonschema.ValidationError):
        facet_schema.validate({"ecp_governance": bad})


# --- ecp lineage show ------------------------------------------------------------------


def _text(g: nx.DiGraph, title: str = "lineage of x") -> str:
    out = io.StringIO()
    # No colour: any escape sequence in the output came from the history.
    Console(file=out, width=400, color_system=None, force_terminal=False).print(
        render_tree(g, title)
    )
    return out.getvalue()


def test_tree_prints_the_initiator_and_how_it_was_established() -> None:
    keyed = _text(build_graph([_load(_authenticated(f"key:{KEY_ID}"))]))
    assert f"initiator alice (key {KEY_ID})" in keyed
    assert "⚠" not in keyed
    oidc = _text(build_graph([_load(_authenticated(f"oidc:{ISSUER}#alice"))]))
    assert f"initiator alice (OIDC {ISSUER}, subject alice)" in oidc
    unproven = _text(build_graph([_load(_authenticated("unauthenticated"))]))
    assert "initiator ⚠ alice (unauthenticated)" in unproven
    approval = _text(build_graph([_load(_approval_doc(KEY_ID))]))
    assert f"approver carol (key {KEY_ID})" in approval


#: What a workflow id (or any id, label or claim) must not carry to a terminal.
_CONTROL = ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\x9b", "\x9d", "\u202e", "\r", "\x08"]


def test_tree_escapes_control_characters_from_history() -> None:
    evil = "x\x00\x1b]0;owned\x07\x1b[2J\x9b31m\x9d8;;\x7f\x85\u202e\r\x08[bold]y:warning:"
    g = nx.DiGraph()
    g.add_node(
        "run:w/r",
        kind=NodeKind.RUN,
        workflow_id=f"w{evil}",
        run_id=f"r{evil}",
        workflow_type=f"T{evil}",
        status=f"s{evil}",
        time_ns=1,
        loaded=True,
    )
    g.add_node(
        "activity:w/r/5",
        kind=NodeKind.ACTIVITY,
        workflow_id=f"w{evil}",
        run_id=f"r{evil}",
        event_id=5,
        time_ns=2,
        label=f"act{evil}",
        status=f"st{evil}",
        attempts=2,
        approver=f"carol{evil}",
        approver_key_id=f"k{evil}",
        governance=f"odd{evil}",
        governance_grant=f"grant{evil}",
        governance_evidence=f"ev{evil}",
        governance_violations=f"v{evil}\nsecond{evil}",
    )
    g.add_node(
        "grant:g",
        kind=NodeKind.GRANT,
        label=f"grant {evil}",
        initiator=f"alice{evil}",
        initiator_auth=f"key:{evil}",
    )
    g.add_edge("activity:w/r/5", "grant:g", rel="granted")
    text = _text(g, f"lineage of w{evil}")
    for c in _CONTROL:
        assert c not in text, repr(c)
    assert "\\u001b]0;owned\\u0007" in text
    assert "\\u009b31m" in text
    assert "[bold]y:warning:" in text  # markup and emoji codes shown as text, not applied
    assert "⚠" not in text
