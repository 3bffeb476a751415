"""The console against hostile histories made on the real dev server.

Each test here failed before the hardening it names: a lineage request that
ate gigabytes, pages that were a permanent 500 or 404 for odd workflow ids,
500s without the security headers, and a rogue worker's query answers shown
as governance state.
"""

from __future__ import annotations

import asyncio
import os
import stat
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.async_api import Browser
from starlette.requests import Request
from starlette.responses import Response
from temporalio import activity, workflow
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.worker import Worker

from ecp._wire import DECISION_QUERY, STATUS_QUERY
from ecp.activities._contracts import DecisionResult
from ecp.console.limits import LineageLimits
from ecp.workflows._models import GovernedRequest, TaskQueues
from ecp.workflows._search_attributes import SA_ACTION, SA_DECISION, SA_GRANT_ID, SA_OUTCOME
from ecp.workflows._start import start_governed
from ecp.workflows.examples import DirectCall, DirectCallInput
from tests.console.conftest import WIDE, ConsoleServer, Governed

_HEADERS = ("content-security-policy", "x-content-type-options", "x-frame-options")


@activity.defn(name="hostile_noop")
async def _noop(i: int) -> int:
    return i


@workflow.defn(name="Chatty", sandboxed=False)
class Chatty:
    """Records ``n`` local-activity markers in one workflow task: a long history, cheaply."""

    @workflow.run
    async def run(self, n: int) -> int:
        done = await asyncio.gather(
            *(
                workflow.execute_local_activity(
                    _noop, i, start_to_close_timeout=timedelta(seconds=30)
                )
                for i in range(n)
            )
        )
        return len(done)


@workflow.defn(name="GovernedExecution", sandboxed=False)
class RogueGoverned:
    """Named like ECP's workflow, run by an attacker's worker on the attacker's queue."""

    @workflow.run
    async def run(self, arg: Any) -> Any:
        if arg == "wait":
            await workflow.wait_condition(lambda: False)
        return {"not": "a governed result"}

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> dict[str, Any]:
        return {"step": "approve", "approvals": ["mallory", "eve"]}

    @workflow.query(name=DECISION_QUERY)
    def decision(self) -> DecisionResult:
        return DecisionResult(
            decision_json="{}",
            decision_id="dec-rogue",
            effect="allow_after_approval",
            policy_digest="sha256:" + "0" * 64,
            request_digest="sha256:" + "0" * 64,
            reasons=["trust me"],
            determining_policies=[],
            approvals_required=1,
            approval_role="finance",
        )


@dataclass
class Hostile:
    governed: Governed
    queue: str
    big_id: str  # a history with more nodes than the default node cap
    small_id: str  # a history well under every cap
    odd_ids: dict[str, str]  # name -> workflow id with odd characters
    rogue_wait_id: str
    rogue_done_id: str
    claims_id: str  # sets ECPAction/ECPDecision at start, on a queue no ECP worker polls


