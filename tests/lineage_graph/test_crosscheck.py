"""The governance cross-check and the ``ecp lineage`` CLI, on a real dev
server with the real governed stack (keys, SQLite ledger, gate)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, delete
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowFailureError, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner, Result

from ecp._wire import OUTCOME_UNKNOWN_TYPE
from ecp.authority._keys import Ed25519FileSigner, load_private_key, load_public_key
from ecp.authority._truststore import TrustStore
from ecp.cli.lineage import app, audit_workflow
from ecp.lineage._crosscheck import (
    CrossCheckReport,
    Finding,
    GovernanceStatus,
    Note,
    Violation,
    cross_check,
)
from ecp.lineage.graph._grant_header import grant_claims
from ecp.lineage.graph._history import RunHistory, fetch_histories
from ecp.lineage.graph.errors import WorkflowNotFoundError
from ecp.lineage.ledger._evidence import parse_evidence, sign_evidence
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger._store import ENTRY
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import GovernedRequest
from ecp.workflows.examples import DirectCall, DirectCallInput
from tests.workflows.conftest import Stack

ARGS = [{"amount": 250, "currency": "EUR", "recipient": "acme"}]


def _check(
    stack: Stack, histories: list[RunHistory], ledger: Ledger | None = None
) -> CrossCheckReport:
    return cross_check(
        histories,
        ledger=ledger or stack.ledger,
        trust=TrustStore.load(stack.settings.trust),
        log_key=load_public_key(stack.keys.log),
        origin=stack.settings.log_origin,
    )


def _with_scheduled(h: RunHistory, activity_type: str, edit: object) -> RunHistory:
    events = []
    for e in h.events:
        c = HistoryEvent()
        c.CopyFrom(e)
        a = c.activity_task_scheduled_event_attributes
        if (
            c.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and a.activity_type.name == activity_type
        ):
            assert callable(edit)
            edit(a)
        events.append(c)
    return RunHistory(h.namespace, h.workflow_id, h.run_id, events)


async def _governed_run(stack: Stack) -> tuple[str, int]:
    wf_id = f"lg-x-{uuid.uuid4().hex[:8]}"
    handle = await stack.client.start_workflow(
        GovernedExecution.run,
        GovernedRequest("payout", ARGS, "alice", "invoice", queues=stack.queues),
        id=wf_id,
        task_queue=stack.queues.executor,
    )
    result = await handle.result()
    assert result.outcome == "completed", result.reason
    return wf_id, result.ledger_index


async def test_cross_check_clean_then_each_tampering_is_reported(
    stack: Stack, tmp_path: Path
) -> None:
    wf_id, index = await _governed_run(stack)
    (h,) = await fetch_histories(stack.client, wf_id)

    report = _check(stack, [h])
    assert report.ok, report
    (f,) = [x for x in report.findings if x.activity_type == "payout"]
    # The prove step's receipt is the ledger's entry for that execution.
    (p,) = [x for x in report.findings if x.activity_type == "ecp.prove"]
    assert (p.status, p.ledger_index, p.outcome) == (GovernanceStatus.OK, index, "completed")
    assert (f.activity_type, f.status, f.grant, f.evidence, f.ledger_index) == (
        "payout",
        GovernanceStatus.OK,
        "verified",
        "verified",
        index,
    )

    # A grant header altered in history (one signature byte): the grant no longer verifies.
    def flip_signature(a: object) -> None:
        p = a.header.fields["ecp-grant"]  # type: ignore[attr-defined]
        env = json.loads(p.data)
        sig = env["signatures"][0]["sig"]
        env["signatures"][0]["sig"] = ("B" if sig[0] == "A" else "A") + sig[1:]
        p.data = json.dumps(env).encode()

    report = _check(stack, [_with_scheduled(h, "payout", flip_signature)])
    (f,) = [x for x in report.violations if x.activity_type == "payout"]
    assert f.violations[0].startswith(f"{Violation.GRANT_INVALID}: signature_invalid"), f

    # The evidence removed from (a copy of) the ledger.
    db = Path(stack.settings.db_url.removeprefix("sqlite:///"))
    copy = tmp_path / "tampered.db"
    # The backup API copies the WAL's committed pages too.
    with sqlite3.connect(db) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    engine = create_engine(f"sqlite:///{copy}")
    with engine.begin() as conn:
        conn.execute(delete(ENTRY).where(ENTRY.c.seq == index))
    engine.dispose()
    with Ledger.open(f"sqlite:///{copy}", create=False) as tampered:
        report = _check(stack, [h], tampered)
    f, p = sorted(report.violations, key=lambda x: x.activity_type != "payout")
    assert f.violations == (Violation.EVIDENCE_MISSING,)
    assert f.evidence == "missing"
    # And the receipt the workflow was handed names an entry the log no longer has.
    assert p.activity_type == "ecp.prove"
    assert p.violations[0].startswith(Violation.PROOF_NOT_IN_LOG), p

    # Evidence of an execution the history does not show (the history names
    # another activity id): both directions are violations.
    def rename(a: object) -> None:
        a.activity_id = "execute:other"  # type: ignore[attr-defined]

    report = _check(stack, [_with_scheduled(h, "payout", rename)])
    codes = sorted(v.split(":")[0] for f in report.violations for v in f.violations)
    assert Violation.EVIDENCE_WITHOUT_EXECUTION in codes
    assert Violation.EVIDENCE_MISSING in codes
    assert any(f.violations[0].startswith(Violation.GRANT_INVALID) for f in report.violations)


async def test_denied_direct_call_is_not_a_violation_and_cli(
    stack: Stack,
    temporal_env: WorkflowEnvironment,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wf_id = f"lg-d-{uuid.uuid4().hex[:8]}"
    handle = await stack.client.start_workflow(
        DirectCall.run,
        DirectCallInput("payout", list(ARGS), stack.queues.executor),
        id=wf_id,
        task_queue=stack.queues.executor,
    )
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    histories = await fetch_histories(stack.client, wf_id)
    # The gate recorded the denial, but no checkpoint covers it yet (nothing
    # ran a prove step): its receipt cannot verify, and that is reported.
    (f,) = _check(stack, histories).violations
    assert f.violations[0].startswith(Violation.NO_CHECKPOINT)
    stack.ledger.checkpoint(Ed25519FileSigner.from_file(stack.keys.log), stack.settings.log_origin)
    report = _check(stack, histories)
    assert report.ok, report
    (f,) = report.findings
    assert (f.status, f.grant, f.evidence) == (GovernanceStatus.DENIED, "missing", "verified")

    with pytest.raises(WorkflowNotFoundError):
        await fetch_histories(stack.client, "no-such-workflow-" + uuid.uuid4().hex)

    # The CLI, reading histories from files and the stack's ledger and keys.
    gov_id, _ = await _governed_run(stack)
    (gh,) = await fetch_histories(stack.client, gov_id)
    good = tmp_path / "good.json"
    good.write_text(WorkflowHistory(gov_id, gh.events).to_json())
    s = stack.settings
    monkeypatch.setenv("ECP_HOME", str(s.home))
    monkeypatch.setenv("ECP_DATABASE_URL", s.db_url)
    monkeypatch.setenv(
        "ECP_TEMPORAL_ADDRESS", temporal_env.client.service_client.config.target_host
    )
    runner = CliRunner()

    async def invoke(args: list[str]) -> Result:
        # The CLI runs its own event loop: give it a thread of its own.
        return await asyncio.to_thread(runner.invoke, app, args)

    r = await invoke(["verify", gov_id, "--history", str(good)])
    assert r.exit_code == 0, r.output
    assert "no violations" in r.output

    r = await invoke(["verify", wf_id, "--json"])  # from the server
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)[0]["status"] == "denied"

    doc = json.loads(good.read_text())
    for e in doc["events"]:
        a = e.get("activityTaskScheduledEventAttributes", {})
        if a.get("activityType", {}).get("name") == "payout":
            a["activityId"] = "execute:renamed"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    r = await invoke(["verify", gov_id, "--history", str(bad)])
    assert r.exit_code == 2, r.output
    assert Violation.EVIDENCE_WITHOUT_EXECUTION in r.output

    out = tmp_path / "lineage.prov.json"
    r = await invoke(["export", gov_id, "--format", "prov-json", "--out", str(out), "--verify"])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["prefix"]["ecp"]

    # What `ecp demo` calls at its end: verify and export in one go.
    settings = s.model_copy(
        update={"temporal_address": temporal_env.client.service_client.config.target_host}
    )
    audit = await asyncio.to_thread(audit_workflow, settings, gov_id, tmp_path / "audit")
    assert audit.report.ok
    assert [p.name for p in audit.files] == [
        f"{gov_id}.prov.json",
        f"{gov_id}.openlineage.jsonl",
        f"{gov_id}.dot",
        f"{gov_id}.mmd",
    ]

    r = await invoke(["show", gov_id])
    assert r.exit_code == 0, r.output
    assert "payout" in r.output
    assert "governed" in r.output

    # Bad input: one line, exit 1, no file left behind.
    for args, env in (
        (["export", "no-such-wf", "-f", "json", "-o", str(tmp_path / "x.json")], {}),
        (
            ["export", gov_id, "-f", "json", "-o", str(tmp_path / "y.json")],
            {"ECP_TEMPORAL_ADDRESS": "127.0.0.1:1"},
        ),
        (
            [
                "export",
                gov_id,
                "-f",
                "json",
                "-o",
                str(tmp_path / "z.json"),
                "--history",
                str(tmp_path / "truncated.json"),
            ],
            {},
        ),
    ):
        (tmp_path / "truncated.json").write_text(good.read_text()[:500])
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        r = await invoke(args)
        assert r.exit_code == 1, r.output
        assert len(r.output.strip().splitlines()) == 1
        assert r.output.startswith("error: ")
    assert not any(p.name in ("x.json", "y.json", "z.json") for p in tmp_path.iterdir())


async def test_a_denial_no_step_of_the_history_reports_is_flagged(stack: Stack) -> None:
    """Someone with the recorder key writes a denial for a run that denied nothing."""
    from datetime import UTC, datetime

    from ecp.activities._evidence import predicate_for
    from ecp.authority._canonical import digest_bytes
    from ecp.lineage.ledger._evidence import OutcomeStatus, build_statement, sign_evidence

    wf_id, _ = await _governed_run(stack)
    (h,) = await fetch_histories(stack.client, wf_id)
    now = datetime.now(UTC)
    pred = predicate_for(
        namespace=h.namespace,
        workflow_id=wf_id,
        run_id=h.run_id,
        activity_id="execute:payout-again",
        attempt=1,
        activity_type="payout",
        status=OutcomeStatus.DENIED,
        reason_code="ecp.policy_denied",
        reason="made up",
        decision_id=None,
        policy_digest=None,
        grant_id=None,
        initiator="alice",
        started_at=now,
        finished_at=now,
    )
    recorder = Ed25519FileSigner.from_file(stack.keys.recorder)
    stack.ledger.append(
        sign_evidence(build_statement(pred, arguments=digest_bytes(b"x")), recorder).to_json()
    )
    report = _check(stack, [h])
    (f,) = report.violations
    assert f.violations[0].startswith(Violation.EVIDENCE_WITHOUT_EXECUTION), f
    assert "no step of the history reports" in f.violations[0]


async def test_cross_check_can_require_witness_cosignatures(stack: Stack, tmp_path: Path) -> None:
    import threading

    from ecp.lineage.ledger._cosignature import WitnessPolicy
    from ecp.lineage.ledger._note import NoteVerifier
    from ecp.lineage.witness._client import WitnessClient
    from ecp.lineage.witness._server import WitnessServer
    from ecp.lineage.witness._state import WitnessState
    from ecp.lineage.witness._witness import Witness

    wf_id, _ = await _governed_run(stack)
    (h,) = await fetch_histories(stack.client, wf_id)
    log = Ed25519FileSigner.from_file(stack.keys.log)
    state = WitnessState.init(tmp_path / "witness", "witness.example/w1")
    state.add_log(NoteVerifier.for_key(stack.settings.log_origin, log.public_key).vkey())
    policy = WitnessPolicy((state.verifier,), 1)

    def check() -> CrossCheckReport:
        return cross_check(
            [h],
            ledger=stack.ledger,
            trust=TrustStore.load(stack.settings.trust),
            log_key=log.public_key,
            origin=stack.settings.log_origin,
            witnesses=policy,
        )

    # This stack's log has no witness: its receipts are unwitnessed.
    codes = {v.split(":")[0] for f in check().violations for v in f.violations}
    assert codes == {Violation.UNWITNESSED}
    # A witness cosigns the newest checkpoint (the log asks it again); now clean.
    server = WitnessServer(("127.0.0.1", 0), Witness(state))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Ledger.open(
            stack.settings.db_url,
            origin=stack.settings.log_origin,
            witnesses=[WitnessClient(server.url, state.verifier)],
        ) as witnessed:
            assert witnessed.checkpoint(log).witnessed is True
    finally:
        server.shutdown()
        server.server_close()
    report = check()
    (f,) = [x for x in report.findings if x.activity_type == "payout"]
    assert f.status == GovernanceStatus.OK, f
    # The receipt the prove step handed the workflow was issued unwitnessed,
    # and the history keeps that copy: it stays flagged.
    (p,) = [x for x in report.findings if x.activity_type == "ecp.prove"]
    assert p.violations[0].startswith(Violation.UNWITNESSED), p


# --- an earlier attempt's record: a note only when the history accounts for it


def _with_started_attempt(h: RunHistory, activity_type: str, attempt: int) -> RunHistory:
    """A copy in which the activity's (only kept) started event is attempt ``attempt``."""
    sched = {
        e.event_id
        for e in h.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == activity_type
    }
    events = []
    for e in h.events:
        c = HistoryEvent()
        c.CopyFrom(e)
        a = c.activity_task_started_event_attributes
        if (
            c.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
            and a.scheduled_event_id in sched
        ):
            a.attempt = attempt
        events.append(c)
    return RunHistory(h.namespace, h.workflow_id, h.run_id, events)


