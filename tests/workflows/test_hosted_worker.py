"""``ecp worker --activities MODULE`` hosts a user's governed activities.

The example app's ``activities`` module is served by a plain ``ecp worker``
process started in the app's directory (no code of the app's own runs the
worker); a signed refund is allowed, executed and proven; an ungoverned
activity of the same module is hosted as it is.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from ecp._hosted import ActivitySpecError, load_activities
from ecp._keyring import KeyFiles, init_keyring
from ecp.authority._keys import Ed25519FileSigner
from ecp.workflows._models import GovernedRequest, GovernedResult, TaskQueues
from ecp.workflows._start import start_governed

APP = Path(__file__).resolve().parents[2] / "examples" / "refund_app"


async def test_ecp_worker_hosts_the_apps_activities(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    keys = KeyFiles(tmp_path / "keys")
    init_keyring(keys.directory, initiators=("alice",))
    q = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "ECP_HOME": str(tmp_path),
        "ECP_TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "ECP_AUTHORITY_QUEUE": f"a-{q}",
        "ECP_EXECUTOR_QUEUE": f"e-{q}",
        "ECP_POLICY_BUNDLE": str(APP / "policy"),
    }
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecp", "worker", "--role", "all", "--activities", "activities"],
        cwd=APP,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        handle = await start_governed(
            temporal_env.client,
            GovernedRequest(
                "refund",
                [{"order_id": "o-9", "amount": 30}],
                "alice",
                "late delivery",
                queues=TaskQueues(f"a-{q}", f"e-{q}"),
            ),
            workflow_id=f"hosted-{q}",
            signer=Ed25519FileSigner.from_file(keys.initiator("alice")),
        )
        result: GovernedResult = await asyncio.wait_for(handle.result(), 120)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    assert result.outcome == "completed", (tmp_path / "worker.log").read_text()[-2000:]
    assert result.result == "refunded 30 on o-9"


def test_activity_specs_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(APP))
    hosted = load_activities(["activities"])
    assert [f.__name__ for f in hosted.governed] == ["refund"]
    assert sorted(f.__name__ for f in hosted.plain) == ["notify_customer", "reserve_stock"]
    with pytest.raises(ActivitySpecError, match=r"no @activity\.defn named nothing"):
        load_activities(["activities:nothing"])
    with pytest.raises(ActivitySpecError, match="no @governed activity"):
        load_activities(["activities:reserve_stock"])
    with pytest.raises(ActivitySpecError, match="cannot import"):
        load_activities(["no_such_module_here"])
