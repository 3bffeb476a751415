"""Loading histories: the JSON forms Temporal writes, and bad input."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ecp.lineage.graph._history import load_history_file, load_history_json
from ecp.lineage.graph.errors import CorruptHistoryError, HistoryNamespaceError
from tests.lineage_graph.conftest import FIXTURES, fixture_index


def _raw(name: str) -> str:
    return (FIXTURES / f"{name}.json").read_text()


def test_every_fixture_loads_with_its_ids() -> None:
    for name, meta in fixture_index().items():
        h = load_history_file(FIXTURES / f"{name}.json", namespace="default")
        assert (h.workflow_id, h.run_id) == (meta["workflow_id"], meta["run_id"])
        assert h.namespace == "default"
        assert h.events[0].event_id == 1


def test_wrapped_form_and_explicit_workflow_id() -> None:
    doc = json.loads(_raw("direct_denied"))
    h = load_history_json(
        json.dumps({"namespace": "default", "workflowId": "lg-direct-denied", **doc}),
        namespace="default",
    )
    assert h.workflow_id == "lg-direct-denied"
    with pytest.raises(CorruptHistoryError, match="not 'someone-else'"):
        load_history_json(_raw("direct_denied"), namespace="default", workflow_id="someone-else")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t[: len(t) // 2],  # truncated file
        lambda t: "not json",
        lambda t: "[]",
        lambda t: json.dumps({"events": "nope"}),
        lambda t: json.dumps({"events": []}),
        lambda t: json.dumps({"events": [{"eventId": "1", "eventType": "NoSuchEventType"}]}),
    ],
    ids=["truncated", "not-json", "not-object", "events-not-list", "empty", "bad-event"],
)
def test_corrupt_json_is_one_clear_error(mutate: object) -> None:
    assert callable(mutate)
    with pytest.raises(CorruptHistoryError):
        load_history_json(mutate(_raw("direct_denied")), namespace="default")


def test_missing_or_reordered_events_are_refused() -> None:
    doc = json.loads(_raw("pipeline_child"))
    del doc["events"][4]
    with pytest.raises(CorruptHistoryError, match="truncated or reordered at event 5"):
        load_history_json(json.dumps(doc), namespace="default")
    doc = json.loads(_raw("pipeline_child"))
    doc["events"] = doc["events"][1:]
    with pytest.raises(CorruptHistoryError):
        load_history_json(json.dumps(doc), namespace="default")


def test_history_of_another_namespace_is_refused(tmp_path: Path) -> None:
    # Declared by the wrapper...
    doc = json.loads(_raw("direct_denied"))
    with pytest.raises(HistoryNamespaceError):
        load_history_json(json.dumps({"namespace": "prod", **doc}), namespace="default")
    # ...or by the grants the history carries.
    with pytest.raises(HistoryNamespaceError, match="'default', not 'prod'"):
        load_history_json(_raw("governed_payout"), namespace="prod")
    # Unreadable file.
    with pytest.raises(CorruptHistoryError, match="cannot read"):
        load_history_file(tmp_path / "absent.json", namespace="default")


def test_grant_header_is_read_from_history() -> None:
    doc = json.loads(_raw("governed_payout"))
    headers = [
        e["activityTaskScheduledEventAttributes"]["header"]["fields"]["ecp-grant"]
        for e in doc["events"]
        if "ecp-grant"
        in e.get("activityTaskScheduledEventAttributes", {}).get("header", {}).get("fields", {})
    ]
    assert len(headers) == 1
    envelope = json.loads(base64.b64decode(headers[0]["data"]))
    assert envelope["payloadType"].startswith("application/vnd.ecp.grant")
