"""`ecp demo` end to end, as the README's main command runs it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_runs_every_scenario_and_audits_it(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "ECP_HOME": str(tmp_path),
        "ECP_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "COLUMNS": "200",
    }
    # Own session, so whatever happens the dev server the demo started is stopped.
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecp", "demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = stdout
    assert proc.returncode == 0, out + stderr
    for scenario in (
        "small payout",
        "large payout, approved",
        "denied by policy",
        "forged grant at the gate",
    ):
        assert f"✔ as the policy says  {scenario}" in out
    assert "✘" not in out
    assert out.count("✔ consistent") == 4
    assert "ecp.key_unknown" in out
    # Its keys, ledger and lineage exports are where it says, and the server is gone.
    assert (tmp_path / "keys" / "truststore.json").exists()
    assert len(list((tmp_path / "lineage").glob("*.prov.json"))) == 4
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
