"""``ecp demo``: the governed scenario, end to end, on the embedded dev server.

1. a small payout is allowed, runs, and its receipt verifies offline;
2. a large payout waits for a finance approval, gets it, runs, is proven;
3. a payout by someone the policy does not know is denied, and proven;
4. an ordinary workflow calls the governed activity with a forged grant and
   the gate refuses it; the refusal is in the ledger too;
5. a production model deployment, approved by its digest (with the CI's
   signed provenance), whose file is replaced on disk before the gate: the
   gate refuses it, and the report says which digest was expected and found.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote

from rich.console import Console
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError

from ecp._approve import approve
from ecp._connect import connect, ensure_search_attributes
from ecp._devserver import DevServer, start_for_settings
from ecp._keyring import DEMO_APPROVER, KeyFiles, add_initiator, init_keyring
from ecp._runtime import GOVERNED_MODULES, build_plugin, run_workers
from ecp._settings import Role, Settings
from ecp._wire import STATUS_QUERY
from ecp.activities import examples
from ecp.authority._artifact import describe_file
from ecp.authority._attestation import measure_environment
from ecp.authority._calldigest import digest_values
from ecp.authority._canonical import canonical_json
from ecp.authority._clock import system_clock
from ecp.authority._dsse import sign_envelope
from ecp.authority._grant import CallBinding, issue_grant
from ecp.authority._intoto import INTOTO_PAYLOAD_TYPE, STATEMENT_TYPE_V1
from ecp.authority._keys import (
    Ed25519FileSigner,
    load_public_key,
    write_private_key,
    write_public_key,
)
from ecp.authority._policy import PolicyBundle, PolicyRequest
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.lineage.ledger._evidence import parse_evidence
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger._receipt import verify_receipt
from ecp.workflows._models import JSON, GovernedRequest, GovernedResult, TaskQueues
from ecp.workflows._start import start_governed
from ecp.workflows.examples import DIRECT_CALL_ACTIVITY_ID, DirectCall, DirectCallInput

__all__ = ["DemoLine", "run_demo"]


@dataclass(frozen=True)
class DemoLine:
    """One scenario's result, for the report."""

    name: str
    workflow_id: str
    decision: str
    outcome: str
    detail: str
    ledger_index: int | None
    ok: bool


#: Demo initiators who prove who they are by signing their requests.
DEMO_INITIATORS = ("alice",)


def ensure_keys(settings: Settings) -> KeyFiles:
    """Create the demo keys on first use (and the initiators' keys, if missing)."""
    files = KeyFiles(settings.keys)
    if not files.trust_store.exists():
        init_keyring(settings.keys, initiators=DEMO_INITIATORS)
    for name in DEMO_INITIATORS:
        if not files.initiator(name).exists():
            add_initiator(files, name)
    return files


def _check_receipt(result: GovernedResult, keys: KeyFiles, settings: Settings) -> str:
    verified = verify_receipt(result.receipt, load_public_key(keys.log), origin=settings.log_origin)
    return f"receipt verified offline: entry #{verified.log_index} in tree of {verified.tree_size}"


async def _approve_when_waiting(
    client: Client, wf_id: str, keys: KeyFiles, console: Console
) -> None:
    handle = client.get_workflow_handle(wf_id)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = await handle.query(STATUS_QUERY, result_type=dict)
        if status.get("step") == "approve":
            break
        await asyncio.sleep(0.2)
    console.print(
        f"  [yellow]waiting for approval[/] — approving as {DEMO_APPROVER} "
        f"(`ecp approve {wf_id} --key {keys.approver}`)"
    )
    await approve(
        client, wf_id, signer=Ed25519FileSigner.from_file(keys.approver), approver=DEMO_APPROVER
    )


async def _forged_grant(client: Client, settings: Settings, wf_id: str) -> tuple[str, str]:
    """Run a direct call carrying a grant signed by a key nobody trusts."""
    args: list[object] = [{"amount": 900, "currency": "EUR", "recipient": "mallory"}]
    handle = await client.start_workflow(
        DirectCall.run,
        DirectCallInput("payout", args, settings.executor_queue, wait_for_grant=True),
        id=wf_id,
        task_queue=settings.executor_queue,
        static_summary="Not governed: calls payout with a forged grant",
    )
    desc = await handle.describe()
    bundle = PolicyBundle.load(settings.policy)
    decision = bundle.evaluate(PolicyRequest(action="payout", initiator="alice", arguments=args[0]))
    # A perfectly bound grant, except that the forger's own key signed it.
    forged = issue_grant(
        decision,
        CallBinding(
            activity_type="payout",
            args_digest=digest_values(args, client.data_converter.payload_converter),
            namespace=settings.namespace,
            workflow_id=wf_id,
            run_id=desc.run_id or "",
            activity_id=DIRECT_CALL_ACTIVITY_ID,
        ),
        initiator="alice",
        environment_digest=measure_environment(GOVERNED_MODULES).digest,
        signer=Ed25519FileSigner.generate(),
        clock=system_clock,
        ttl=timedelta(minutes=5),
    )
    await handle.signal(DirectCall.grant, forged.to_json().decode())
    try:
        await handle.result()
    except WorkflowFailureError as exc:
        cause = exc.cause.cause if isinstance(exc.cause, ActivityError) else exc.cause
        if isinstance(cause, ApplicationError):
            return cause.type or "", cause.message
        raise
    return "", "the forged grant was accepted"


