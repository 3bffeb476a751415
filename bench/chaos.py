"""Fault injection against real components: does governance survive crashes?

Starts, on 127.0.0.1 only and inside a temporary directory: a Temporal dev
server with a persistent database file, its own PostgreSQL (``initdb`` and
``pg_ctl`` of the installed server, its own port; never the machine's shared
server), a loopback TCP proxy in front of it that can be cut, and authority
and executor workers as separate ``python -m ecp worker`` processes. Submits N
governed actions concurrently (allowed, approval-needing and approved by this
script, policy-denied, forged grants) while a seeded schedule SIGKILLs and
restarts workers (also aimed: inside a slow body after its side effect, right
after a body returned, in the middle of a ledger append, during an approval
update), restarts PostgreSQL, cuts the ledger connection and restarts the dev
server. Then checks every action and prints one JSON object on its last line.

Exit status: 0 when every count that must be 0 is 0 (``outcome_unknown`` and
``crosscheck_notes`` may be non-zero: see docs/reliability.md), 1 otherwise.

    python bench/chaos.py --quick                 # 200 actions, CI-sized
    python bench/chaos.py --n 1000 --seed 7 --backend sqlite

Everything it started is stopped on exit, Ctrl-C included. See docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from temporalio.client import Client, WorkflowExecutionStatus  # noqa: E402
from temporalio.converter import default as default_converter  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from ecp._approve import approve  # noqa: E402
from ecp._connect import ensure_search_attributes  # noqa: E402
from ecp._devserver import DevServer, start_dev_server  # noqa: E402
from ecp._keyring import DEMO_APPROVER, KeyFiles, init_keyring  # noqa: E402
from ecp._runtime import GOVERNED_MODULES  # noqa: E402
from ecp._settings import Settings  # noqa: E402
from ecp.authority._attestation import measure_environment  # noqa: E402
from ecp.authority._calldigest import digest_values  # noqa: E402
from ecp.authority._clock import system_clock  # noqa: E402
from ecp.authority._grant import CallBinding, issue_grant  # noqa: E402
from ecp.authority._keys import Ed25519FileSigner, load_public_key  # noqa: E402
from ecp.authority._policy import PolicyBundle, PolicyRequest  # noqa: E402
from ecp.authority._truststore import TrustStore  # noqa: E402
from ecp.lineage._crosscheck import GovernanceStatus, cross_check  # noqa: E402
from ecp.lineage.graph._history import fetch_histories  # noqa: E402
from ecp.lineage.ledger._evidence import parse_evidence  # noqa: E402
from ecp.lineage.ledger._ledger import Ledger  # noqa: E402
from ecp.workflows._governed import GovernedExecution  # noqa: E402
from ecp.workflows._interceptor import GrantHeaderInterceptor  # noqa: E402
from ecp.workflows._models import GovernedRequest, GovernedResult, TaskQueues  # noqa: E402
from ecp.workflows._plugin import sandbox_runner  # noqa: E402
from ecp.workflows.examples import DIRECT_CALL_ACTIVITY_ID, DirectCall, DirectCallInput  # noqa: E402
from tests.lineage.private_pg import PrivatePostgres, postgres_binaries  # noqa: E402
from tests.workflows.tcp_proxy import TcpProxy  # noqa: E402

ORIGIN = "ecp.chaos/ledger"
AUTHORITY_KEYS = ("authority.key", "log.key", "recorder.key", "truststore.json")
EXECUTOR_KEYS = ("worker.key", "truststore.json")
#: The uses each kind's policy grants (the example bundle's @max_attempts).
MAX_USES = {"allowed": 3, "approval": 3, "infra": 2}
#: The counts that must be 0 for a run to pass (the exit status says which).
MUST_BE_ZERO = (
    "lost",
    "wrong_outcome",
    "overuse",
    "ungated",
    "missing_evidence",
    "gaps",
    "forks",
    "crosscheck_findings",
)
#: What the policy says each kind must end as.
EXPECTED = {
    "allowed": "completed",
    "approval": "completed",
    "infra": "completed",
    "denied": "denied",
    "forged": "refused",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Every run this process set up, so that main() can stop its processes even
#: when an interrupt broke the event loop before its finally block ran.
_STARTED: list[Run] = []
#: Every temporary directory made, so ``main`` removes it even when an
#: interrupt (SIGTERM) lands where the coroutine's own ``finally`` cannot run.
_TMP_DIRS: list[Path] = []


def _rss_kb(pid: int) -> int | None:
    """Resident memory of a live process in KiB (Linux /proc), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Action:
    kind: str
    wf_id: str
    args: dict[str, Any]
    activity: str = "payout"
    outcome: str = ""  # terminal outcome seen at the end; "" if none
    reason: str = ""
    grant_id: str = ""
    ledger_index: int = -1
    approved: bool = False
    submitted: bool = False


