"""The app's own workflow, in a module named like every Temporal app's."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities import Refund, notify_customer, refund, reserve_stock
    from ecp import GovernedCallDenied, execute_governed

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


@workflow.defn
class RefundOrder:
    """Step A, a governed refund, step B: governed by changing that one call."""

    @workflow.run
    async def run(self, order_id: str, amount: int) -> str:
        timeout = timedelta(seconds=10)
        await workflow.execute_activity(reserve_stock, order_id, start_to_close_timeout=timeout)
        try:
            # Was: workflow.execute_activity(refund, Refund(...), start_to_close_timeout=...)
            done = await execute_governed(
                refund, Refund(order_id, amount), purpose="customer complaint"
            )
        except GovernedCallDenied as denied:
            done = f"refund denied ({denied.reason_code})"
        return await workflow.execute_activity(
            notify_customer, args=[order_id, done], start_to_close_timeout=timeout
        )
