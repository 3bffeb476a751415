"""The app's activities: one ordinary, one governed (a refund moves money)."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import activity

from ecp import governed


@dataclass
class Refund:
    order_id: str
    amount: int  # minor units


@activity.defn
async def reserve_stock(order_id: str) -> str:
    return f"reserved {order_id}"


@activity.defn
async def notify_customer(order_id: str, message: str) -> str:
    return f"told {order_id}: {message}"


@activity.defn(name="refund")
@governed
async def refund(req: Refund) -> str:
    return f"refunded {req.amount} on {req.order_id}"