@pytest.fixture(scope="module")
async def hostile(governed: Governed) -> AsyncIterator[Hostile]:
    client = governed.client
    tag = uuid.uuid4().hex[:8]
    queue = f"rogue-{tag}"
    odd = {
        "soh": f"odd\x01{tag}",
        "vt": f"odd\x0b{tag}",
        "entity": f"odd&#x1;{tag}",
        "newline": f"odd\n{tag}",
        "rlo": f"odd\u202e{tag}-txe",
    }
    async with Worker(
        client,
        task_queue=queue,
        workflows=[Chatty, RogueGoverned],
        activities=[_noop],
        # Scheduling 2,500 local activities in one workflow task can take
        # more than the SDK's 2 s deadlock limit on a loaded machine; the
        # task then fails and is retried the same way until the fixture
        # times out (seen once, with a chaos run alongside).
        debug_mode=True,
    ):
        handles: list[WorkflowHandle[Any, Any]] = []
        big_id, small_id = f"chatty-big-{tag}", f"chatty-small-{tag}"
        handles.append(await client.start_workflow(Chatty.run, 2500, id=big_id, task_queue=queue))
        handles.append(await client.start_workflow(Chatty.run, 20, id=small_id, task_queue=queue))
        for wf_id in odd.values():
            handles.append(await client.start_workflow(Chatty.run, 2, id=wf_id, task_queue=queue))
        done_id = f"rogue-done-{tag}"
        handles.append(
            await client.start_workflow(
                "GovernedExecution", "garbage", id=done_id, task_queue=queue
            )
        )
        for h in handles:
            await h.result()
        wait_id = f"rogue-wait-{tag}"
        rogue = await client.start_workflow(
            "GovernedExecution", "wait", id=wait_id, task_queue=queue
        )
        claims_id = f"claims-{tag}"
        claims = await client.start_workflow(
            "NoWorkerHere",
            id=claims_id,
            task_queue=f"nobody-{tag}",
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(SA_ACTION, "payout"),
                    SearchAttributePair(SA_DECISION, "allow"),
                    SearchAttributePair(SA_OUTCOME, "completed"),
                ]
            ),
        )
        # Visibility trails; wait on the server's own state.
        while (await client.count_workflows(f"WorkflowId = '{claims_id}'")).count < 1:
            await asyncio.sleep(0.1)
        try:
            yield Hostile(governed, queue, big_id, small_id, odd, wait_id, done_id, claims_id)
        finally:
            await rogue.terminate("test over")
            await claims.terminate("test over")


def _path(wf_id: str) -> str:
    return quote(wf_id, safe="")


async def test_odd_workflow_ids_render_with_visible_escapes(hostile: Hostile) -> None:
    url = hostile.governed.console.url
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for name, wf_id in hostile.odd_ids.items():
            for page in ("governance", "lineage"):
                resp = await http.get(f"/{page}/{_path(wf_id)}")
                assert resp.status_code == 200, (name, page, resp.status_code, resp.text[:300])
                # No raw control or bidi character reaches the page.
                for ch in ("\x01", "\x0b", "\u202e"):
                    assert ch not in resp.text, (name, page, ch)
            detail = (await http.get(f"/governance/{_path(wf_id)}")).text
            visible = {
                "soh": "odd\\u0001",
                "vt": "odd\\u000b",
                "entity": "odd&amp;#x1;",
                "newline": "odd\\u000a",
                "rlo": "odd\\u202e",
            }[name]
            assert visible in detail, (name, detail[:2000])


async def test_time_filter_at_the_edge_of_the_calendar_is_a_400(hostile: Hostile) -> None:
    async with httpx.AsyncClient(base_url=hostile.governed.console.url) as http:
        for value in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
            resp = await http.get("/governance", params={"from": value})
            assert resp.status_code == 400, (value, resp.text[:300])
            assert "date and time" in resp.text


async def test_governed_execution_with_foreign_input_renders(hostile: Hostile) -> None:
    async with httpx.AsyncClient(base_url=hostile.governed.console.url, timeout=60) as http:
        for wf_id in (hostile.rogue_done_id, hostile.rogue_wait_id):
            resp = await http.get(f"/governance/{_path(wf_id)}")
            assert resp.status_code == 200, (wf_id, resp.text[:300])
            assert 'id="unverified"' in resp.text


async def test_rogue_worker_answers_are_not_governance_state(hostile: Hostile) -> None:
    async with httpx.AsyncClient(base_url=hostile.governed.console.url, timeout=60) as http:
        page = (await http.get(f"/governance/{_path(hostile.rogue_wait_id)}")).text
        assert "2 of 1" not in page
        assert "mallory" not in page
        assert 'id="pending"' not in page
        assert hostile.queue in page  # the reason names the queue it runs on
        # A workflow that only claims a decision is listed, labelled unverified.
        listing = await http.get("/governance", params={"action": "payout"})
        row = listing.text.split(f'data-workflow-id="{hostile.claims_id}"', 1)
        assert len(row) == 2, "the claiming workflow is listed"
        cells = row[1].split("</tr>", 1)[0]
        assert "unverified" in cells
        assert "tag-allow" not in cells
        # ECP's own runs on the configured queue stay verified.
        own = listing.text.split(f'data-workflow-id="{hostile.governed.allowed_id}"', 1)[1]
        assert "tag-allow" in own.split("</tr>", 1)[0]
        detail = (await http.get(f"/governance/{_path(hostile.claims_id)}")).text
        assert 'id="unverified"' in detail


