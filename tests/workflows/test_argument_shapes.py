"""The argument digest contract, end to end through the real gate.

The authority digests the JSON values it was given; the gate digests the
values Temporal decoded into the activity's parameter types. For every shape
below they must agree, or every governed call of that shape is refused.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment

from ecp._keyring import KeyFiles
from ecp._runtime import GOVERNED_MODULES, build_plugin, run_workers
from ecp._settings import Role, Settings
from ecp.activities._governed import governed
from ecp.authority._attestation import measure_environment
from ecp.authority._calldigest import digest_values
from ecp.authority._clock import system_clock
from ecp.authority._grant import CallBinding, issue_grant
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._policy import Decision, DecisionScope, Effect
from ecp.workflows.examples import DIRECT_CALL_ACTIVITY_ID, DirectCall, DirectCallInput

SEEN: list[tuple[str, Any]] = []


@dataclass
class Inner:
    tags: list[str]
    weight: float


@dataclass
class Order:
    order_id: str
    lines: list[Inner]
    note: str = ""
    meta: dict[str, int] = field(default_factory=dict)


class Customer(BaseModel):
    name: str
    vip: bool = False
    limits: dict[str, int] = {}


@activity.defn(name="shape.dict")
@governed
async def shape_dict(d: dict[str, Any]) -> dict[str, Any]:
    SEEN.append(("shape.dict", d))
    return d


@activity.defn(name="shape.dataclass")
@governed
async def shape_dataclass(o: Order) -> str:
    SEEN.append(("shape.dataclass", o))
    return o.order_id


@activity.defn(name="shape.pydantic")
@governed
async def shape_pydantic(c: Customer) -> str:
    SEEN.append(("shape.pydantic", c))
    return c.name


@activity.defn(name="shape.positional")
@governed
async def shape_positional(a: int, b: str, c: list[int]) -> int:
    SEEN.append(("shape.positional", (a, b, c)))
    return a + sum(c)


SHAPES: dict[str, list[Any]] = {
    "shape.dict": [{"z": 1, "a": {"é": [1, 2.5, None, True]}, "€": "x", "\U0001f600": "y"}],
    "shape.dataclass": [
        {
            "order_id": "o-1",
            "lines": [{"tags": ["ß", "\u2028"], "weight": 0.1}],
            "note": "",
            "meta": {"b": 2, "a": 1},
        }
    ],
    "shape.pydantic": [{"name": "Zoë", "vip": True, "limits": {"daily": 2**62}}],
    "shape.positional": [2**70, "naïve ✓", [1, -(2**60), 3]],
    "shape.bignum": [{"big": 2**64 + 1, "neg": -(2**63), "float": 1e30, "tiny": 5e-324}],
}
ACTIVITY_OF = {"shape.bignum": "shape.dict"}


@pytest.fixture
async def shape_stack(
    request: pytest.FixtureRequest, temporal_env: WorkflowEnvironment, settings: Settings
) -> AsyncIterator[tuple[Client, Settings]]:
    converter: DataConverter = (
        pydantic_data_converter if request.param == "pydantic" else DataConverter.default
    )
    config = temporal_env.client.config()
    config["data_converter"] = converter
    client = Client(**config)
    # The grants here are made by hand under a made-up policy digest: this
    # test is about argument shapes, so it accepts any bundle, explicitly.
    settings = settings.model_copy(update={"accepted_policy_digests": "*"})
    plugin, ledger = build_plugin(
        settings,
        role=Role.EXECUTOR,
        governed_activities=[shape_dict, shape_dataclass, shape_pydantic, shape_positional],
    )
    async with run_workers(
        client, settings, plugin, role=Role.EXECUTOR, extra_workflows=[DirectCall]
    ):
        yield client, settings
    ledger.close()


def _grant(
    client: Client, settings: Settings, action: str, args: list[Any], wf: str, run: str
) -> str:
    decision = Decision(
        decision_id="sha256:" + "1" * 64,
        effect=Effect.ALLOW,
        action=action,
        initiator="alice",
        policy_digest="sha256:" + "2" * 64,
        request_digest="sha256:" + "3" * 64,
        policy_ids=("test",),
        reasons=("shape test",),
        scope=DecisionScope(max_attempts=1),
    )
    call = CallBinding(
        activity_type=action,
        # What the authority does: digest the JSON values with the converter.
        args_digest=digest_values(args, client.data_converter.payload_converter),
        namespace="default",
        workflow_id=wf,
        run_id=run,
        activity_id=DIRECT_CALL_ACTIVITY_ID,
    )
    return (
        issue_grant(
            decision,
            call,
            initiator="alice",
            environment_digest=measure_environment(GOVERNED_MODULES).digest,
            signer=Ed25519FileSigner.from_file(KeyFiles(settings.keys).authority),
            clock=system_clock,
            ttl=timedelta(minutes=5),
        )
        .to_json()
        .decode()
    )


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize(
    ("shape_stack", "shape"),
    # Pydantic models need temporalio's pydantic data converter; every other
    # shape runs under both converters.
    [
        (c, s)
        for c in ("default", "pydantic")
        for s in sorted(SHAPES)
        if not (c == "default" and s == "shape.pydantic")
    ],
    indirect=["shape_stack"],
)
async def test_gate_and_authority_agree(shape_stack: tuple[Client, Settings], shape: str) -> None:
    client, settings = shape_stack
    action = ACTIVITY_OF.get(shape, shape)
    args = SHAPES[shape]
    wf = f"{shape}-{uuid.uuid4().hex[:6]}"
    handle = await client.start_workflow(
        DirectCall.run,
        DirectCallInput(action, args, settings.executor_queue, wait_for_grant=True, max_attempts=1),
        id=wf,
        task_queue=settings.executor_queue,
    )
    desc = await handle.describe()
    await handle.signal(
        DirectCall.grant, _grant(client, settings, action, args, wf, desc.run_id or "")
    )
    result = await handle.result()
    assert any(name == action for name, _ in SEEN)
    if shape == "shape.positional":
        assert result == 2**70 + 1 - 2**60 + 3
    elif shape in ("shape.dict", "shape.bignum"):
        assert json.dumps(result, sort_keys=True) == json.dumps(args[0], sort_keys=True)
    else:
        assert result == (args[0].get("order_id") or args[0].get("name"))