async def test_an_earlier_attempts_record_is_a_note_only_if_the_history_accounts_for_it(
    stack: Stack, tmp_path: Path
) -> None:
    """Temporal keeps an activity's last attempt only; the gate records each.

    The real run's record (attempt 1, completed) plays the attempt whose
    completion never reached Temporal; a record of attempt 2, signed by the
    same worker key, plays the retry that Temporal kept.
    """
    wf_id, index = await _governed_run(stack)
    (h,) = await fetch_histories(stack.client, wf_id)
    retried = _with_started_attempt(h, "payout", 2)
    worker = Ed25519FileSigner(load_private_key(stack.keys.worker))
    original = parse_evidence(stack.ledger.entry(index).envelope)
    assert original.predicate.activity.attempt == 1

    recorder = Ed25519FileSigner(load_private_key(stack.keys.recorder))

    def record(
        attempt: int,
        *,
        grant_id: str | None = None,
        refused: bool = False,
        status: str = "completed",
        signer: Ed25519FileSigner = worker,
    ) -> bytes:
        pred = json.loads(json.dumps(original.statement.predicate))
        pred["activity"]["attempt"] = attempt
        if grant_id is not None:
            pred["grantId"] = grant_id
        update: dict[str, object] = {"predicate": pred}
        if status != "completed":
            # failed / unknown: the gate's record names no result.
            pred["outcome"] = {"status": status, "reasonCode": status, "reason": status}
            update["subject"] = tuple(x for x in original.statement.subject if x.name != "result")
        if refused:
            # The gate's refusal of an attempt (another one held the lease):
            # retryable, so Temporal tried again and kept only the later one.
            pred.pop("grantId")
            pred.pop("admittedAt", None)  # a refusal admitted nothing
            pred["outcome"] = {
                "status": "denied",
                "reasonCode": "attempt_in_progress",
                "reason": "attempt 1 may still be running; this attempt waits",
            }
            update["subject"] = tuple(
                x for x in original.statement.subject if x.name == "arguments"
            )
        statement = original.statement.model_copy(update=update)
        return sign_evidence(statement, signer).to_json()

    def ledger_copy(name: str) -> Ledger:
        db = Path(stack.settings.db_url.removeprefix("sqlite:///"))
        with sqlite3.connect(db) as src, sqlite3.connect(tmp_path / name) as dst:
            src.backup(dst)
        return Ledger.open(
            f"sqlite:///{tmp_path / name}",
            create=False,
            trust=TrustStore.load(stack.settings.trust),
        )

    def of_entry(report: CrossCheckReport, seq: int) -> Finding:
        (f,) = [f for f in report.findings if f.node == f"ledger:{seq}"]
        return f

    # Attempt 1 completed, so the grant was closed: attempt 2 was refused
    # 'unknown' (its completion never reached Temporal). The earlier
    # attempt's record is accounted for: listed, not a violation.
    with ledger_copy("retried.db") as led:
        led.append(record(2, status="unknown"))
        report = _check(stack, [_ended_unknown(retried, "payout")], led)
    f = of_entry(report, index)
    assert f.status == GovernanceStatus.NOTED, f
    assert f.violations == ()
    assert f.notes[0].startswith(f"{Note.RETRIED_AFTER_LOST_COMPLETION}: entry {index} "), f
    assert "attempt 1 completed" in f.notes[0]
    assert "attempt 2 of execute:payout" in f.notes[0]

    # A body that ran again after it completed (the single-use store lost the
    # grant's rows): the earlier completion is a violation, not a note.
    with ledger_copy("ran-again.db") as led:
        led.append(record(2))
        report = _check(stack, [retried], led)
    f = of_entry(report, index)
    assert f.status == GovernanceStatus.VIOLATION, f
    assert f.violations[0].startswith(f"{Violation.RAN_AFTER_COMPLETION}: attempt 1 "), f
    assert f.notes == ()
    # (The prove step's receipt names entry `index`, not the made-up retry's
    # record: that mismatch is this test's own doing, and stays reported.)
    assert not [
        v
        for x in report.violations
        for v in x.violations
        if v.startswith(Violation.EVIDENCE_WITHOUT_EXECUTION)
    ]

    # A refusal of an earlier attempt, before the retry Temporal kept: a note.
    with ledger_copy("refused.db") as led:
        refusal = led.append(record(1, refused=True)).index
        led.append(record(2))
        report = _check(stack, [retried], led)
    f = of_entry(report, refusal)
    assert f.status == GovernanceStatus.NOTED, f
    assert f.notes[0].startswith(f"{Note.RETRIED_AFTER_REFUSAL}: "), f

    # The same refusal signed by the authority side's recorder key (it may
    # sign denials, but it is not the gate): it explains no attempt.
    with ledger_copy("recorder-refused.db") as led:
        refusal = led.append(record(1, refused=True, signer=recorder)).index
        led.append(record(2))
        report = _check(stack, [retried], led)
    f = of_entry(report, refusal)
    assert f.status == GovernanceStatus.VIOLATION, f
    assert f.violations[0].startswith(Violation.EVIDENCE_WITHOUT_EXECUTION), f

    # The history shows attempt 1 only: nothing accounts for a second record
    # of attempt 1's activity, so the older one stays a violation.
    with ledger_copy("not-retried.db") as led:
        refusal = led.append(record(1, refused=True)).index
        led.append(record(2))
        report = _check(stack, [h], led)
    for seq in (index, refusal):
        f = of_entry(report, seq)
        assert f.status == GovernanceStatus.VIOLATION
        assert f.violations[0].startswith(Violation.EVIDENCE_WITHOUT_EXECUTION), f

    # Stray entries next to a genuine retry stay findings: one naming another
    # grant, one naming an attempt no earlier than the history's last. (One
    # signed by a key nobody trusts never gets in: the ledger refuses it.)
    with ledger_copy("strays.db") as led:
        other_grant = led.append(record(1, grant_id=str(uuid.uuid4()))).index
        not_earlier = led.append(record(3, status="unknown")).index
        led.append(record(2, status="unknown"))
        report = _check(stack, [_ended_unknown(retried, "payout")], led)
    assert of_entry(report, index).status == GovernanceStatus.NOTED
    for seq in (other_grant, not_earlier):
        f = of_entry(report, seq)
        assert f.status == GovernanceStatus.VIOLATION, f
        assert f.violations[0].startswith(Violation.EVIDENCE_WITHOUT_EXECUTION), f
        assert f.notes == ()