# -- claims on ECP's own queue, checked against the ledger ----------------------


def _claims(decision: str, outcome: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(SA_ACTION, "payout"),
            SearchAttributePair(SA_DECISION, decision),
            SearchAttributePair(SA_OUTCOME, outcome),
            SearchAttributePair(SA_GRANT_ID, "grant-of-my-own"),
        ]
    )


@dataclass
class Liars:
    """Runs on the configured executor queue whose search attributes lie."""

    contradicted_id: str  # the gate recorded a denial; it claims allowed and completed
    approval_liar_id: str  # the same, claiming it was approved
    unproven_id: str  # nothing in the ledger; it claims allowed and completed, then ends
    rerun_id: str  # a real governed run's id, started again with claims: another run
    rerun_first_run: str


async def _visible_closed(client: Any, wf_id: str) -> None:
    query = f"WorkflowId = '{wf_id}' AND ExecutionStatus != 'Running'"
    while (await client.count_workflows(query)).count < 1:
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def liars(governed: Governed) -> Liars:
    client, s = governed.client, governed.settings
    tag = uuid.uuid4().hex[:8]
    # An ordinary workflow on ECP's queue calls payout without a grant: the
    # gate refuses and signs a denial. It was started claiming the opposite.
    contradicted_id = f"liar-{tag}"
    handle = await client.start_workflow(
        DirectCall.run,
        DirectCallInput(
            "payout",
            [{"amount": 1, "currency": "EUR", "recipient": "x"}],
            s.executor_queue,
            max_attempts=1,
        ),
        id=contradicted_id,
        task_queue=s.executor_queue,
        search_attributes=_claims("allow", "completed"),
    )
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    # The same, claiming it waited for (and got) an approval.
    approval_liar_id = f"liar-approved-{tag}"
    handle = await client.start_workflow(
        DirectCall.run,
        DirectCallInput(
            "payout",
            [{"amount": 1, "currency": "EUR", "recipient": "x"}],
            s.executor_queue,
            max_attempts=1,
        ),
        id=approval_liar_id,
        task_queue=s.executor_queue,
        search_attributes=_claims("allow_after_approval", "completed"),
    )
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    # A workflow type nobody registered, on ECP's queue, claiming an outcome:
    # no ECP worker ever recorded anything for it.
    unproven_id = f"unproven-{tag}"
    unproven = await client.start_workflow(
        "NoSuchGovernedThing",
        id=unproven_id,
        task_queue=s.executor_queue,
        search_attributes=_claims("allow", "completed"),
    )
    await unproven.terminate("test: it only claims")
    # A real governed run (denied by policy), then a second run under the same
    # id claiming an allowed, completed payout: the ledger's evidence names the
    # first run only.
    rerun_id = f"rerun-{tag}"
    queues = TaskQueues(s.authority_queue, s.executor_queue)
    first = await start_governed(
        client,
        GovernedRequest(
            action="launch_missiles", args=[{"target": "moon"}], initiator="alice", queues=queues
        ),
        workflow_id=rerun_id,
    )
    assert (await first.result()).decision == "deny"
    second = await client.start_workflow(
        "NoSuchGovernedThing",
        id=rerun_id,
        task_queue=s.executor_queue,
        search_attributes=_claims("allow", "completed"),
    )
    await second.terminate("test: it only claims")
    for wf_id in (contradicted_id, approval_liar_id, unproven_id, rerun_id):
        await _visible_closed(client, wf_id)
    return Liars(
        contradicted_id, approval_liar_id, unproven_id, rerun_id, first.result_run_id or ""
    )