@dataclass(frozen=True)
class _GovernedScenario:
    """A governed scenario: what is asked, and what the policy must make of it.

    Attributes:
        title: The heading it runs under.
        story: The heading's gloss: who does what.
        name: Its name in the report.
        slug: The end of its workflow id.
        action: The governed activity to run.
        args: Its one argument.
        initiator: Who asks.
        purpose: Why, as the request gives it.
        decision: The decision the policy must reach.
        outcome: The outcome that decision must lead to.
        approve: Approve when the workflow waits for it (as finance).
    """

    title: str
    story: str
    name: str
    slug: str
    action: str
    args: dict[str, JSON]
    initiator: str
    purpose: str
    decision: str
    outcome: str
    approve: bool = False


_GOVERNED_SCENARIOS = (
    _GovernedScenario(
        title="small payout",
        story="alice pays 250 EUR to acme",
        name="small payout",
        slug="small-payout",
        action="payout",
        args={"amount": 250, "currency": "EUR", "recipient": "acme"},
        initiator="alice",
        purpose="invoice 2026-117",
        decision="allow",
        outcome="completed",
    ),
    _GovernedScenario(
        title="large payout",
        story="alice pays 5000 EUR to globex (needs finance)",
        name="large payout, approved",
        slug="large-payout",
        action="payout",
        args={"amount": 5000, "currency": "EUR", "recipient": "globex"},
        initiator="alice",
        purpose="supplier contract 88",
        decision="allow_after_approval",
        outcome="completed",
        approve=True,
    ),
    _GovernedScenario(
        title="payout by an unknown initiator",
        story="eve pays 100 EUR to herself",
        name="denied by policy",
        slug="denied",
        action="payout",
        args={"amount": 100, "currency": "EUR", "recipient": "eve"},
        initiator="eve",
        purpose="just because",
        decision="deny",
        outcome="denied",
    ),
)


def _heading(console: Console, number: int, title: str, story: str) -> None:
    console.print(f"[bold]{number}. {title}[/] — {story}")


async def _run_governed(
    client: Client,
    settings: Settings,
    keys: KeyFiles,
    queues: TaskQueues,
    sc: _GovernedScenario,
    wf: str,
    console: Console,
) -> DemoLine:
    """Submit ``sc``, approve it if it says so, and check its result and receipt."""
    req = GovernedRequest(sc.action, [sc.args], sc.initiator, sc.purpose, queues=queues)
    # alice signs her requests; eve has no key and asks unauthenticated.
    key = keys.initiator(sc.initiator)
    signer = Ed25519FileSigner.from_file(key) if key.exists() else None
    handle = await start_governed(client, req, workflow_id=wf, signer=signer)
    if sc.approve:
        await _approve_when_waiting(client, wf, keys, console)
    r = await handle.result()
    detail = _check_receipt(r, keys, settings)
    if sc.decision == "deny":
        # Nothing ran: the policy's reason is the interesting part.
        detail = f"{r.reason}; {detail}"
    ok = r.decision == sc.decision and r.outcome == sc.outcome
    return DemoLine(sc.name, wf, r.decision, r.outcome, detail, r.ledger_index, ok)


async def _run_forged(client: Client, settings: Settings, ledger: Ledger, wf: str) -> DemoLine:
    """The gate must refuse the forged grant, run nothing, and record the refusal."""
    before = len(examples.EXECUTIONS)
    err_type, message = await _forged_grant(client, settings, wf)
    ran = any(e[1] == wf for e in examples.EXECUTIONS[before:])
    index = ledger.find_activity(settings.namespace, wf, None, DIRECT_CALL_ACTIVITY_ID)
    return DemoLine(
        "forged grant at the gate",
        wf,
        "—",
        "refused by gate",
        f"{err_type}: {message}",
        index,
        err_type == "ecp.key_unknown" and not ran and index is not None,
    )


#: The demo's build system: its key signs provenance for the models it builds.
DEMO_ATTESTER = "ml-ci"
DEMO_BUILDER = "https://ci.example.com/builders/ml-trainer"


