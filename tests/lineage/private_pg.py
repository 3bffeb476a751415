"""A private PostgreSQL cluster for tests that must restart the server (never the shared one)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
from pathlib import Path

__all__ = ["PrivatePostgres", "postgres_binaries"]


def postgres_binaries() -> Path | None:
    """The installed server's bin directory, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """``initdb`` in ``directory``, its own port; ``restart`` is a crash-like stop and start."""

    def __init__(self, directory: Path, bin_dir: Path, *, max_connections: int = 100) -> None:
        self.bin = bin_dir
        self.max_connections = max_connections
        self.dir = directory / "pgdata"
        self.log = directory / "postgres.log"
        self.port = _free_port()
        # initdb refuses to run as root; the cluster then belongs to postgres.
        self.user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        directory.mkdir(parents=True, exist_ok=True)
        for p in (directory, *directory.parents):
            if p == Path("/tmp") or p == p.parent:
                break
            p.chmod(p.stat().st_mode | 0o755)
        self.dir.mkdir()
        self.log.touch()
        if self.user:
            shutil.chown(self.dir, "postgres")
            shutil.chown(self.log, "postgres")
        self._run("initdb", "-D", str(self.dir), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.user, str(self.bin / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
            f" -c max_connections={self.max_connections}"
        )
        self._run("pg_ctl", "-D", str(self.dir), "-o", opts, "-l", str(self.log), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.dir), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        # Immediate: no shutdown checkpoint, recovery from WAL at the next start.
        self.stop("immediate")
        self.start()
