"""Plain, four-step governed, scoped and peer execution on one dev server, in one run.

Modes, each N concurrent workflows running the same payout body, rounds
interleaved so every mode sees the same machine load:

- ``plain``: one ordinary activity per workflow (the baseline);
- ``four_step``: ``GovernedExecution`` (verify, authorize, execute, prove);
- ``scoped``: an ordinary workflow that opens a scope (``ecp.scope``) and
  makes its one governed call inside it;
- ``peer``: the Tenuo 0.3.3 capability-token plugin guarding the same body
  (only when ``tenuo`` is installed; skipped with a note otherwise).

First the in-process cost of the gate's check next to the raw crypto floor
(one Ed25519 verify plus the argument digest), with the in-memory, SQLite
and PostgreSQL single-use stores, one check after another and at several
checks in flight (``--gate-concurrency``; threads, as the gate's
``asyncio.to_thread``), each ratio against the floor measured the same way
in the same round. ``--plot`` writes an SVG of throughput by mode and N
concurrent.

    python bench/bench_governed.py [--n 50 100] [--rounds 2] [--plot FILE]
    python bench/bench_governed.py --gate-only [--gate-iterations 1000] [--gate-rounds 5]

Not a test: numbers vary with the machine; the ratios are what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from temporalio import activity, workflow  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.converter import default as default_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from ecp._devserver import temporal_binary  # noqa: E402
from ecp._keyring import init_keyring  # noqa: E402
from ecp._runtime import GOVERNED_MODULES, build_plugin, run_workers  # noqa: E402
from ecp._settings import Role, Settings  # noqa: E402
from ecp.activities import examples  # noqa: E402
from ecp.activities._control_watch import ControlWatch  # noqa: E402
from ecp.activities.examples import Payout  # noqa: E402
from ecp.authority._attestation import measure_environment  # noqa: E402
from ecp.authority._calldigest import digest_values  # noqa: E402
from ecp.authority._canonical import digest_bytes  # noqa: E402
from ecp.authority._clock import system_clock  # noqa: E402
from ecp.authority._control_log import SqlControlLog, issue_control  # noqa: E402
from ecp.authority._dsse import Envelope, pae  # noqa: E402
from ecp.authority._grant import CallBinding, issue_grant  # noqa: E402
from ecp.authority._keys import Ed25519FileSigner, verify_ed25519  # noqa: E402
from ecp.authority._policy import PolicyBundle, PolicyRequest  # noqa: E402
from ecp.authority._replay import InMemoryReplayGuard, ReplayGuard, SqlReplayGuard  # noqa: E402
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore  # noqa: E402
from ecp.authority._verify import ExpectedCall, verify_grant  # noqa: E402
from ecp.workflows._governed import GovernedExecution  # noqa: E402
from ecp.workflows._in_workflow import execute_governed, scope  # noqa: E402
from ecp.workflows._models import GovernedRequest, TaskQueues  # noqa: E402
from ecp.workflows._search_attributes import ALL_KEYS  # noqa: E402

ARGS: dict[str, Any] = {"amount": 250, "currency": "EUR", "recipient": "acme"}
MODES = ("plain", "four_step", "scoped", "peer")


@activity.defn(name="bench.payout_plain")
async def payout_plain(request: Payout) -> dict[str, object]:
    """The same body as the governed payout, without governance."""
    return {"status": "paid", **asdict(request)}


@activity.defn(name="bench.payout_peer")
async def payout_peer(amount: int, currency: str, recipient: str) -> dict[str, Any]:
    """The same body, guarded by the peer's plugin (flat arguments: what its proofs sign)."""
    return {"status": "paid", "amount": amount, "currency": currency, "recipient": recipient}


@workflow.defn(name="BenchPlain", sandboxed=False)
class BenchPlain:
    """The action as one ordinary activity."""

    @workflow.run
    async def run(self, args: dict[str, Any]) -> Any:
        return await workflow.execute_activity(
            "bench.payout_plain", args, start_to_close_timeout=timedelta(seconds=30)
        )


