"""Benchmark: graph build and each export for synthetic histories.

    python bench/bench_lineage.py [1000 10000 50000]

Each history is a chain of activities (workflow task + activity: 6 events
per step), each consuming the previous step's result, as a long pipeline
would. Prints wall time and peak traced memory per event, so growth with
size is visible.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import time
import tracemalloc
from collections.abc import Callable

from google.protobuf.timestamp_pb2 import Timestamp
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType as E
from temporalio.api.history.v1 import HistoryEvent

from ecp.lineage.graph._build import build_graph
from ecp.lineage.graph._export import ExportFormat, render_graph
from ecp.lineage.graph._history import RunHistory


def _json(v: object) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(v).encode())


def synthetic_history(n_events: int) -> RunHistory:
    """A valid run history of about ``n_events`` events."""
    events: list[HistoryEvent] = []
    t0 = 1_700_000_000_000_000_000

    def add(kind: int) -> HistoryEvent:
        e = HistoryEvent(event_id=len(events) + 1, event_type=kind)  # type: ignore[arg-type]
        ts = Timestamp()
        ts.FromNanoseconds(t0 + len(events) * 1_000_000)
        e.event_time.CopyFrom(ts)
        events.append(e)
        return e

    s = add(E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED).workflow_execution_started_event_attributes
    s.workflow_type.name, s.original_execution_run_id = "Synthetic", "run-1"
    s.workflow_id, s.task_queue.name = "bench", "q"
    s.input.payloads.append(_json({"seed": 0}))
    step = 0
    while len(events) + 9 < n_events:
        add(E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED)
        add(E.EVENT_TYPE_WORKFLOW_TASK_STARTED)
        wtc = add(E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED).event_id
        sch = add(E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
        a = sch.activity_task_scheduled_event_attributes
        a.activity_type.name, a.activity_id, a.task_queue.name = "step", str(step), "q"
        a.workflow_task_completed_event_id = wtc
        a.input.payloads.append(_json({"value": step}))
        st = add(E.EVENT_TYPE_ACTIVITY_TASK_STARTED)
        st.activity_task_started_event_attributes.scheduled_event_id = sch.event_id
        st.activity_task_started_event_attributes.attempt = 1
        done = add(E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
        c = done.activity_task_completed_event_attributes
        c.scheduled_event_id, c.started_event_id = sch.event_id, st.event_id
        step += 1
        c.result.payloads.append(_json({"value": step}))
    add(E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED)
    add(E.EVENT_TYPE_WORKFLOW_TASK_STARTED)
    wtc = add(E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED).event_id
    end = add(E.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED)
    end.workflow_execution_completed_event_attributes.workflow_task_completed_event_id = wtc
    end.workflow_execution_completed_event_attributes.result.payloads.append(_json(step))
    return RunHistory("default", "bench", "run-1", events)


def _peak(fn: Callable[..., object], *args: object) -> int:
    tracemalloc.start()
    fn(*args)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main(sizes: list[int]) -> None:
    summary: dict[str, object] = {}
    formats = [f for f in ExportFormat if f is not ExportFormat.SVG]
    print(
        f"{'events':>7} {'what':>12} {'total s':>8} {'µs/event':>9} {'peak MB':>8} {'B/event':>8}"
    )
    for n in sizes:
        h = synthetic_history(n)
        n = len(h.events)
        # time without tracing first (tracemalloc slows allocation-heavy code)
        t = time.perf_counter()
        g = build_graph([h])
        untraced = time.perf_counter() - t
        peak = _peak(build_graph, [h])
        summary[f"graph_{n}_us_per_event"] = round(untraced / n * 1e6, 2)
        print(
            f"{n:>7} {'graph':>12} {untraced:>8.3f} {untraced / n * 1e6:>9.1f} "
            f"{peak / 1e6:>8.1f} {peak / n:>8.0f}"
        )
        for f in formats:
            t = time.perf_counter()
            render_graph(g, f)
            untraced = time.perf_counter() - t
            peak = _peak(render_graph, g, f)
            summary[f"{f.value}_{n}_us_per_event"] = round(untraced / n * 1e6, 2)
            print(
                f"{n:>7} {f.value:>12} {untraced:>8.3f} {untraced / n * 1e6:>9.1f} "
                f"{peak / 1e6:>8.1f} {peak / n:>8.0f}"
            )
    _finish(summary)


def _finish(summary: dict[str, object]) -> None:
    # One JSON object as the last line, for scripts that compare runs.
    print(json.dumps({"benchmark": "lineage", **summary}, sort_keys=True))


if __name__ == "__main__":
    main([int(x) for x in sys.argv[1:]] or [1000, 10000, 50000])
