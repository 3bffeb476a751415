"""`ecp dev`: dev server + workers of every role; Ctrl-C stops everything."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_dev_prints_the_ui_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "ECP_HOME": str(tmp_path),
        "ECP_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "COLUMNS": "200",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecp", "dev"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so a failing test can stop the dev server it started too
    )
    try:
        _exercise(proc, port)
    finally:
        if proc.poll() is None or _listening(port):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


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
    assert _listening(port)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + rest
    assert "stopped" in rest
    assert not _listening(port)