@dataclass
class Run:
    tmp: Path
    queues: TaskQueues
    direct_queue: str
    envs: dict[str, dict[str, str]]
    keys: KeyFiles
    db_url: str  # the workers' URL (through the proxy for PostgreSQL)
    direct_db_url: str  # the checker's URL, around the proxy
    temporal: DevServer
    temporal_db: Path
    pg: PrivatePostgres | None
    proxy: TcpProxy | None
    procs: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    heads: list[tuple[int, bytes]] = field(default_factory=list)
    #: PostgreSQL application_name (PGAPPNAME) of each worker process: how an
    #: aimed fault finds the process whose ledger append is in progress.
    app_names: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: The driver's own transaction holding the ledger head lock (aimed fault).
    head_lock: Any = None
    #: Resident memory (KiB) of each worker process, by PGAPPNAME: when a tenth
    #: of the actions had ended (imports and caches warm) and at the end.
    rss_start: dict[str, int] = field(default_factory=dict)
    rss_end: dict[str, int] = field(default_factory=dict)
    #: Executor kills during approvals (off with --max-faults 0: the soak).
    aimed_approval_kills: bool = True
    stopped: bool = False

    def sample_rss(self, into: dict[str, int]) -> None:
        for name, p in self.app_names.items():
            kb = _rss_kb(p.pid) if p.poll() is None else None
            if kb is not None:
                into[name] = kb

    def spawn(self, role: str) -> None:
        name = f"chaos-{role}-{len(self.app_names)}"
        with (self.tmp / f"{role}.log").open("ab") as out:
            p = subprocess.Popen(
                [sys.executable, "-m", "ecp", "worker", "--role", role],
                env={**self.envs[role], "PGAPPNAME": name},
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.setdefault(role, []).append(p)
        self.app_names[name] = p

    def kill(self, role: str, p: subprocess.Popen[bytes], fault: str) -> None:
        p.send_signal(signal.SIGKILL)
        p.wait()
        self.procs[role].remove(p)
        self.count(fault)
        self.spawn(role)

    def kill_one(self, role: str, rng: random.Random, fault: str) -> None:
        alive = [p for p in self.procs.get(role, []) if p.poll() is None]
        if not alive:
            return
        self.kill(role, rng.choice(alive), fault)

    def count(self, fault: str) -> None:
        self.faults[fault] = self.faults.get(fault, 0) + 1
        _log(f"fault {fault}")

    def journal(self) -> list[dict[str, Any]]:
        path = self.tmp / "exec-home" / "side_effects.jsonl"
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut by SIGKILL
                rows.append(json.loads(line))
        return rows

    def stop_all(self) -> None:
        # Called from the event loop's finally and again, synchronously, after
        # asyncio.run: an interrupt can leave the loop unable to run the first.
        if self.stopped:
            return
        self.stopped = True
        for ps in self.procs.values():
            for p in ps:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
        for ps in self.procs.values():
            for p in ps:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.temporal.stop()
        if self.pg is not None:
            self.pg.stop()


def _policy(tmp: Path) -> Path:
    # The example bundle, with short execute timeouts: a killed attempt's
    # lease (and Temporal's start-to-close) expire within seconds, not minutes.
    policy = tmp / "policy"
    shutil.copytree(Settings().policy, policy)
    cedar = policy / "policies.cedar"
    text = cedar.read_text()
    for rule in (
        "payout-small-by-operator",
        "payout-large-needs-finance",
        "infra-staging-by-operator",
    ):
        line = f'@id("{rule}")\n'
        assert line in text, rule
        text = text.replace(line, line + '@execute_timeout("8")\n')
    cedar.write_text(text, encoding="utf-8")
    return policy


def _key_dir(keys: KeyFiles, dest: Path, names: tuple[str, ...]) -> Path:
    dest.mkdir()
    for name in names:
        shutil.copy(keys.directory / name, dest / name)
    return dest


def _setup(tmp: Path, backend: str) -> Run:
    keys = init_keyring(tmp / "operator-keys")
    pg: PrivatePostgres | None = None
    if backend == "postgres":
        bin_dir = postgres_binaries()
        if bin_dir is None:
            raise SystemExit("no PostgreSQL server installed (/usr/lib/postgresql/*/bin)")
        # Six workers' pools and the run's own connections: above the default 100.
        pg = PrivatePostgres(tmp / "pg", bin_dir, max_connections=200)
        pg.start()
        subprocess.run(
            [
                str(pg.bin / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(pg.port),
                "-U",
                "postgres",
                "ecp",
            ],
            check=True,
            timeout=60,
        )
        direct = f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/ecp"
        db_url = ""  # through the proxy, set once it listens
    else:
        direct = db_url = f"sqlite:///{tmp / 'ecp.db'}"
    port = _free_port()
    temporal_db = tmp / "temporal.db"
    temporal = start_dev_server(
        db_file=temporal_db, port=port, ui_port=_free_port(), log_file=tmp / "temporal.log"
    )
    q = uuid.uuid4().hex[:8]
    queues = TaskQueues(f"auth-{q}", f"exec-{q}")
    run = Run(tmp, queues, f"direct-{q}", {}, keys, db_url, direct, temporal, temporal_db, pg, None)
    return run


def _worker_envs(run: Run, policy: Path, slots: int = 0) -> None:
    common = {
        "ECP_TEMPORAL_ADDRESS": run.temporal.address,
        "ECP_AUTHORITY_QUEUE": run.queues.authority,
        "ECP_EXECUTOR_QUEUE": run.queues.executor,
        "ECP_DATABASE_URL": run.db_url,
        "ECP_POLICY_BUNDLE": str(policy),
        "ECP_ALLOW_UNAUTHENTICATED": "true",  # requests here carry no initiator proof
        "ECP_LOG_ORIGIN": ORIGIN,
        "ECP_LOG_FORMAT": "json",
        "ECP_LOG_LEVEL": "WARNING",
    }
    if slots:
        common["ECP_MAX_CONCURRENT_ACTIVITIES"] = str(slots)
    base = {k: v for k, v in os.environ.items() if not k.startswith("ECP_")}
    base["PYTHONPATH"] = str(ROOT)
    for role, names in (("authority", AUTHORITY_KEYS), ("executor", EXECUTOR_KEYS)):
        home = run.tmp / f"{role[:4]}-home"
        home.mkdir()
        kd = _key_dir(run.keys, run.tmp / f"{role}-keys", names)
        run.envs[role] = {**base, **common, "ECP_HOME": str(home), "ECP_KEYS_DIR": str(kd)}


def _plan(n: int, rng: random.Random) -> list[Action]:
    out = []
    for i in range(n):
        r = rng.random()
        wf = f"chaos-{i:05d}-{uuid.uuid4().hex[:6]}"
        if r < 0.45:
            a = Action(
                "allowed",
                wf,
                {"amount": rng.randint(1, 1000), "currency": "EUR", "recipient": f"r{i}"},
            )
        elif r < 0.60:
            a = Action(
                "approval",
                wf,
                {"amount": rng.randint(1001, 9000), "currency": "USD", "recipient": f"r{i}"},
            )
        elif r < 0.72:
            a = Action(
                "denied",
                wf,
                {"amount": rng.randint(1, 900), "currency": "XYZ", "recipient": f"r{i}"},
            )
        elif r < 0.90:
            dur = rng.choice((1, 2, 3))
            a = Action(
                "infra",
                wf,
                {
                    "target": f"db-{i}",
                    "environment": "staging",
                    "change": "resize",
                    "duration_seconds": dur,
                },
                "change_infrastructure",
            )
        else:
            a = Action(
                "forged",
                wf,
                {"amount": rng.randint(1, 900), "currency": "EUR", "recipient": f"r{i}"},
            )
        out.append(a)
    return out


async def _retry(what: str, fn: Any, deadline: float) -> Any:
    """Call ``fn`` until it works: the dev server may be restarting."""
    while True:
        try:
            return await fn()
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: {exc}") from exc
            await asyncio.sleep(0.5)


def _forged_grant(run: Run, a: Action, run_id: str, rogue: Ed25519FileSigner) -> str:
    # What the authority would sign for this call, signed by a key nobody trusts.
    decision = PolicyBundle.load(Path(run.envs["authority"]["ECP_POLICY_BUNDLE"])).evaluate(
        PolicyRequest(action="payout", initiator="alice", arguments=a.args)
    )
    call = CallBinding(
        activity_type="payout",
        args_digest=digest_values([a.args], default_converter().payload_converter),
        namespace="default",
        workflow_id=a.wf_id,
        run_id=run_id,
        activity_id=DIRECT_CALL_ACTIVITY_ID,
    )
    env = measure_environment(GOVERNED_MODULES).digest
    envelope = issue_grant(
        decision,
        call,
        initiator="alice",
        environment_digest=env,
        signer=rogue,
        clock=system_clock,
        ttl=__import__("datetime").timedelta(minutes=30),
    )
    return envelope.to_json().decode()


async def _submit(
    client: Client, run: Run, a: Action, rogue: Ed25519FileSigner, deadline: float
) -> None:
    if a.kind == "forged":
        # Unlimited retries (0), as a persistent caller would: a caller that
        # gives up during a ledger outage leaves no denial record (the gate
        # cannot write one and refuses the body retryably; docs/reliability.md).
        inp = DirectCallInput(
            "payout",
            [a.args],
            run.queues.executor,
            wait_for_grant=True,
            max_attempts=0,
            start_to_close_seconds=10,
        )

        async def start_direct() -> None:
            h = await client.start_workflow(
                DirectCall.run, inp, id=a.wf_id, task_queue=run.direct_queue
            )
            desc = await h.describe()
            await h.signal(DirectCall.grant, _forged_grant(run, a, desc.run_id or "", rogue))

        await _retry(f"start {a.wf_id}", start_direct, deadline)
        return
    req = GovernedRequest(a.activity, [a.args], "alice", "chaos", queues=run.queues)

    async def start() -> None:
        with contextlib.suppress(Exception):  # already started before a lost reply
            await client.start_workflow(
                GovernedExecution.run, req, id=a.wf_id, task_queue=run.queues.executor
            )
        await client.get_workflow_handle(a.wf_id).describe()

    await _retry(f"start {a.wf_id}", start, deadline)


async def _approver(
    client: Client,
    run: Run,
    actions: list[Action],
    rng: random.Random,
    stop: asyncio.Event,
    faulting: asyncio.Event,
) -> None:
    """Approves each approval-needing action once it waits; some approvals are
    delivered while an executor (which runs the workflow's update handler) is killed."""
    signer = Ed25519FileSigner.from_file(run.keys.approver)
    while not stop.is_set():
        for a in actions:
            if a.kind != "approval" or a.approved:
                continue
            try:
                h = client.get_workflow_handle(a.wf_id)
                status = await h.query("ecp.status", result_type=dict)
                if status.get("step") != "approve":
                    continue
                # Aimed kills only while faulting: the calm tail must drain.
                aimed = run.aimed_approval_kills and not faulting.is_set() and rng.random() < 0.1
                job = asyncio.create_task(
                    approve(client, a.wf_id, signer=signer, approver=DEMO_APPROVER)
                )
                if aimed:
                    await asyncio.sleep(rng.uniform(0, 0.05))
                    run.kill_one("executor", rng, "kill_executor_during_approval")
                await asyncio.wait_for(job, 30)
                a.approved = True
            except Exception:
                continue
        await asyncio.sleep(0.5)


async def _faults(
    run: Run, rng: random.Random, stop: asyncio.Event, budget: int, interval: tuple[float, float]
) -> None:
    seen_run: set[tuple[str, int]] = set()
    seen_done: set[tuple[str, int]] = set()
    kinds = [
        "kill_executor",
        "kill_authority",
        "aimed_body",
        "aimed_after_return",
        "aimed_ledger_append",
        "cut_ledger",
        "restart_postgres",
        "restart_temporal",
    ]
    weights = [4, 3, 4, 2, 2, 2, 2, 1]
    if run.pg is None:
        weights[kinds.index("restart_postgres")] = 0
        weights[kinds.index("cut_ledger")] = 0
        # Aimed through PostgreSQL's lock view; SQLite has none.
        weights[kinds.index("aimed_ledger_append")] = 0
    while not stop.is_set() and sum(run.faults.values()) < budget:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(*interval))
        if stop.is_set():
            return
        kind = rng.choices(kinds, weights)[0]
        if kind == "kill_executor":
            run.kill_one("executor", rng, kind)
        elif kind == "kill_authority":
            run.kill_one("authority", rng, kind)
        elif kind in ("aimed_body", "aimed_after_return"):
            # Inside a slow body after its side effect (journal phase "run",
            # no "done" yet), or just after it returned (phase "done"): the
            # evidence write follows the return.
            phase = "run" if kind == "aimed_body" else "done"
            seen = seen_run if phase == "run" else seen_done
            for _ in range(100):
                fresh = [
                    (e["workflow_id"], e["attempt"])
                    for e in run.journal()
                    if e["activity"] == "change_infrastructure" and e["phase"] == phase
                ]
                new = [k for k in fresh if k not in seen]
                seen.update(fresh)
                if new or stop.is_set():
                    break
                await asyncio.sleep(0.05)
            if new:
                run.kill_one("executor", rng, kind)
        elif kind == "aimed_ledger_append" and run.pg is not None:
            try:
                victim = await asyncio.to_thread(_append_in_progress, run, 5.0)
                if victim is not None:
                    # Killed while its append waits inside its transaction.
                    run.kill(*victim, kind)
            except psycopg.Error as exc:  # PostgreSQL restarting, lock not had in 2 s
                _log(f"aimed_ledger_append skipped: {type(exc).__name__}")
            finally:
                await asyncio.to_thread(_release_head, run)
        elif kind == "cut_ledger" and run.proxy is not None:
            await run.proxy.cut()
            run.count(kind)
            await asyncio.sleep(rng.uniform(0.5, 3.0))
            await run.proxy.start()
        elif kind == "restart_postgres" and run.pg is not None:
            await asyncio.to_thread(run.pg.restart)
            run.count(kind)
        elif kind == "restart_temporal":
            run.temporal.stop()
            run.count(kind)
            host, port = run.temporal.host, run.temporal.port
            run.temporal = await asyncio.to_thread(
                start_dev_server,
                db_file=run.temporal_db,
                host=host,
                port=port,
                ui_port=run.temporal.ui_port,
                log_file=run.tmp / "temporal.log",
            )


def _append_in_progress(run: Run, within: float) -> tuple[str, subprocess.Popen[bytes]] | None:
    """Hold the ledger's head lock until a worker's append waits on it; name that worker.

    A PostgreSQL append is one transaction that begins by locking the head
    row (``SELECT ... FOR UPDATE``). Holding that lock from here stops the
    next append *inside* its transaction; ``pg_stat_activity`` names the
    waiting backend's ``application_name``, which is the worker process's
    PGAPPNAME. The lock stays held (see :func:`_release_head`) so the kill
    lands while the append is still open.
    """
    assert run.pg is not None
    conn = psycopg.connect(
        f"host=127.0.0.1 port={run.pg.port} user=postgres dbname=ecp connect_timeout=5"
    )
    run.head_lock = conn
    conn.execute("SET lock_timeout = '2s'")
    conn.execute("SELECT 1 FROM ledger_head WHERE id = 1 FOR UPDATE")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with psycopg.connect(
            f"host=127.0.0.1 port={run.pg.port} user=postgres dbname=ecp connect_timeout=5",
            autocommit=True,
        ) as look:
            rows = look.execute(
                "SELECT application_name FROM pg_stat_activity WHERE datname = 'ecp' "
                "AND wait_event_type = 'Lock' AND query ILIKE '%ledger_head%' "
                "AND application_name LIKE 'chaos-%'"
            ).fetchall()
        for (name,) in rows:
            p = run.app_names.get(name)
            if p is not None and p.poll() is None:
                role = name.split("-")[1]
                return role, p
        time.sleep(0.05)
    return None


def _release_head(run: Run) -> None:
    conn, run.head_lock = run.head_lock, None
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.rollback()
        with contextlib.suppress(Exception):
            conn.close()


async def _supervise(run: Run, stop: asyncio.Event) -> None:
    """Restart a worker that exited on its own, as a process supervisor would:
    a worker started while the ledger is cut refuses to start (by design)."""
    while not stop.is_set():
        for role, ps in run.procs.items():
            for p in [p for p in ps if p.poll() is not None]:
                ps.remove(p)
                _log(f"{role} exited ({p.returncode}); restarted")
                run.spawn(role)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 1)