def _ended_unknown(h: RunHistory, activity_type: str) -> RunHistory:
    """A copy in which the activity's completion is the gate's ``unknown`` refusal."""
    sched = {
        e.event_id
        for e in h.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == activity_type
    }
    events = []
    for e in h.events:
        c = HistoryEvent()
        c.CopyFrom(e)
        done = c.activity_task_completed_event_attributes
        if (
            c.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
            and done.scheduled_event_id in sched
        ):
            failed = HistoryEvent(
                event_id=c.event_id,
                event_time=c.event_time,
                event_type=EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
            )
            a = failed.activity_task_failed_event_attributes
            a.scheduled_event_id = done.scheduled_event_id
            a.started_event_id = done.started_event_id
            a.failure.message = "outcome unknown"
            a.failure.application_failure_info.type = OUTCOME_UNKNOWN_TYPE
            c = failed
        events.append(c)
    return RunHistory(h.namespace, h.workflow_id, h.run_id, events)


async def test_a_body_that_ran_more_often_than_its_grant_allows_is_a_violation(
    stack: Stack, tmp_path: Path
) -> None:
    """The single-use store is unsigned: a DB operator who deletes a grant's
    rows lets the gate run the body again. Each record is the gate's genuine
    signed record, and each alone would be an earlier attempt the history
    accounts for; counted against the grant's max_attempts, they are not."""
    wf_id, index = await _governed_run(stack)
    (h,) = await fetch_histories(stack.client, wf_id)
    (sched,) = [
        e.activity_task_scheduled_event_attributes
        for e in h.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "payout"
    ]
    claims = grant_claims(bytes(sched.header.fields["ecp-grant"].data))
    assert claims is not None
    scope = claims["scope"]
    assert isinstance(scope, dict)
    allowed = scope["max_attempts"]
    assert isinstance(allowed, int)
    assert allowed >= 2
    worker = Ed25519FileSigner(load_private_key(stack.keys.worker))
    original = parse_evidence(stack.ledger.entry(index).envelope)

    def failed(attempt: int) -> bytes:
        pred = json.loads(json.dumps(original.statement.predicate))
        pred["activity"]["attempt"] = attempt
        pred["outcome"] = {"status": "failed", "reasonCode": "body_failed", "reason": "boom"}
        subject = tuple(x for x in original.statement.subject if x.name != "result")
        statement = original.statement.model_copy(update={"predicate": pred, "subject": subject})
        return sign_evidence(statement, worker).to_json()

    def ledger_copy(name: str) -> Ledger:
        db = Path(stack.settings.db_url.removeprefix("sqlite:///"))
        with sqlite3.connect(db) as src, sqlite3.connect(tmp_path / name) as dst:
            src.backup(dst)
        return Ledger.open(
            f"sqlite:///{tmp_path / name}",
            create=False,
            trust=TrustStore.load(stack.settings.trust),
        )

    # The real run's record is attempt 1 (completed, its report lost, say);
    # attempts 2..allowed failed; Temporal kept attempt allowed + 1, which
    # completed: allowed + 1 bodies ran under a grant of `allowed` uses.
    kept = allowed + 1
    with ledger_copy("over.db") as led:
        earlier = [index] + [led.append(failed(n)).index for n in range(2, kept)]
        led.append(_attempt_record(original, kept, worker))
        report = _check(stack, [_with_started_attempt(h, "payout", kept)], led)
    assert not report.ok
    for seq in earlier:
        (f,) = [f for f in report.findings if f.node == f"ledger:{seq}"]
        assert f.status == GovernanceStatus.VIOLATION, f
        assert f.violations[0].startswith(f"{Violation.RAN_MORE_THAN_GRANTED}: "), f
        assert f"ran {kept} time(s)" in f.violations[0], f
        assert f.notes == ()


def _attempt_record(original: object, attempt: int, signer: Ed25519FileSigner) -> bytes:
    """The gate's completed record of ``original``'s activity, for another attempt."""
    from ecp.lineage.ledger._evidence import Evidence

    assert isinstance(original, Evidence)
    pred = json.loads(json.dumps(original.statement.predicate))
    pred["activity"]["attempt"] = attempt
    statement = original.statement.model_copy(update={"predicate": pred})
    return sign_evidence(statement, signer).to_json()
