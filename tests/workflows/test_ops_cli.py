"""`ecp submit`, `ecp status` and `ecp approve` as a person runs them, against
a real dev server and real workers."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

from ecp.workflows._governed import GovernedExecution
from tests.workflows.conftest import Stack


def _env(stack: Stack) -> dict[str, str]:
    s = stack.settings
    return {
        **os.environ,
        "ECP_HOME": str(s.home),
        "ECP_TEMPORAL_ADDRESS": stack.client.service_client.config.target_host,
        "ECP_AUTHORITY_QUEUE": s.authority_queue,
        "ECP_EXECUTOR_QUEUE": s.executor_queue,
        "ECP_DATABASE_URL": s.db_url,
    }


async def _ecp(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    # Async, so the workers in this process keep serving while the CLI waits.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ecp",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_submit_wait_prints_the_proven_result(stack: Stack) -> None:
    wf = f"cli-{uuid.uuid4().hex[:6]}"
    code, out, err = await _ecp(
        _env(stack),
        "submit",
        "payout",
        "--args",
        '{"amount": 10, "currency": "USD", "recipient": "acme"}',
        "--initiator",
        "bob",
        "--id",
        wf,
        "--wait",
    )
    assert code == 0, err
    first, _, rest = out.partition("\n")
    assert first == wf
    doc = json.loads(rest)
    assert doc["outcome"] == "completed"
    assert doc["receipt"]["logIndex"] == doc["ledger_index"]
    code, out, err = await _ecp(_env(stack), "status", wf)
    assert code == 0, err
    status = json.loads(out)
    assert status["step"] == "done"
    assert status["workflow_status"] == "COMPLETED"


async def test_approve_from_the_command_line(stack: Stack) -> None:
    env = _env(stack)
    wf = f"cli-approve-{uuid.uuid4().hex[:6]}"
    code, out, err = await _ecp(
        env,
        "submit",
        "payout",
        "--args",
        '{"amount": 2500, "currency": "EUR", "recipient": "acme"}',
        "--initiator",
        "alice",
        "--id",
        wf,
    )
    assert code == 0, err
    handle = stack.client.get_workflow_handle_for(GovernedExecution.run, wf)
    for _ in range(200):
        if (await handle.query("ecp.status", result_type=dict))["step"] == "approve":
            break
        await asyncio.sleep(0.05)
    code, out, err = await _ecp(env, "approve", wf, "--key", str(stack.keys.approver))
    assert code == 0, err
    assert out.strip() == "approved by carol: 1 of 1"
    result = await handle.result()
    assert result.outcome == "completed"
    # An executor's key is not an approver's: refused in one line.
    code, out, err = await _ecp(env, "approve", wf, "--key", str(stack.keys.worker))
    assert code == 1
    assert len(err.strip().splitlines()) == 1


async def test_unreachable_temporal_is_one_line_with_the_address(stack: Stack) -> None:
    env = {**_env(stack), "ECP_TEMPORAL_ADDRESS": "127.0.0.1:1"}
    for args in (("status", "x"), ("submit", "payout", "--initiator", "a")):
        code, _out, err = await _ecp(env, *args)
        assert code == 1
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert "cannot reach Temporal at 127.0.0.1:1" in lines[0]
