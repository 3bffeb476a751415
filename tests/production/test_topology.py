"""The compose topology on one machine, without Docker.

A dev server, an authority worker process and an executor worker process
(each ``python -m ecp worker --role ...`` with its own key directory holding
only the keys its role needs), the ledger on the local PostgreSQL. Runs the
demo's governed payouts end to end, then kills the authority worker: new
requests wait (the payout never runs) until it comes back, then complete.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from ecp._approve import approve
from ecp._keyring import DEMO_APPROVER, KeyFiles, init_keyring
from ecp.authority._keys import Ed25519FileSigner, load_public_key
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger._receipt import verify_receipt
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import GovernedRequest, GovernedResult, TaskQueues

from .conftest import ecp_env, spawn_worker

AUTHORITY_KEYS = ("authority.key", "log.key", "recorder.key", "truststore.json")
EXECUTOR_KEYS = ("worker.key", "truststore.json")
PRIVATE_AUTHORITY_KEYS = ("authority.key", "log.key", "recorder.key", "approver.key", "halt.key")
ORIGIN = "ecp.test/topology"


@dataclass
class Topology:
    tmp: Path
    queues: TaskQueues
    auth_env: dict[str, str]
    exec_env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]]
    keys: KeyFiles  # the operator's full set, for the approver and the log key
    db_url: str

    def start(self, role: str) -> None:
        env = self.auth_env if role == "authority" else self.exec_env
        self.procs[role] = spawn_worker(role, env, self.tmp / f"{role}.log")

    def kill(self, role: str) -> None:
        p = self.procs.pop(role)
        p.send_signal(signal.SIGKILL)
        p.wait()

    def journal(self) -> list[dict[str, object]]:
        path = self.tmp / "exec-home" / "side_effects.jsonl"
        if not path.exists():
            return []
        return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(self.tmp.glob("*.log"))
        )


def _key_dir(source: KeyFiles, dest: Path, names: tuple[str, ...]) -> Path:
    dest.mkdir()
    for name in names:
        shutil.copy(source.directory / name, dest / name)
    return dest


@pytest.fixture
def topology(tmp_path: Path, temporal_env: WorkflowEnvironment, pg_url: str) -> Iterator[Topology]:
    keys = init_keyring(tmp_path / "operator-keys")
    q = uuid.uuid4().hex[:8]
    queues = TaskQueues(f"auth-{q}", f"exec-{q}")
    common = {
        "ECP_TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "ECP_NAMESPACE": temporal_env.client.namespace,
        "ECP_AUTHORITY_QUEUE": queues.authority,
        "ECP_EXECUTOR_QUEUE": queues.executor,
        "ECP_DATABASE_URL": pg_url,
        # Requests here carry no initiator proof: accepted, marked unauthenticated.
        "ECP_ALLOW_UNAUTHENTICATED": "true",
        "ECP_LOG_ORIGIN": ORIGIN,
        "ECP_LOG_FORMAT": "json",
    }
    auth_keys = _key_dir(keys, tmp_path / "authority-keys", AUTHORITY_KEYS)
    exec_keys = _key_dir(keys, tmp_path / "executor-keys", EXECUTOR_KEYS)
    (tmp_path / "exec-home").mkdir()
    (tmp_path / "auth-home").mkdir()
    topo = Topology(
        tmp_path,
        queues,
        ecp_env(**common, ECP_HOME=str(tmp_path / "auth-home"), ECP_KEYS_DIR=str(auth_keys)),
        ecp_env(**common, ECP_HOME=str(tmp_path / "exec-home"), ECP_KEYS_DIR=str(exec_keys)),
        {},
        keys,
        pg_url,
    )
    yield topo
    for p in topo.procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def _start(
    client: Client, topo: Topology, amount: int, recipient: str
) -> WorkflowHandle[GovernedExecution, GovernedResult]:
    return await client.start_workflow(
        GovernedExecution.run,
        GovernedRequest(
            "payout",
            [{"amount": amount, "currency": "EUR", "recipient": recipient}],
            "alice",
            "topology test",
            queues=topo.queues,
        ),
        id=f"topo-{recipient}-{uuid.uuid4().hex[:6]}",
        task_queue=topo.queues.executor,
    )


async def _wait_for(
    handle: WorkflowHandle[GovernedExecution, GovernedResult],
    what: str,
    topo: Topology,
    check: object,
) -> None:
    assert callable(check)
    for _ in range(1200):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{handle.id} never reached: {what}\n{topo.logs()}")


def _check_receipt(result: GovernedResult, topo: Topology) -> None:
    verify_receipt(result.receipt, load_public_key(topo.keys.log), origin=ORIGIN)


async def test_separate_processes_end_to_end(
    temporal_env: WorkflowEnvironment, topology: Topology
) -> None:
    topo = topology
    client = temporal_env.client
    topo.start("authority")
    topo.start("executor")

    # The executor process holds no private key but its own worker key.
    exec_dir = Path(topo.exec_env["ECP_KEYS_DIR"])
    for name in PRIVATE_AUTHORITY_KEYS:
        assert not (exec_dir / name).exists()
        assert not (topo.tmp / "exec-home" / "keys" / name).exists()

    # 1. a small payout: allowed, run by the executor, receipt verifies offline.
    small = await _start(client, topo, 250, "acme")
    r = await small.result()
    assert (r.decision, r.outcome) == ("allow", "completed"), r.reason
    _check_receipt(r, topo)

    # 2. a large payout waits for a finance approval, gets it, runs.
    large = await _start(client, topo, 5000, "globex")

    async def waiting_for_approval() -> bool:
        status = await large.query("ecp.status", result_type=dict)
        return bool(status.get("step") == "approve")

    await _wait_for(large, "approval step", topo, waiting_for_approval)
    await approve(
        client,
        large.id,
        signer=Ed25519FileSigner.from_file(topo.keys.approver),
        approver=DEMO_APPROVER,
    )
    r = await large.result()
    assert (r.decision, r.outcome) == ("allow_after_approval", "completed"), r.reason
    _check_receipt(r, topo)
    assert all(p.poll() is None for p in topo.procs.values()), topo.logs()

    # 3. the authority goes away: a new request waits at the policy decision,
    # and nothing runs, until the authority is back.
    topo.kill("authority")
    waiting = await _start(client, topo, 100, "initech")

    async def decision_pending() -> bool:
        desc = await waiting.describe()
        pending = [a.activity_type.name for a in desc.raw_description.pending_activities]
        return "ecp.evaluate" in pending

    await _wait_for(waiting, "a pending policy decision", topo, decision_pending)
    status = await waiting.query("ecp.status", result_type=dict)
    assert status["step"] == "verify"
    assert status["decision"] is None
    assert not [e for e in topo.journal() if e["workflow_id"] == waiting.id]

    topo.start("authority")
    r = await waiting.result()
    assert (r.decision, r.outcome) == ("allow", "completed"), r.reason
    _check_receipt(r, topo)
    runs = [e for e in topo.journal() if e["phase"] == "run"]
    assert sorted(str(e["recipient"]) for e in runs) == ["acme", "globex", "initech"]

    # The ledger on PostgreSQL verifies end to end.
    ledger = Ledger.open(topo.db_url, create=False)
    try:
        report = ledger.verify_all(load_public_key(topo.keys.log))
    finally:
        ledger.close()
    assert report.size >= 3