async def _sample_heads(run: Run, stop: asyncio.Event) -> None:
    """Remember the log's (size, root) as it grows: later it must extend them."""
    ledger = None
    while not stop.is_set():
        try:
            if ledger is None:
                ledger = await asyncio.to_thread(Ledger.open, run.direct_db_url, create=False)
            h = await asyncio.to_thread(ledger.head)
            if h.size and (not run.heads or run.heads[-1][0] != h.size):
                run.heads.append((h.size, bytes(h.root_hash)))
        except Exception:
            if ledger is not None:
                ledger.close()
            ledger = None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 3)
    if ledger is not None:
        ledger.close()


async def _outcome(client: Client, a: Action) -> None:
    h = client.get_workflow_handle(a.wf_id)
    desc = await h.describe()
    if desc.status == WorkflowExecutionStatus.RUNNING:
        return
    if a.kind == "forged":
        a.outcome = "refused" if desc.status == WorkflowExecutionStatus.FAILED else str(desc.status)
        with contextlib.suppress(Exception):
            await h.result()
        return
    if desc.status != WorkflowExecutionStatus.COMPLETED:
        a.outcome = f"workflow_{desc.status.name.lower() if desc.status else 'unknown'}"
        return
    r = await client.get_workflow_handle(a.wf_id, result_type=GovernedResult).result()
    a.outcome, a.reason, a.grant_id = r.outcome, r.reason, r.grant_id
    a.ledger_index = r.ledger_index


