"""Running `ecp` commands that start their own dev server, from tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something accepts connections on the loopback port."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def spawned_ecp(
    home: Path, port: int, *args: str, stderr: int = subprocess.PIPE
) -> Iterator[subprocess.Popen[str]]:
    """``python -m ecp ARGS`` with its data in ``home`` and Temporal on ``port``.

    It runs in its own session, so if the test fails half-way the whole
    group (the command and the dev server it started) is killed.
    """
    env = {
        **os.environ,
        "ECP_HOME": str(home),
        "ECP_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "COLUMNS": "200",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecp", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None or listening(port):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
