"""A workflow that authorizes a scope once and makes many governed calls inside it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from ecp.activities import examples
    from ecp.workflows import GovernedCallDenied, execute_governed, scope
    from ecp.workflows._grant_header import attach_grant

SCOPE_HEADER = "ecp-scope"


@workflow.defn
class ScopedPayouts:
    """``n`` payouts under one scope, then three calls the scope must refuse."""

    @workflow.run
    async def run(self, n: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with scope(
            [examples.payout],
            max_uses=n,
            constraints={"payout": {"amount": {"max": 500}, "currency": {"in": ["EUR"]}}},
            purpose="batch of refunds",
            # No proof: this test deployment accepts unauthenticated initiators.
            initiator="alice",
        ) as granted:
            out["scope_id"] = granted.scope_id
            for i in range(n):
                await execute_governed(
                    examples.payout,
                    examples.Payout(amount=10 + i, currency="EUR", recipient=f"r{i}"),
                )
            out["done"] = n
            for name, req in (
                ("too_big", examples.Payout(amount=900, currency="EUR", recipient="x")),
                ("wrong_currency", examples.Payout(amount=5, currency="USD", recipient="x")),
                ("one_too_many", examples.Payout(amount=5, currency="EUR", recipient="x")),
            ):
                try:
                    await execute_governed(examples.payout, req)
                    out[name] = "ran"
                except GovernedCallDenied as denied:
                    out[name] = denied.reason_code
            # An action outside the scope, presented with the scope's grant.
            try:
                with attach_grant(granted.envelope.encode(), SCOPE_HEADER):
                    await workflow.execute_activity(
                        "change_infrastructure",
                        {"target": "db", "environment": "staging", "change": "x"},
                        activity_id=f"scope:{granted.scope_id}:999",
                        start_to_close_timeout=timedelta(seconds=30),
                    )
                out["outside"] = "ran"
            except Exception as err:
                cause = getattr(err, "cause", None)
                out["outside"] = getattr(cause, "type", type(err).__name__)
        return out