async def _wait_all(client: Client, actions: list[Action], deadline: float) -> None:
    while time.monotonic() < deadline:
        pending = [a for a in actions if not a.outcome]
        if not pending:
            return
        for a in pending:
            with contextlib.suppress(Exception):
                await _outcome(client, a)
        await asyncio.sleep(1)


def _grant_uses(
    url: str,
) -> tuple[dict[str, list[int]], dict[str, int], dict[tuple[str, int], bool]]:
    """The single-use store: each grant's real attempts (>= 1), its slots taken
    (closing after a completion takes the rest), which attempts ended, which completed."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            used = conn.execute(text("SELECT grant_id, attempt FROM ecp_grant_uses")).all()
            ended = conn.execute(
                text("SELECT grant_id, attempt, completed FROM ecp_grant_attempt_ends")
            ).all()
    finally:
        engine.dispose()
    uses: dict[str, list[int]] = {}
    slots: dict[str, int] = {}
    for g, a in used:
        slots[str(g)] = slots.get(str(g), 0) + 1
        if int(a) >= 1:
            uses.setdefault(str(g), []).append(int(a))
    return uses, slots, {(str(g), int(a)): bool(c) for g, a, c in ended}


def _checks(run: Run, actions: list[Action], histories: list[Any]) -> dict[str, Any]:
    journal = run.journal()
    runs: dict[str, int] = {}
    for e in journal:
        if e["phase"] == "run":
            runs[e["workflow_id"]] = runs.get(e["workflow_id"], 0) + 1
    by_id = {a.wf_id: a for a in actions}
    lost = [a.wf_id for a in actions if not a.outcome]
    uses, slots, ended = _grant_uses(run.direct_db_url)

    # "unknown" is right only where the gate's record came with a receipt, the
    # body ran no more often than the policy allows, every one of the
    # policy's uses is taken, and the store shows why the outcome is unknown:
    # an attempt that never ended (killed in or after the body, or its end
    # could not be written), or one that completed and was attempted again
    # (its completion never reached Temporal). Any other "unknown" is wrong.
    def unknown_is_right(a: Action) -> bool:
        taken = uses.get(a.grant_id, [])
        unended = any((a.grant_id, t) not in ended for t in taken)
        lost_completion = any(ended.get((a.grant_id, t)) for t in taken)
        return (
            a.ledger_index >= 0
            and runs.get(a.wf_id, 0) <= MAX_USES[a.kind]
            and slots.get(a.grant_id, 0) == MAX_USES[a.kind]
            and (unended or lost_completion)
        )

    unknown = [
        a.wf_id
        for a in actions
        if a.outcome == "unknown" and a.kind in MAX_USES and unknown_is_right(a)
    ]
    unknown_lost_completion = sum(
        1
        for w in unknown
        if any(ended.get((by_id[w].grant_id, t)) for t in uses.get(by_id[w].grant_id, []))
    )
    wrong = [
        (a.wf_id, a.kind, a.outcome, a.reason[:160])
        for a in actions
        if a.outcome and a.outcome != EXPECTED[a.kind] and a.wf_id not in unknown
    ]
    overuse = [w for w, c in runs.items() if w in by_id and c > MAX_USES.get(by_id[w].kind, 0)]
    # A body that ran for an action that had (or could have) no valid grant.
    ungated = [
        w
        for w, c in runs.items()
        if w not in by_id
        or by_id[w].kind in ("denied", "forged")
        or (by_id[w].outcome == "completed" and not by_id[w].grant_id)
    ]
    trust = TrustStore.load(run.keys.trust_store)
    log_key = load_public_key(run.keys.log)
    ledger = Ledger.open(run.direct_db_url, create=False)
    gaps = forks = 0
    notes: list[str] = []
    try:
        try:
            report = ledger.verify_all(log_key, trust=trust)
            size = report.size
            checkpoints = report.checkpoints
        except Exception as exc:
            gaps += 1
            notes.append(f"verify_all: {exc}")
            size = ledger.head().size
            checkpoints = -1
        for old_size, old_root in run.heads:
            if old_size > size or bytes(ledger.root_at(old_size)) != old_root:
                forks += 1
        named: dict[str, list[str]] = {}
        for i in range(size):
            ev = parse_evidence(ledger.entry(i).envelope).predicate
            named.setdefault(ev.activity.workflow_id, []).append(ev.outcome.status.value)
        missing = [a.wf_id for a in actions if a.outcome and a.wf_id not in named]
        report_cc = cross_check(
            histories, ledger=ledger, trust=trust, log_key=log_key, origin=ORIGIN
        )
        findings = [
            (f.workflow_id, f.activity_type, f.outcome, f.violations) for f in report_cc.violations
        ]
        # Listed, not violations: earlier attempts the history accounts for.
        noted = [f for f in report_cc.findings if f.status == GovernanceStatus.NOTED]
        note_kinds = Counter(n.split(":")[0] for f in noted for n in f.notes)
    finally:
        ledger.close()
    outcomes: dict[str, int] = {}
    for a in actions:
        k = f"{a.kind}:{a.outcome or 'none'}"
        outcomes[k] = outcomes.get(k, 0) + 1
    return {
        "lost": len(lost),
        "wrong_outcome": len(wrong),
        "outcome_unknown": len(unknown),
        "outcome_unknown_completion_lost": unknown_lost_completion,
        "overuse": len(overuse),
        "ungated": len(ungated),
        "missing_evidence": len(missing),
        "gaps": gaps,
        "forks": forks,
        "crosscheck_findings": len(findings),
        "crosscheck_notes": len(noted),
        "crosscheck_note_kinds": dict(note_kinds),
        "ledger_size": size,
        "checkpoints": checkpoints,
        "body_runs": sum(runs.values()),
        "outcomes": outcomes,
        "_detail": {
            "lost": lost[:10],
            "wrong": wrong[:10],
            "overuse": overuse[:10],
            "ungated": ungated[:10],
            "missing": missing[:10],
            "findings": [list(map(str, f)) for f in findings[:10]],
            "notes": notes,
        },
    }


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    started = time.monotonic()
    hard_deadline = started + args.time_limit
    tmp = Path(tempfile.mkdtemp(prefix="ecp-chaos-"))
    _TMP_DIRS.append(tmp)
    run = await asyncio.to_thread(_setup, tmp, args.backend)
    _STARTED.append(run)
    run.aimed_approval_kills = args.max_faults > 0
    try:
        if run.pg is not None:
            run.proxy = TcpProxy("127.0.0.1", run.pg.port)
            await run.proxy.start()
            run.db_url = f"postgresql+psycopg://postgres@127.0.0.1:{run.proxy.port}/ecp"
        _worker_envs(run, _policy(tmp), args.worker_slots)
        client = await Client.connect(run.temporal.address)
        await ensure_search_attributes(client, client.namespace)
        for _ in range(args.authorities):
            run.spawn("authority")
        for _ in range(args.executors):
            run.spawn("executor")
        actions = _plan(args.n, rng)
        rogue = Ed25519FileSigner.generate()
        stop = asyncio.Event()
        supervisor_stop = asyncio.Event()
        # The forged-grant caller: an ordinary workflow worker with the header interceptor.
        direct = Worker(
            client,
            task_queue=run.direct_queue,
            workflows=[DirectCall],
            interceptors=[GrantHeaderInterceptor()],
            workflow_runner=sandbox_runner(None),
        )
        async with direct:
            t0 = time.monotonic()
            sem = asyncio.Semaphore(50)

            async def submit(a: Action) -> None:
                async with sem:
                    await _submit(client, run, a, rogue, hard_deadline)

            async def submit_all() -> None:
                # At most --in-flight actions between submission and their end:
                # a backlog longer than a grant's lifetime (5 min) would have
                # the gate refuse grants that expired while queued. One loop
                # admits them in order (a waiting coroutine per action, each
                # counting all actions, was quadratic: at 10,000 actions the
                # driver spent its time counting instead of submitting).
                started: list[asyncio.Task[None]] = []
                open_: list[Action] = []
                for a in actions:
                    while len(open_ := [x for x in open_ if not x.outcome]) >= args.in_flight:
                        await asyncio.sleep(0.5)
                    a.submitted = True
                    open_.append(a)
                    started.append(asyncio.create_task(submit(a)))
                await asyncio.gather(*started)
                _log(f"submitted {len(actions)} in {time.monotonic() - t0:.1f}s")

            helpers = [
                asyncio.create_task(
                    _faults(run, rng, stop, args.max_faults, (args.interval_min, args.interval_max))
                ),
                asyncio.create_task(_approver(client, run, actions, rng, supervisor_stop, stop)),
                asyncio.create_task(_sample_heads(run, stop)),
                asyncio.create_task(_supervise(run, supervisor_stop)),
            ]
            submitting = asyncio.create_task(submit_all())
            # Faults until most actions are done (or the time is up), then a calm tail.
            fault_until = hard_deadline - args.settle
            while time.monotonic() < fault_until:
                await _wait_all(client, [a for a in actions if a.submitted], time.monotonic() + 5)
                await asyncio.sleep(1)
                done = sum(1 for a in actions if a.outcome)
                _log(f"{done}/{len(actions)} terminal, faults {sum(run.faults.values())}")
                if not run.rss_start and done >= 0.1 * len(actions):
                    run.sample_rss(run.rss_start)
                if done == len(actions):
                    break
                if done >= 0.9 * len(actions) and sum(run.faults.values()) >= args.min_faults:
                    break
            stop.set()
            # The approver and the supervisor keep going through the calm tail.
            await asyncio.gather(helpers[0], helpers[2])
            await submitting
            await _wait_all(client, actions, hard_deadline)
            run.sample_rss(run.rss_end)
            supervisor_stop.set()
            await asyncio.gather(helpers[1], helpers[3])
            elapsed = time.monotonic() - t0
            done = sum(1 for a in actions if a.outcome)
            histories: list[Any] = []
            for a in actions:
                with contextlib.suppress(Exception):
                    histories.extend(await fetch_histories(client, a.wf_id))
        result = await asyncio.to_thread(_checks, run, actions, histories)
        return {
            "actions": len(actions),
            "backend": args.backend,
            "seed": args.seed,
            "faults": sum(run.faults.values()),
            **{k: v for k, v in result.items() if k != "_detail"},
            "fault_counts": run.faults,
            "terminal": done,
            "seconds": round(elapsed, 1),
            "throughput_per_s": round(done / elapsed, 2) if elapsed else 0,
            "workers": {"authority": args.authorities, "executor": args.executors},
            "worker_slots": args.worker_slots or None,
            # Only processes alive at both samples (a killed worker's successor
            # starts cold): [KiB at a tenth of the actions, KiB at the end].
            "worker_rss_kb": {
                k: [run.rss_start[k], run.rss_end[k]] for k in run.rss_start if k in run.rss_end
            },
            "worker_rss_growth_max": max(
                (
                    round(run.rss_end[k] / run.rss_start[k] - 1, 3)
                    for k in run.rss_start
                    if k in run.rss_end
                ),
                default=None,
            ),
            "detail": result["_detail"],
            "tmp": str(tmp) if args.keep else "",
        }
    finally:
        if run.proxy is not None:
            await run.proxy.cut()
        await asyncio.to_thread(run.stop_all)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="governed actions (default 1000)")
    p.add_argument("--quick", action="store_true", help="200 actions, under 5 minutes")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    p.add_argument("--time-limit", type=float, default=0, help="seconds (default 290 quick, 1500)")
    p.add_argument("--settle", type=float, default=60, help="fault-free seconds kept at the end")
    p.add_argument("--min-faults", type=int, default=0, help="keep injecting until this many")
    p.add_argument(
        "--interval-min", type=float, default=3.0, help="seconds between faults, at least"
    )
    p.add_argument(
        "--interval-max", type=float, default=8.0, help="seconds between faults, at most"
    )
    p.add_argument("--max-faults", type=int, default=200)
    p.add_argument(
        "--in-flight", type=int, default=150, help="actions running at once, at most (150)"
    )
    p.add_argument("--executors", type=int, default=1)
    p.add_argument("--authorities", type=int, default=1)
    p.add_argument(
        "--worker-slots",
        type=int,
        default=0,
        help="ECP_MAX_CONCURRENT_ACTIVITIES of every worker (default: the SDK's 100)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()
    if args.quick:
        args.n = 200 if args.n == 1000 else args.n
        args.time_limit = args.time_limit or 290
        args.min_faults = args.min_faults or 20
    args.time_limit = args.time_limit or 1500
    args.min_faults = args.min_faults or 50
    # SIGTERM as Ctrl-C, so the finally blocks stop every process started.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        out = asyncio.run(_main(args))
    finally:
        for run in _STARTED:
            run.stop_all()
        # The coroutine's ``finally`` removes it too, but an interrupt thrown
        # into an already cancelled task skips that (seen once under SIGTERM).
        if not args.keep:
            for tmp in _TMP_DIRS:
                shutil.rmtree(tmp, ignore_errors=True)
    failed = [k for k in MUST_BE_ZERO if out.get(k)]
    out["passed"] = not failed
    print(json.dumps(out, sort_keys=False))
    if failed:
        _log(f"FAILED: non-zero {', '.join(failed)}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
