"""Runs the app's worker with ECP: authority and executor in one process."""

from __future__ import annotations

import asyncio

from temporalio.client import Client

from activities import notify_customer, refund, reserve_stock
from ecp import Role, build_plugin, load_settings, run_workers
from workflows import OrderWorkflow, RefundOrder


async def main() -> None:
    settings = load_settings()
    plugin, _ledger = build_plugin(
        settings, role=Role.ALL, governed_activities=[refund], governed_modules=["activities"]
    )
    client = await Client.connect(settings.temporal_address, namespace=settings.namespace)
    async with run_workers(
        client,
        settings,
        plugin,
        role=Role.ALL,
        extra_workflows=[OrderWorkflow, RefundOrder],
        extra_activities=[reserve_stock, notify_customer],
    ):
        print("worker ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
