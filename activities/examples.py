"""The demo domain's governed activities: payouts, infrastructure changes and models.

They stand in for real side effects. Each execution is appended to a journal
(``$ECP_HOME/side_effects.jsonl``) and to :data:`EXECUTIONS` in-process, so
tests can observe whether a body ran at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from temporalio import activity

from ecp._paths import data_dir
from ecp.activities._artifact_check import artifact, declare_output
from ecp.activities._governed import governed

__all__ = [
    "EXECUTIONS",
    "InfraChange",
    "ModelDeployment",
    "Payout",
    "TrainingRun",
    "change_infrastructure",
    "deploy_model",
    "journal_path",
    "payout",
    "train_model",
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


@dataclass(frozen=True)
class ModelDeployment:
    """Deploy the request's ``model`` artifact (and ``image``, if named) to ``environment``."""

    model_name: str
    environment: str


@dataclass(frozen=True)
class TrainingRun:
    """Train ``model_name`` and write the model to ``output_path`` (simulated)."""

    model_name: str
    output_path: str


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


@activity.defn(name="deploy_model")
@governed
async def deploy_model(request: ModelDeployment) -> dict[str, object]:
    """Deploy a model (simulated). Governed; reads the model only as the gate verified it.

    ``artifact("model")`` is the gate's private copy, checked against the
    approved digest: the body never opens the path the request named.
    """
    model = artifact("model")
    h = hashlib.sha256()
    with model.open() as fh:
        # Read back what the body got, so the result proves it was the approved bytes.
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    _journal("deploy_model", {**asdict(request), "model_digest": model.digest})
    return {
        "status": "deployed",
        "model_name": request.model_name,
        "environment": request.environment,
        "model_digest": model.digest,
        "read_digest": "sha256:" + h.hexdigest(),
    }


@activity.defn(name="train_model")
@governed
async def train_model(request: TrainingRun) -> dict[str, object]:
    """Train a model (simulated): writes the model file and declares it as output ``model``."""
    out = Path(request.output_path)
    weights = hashlib.sha256(
        f"{request.model_name}:{activity.info().workflow_id}".encode()
    ).digest()
    out.write_bytes(b"ECP-DEMO-MODEL\n" + weights * 64)
    declare_output("model", out, media_type="application/octet-stream")
    _journal("train_model", asdict(request))
    return {"status": "trained", "model_name": request.model_name, "output_path": str(out)}