def _row_cells(listing: str, wf_id: str) -> str:
    # The newest run of the id: the list is newest first.
    parts = listing.split(f'data-workflow-id="{wf_id}"', 1)
    assert len(parts) == 2, f"{wf_id} is listed"
    return parts[1].split("</tr>", 1)[0]


async def test_claims_the_ledger_does_not_back_are_unverified(
    hostile: Hostile, liars: Liars
) -> None:
    url = hostile.governed.console.url
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        listing = (await http.get("/governance")).text
        expected = {
            liars.contradicted_id: "The ledger says denied, the workflow says completed.",
            liars.approval_liar_id: "The ledger says denied, the workflow says completed.",
            liars.unproven_id: "No ledger evidence for this run.",
            liars.rerun_id: "No ledger evidence for this run.",
        }
        for wf_id, why in expected.items():
            cells = _row_cells(listing, wf_id)
            assert "tag-unverified" in cells, wf_id
            assert "tag-allow" not in cells, wf_id
            assert "vouched" not in cells, wf_id
            assert why in cells, (wf_id, cells)
            detail = (await http.get(f"/governance/{_path(wf_id)}")).text
            assert 'id="unverified"' in detail, wf_id
            assert why in detail, wf_id
            assert 'id="vouched"' not in detail, wf_id
        # ECP's own runs, which the ledger backs, are verified and link their entry.
        for wf_id in (hostile.governed.allowed_id, hostile.governed.denied_id):
            cells = _row_cells(listing, wf_id)
            assert "tag-unverified" not in cells, (wf_id, cells)
            assert 'class="vouched" href="/proofs?index=' in cells, wf_id
            detail = (await http.get(f"/governance/{_path(wf_id)}")).text
            assert 'id="vouched"' in detail, wf_id
        # The rerun's first run is the one the ledger's evidence names.
        first = listing.split(f'data-run-id="{liars.rerun_first_run}"', 1)
        assert len(first) == 2, "the first run is listed too"
        assert 'class="vouched"' in first[1].split("</tr>", 1)[0]


async def test_charts_count_only_what_the_ledger_backs(hostile: Hostile, liars: Liars) -> None:
    async with httpx.AsyncClient(base_url=hostile.governed.console.url, timeout=60) as http:
        doc = (await http.get("/api/charts/governed-decisions")).json()
        outcomes = (await http.get("/api/charts/governed-outcomes")).json()
        waits = (await http.get("/api/charts/approval-waits")).json()
    totals = {s["name"]: sum(v or 0 for v in s["values"]) for s in doc["series"]}
    # The stack's allowed and denied runs and the rerun's first (denied) run;
    # the four liars' claims of "allow" and "completed" are not counted.
    assert totals == {"allow": 1, "deny": 2}
    assert "4 unverified execution(s) the ledger does not back left out" in doc["note"]
    assert "1 unverified execution(s) the ledger does not back left out" in waits["note"]
    assert liars.approval_liar_id not in waits["labels"]
    done = {s["name"]: sum(v or 0 for v in s["values"]) for s in outcomes["series"]}
    assert done == {"completed": 1, "denied": 2}


async def test_bidi_override_is_visible_in_the_approve_command(
    hostile: Hostile, browser: Browser
) -> None:
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await page.goto(f"{hostile.governed.console.url}/governance/{_path(hostile.odd_ids['rlo'])}")
    text = await page.inner_text("#execution")
    assert "\u202e" not in text
    assert "\\u202e" in text
    # Ids are isolated from the text around them.
    assert await page.locator("#execution bdi").count() >= 1
    await context.close()