@workflow.defn(name="BenchScoped", sandboxed=False)
class BenchScoped:
    """One governed call inside a scope this workflow authorizes (ecp.scope)."""

    @workflow.run
    async def run(self, args: dict[str, Any]) -> Any:
        # No proof: the bench deployment accepts unauthenticated initiators.
        async with scope([examples.payout], max_uses=1, initiator="alice", purpose="bench"):
            return await execute_governed(examples.payout, Payout(**args))


@workflow.defn(name="BenchPeer", sandboxed=False)
class BenchPeer:
    """The action as one ordinary activity; the peer's plugin signs and checks it."""

    @workflow.run
    async def run(self, args: dict[str, Any]) -> Any:
        return await workflow.execute_activity(
            payout_peer,
            args=[args["amount"], args["currency"], args["recipient"]],
            start_to_close_timeout=timedelta(seconds=30),
        )


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children() -> list[int]:
    """This process's direct children (the dev server, a split authority worker)."""
    out = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(entry.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid():
            out.append(int(entry.parent.name))
    return out


def _cpu_now() -> tuple[float, float]:
    """CPU seconds of this process, and of its children (server, other workers)."""
    return _cpu_seconds(os.getpid()), sum(_cpu_seconds(c) for c in _children())


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


async def _batch(n: int, start_one: Callable[[int], Awaitable[None]]) -> tuple[float, list[float]]:
    latencies: list[float] = []

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        await start_one(i)
        latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - t0, latencies


#: What main prints as its last line.
SUMMARY: dict[str, object] = {}
#: Throughput (workflows/s) by mode and N concurrent, for the plot.
SERIES: dict[str, dict[int, float]] = {}


def _peer_starter(
    client: Client, q: str
) -> tuple[Callable[[int], Awaitable[None]], Callable[[], Any]] | None:
    """The peer mode's starter and worker, or None when ``tenuo`` is not installed."""
    try:
        from tenuo import SigningKey, Warrant
        from tenuo.temporal import EnvKeyResolver, TenuoPluginConfig, execute_workflow_authorized
        from tenuo.temporal_plugin import TenuoTemporalPlugin
    except ImportError:
        return None
    control, agent = SigningKey.generate(), SigningKey.generate()
    key_id = f"bench{q}"
    os.environ[f"TENUO_KEY_{key_id}"] = base64.b64encode(bytes(agent.secret_key_bytes())).decode()
    resolver = EnvKeyResolver(warn_in_production=False)
    resolver.preload_keys([key_id])
    plugin = TenuoTemporalPlugin(
        TenuoPluginConfig(
            key_resolver=resolver,
            trusted_roots=[control.public_key],
            activity_fns=[payout_peer],
        )
    )
    warrant = (
        Warrant.mint_builder()
        .holder(agent.public_key)
        .capability("bench.payout_peer")
        .ttl(3600)
        .mint(control)
    )
    peer_client = Client(client.service_client, namespace=client.namespace, plugins=[plugin])
    peer_q = f"peer-{q}"

    async def peer(i: int) -> None:
        await execute_workflow_authorized(
            client=peer_client,
            workflow_run_fn=BenchPeer.run,
            workflow_id=f"peer-{q}-{i}-{uuid.uuid4().hex[:4]}",
            warrant=warrant,
            key_id=key_id,
            args=[ARGS],
            task_queue=peer_q,
        )

    def worker() -> Worker:
        return Worker(
            peer_client, task_queue=peer_q, workflows=[BenchPeer], activities=[payout_peer]
        )

    return peer, worker


def _spawn_authority(settings: Settings, address: str) -> subprocess.Popen[bytes]:
    """The authority's worker in its own process, as deployed (``ecp worker --role authority``)."""
    env = {
        **os.environ,
        "ECP_HOME": str(settings.home),
        "ECP_TEMPORAL_ADDRESS": address,
        "ECP_AUTHORITY_QUEUE": settings.authority_queue,
        "ECP_EXECUTOR_QUEUE": settings.executor_queue,
        "ECP_DATABASE_URL": settings.db_url,
        "ECP_ALLOW_UNAUTHENTICATED": "true",
    }
    log = (settings.home / "authority.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "ecp", "worker", "--role", "authority"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def end_to_end(ns: list[int], rounds: int, eager: bool, modes: set[str], split: bool) -> None:
    extra = ["--dynamic-config-value", "system.enableActivityEagerExecution=true"] if eager else []
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        search_attributes=list(ALL_KEYS),
        dev_server_log_level="error",
        dev_server_extra_args=extra,
    )
    async with env:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            init_keyring(home / "keys")
            q = uuid.uuid4().hex[:6]
            settings = Settings(
                home=home,
                authority_queue=f"a-{q}",
                executor_queue=f"e-{q}",
                database_url=f"sqlite:///{home / 'ecp.db'}",
                # Requests here carry no initiator proof: accepted, marked unauthenticated.
                allow_unauthenticated=True,
            )
            # One process holding every role, or (split) the authority's
            # worker in a process of its own and the executor's here.
            role = Role.EXECUTOR if split else Role.ALL
            plugin, ledger = build_plugin(settings, role=role)
            client: Client = env.client
            authority = (
                _spawn_authority(settings, client.service_client.config.target_host)
                if split
                else None
            )
            queues = TaskQueues(settings.authority_queue, settings.executor_queue)
            plain_q = f"plain-{q}"
            peer = _peer_starter(client, q) if "peer" in modes else None
            if peer is None and "peer" in modes:
                print("(tenuo not installed: no peer mode; pip install tenuo==0.3.3 to add it)")

            async def plain(i: int) -> None:
                await client.execute_workflow(
                    BenchPlain.run,
                    ARGS,
                    id=f"plain-{q}-{i}-{uuid.uuid4().hex[:4]}",
                    task_queue=plain_q,
                )

            async def four_step(i: int) -> None:
                r = await client.execute_workflow(
                    GovernedExecution.run,
                    GovernedRequest("payout", [ARGS], "alice", "bench", queues=queues),
                    id=f"gov-{q}-{i}-{uuid.uuid4().hex[:4]}",
                    task_queue=queues.executor,
                )
                assert r.outcome == "completed", r.reason

            async def scoped(i: int) -> None:
                r = await client.execute_workflow(
                    BenchScoped.run,
                    ARGS,
                    id=f"scoped-{q}-{i}-{uuid.uuid4().hex[:4]}",
                    task_queue=queues.executor,
                    memo={},
                )
                assert r["status"] == "paid", r

            starters: dict[str, Callable[[int], Awaitable[None]]] = {
                "plain": plain,
                "four_step": four_step,
                "scoped": scoped,
            }
            if peer is not None:
                starters["peer"] = peer[0]
            starters = {m: fn for m, fn in starters.items() if m in modes}
            async with (
                run_workers(client, settings, plugin, role=role, extra_workflows=[BenchScoped]),
                Worker(
                    client, task_queue=plain_q, workflows=[BenchPlain], activities=[payout_plain]
                ),
                peer[1]() if peer is not None else _nothing(),
            ):
                for fn in starters.values():
                    await _batch(5, fn)  # warm-up every path
                for n in ns:
                    rows: dict[str, tuple[list[float], list[float]]] = {
                        name: ([], []) for name in starters
                    }
                    cpu = {name: [0.0, 0.0] for name in starters}
                    for _ in range(rounds):
                        # Interleaved rounds so every mode sees the same machine load.
                        for name, fn in starters.items():
                            here0, kids0 = _cpu_now()
                            wall, lat = await _batch(n, fn)
                            here1, kids1 = _cpu_now()
                            cpu[name][0] += (here1 - here0) / (n * rounds)
                            cpu[name][1] += (kids1 - kids0) / (n * rounds)
                            rows[name][0].append(n / wall)
                            rows[name][1].extend(lat)
                    _report(n, rounds, eager, rows, split, cpu)
            ledger.close()
            if authority is not None:
                authority.terminate()
                authority.wait(timeout=30)


class _nothing:  # an empty async context, in place of the peer's worker
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def _report(
    n: int,
    rounds: int,
    eager: bool,
    rows: dict[str, tuple[list[float], list[float]]],
    split: bool,
    cpu: dict[str, list[float]],
) -> None:
    print(
        f"\nEnd to end on one dev server: {n} concurrent workflows x {rounds} rounds"
        f" (eager activity execution {'on' if eager else 'off'}; "
        f"{'authority worker in its own process' if split else 'every worker in one process'})"
    )
    print(
        f"{'mode':<11}{'workflows/s':>13}{'p50 ms':>10}{'p95 ms':>10}{'vs plain':>10}"
        f"{'CPU ms/wf here':>16}{'server+others':>15}"
    )
    plain_tps = statistics.mean(rows["plain"][0])
    for name, (tps, lat) in rows.items():
        mean = statistics.mean(tps)
        SERIES.setdefault(name, {})[n] = round(mean, 2)
        print(
            f"{name:<11}{mean:>13.1f}{_pct(lat, 0.5) * 1e3:>10.1f}"
            f"{_pct(lat, 0.95) * 1e3:>10.1f}{mean / plain_tps:>10.2f}"
            f"{cpu[name][0] * 1e3:>16.1f}{cpu[name][1] * 1e3:>15.1f}"
        )
    print(
        "four_step runs 5 activities (prepare, evaluate, authorize, execute, prove) against "
        "plain's 1; scoped runs 3 (attest, authorize_scope, the gated call)"
    )
    # The summary is the last N's.
    for m in ("four_step", "scoped", "peer"):
        got = m in rows
        SUMMARY[f"{m}_wf_per_s"] = round(statistics.mean(rows[m][0]), 2) if got else None
        SUMMARY[f"{m}_p50_ms"] = round(_pct(rows[m][1], 0.5) * 1e3, 1) if got else None
        SUMMARY[f"{m}_over_plain"] = (
            round(statistics.mean(rows[m][0]) / plain_tps, 3) if got else None
        )
    SUMMARY["cpu_ms_per_wf"] = {
        m: {"this_process": round(c[0] * 1e3, 1), "children": round(c[1] * 1e3, 1)}
        for m, c in cpu.items()
    }
    SUMMARY.update(
        {
            "concurrent": n,
            "topology": "split" if split else "one_process",
            "rounds": rounds,
            "plain_wf_per_s": round(plain_tps, 2),
            "plain_p50_ms": round(_pct(rows["plain"][1], 0.5) * 1e3, 1),
        }
    )


PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


@contextlib.contextmanager
def _postgres_guards() -> Iterator[Callable[[], ReplayGuard] | None]:
    """Guards on the machine's PostgreSQL, each on a fresh throwaway database (None: no server)."""
    try:
        psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3).close()
    except psycopg.OperationalError:
        print("(PostgreSQL at 127.0.0.1:5432 not reachable: no PostgreSQL figure)")
        yield None
        return
    made: list[tuple[str, SqlReplayGuard]] = []

    def fresh() -> ReplayGuard:
        name = f"ecp_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        guard = SqlReplayGuard(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
        made.append((name, guard))
        guard.consume("warm", 1, 1)  # tables and pool first
        return guard

    try:
        yield fresh
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            for name, guard in made:
                guard.dispose()
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _in_flight(check: Callable[[int], object], first: int, n: int, concurrency: int) -> float:
    """Wall time per call of ``check(first) .. check(first + n - 1)``, ``concurrency`` at once.

    ``concurrency`` threads (the gate's ``asyncio.to_thread`` runs its checks
    in threads), each making its share of the calls back to back, released
    together: no per-call hand-over, so the floor measured this way is the
    floor, not the harness. Each thread warms up with one call first.
    """
    if n < concurrency:
        raise ValueError(f"{n} calls cannot keep {concurrency} in flight")
    share = [list(range(first + k, first + n, concurrency)) for k in range(concurrency)]
    ready = threading.Barrier(concurrency + 1)
    done = threading.Barrier(concurrency + 1)

    def run(mine: list[int]) -> None:
        check(mine[0] + n)  # warm-up, at an index of its own (first + n + k)
        ready.wait()
        for i in mine:
            check(i)
        done.wait()

    threads = [threading.Thread(target=run, args=(mine,)) for mine in share]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.perf_counter()
    done.wait()
    cost = (time.perf_counter() - t0) / n
    for t in threads:
        t.join()
    return cost


