"""The demo domain's governed activities: payouts and infrastructure changes.

They stand in for real side effects. Each execution is appended to a journal
(``$ECP_HOME/side_effects.jsonl``) and to :data:`EXECUTIONS` in-process, so
tests can observe whether a body ran at all.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from temporalio import activity

from ecp._paths import data_dir
from ecp.activities._governed import governed

__all__ = [
    "EXECUTIONS",
    "InfraChange",
    "Payout",
    "change_infrastructure",
    "journal_path",
    "payout",
]

#: Every body execution in this process, in order: (activity type, workflow id, args).
EXECUTIONS: list[tuple[str, str, dict[str, object]]] = []
_lock = threading.Lock()


@dataclass(frozen=True)
class Payout:
    """Pay ``amount`` (in ``currency`` units) to ``recipient``."""

    amount: int
    currency: str
    recipient: str


@dataclass(frozen=True)
class InfraChange:
    """Apply ``change`` to ``target`` in ``environment`` (staging or production).

    ``duration_seconds`` simulates a change that takes a while to apply.
    """

    target: str
    environment: str
    change: str
    duration_seconds: int = 0


def journal_path() -> Path:
    """Where executions are journaled across processes."""
    return data_dir() / "side_effects.jsonl"


def _journal(kind: str, args: dict[str, object], phase: str = "run") -> None:
    info = activity.info()
    entry = {
        "activity": kind,
        "workflow_id": info.workflow_id,
        "attempt": info.attempt,
        "phase": phase,
        **args,
    }
    with _lock:
        if phase == "run":
            EXECUTIONS.append((kind, info.workflow_id or "", args))
        path = journal_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")


@activity.defn(name="payout")
@governed
async def payout(request: Payout) -> dict[str, object]:
    """Move money (simulated). Governed: runs only under a verified grant."""
    _journal("payout", asdict(request))
    return {
        "status": "paid",
        "amount": request.amount,
        "currency": request.currency,
        "recipient": request.recipient,
        "reference": f"PAY-{activity.info().workflow_id}",
    }


@activity.defn(name="change_infrastructure")
@governed
async def change_infrastructure(request: InfraChange) -> dict[str, object]:
    """Change infrastructure (simulated). Governed: runs only under a verified grant."""
    _journal("change_infrastructure", asdict(request))
    if request.duration_seconds > 0:
        await asyncio.sleep(request.duration_seconds)
        _journal("change_infrastructure", asdict(request), phase="done")
    return {"status": "applied", "target": request.target, "environment": request.environment}
