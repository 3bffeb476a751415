"""Benchmark: one Lineage Explorer request for a long history, bounded and unbounded.

    python bench/bench_console_lineage.py [4000]

Starts a dev server and a worker, records a workflow with N local-activity
markers (one node each), then asks two consoles in this process for its
lineage page: one with the default limits (the node cap stops the work
before Graphviz) and one with the limits lifted (what every request did
before). Prints wall time and peak memory of each; the unbounded run is the
baseline the ratios are against. Graphviz runs as a child process: its peak
is reported separately.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import uvicorn
from temporalio import activity, workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from ecp._devserver import temporal_binary
from ecp._keyring import init_keyring
from ecp._settings import Settings
from ecp.console import create_app
from ecp.console.limits import LineageLimits
from ecp.workflows._search_attributes import ALL_KEYS


@activity.defn(name="bench_noop")
async def _noop(i: int) -> int:
    return i


@workflow.defn(name="BenchChatty", sandboxed=False)
class Chatty:
    """``n`` local-activity markers, in batches of 1,000 per workflow task."""

    @workflow.run
    async def run(self, n: int) -> int:
        done = 0
        while done < n:
            batch = min(1000, n - done)
            await asyncio.gather(
                *(
                    workflow.execute_local_activity(
                        _noop, i, start_to_close_timeout=timedelta(seconds=60)
                    )
                    for i in range(batch)
                )
            )
            done += batch
        return done


def _rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def _serve(settings: Settings, limits: LineageLimits) -> tuple[uvicorn.Server, str]:
    config = uvicorn.Config(
        create_app(settings, lineage_limits=limits), host="127.0.0.1", port=0, log_level="error"
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def _one(settings: Settings, limits: LineageLimits, wf_id: str) -> dict[str, float]:
    server, url = _serve(settings, limits)
    before = _rss_mb(resource.RUSAGE_SELF)
    t = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        resp = await http.get(f"/lineage/{wf_id}")
    seconds = time.perf_counter() - t
    server.should_exit = True
    return {
        "seconds": round(seconds, 2),
        "status": resp.status_code,
        "peak_rss_mb": round(_rss_mb(resource.RUSAGE_SELF), 1),
        "peak_growth_mb": round(_rss_mb(resource.RUSAGE_SELF) - before, 1),
        "dot_peak_rss_mb": round(_rss_mb(resource.RUSAGE_CHILDREN), 1),
        "drawn": float("lineage-svg" in resp.text),
    }


async def main(n: int) -> None:
    home = Path(f"/tmp/ecp-bench-console-{uuid.uuid4().hex[:8]}")
    init_keyring(home / "keys")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        search_attributes=list(ALL_KEYS),
        dev_server_log_level="error",
    )
    async with env:
        client = env.client
        settings = Settings(
            home=home,
            temporal_address=client.service_client.config.target_host,
            namespace=client.namespace,
            database_url=f"sqlite:///{home / 'ecp.db'}",
        )
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        async with Worker(client, task_queue=queue, workflows=[Chatty], activities=[_noop]):
            wf_id = f"chatty-{n}"
            await client.execute_workflow(Chatty.run, n, id=wf_id, task_queue=queue)
        events = (await client.get_workflow_handle(wf_id).describe()).raw_description
        length = events.workflow_execution_info.history_length
        # Bounded first: ru_maxrss only grows, so the larger run goes last.
        bounded = await _one(settings, LineageLimits(), wf_id)
        unbounded = await _one(
            settings,
            LineageLimits(max_events=1_000_000, max_nodes=10**9, dot_timeout=600),
            wf_id,
        )
    print(f"history: {length} events")
    print(f"{'':>10} {'seconds':>8} {'growth MB':>10} {'dot MB':>8} drawn")
    for name, r in (("bounded", bounded), ("unbounded", unbounded)):
        print(
            f"{name:>10} {r['seconds']:>8.2f} {r['peak_growth_mb']:>10.1f} "
            f"{r['dot_peak_rss_mb']:>8.1f} {'yes' if r['drawn'] else 'no (cap page)'}"
        )
    summary = {
        "benchmark": "console_lineage",
        "events": length,
        "bounded": bounded,
        "unbounded": unbounded,
        "time_ratio": round(bounded["seconds"] / max(unbounded["seconds"], 1e-9), 3),
    }
    # One JSON object as the last line, for scripts that compare runs.
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 4000))