def _control_check(tmp: str, trust: TrustStore, iterations: int) -> float:
    """Per-call cost of the gate's halt/revocation check (a real SQLite control log)."""
    halt_key = Ed25519FileSigner.generate()
    store = TrustStore([*trust, TrustedKey.create(halt_key.public_key, {KeyRole.HALT})])
    log = SqlControlLog(f"sqlite:///{tmp}/controls.db")
    for target in ("deploy", "migrate", "rollout"):
        issue_control(log, halt_key, store, kind="halt", target=target, reason="bench")
    watch = ControlWatch(log, lambda: store, system_clock)
    watch.current()
    t0 = time.perf_counter()
    for i in range(iterations):
        watch.current().check("payout", f"g-{i}")
    cost = (time.perf_counter() - t0) / iterations
    log.dispose()
    return cost


def gate_cost(iterations: int, concurrencies: list[int], headline: int, rounds: int) -> None:
    bundle = PolicyBundle.load(ROOT / "ecp" / "examples" / "policy")
    authority = Ed25519FileSigner.generate()
    trust = TrustStore([TrustedKey.create(authority.public_key, {KeyRole.AUTHORITY})])
    conv = default_converter().payload_converter
    env_digest = measure_environment(GOVERNED_MODULES).digest
    decision = bundle.evaluate(PolicyRequest(action="payout", initiator="alice", arguments=ARGS))
    args = [Payout(**ARGS)]  # what the gate holds: decoded, typed values

    def grant(i: int) -> tuple[bytes, ExpectedCall]:
        call = CallBinding(
            activity_type="payout",
            args_digest=digest_values([ARGS], conv),
            namespace="default",
            workflow_id=f"wf-{i}",
            run_id="run",
            activity_id="execute:payout",
        )
        env = issue_grant(
            decision,
            call,
            initiator="alice",
            environment_digest=env_digest,
            signer=authority,
            clock=system_clock,
            ttl=timedelta(minutes=5),
        )
        exp = ExpectedCall(
            activity_type="payout",
            args_digest="",
            namespace="default",
            workflow_id=f"wf-{i}",
            run_id="run",
            activity_id="execute:payout",
            environment_digest=env_digest,
            attempt=1,
        )
        return env.to_json(), exp

    # Distinct grants for every check of every run, as a worker sees them.
    per_run = iterations + 2 * max(concurrencies) + 1
    grants = [grant(i) for i in range(per_run * rounds * 3 * (1 + len(concurrencies)))]
    sample = Envelope.from_json(grants[0][0])
    message = pae(sample.payload_type, sample.payload)
    sig = sample.signatures[0].sig

    def _loop_floor() -> float:
        t0 = time.perf_counter()
        for _ in range(iterations):
            verify_ed25519(authority.public_key, sig, message)
            digest_values(args, conv)
        return (time.perf_counter() - t0) / iterations

    floor = _loop_floor()

    def floor_check(_i: int) -> None:
        verify_ed25519(authority.public_key, sig, message)
        digest_values(args, conv)

    runs = iter(range(len(grants) // per_run))

    def gate(guard: ReplayGuard, concurrency: int = 0) -> float:
        """Per check; 0: one after another in this thread."""
        first = next(runs) * per_run

        def check(i: int) -> None:
            envelope, exp = grants[i]
            d = digest_values(args, conv)
            verify_grant(
                envelope, trust=trust, expected=_with(exp, d), clock=system_clock, replay=guard
            )

        if concurrency:
            return _in_flight(check, first, iterations, concurrency)
        t0 = time.perf_counter()
        for i in range(first, first + iterations):
            check(i)
        return (time.perf_counter() - t0) / iterations

    stores = ("in_memory", "sqlite", "postgres")
    levels = [0, *concurrencies]  # 0: one check after another, no threads
    # (store, concurrency) -> per-check seconds, and the floor next to each, per round.
    cost: dict[tuple[str, int], list[float]] = {}
    floor_next: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, _postgres_guards() as fresh_pg:
        sqlite_guards: list[SqlReplayGuard] = []

        def fresh_sqlite() -> ReplayGuard:
            guard = SqlReplayGuard(f"sqlite:///{tmp}/r{len(sqlite_guards)}.db")
            sqlite_guards.append(guard)
            guard.consume("warm", 1, 1)
            return guard

        fresh: dict[str, Callable[[], ReplayGuard] | None] = {
            "in_memory": InMemoryReplayGuard,
            "sqlite": fresh_sqlite,
            "postgres": fresh_pg,
        }
        # Rounds interleave everything, and each figure is taken right after
        # a floor measured the same way, so load that comes and goes (the
        # machine is shared) hits both sides of a ratio alike.
        for _ in range(rounds):
            for c in levels:
                for store in stores:
                    make = fresh[store]
                    if make is None:
                        continue
                    floor_next.setdefault((store, c), []).append(
                        _in_flight(floor_check, 0, iterations, c) if c else _loop_floor()
                    )
                    cost.setdefault((store, c), []).append(gate(make(), c))
        for guard in sqlite_guards:
            guard.dispose()
        controls = _control_check(tmp, trust, iterations)

    def ratio(store: str, c: int) -> float | None:
        if (store, c) not in cost:
            return None
        pairs = zip(cost[(store, c)], floor_next[(store, c)], strict=True)
        return round(statistics.median(g / f for g, f in pairs), 2)

    def us(store: str, c: int) -> float | None:
        got = cost.get((store, c))
        return None if got is None else round(statistics.median(got) * 1e6, 1)

    floor_us = {c: round(statistics.median(floor_next[("sqlite", c)]) * 1e6, 1) for c in levels}
    print(
        f"\nGate cost in process ({iterations} checks per figure, each at a distinct grant; "
        f"median of {rounds} interleaved rounds; ratio: against the floor measured "
        "the same way just before)"
    )
    print("checks in flight   floor us   in-memory us (x)   SQLite us (x)   PostgreSQL us (x)")
    for c in levels:
        cols = []
        for store in stores:
            u, r = us(store, c), ratio(store, c)
            cols.append("        -" if u is None else f"{u:8.1f} ({r:5.2f}x)")
        label = "1 (sequential)" if c == 0 else str(c)
        print(f"{label:>16}   {floor_us[c]:8.1f}   {'   '.join(cols)}")
    print(
        f"halt/revocation check, SQLite control log       {controls * 1e6:8.1f} us "
        f"({controls / floor:.3f}x floor; read at most every 2 s, verified view cached)"
    )
    print(f"(sha256 of 1 KB for scale: {_sha_cost() * 1e6:.2f} us)")
    SUMMARY.update(
        {
            "gate_rounds": rounds,
            "gate_floor_us": floor_us[0],
            "gate_in_memory_us": us("in_memory", 0),
            "gate_in_memory_vs_floor": ratio("in_memory", 0),
            # Headline: ``headline`` checks in flight (threads), against the
            # floor measured the same way in the same round.
            "gate_concurrency": headline,
            "gate_floor_at_concurrency_us": floor_us[headline],
            "gate_in_memory_at_concurrency_vs_floor": ratio("in_memory", headline),
            "gate_sqlite_us": us("sqlite", headline),
            "gate_over_floor_sqlite": ratio("sqlite", headline),
            "gate_postgres_us": us("postgres", headline),
            "gate_over_floor_postgres": ratio("postgres", headline),
            "gate_sqlite_sequential_us": us("sqlite", 0),
            "gate_over_floor_sqlite_sequential": ratio("sqlite", 0),
            "gate_postgres_sequential_us": us("postgres", 0),
            "gate_over_floor_postgres_sequential": ratio("postgres", 0),
            "gate_over_floor_by_concurrency": {
                str(c): {
                    "floor_us": floor_us[c],
                    **{store: ratio(store, c) for store in stores},
                }
                for c in concurrencies
            },
            "control_check_us": round(controls * 1e6, 2),
        }
    )


def _with(exp: ExpectedCall, digest: str) -> ExpectedCall:
    from dataclasses import replace

    return replace(exp, args_digest=digest)


def _sha_cost() -> float:
    data = b"x" * 1024
    t0 = time.perf_counter()
    for _ in range(10000):
        digest_bytes(data)
    return (time.perf_counter() - t0) / 10000


def plot_svg(series: dict[str, dict[int, float]], title: str) -> str:
    """Throughput by mode and N concurrent, as a self-contained SVG line chart."""
    w, h, left, right, top, bottom = 640, 360, 60, 130, 30, 45
    ns = sorted({n for by_n in series.values() for n in by_n})
    top_value = max((v for by_n in series.values() for v in by_n.values()), default=1.0) * 1.1
    colours = {"plain": "#555555", "four_step": "#d62728", "scoped": "#1f77b4", "peer": "#2ca02c"}

    def x(n: int) -> float:
        if len(ns) == 1:
            return left + (w - left - right) / 2
        return left + (w - left - right) * ns.index(n) / (len(ns) - 1)

    def y(v: float) -> float:
        return top + (h - top - bottom) * (1 - v / top_value)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{left}" y="18" font-size="14">{title}</text>',
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="black"/>',
        f'<text x="{(w - right + left) / 2}" y="{h - 8}" text-anchor="middle">'
        "N concurrent workflows</text>",
        f'<text x="14" y="{(h - bottom + top) / 2}" transform="rotate(-90 14 '
        f'{(h - bottom + top) / 2})" text-anchor="middle">workflows/s</text>',
    ]
    for i in range(5):
        v = top_value * i / 4
        out.append(
            f'<line x1="{left}" y1="{y(v):.1f}" x2="{w - right}" y2="{y(v):.1f}" '
            'stroke="#dddddd"/>'
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>'
        )
    for n in ns:
        out.append(f'<text x="{x(n):.1f}" y="{h - bottom + 16}" text-anchor="middle">{n}</text>')
    for row, (mode, by_n) in enumerate(series.items()):
        colour = colours.get(mode, "black")
        points = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in sorted(by_n.items()))
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for n, v in sorted(by_n.items()):
            out.append(f'<circle cx="{x(n):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}"/>')
        ly = top + 16 * row + 10
        out.append(
            f'<line x1="{w - right + 12}" y1="{ly}" x2="{w - right + 32}" y2="{ly}" '
            f'stroke="{colour}" stroke-width="2"/>'
            f'<text x="{w - right + 38}" y="{ly + 4}">{mode}</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n",
        type=int,
        nargs="+",
        default=[50],
        help="concurrent workflows per batch; several values sweep N (the summary is the last)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per mode")
    parser.add_argument("--gate-iterations", type=int, default=1000, help="checks per gate figure")
    parser.add_argument(
        "--gate-concurrency",
        type=int,
        nargs="+",
        default=sorted({1, min(32, (os.cpu_count() or 1) + 4), 8, 16, 32}),
        help="checks in flight (threads) to measure the gate's check at",
    )
    parser.add_argument(
        "--gate-headline",
        type=int,
        # asyncio's default executor, which the gate's to_thread uses, has
        # min(32, cores + 4) threads: as many checks as one worker can have
        # in flight on this machine.
        default=min(32, (os.cpu_count() or 1) + 4),
        help="the concurrency whose ratios are gate_over_floor_sqlite/_postgres "
        "(default: the size of asyncio's default executor here)",
    )
    parser.add_argument(
        "--gate-rounds", type=int, default=3, help="interleaved rounds of the gate figures"
    )
    parser.add_argument(
        "--gate-only", action="store_true", help="only the gate's cost, no end-to-end modes"
    )
    parser.add_argument(
        "--eager", action="store_true", help="enable the server's eager activity execution"
    )
    parser.add_argument(
        "--plot", type=Path, help="write an SVG of throughput by mode and N concurrent here"
    )
    parser.add_argument(
        "--skip-gate", action="store_true", help="only the end-to-end modes, no gate cost"
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="run the authority's worker in its own process (as deployed) instead of in this one",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=list(MODES),
        help="modes to run (plain always runs: it is the baseline)",
    )
    ns = parser.parse_args()
    if ns.gate_headline not in ns.gate_concurrency:
        parser.error("--gate-headline must be one of --gate-concurrency")
    if not ns.skip_gate:
        gate_cost(ns.gate_iterations, ns.gate_concurrency, ns.gate_headline, ns.gate_rounds)
    if not ns.gate_only:
        asyncio.run(end_to_end(ns.n, ns.rounds, ns.eager, set(ns.modes) | {"plain"}, ns.split))
    SUMMARY["throughput_by_n"] = SERIES
    SUMMARY["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    if ns.plot is not None:
        ns.plot.write_text(
            plot_svg(
                SERIES, f"Governed throughput by mode ({os.cpu_count()} cores, one dev server)"
            )
        )
        print(f"plot written to {ns.plot}")
    # One JSON object as the last line, for scripts that compare runs.
    print(json.dumps({"benchmark": "governed", **SUMMARY}, sort_keys=True))


if __name__ == "__main__":
    main()