def _demo_attester(keys: KeyFiles) -> Ed25519FileSigner:
    """The demo CI's attestation key, added to the trust store on first use."""
    path = keys.directory / f"attester-{DEMO_ATTESTER}.key"
    if path.exists():
        return Ed25519FileSigner.from_file(path)
    signer = Ed25519FileSigner.generate()
    write_private_key(signer.private_key, path)
    write_public_key(signer.public_key, path.with_suffix(".pub"))
    store = TrustStore.load(keys.trust_store)
    entry = TrustedKey.create(signer.public_key, {KeyRole.ATTESTER}, name=DEMO_ATTESTER)
    TrustStore([*store, entry]).save(keys.trust_store)
    return signer


def _provenance(signer: Ed25519FileSigner, name: str, digest: str) -> str:
    """SLSA v1 provenance, as the demo CI would sign it for a model it built."""
    statement = {
        "_type": STATEMENT_TYPE_V1,
        "subject": [{"name": name, "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://ci.example.com/ml-train/v1",
                "externalParameters": {"repository": "https://git.example.com/ml/fraud-model"},
            },
            "runDetails": {"builder": {"id": DEMO_BUILDER}},
        },
    }
    return sign_envelope(INTOTO_PAYLOAD_TYPE, canonical_json(statement), signer).to_json().decode()


async def _run_tampered_model(
    client: Client,
    settings: Settings,
    keys: KeyFiles,
    ledger: Ledger,
    queues: TaskQueues,
    wf: str,
    console: Console,
) -> DemoLine:
    """A model approved by digest, then swapped on disk: the gate must refuse it."""
    models = settings.home / "models"
    models.mkdir(parents=True, exist_ok=True)
    path = models / f"{wf}.bin"
    path.write_bytes(b"ECP-DEMO-MODEL fraud v7\n" + bytes(range(256)) * 4096)
    ref = describe_file("model", path, media_type="application/octet-stream")
    artifact = {
        **ref.model_dump(mode="json"),
        "attestations": [_provenance(_demo_attester(keys), path.name, ref.digest)],
    }
    req = GovernedRequest(
        "deploy_model",
        [{"model_name": "fraud", "environment": "production"}],
        "alice",
        "release fraud model v7",
        queues=queues,
        artifacts=[artifact],
    )
    before = len(examples.EXECUTIONS)
    signer = Ed25519FileSigner.from_file(keys.initiator("alice"))
    handle = await start_governed(client, req, workflow_id=wf, signer=signer)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (await handle.query(STATUS_QUERY, result_type=dict)).get("step") == "approve":
            break
        await asyncio.sleep(0.2)
    # The decision (and the approval about to be given) fixed the digest; the
    # file on disk now changes under the same name.
    swapped = path.with_suffix(".swap")
    swapped.write_bytes(path.read_bytes().replace(b"v7", b"v6"))
    os.replace(swapped, path)
    console.print(f"  [yellow]{path.name} replaced on disk after the policy approved its digest[/]")
    await _approve_when_waiting(client, wf, keys, console)
    r = await handle.result()
    ran = any(e[1] == wf for e in examples.EXECUTIONS[before:])
    refused = (
        [
            a
            for a in (
                parse_evidence(ledger.entry(r.ledger_index).envelope).predicate.artifacts or []
            )
            if a.role == "refused"
        ]
        if r.ledger_index >= 0
        else []
    )
    expected = refused[0].digest if refused else "?"
    found = refused[0].found if refused else "?"
    detail = f"gate refused the model: expected {expected}, found {found}; " + _check_receipt(
        r, keys, settings
    )
    ok = (
        r.decision == "allow_after_approval"
        and r.outcome == "denied"
        and not ran
        and bool(refused)
        and expected == ref.digest
        and found != expected
    )
    return DemoLine(
        "tampered model at the gate", wf, r.decision, r.outcome, detail, r.ledger_index, ok
    )


async def run_scenario(
    client: Client, settings: Settings, keys: KeyFiles, ledger: Ledger, console: Console
) -> list[DemoLine]:
    """Run the five scenarios against running workers."""
    tag = uuid.uuid4().hex[:6]
    queues = TaskQueues(settings.authority_queue, settings.executor_queue)
    lines: list[DemoLine] = []
    for number, sc in enumerate(_GOVERNED_SCENARIOS, start=1):
        _heading(console, number, sc.title, sc.story)
        wf = f"demo-{tag}-{sc.slug}"
        lines.append(await _run_governed(client, settings, keys, queues, sc, wf, console))
    _heading(console, len(lines) + 1, "forged grant", "an ordinary workflow calls payout directly")
    lines.append(await _run_forged(client, settings, ledger, f"demo-{tag}-forged"))
    _heading(
        console,
        len(lines) + 1,
        "tampered model",
        "alice deploys a model to production; its file changes once its digest is approved",
    )
    lines.append(
        await _run_tampered_model(
            client, settings, keys, ledger, queues, f"demo-{tag}-model", console
        )
    )
    return lines


