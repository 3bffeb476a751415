"""The app's own workflow, in a module named like every Temporal app's."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities import reserve_stock

#: Module state: the sandbox re-imports this (non-passed-through) module for
#: every run, so each run starts from 0. Were the app's ``workflows`` module
#: passed through, the second run would see 1.
RUNS = 0


@workflow.defn
class OrderWorkflow:
    @workflow.run
    async def run(self, order_id: str) -> str:
        global RUNS
        RUNS += 1
        reserved = await workflow.execute_activity(
            reserve_stock, order_id, start_to_close_timeout=timedelta(seconds=10)
        )
        return f"{reserved} (run {RUNS} of this module copy)"