async def test_every_error_response_carries_the_security_headers(hostile: Hostile) -> None:
    async with httpx.AsyncClient(base_url=hostile.governed.console.url, timeout=60) as http:
        responses = [
            await http.get("/no-such-page"),
            await http.get("/governance", params={"from": "yesterday"}),
            await http.get("/lineage/no-such-workflow-xyz"),
        ]
    # A 500 from a handler that crashed: the last-resort page, headers included.
    app = hostile.governed.console.server.config.app
    app.router.add_route("/test-only-crash", _crash)
    async with httpx.AsyncClient(base_url=hostile.governed.console.url, timeout=60) as http:
        responses.append(await http.get("/test-only-crash"))
    assert responses[-1].status_code == 500
    for resp in responses:
        for h in _HEADERS:
            assert h in resp.headers, (resp.status_code, h)


async def _crash(request: Request) -> Response:
    raise RuntimeError("a handler bug")


# -- bounded lineage work -----------------------------------------------------


async def test_a_graph_over_the_node_cap_is_not_drawn(hostile: Hostile) -> None:
    async with httpx.AsyncClient(base_url=hostile.governed.console.url, timeout=120) as http:
        resp = await http.get(f"/lineage/{hostile.big_id}")
        assert resp.status_code == 200, resp.text[:300]
        assert 'id="too-large"' in resp.text
        assert "lineage-svg" not in resp.text
        # The explanation offers the exports, and they serve.
        assert f"/lineage/{hostile.big_id}/export/prov-json" in resp.text
        export = await http.get(f"/lineage/{hostile.big_id}/export/json")
        assert export.status_code == 200


async def test_a_history_over_the_event_cap_is_not_read(hostile: Hostile) -> None:
    s = hostile.governed.settings
    limits = LineageLimits(max_events=1000)
    with ConsoleServer(s, lineage_limits=limits) as console:
        async with httpx.AsyncClient(base_url=console.url, timeout=60) as http:
            resp = await http.get(f"/lineage/{hostile.big_id}")
            assert resp.status_code == 200
            assert 'id="too-large"' in resp.text
            assert "1000 events" in resp.text.replace(",", "")
            # An export beyond the cap is refused too, with the same reason.
            export = await http.get(f"/lineage/{hostile.big_id}/export/json")
            assert export.status_code == 413
            small = await http.get(f"/lineage/{hostile.small_id}")
            assert "lineage-svg" in small.text


def _slow_dot(tmp: Path) -> Path:
    """A ``dot`` that records its pid and never answers (a stand-in for a huge layout)."""
    bindir = tmp / "bin"
    bindir.mkdir()
    script = bindir / "dot"
    script.write_text(f'#!/bin/sh\necho $$ > "{tmp}/pid.$$"\nexec sleep 600\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bindir


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


async def _request_and_hang_up(port: int, path: str) -> asyncio.StreamWriter:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    return writer


async def test_renders_are_limited_and_stop_when_the_client_leaves(
    hostile: Hostile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{_slow_dot(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    s = hostile.governed.settings
    with ConsoleServer(s, lineage_limits=LineageLimits(concurrent=2)) as console:
        deps = console.server.config.app.state.deps
        writers = [
            await _request_and_hang_up(console.port, f"/lineage/{hostile.small_id}")
            for _ in range(2)
        ]
        while len(list(tmp_path.glob("pid.*"))) < 2:  # both renders reached dot
            await asyncio.sleep(0.05)
        pids = [int(p.read_text()) for p in tmp_path.glob("pid.*")]
        # A third render is refused at once while two are drawing.
        async with httpx.AsyncClient(base_url=console.url, timeout=60) as http:
            busy = await http.get(f"/lineage/{hostile.small_id}")
        assert busy.status_code == 503
        assert "retry-after" in busy.headers
        # The clients hang up: the console stops drawing and ends dot.
        for w in writers:
            w.close()
        while any(_alive(p) for p in pids) or deps.lineage.cancelled < 2:
            await asyncio.sleep(0.05)
        assert deps.lineage.active == 0