def _report(
    lines: list[DemoLine],
    settings: Settings,
    server: DevServer | None,
    ledger: Ledger,
    console: Console,
) -> bool:
    console.print()
    console.print("[bold]ECP demo report: verify → authorize → execute → prove[/]")
    for ln in lines:
        mark = "[green]✔ as the policy says[/]" if ln.ok else "[red]✘ NOT as the policy says[/]"
        where = "not in ledger" if ln.ledger_index is None else f"ledger entry #{ln.ledger_index}"
        console.print(f"{mark}  [bold]{ln.name}[/]: decision {ln.decision}, {ln.outcome}, {where}")
        console.print(f"    workflow {ln.workflow_id}")
        console.print(f"    {ln.detail}", soft_wrap=True)
    report = ledger.verify_all(
        load_public_key(KeyFiles(settings.keys).log), trust=TrustStore.load(settings.trust)
    )
    console.print(
        f"ledger verified: {report.size} entries, {report.checkpoints} checkpoints, "
        f"root {report.root_hash.hex()[:16]}…"
    )
    if server is not None:
        ns = quote(settings.namespace)
        console.print(f"Temporal UI: {server.ui_url}/namespaces/{ns}/workflows", soft_wrap=True)
        console.print(
            "  denied executions: "
            + server.ui_url
            + f"/namespaces/{ns}/workflows?query="
            + quote('ECPDecision="deny"'),
            soft_wrap=True,
        )
    return all(ln.ok for ln in lines)


async def _audit(
    lines: list[DemoLine], settings: Settings, keys: KeyFiles, ledger: Ledger, console: Console
) -> bool:
    """Cross-check each scenario's lineage against grants and ledger, and export it."""
    from ecp.cli.lineage import audit_workflow

    # Gate denials land between checkpoints; cover them so every receipt verifies.
    await asyncio.to_thread(ledger.checkpoint, Ed25519FileSigner.from_file(keys.log))
    out_dir = settings.home / "lineage"
    console.print()
    console.print(f"[bold]Lineage[/] (cross-checked, exported to {out_dir}):", soft_wrap=True)
    all_ok = True
    for ln in lines:
        result = await asyncio.to_thread(audit_workflow, settings, ln.workflow_id, out_dir)
        all_ok = all_ok and result.report.ok
        mark = "[green]✔ consistent[/]" if result.report.ok else "[red]✘ violations[/]"
        console.print(
            f"{mark}  {ln.workflow_id}: {len(result.report.findings)} governed step(s) checked; "
            + ", ".join(p.name for p in result.files),
            soft_wrap=True,
        )
        for finding in result.report.violations:
            console.print(f"    {finding}", soft_wrap=True)
    console.print(
        f"  with ./demo --keep the server stays up: ecp lineage show {lines[0].workflow_id}",
        soft_wrap=True,
    )
    return all_ok


async def run_demo(settings: Settings, *, keep: bool, console: Console) -> bool:
    """Start (or reuse) the dev server and workers, run the scenario, report.

    Returns whether every scenario behaved as the policy says it must.
    """
    # The refusals below are the point of the demo; the report shows them
    # once, so the workers' per-failure warnings would only be noise here.
    for name in ("temporalio.activity", "temporalio.worker", "ecp.gate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # The demo shows an unauthenticated request too (eve's): accepted here,
    # marked unauthenticated in decision, grant and evidence.
    settings = settings.model_copy(update={"allow_unauthenticated": True})
    keys = ensure_keys(settings)
    server = start_for_settings(settings)
    try:
        client = await connect(settings)
        await ensure_search_attributes(client, settings.namespace)
        plugin, ledger = build_plugin(settings, role=Role.ALL)
        console.print(
            f"Temporal at {server.address} (UI {server.ui_url}); "
            f"ledger {settings.db_url}; keys {settings.keys}"
        )
        async with run_workers(
            client, settings, plugin, role=Role.ALL, extra_workflows=[DirectCall]
        ):
            lines = await run_scenario(client, settings, keys, ledger, console)
        ok = _report(lines, settings, server, ledger, console)
        ok = await _audit(lines, settings, keys, ledger, console) and ok
        ledger.close()
        if keep and server.process is not None:
            console.print("Server left running for inspection; stop it with Ctrl-C.")
            try:
                while server.process.poll() is None:
                    await asyncio.sleep(1)
            except asyncio.CancelledError:
                pass
        return ok
    finally:
        if not keep:
            server.stop()
