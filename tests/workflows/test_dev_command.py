"""`ecp dev`: dev server + workers of every role; Ctrl-C stops everything."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.workflows.local_ecp import free_port, listening, spawned_ecp

# Starts its own dev server through the ecp command line.
pytestmark = pytest.mark.temporal


def test_dev_prints_the_ui_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    with spawned_ecp(tmp_path, port, "dev", stderr=subprocess.STDOUT) as proc:
        _exercise(proc, port)


def _exercise(proc: subprocess.Popen[str], port: int) -> None:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C stops" in line:
            break
    out = "".join(lines)
    assert f"UI at http://127.0.0.1:{port + 1000}" in out, out
    assert "worker(s) running" in out, out
    console_url = f"http://127.0.0.1:{port + 2000}/"
    assert f"ECP console at {console_url}" in out, out
    try:
        with urllib.request.urlopen(console_url + "api/health", timeout=30) as resp:
            status = resp.status
    except urllib.error.HTTPError as err:
        status = err.code
    assert status in (200, 503)  # it answers; what health says is tested elsewhere
    assert listening(port)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + rest
    assert "stopped" in rest
    assert not listening(port)
