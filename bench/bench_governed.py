"""Governed vs plain execution on one dev server, side by side in one run.

Prints, for N concurrent workflows of each kind running the same payout
body: throughput, p50/p95 latency, and the governed/plain ratio; then the
in-process cost of the gate's check next to the raw crypto floor (one
Ed25519 verify plus the argument digest).

    python bench/bench_governed.py [--n 50] [--rounds 2] [--gate-iterations 2000]

Not a test: numbers vary with the machine; the ratios are what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
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
from ecp.authority._replay import InMemoryReplayGuard, SqlReplayGuard  # noqa: E402
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore  # noqa: E402
from ecp.authority._verify import ExpectedCall, verify_grant  # noqa: E402
from ecp.workflows._governed import GovernedExecution  # noqa: E402
from ecp.workflows._models import GovernedRequest, TaskQueues  # noqa: E402
from ecp.workflows._search_attributes import ALL_KEYS  # noqa: E402

ARGS = {"amount": 250, "currency": "EUR", "recipient": "acme"}


@activity.defn(name="bench.payout_plain")
async def payout_plain(request: Payout) -> dict[str, object]:
    """The same body as the governed payout, without governance."""
    return {"status": "paid", **asdict(request)}


@workflow.defn(name="BenchPlain", sandboxed=False)
class BenchPlain:
    """The action as one ordinary activity."""

    @workflow.run
    async def run(self, args: dict[str, Any]) -> Any:
        return await workflow.execute_activity(
            "bench.payout_plain", args, start_to_close_timeout=timedelta(seconds=30)
        )


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


async def _batch(n: int, start_one: object) -> tuple[float, list[float]]:
    latencies: list[float] = []

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        await start_one(i)  # type: ignore[operator]
        latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - t0, latencies


#: What main prints as its last line.
SUMMARY: dict[str, object] = {}


async def end_to_end(n: int, rounds: int, eager: bool) -> None:
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
            plugin, ledger = build_plugin(settings, role=Role.ALL)
            client: Client = env.client
            queues = TaskQueues(settings.authority_queue, settings.executor_queue)
            plain_q = f"plain-{q}"
            async with (
                run_workers(client, settings, plugin, role=Role.ALL),
                Worker(
                    client, task_queue=plain_q, workflows=[BenchPlain], activities=[payout_plain]
                ),
            ):

                async def plain(i: int) -> None:
                    await client.execute_workflow(
                        BenchPlain.run,
                        ARGS,
                        id=f"plain-{q}-{i}-{uuid.uuid4().hex[:4]}",
                        task_queue=plain_q,
                    )

                async def governed(i: int) -> None:
                    r = await client.execute_workflow(
                        GovernedExecution.run,
                        GovernedRequest("payout", [ARGS], "alice", "bench", queues=queues),
                        id=f"gov-{q}-{i}-{uuid.uuid4().hex[:4]}",
                        task_queue=queues.executor,
                    )
                    assert r.outcome == "completed", r.reason

                await _batch(5, plain)  # warm-up both paths
                await _batch(5, governed)
                rows: dict[str, tuple[list[float], list[float]]] = {
                    "plain": ([], []),
                    "governed": ([], []),
                }
                for _ in range(rounds):
                    # Interleaved rounds so both kinds see the same machine load.
                    for name, fn in (("plain", plain), ("governed", governed)):
                        wall, lat = await _batch(n, fn)
                        rows[name][0].append(n / wall)
                        rows[name][1].extend(lat)
            ledger.close()
    print(
        f"\nEnd to end on one dev server: {n} concurrent workflows x {rounds} rounds"
        f" (eager activity execution {'on' if eager else 'off'})"
    )
    print(f"{'kind':<10}{'workflows/s':>14}{'p50 ms':>10}{'p95 ms':>10}")
    for name, (tps, lat) in rows.items():
        print(
            f"{name:<10}{statistics.mean(tps):>14.1f}{_pct(lat, 0.5) * 1e3:>10.1f}"
            f"{_pct(lat, 0.95) * 1e3:>10.1f}"
        )
    ratio = statistics.mean(rows["governed"][0]) / statistics.mean(rows["plain"][0])
    print(f"governed/plain throughput ratio: {ratio:.2f} (goal >= 0.5)")
    SUMMARY.update(
        {
            "concurrent": n,
            "rounds": rounds,
            "plain_wf_per_s": round(statistics.mean(rows["plain"][0]), 2),
            "governed_wf_per_s": round(statistics.mean(rows["governed"][0]), 2),
            "governed_p50_ms": round(_pct(rows["governed"][1], 0.5) * 1e3, 1),
            "plain_p50_ms": round(_pct(rows["plain"][1], 0.5) * 1e3, 1),
            "throughput_ratio": round(ratio, 3),
        }
    )
    print(
        "governed runs 5 activities (prepare, evaluate, authorize, execute, prove) "
        "against plain's 1"
    )


PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


def _on_postgres(gate: Callable[[object], float]) -> float | None:
    """The gate check on the machine's PostgreSQL (a throwaway database), if it answers."""
    name = f"ecp_bench_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        print("(PostgreSQL at 127.0.0.1:5432 not reachable: no PostgreSQL figure)")
        return None
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        guard = SqlReplayGuard(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
        guard.consume("warm", 1, 1)
        cost = gate(guard)
        guard.dispose()
        return cost
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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


def gate_cost(iterations: int) -> None:
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

    grants = [grant(i) for i in range(iterations)]
    sample = Envelope.from_json(grants[0][0])
    message = pae(sample.payload_type, sample.payload)
    sig = sample.signatures[0].sig

    t0 = time.perf_counter()
    for _ in range(iterations):
        verify_ed25519(authority.public_key, sig, message)
        digest_values(args, conv)
    floor = (time.perf_counter() - t0) / iterations

    def gate(guard: object) -> float:
        t0 = time.perf_counter()
        for envelope, exp in grants:
            d = digest_values(args, conv)
            verify_grant(
                envelope, trust=trust, expected=_with(exp, d), clock=system_clock, replay=guard
            )  # type: ignore[arg-type]
        return (time.perf_counter() - t0) / iterations

    in_memory = gate(InMemoryReplayGuard())
    with tempfile.TemporaryDirectory() as tmp:
        sql = SqlReplayGuard(f"sqlite:///{tmp}/r.db")
        sql.consume("warm", 1, 1)
        on_sqlite = gate(sql)
        sql.dispose()
        on_postgres = _on_postgres(gate)
        controls = _control_check(tmp, trust, iterations)
    print(f"\nGate cost in process ({iterations} grants)")
    print(f"raw floor: Ed25519 verify + argument digest      {floor * 1e6:8.1f} us")
    print(
        f"gate check, in-memory single-use store          {in_memory * 1e6:8.1f} us "
        f"({in_memory / floor:.2f}x floor, goal <= 2x)"
    )
    print(
        f"gate check, SQLite single-use store (real)      {on_sqlite * 1e6:8.1f} us "
        f"({on_sqlite / floor:.2f}x floor)"
    )
    if on_postgres is not None:
        print(
            f"gate check, PostgreSQL single-use store (real)  {on_postgres * 1e6:8.1f} us "
            f"({on_postgres / floor:.2f}x floor)"
        )
    print(
        f"halt/revocation check, SQLite control log       {controls * 1e6:8.1f} us "
        f"({controls / floor:.3f}x floor; read at most every 2 s, verified view cached)"
    )
    print(f"(sha256 of 1 KB for scale: {_sha_cost() * 1e6:.2f} us)")
    SUMMARY.update(
        {
            "gate_floor_us": round(floor * 1e6, 1),
            "gate_in_memory_us": round(in_memory * 1e6, 1),
            "gate_sqlite_us": round(on_sqlite * 1e6, 1),
            "gate_over_floor_sqlite": round(on_sqlite / floor, 2),
            "gate_postgres_us": None if on_postgres is None else round(on_postgres * 1e6, 1),
            "gate_over_floor_postgres": (
                None if on_postgres is None else round(on_postgres / floor, 2)
            ),
            "gate_in_memory_vs_floor": round(in_memory / floor, 2),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="concurrent workflows per batch")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per kind")
    parser.add_argument("--gate-iterations", type=int, default=2000)
    parser.add_argument(
        "--eager", action="store_true", help="enable the server's eager activity execution"
    )
    ns = parser.parse_args()
    gate_cost(ns.gate_iterations)
    asyncio.run(end_to_end(ns.n, ns.rounds, ns.eager))
    # One JSON object as the last line, for scripts that compare runs.
    print(json.dumps({"benchmark": "governed", **SUMMARY}, sort_keys=True))


if __name__ == "__main__":
    main()
