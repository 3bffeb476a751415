"""A private PostgreSQL cluster for tests that must restart or reconfigure the server.

Never the shared one. Also the tools of the synchronous-replication tests:
a cluster that names a standby which does not exist makes every COMMIT wait
(``wait_event = 'SyncRep'``) until the test cancels the wait.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

__all__ = [
    "BackgroundCall",
    "PrivatePostgres",
    "cancel_sync_wait",
    "name_standby",
    "postgres_binaries",
    "private_cluster",
    "quiet_role_url",
    "require_sync_standby",
]

#: Generous: the machine is shared and loaded; a bound on a wait, not a timing.
BOUND_S = 120.0
#: A synchronous standby that never connects.
MISSING_STANDBY = "ecp_no_such_standby"
#: A role whose sessions are sent no warnings (``client_min_messages = error``).
QUIET_ROLE = "ecp_quiet"


def postgres_binaries() -> Path | None:
    """The installed server's bin directory, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


@contextlib.contextmanager
def private_cluster(directory: Path, *, start: bool = True) -> Iterator[PrivatePostgres]:
    """A :class:`PrivatePostgres` in ``directory`` (started unless ``start=False``), stopped after.

    Skips the test when no server binaries are installed.
    """
    bin_dir = postgres_binaries()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin) to start a cluster")
    pg = PrivatePostgres(directory, bin_dir)
    try:
        if start:
            pg.start()
        yield pg
    finally:
        pg.stop("immediate")


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

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def admin(self) -> psycopg.Connection[Any]:
        """An autocommit session whose own commits never wait for a standby."""
        return psycopg.connect(self.dsn, autocommit=True, options="-c synchronous_commit=local")


# --- synchronous replication ------------------------------------------------------


def name_standby(admin: psycopg.Connection[Any], name: str | None) -> None:
    """Name the cluster's synchronous standby (``None``: none), and reload."""
    if name is None:
        admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
    else:
        admin.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{name}'")
    admin.execute("SELECT pg_reload_conf()")


class BackgroundCall:
    """``fn`` in a thread of its own; what it returned or raised."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.result: object = None
        self.error: BaseException | None = None
        self._fn = fn
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:  # handed to the test
            self.error = exc

    def join(self) -> None:
        self.thread.join(BOUND_S)
        assert not self.thread.is_alive(), "the call never returned"


def cancel_sync_wait(admin: psycopg.Connection[Any], call: BackgroundCall | None) -> bool:
    """Cancel the COMMIT ``call`` waits on for the standby, then join it.

    False if ``call`` returned without waiting (``None``: whichever session
    waits first). Only one session at a time may wait: the one found is
    taken to be ``call``'s.
    """
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        row = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep' LIMIT 1"
        ).fetchone()
        if row is not None:
            admin.execute("SELECT pg_cancel_backend(%s)", (row[0],))
            if call is not None:
                call.join()
            return True
        if call is not None and not call.thread.is_alive():
            return False
        time.sleep(0.02)
    raise AssertionError("the call neither waited for the standby nor returned")


def require_sync_standby(pg: PrivatePostgres, admin: psycopg.Connection[Any]) -> None:
    """Name the missing standby and return once commits really wait for it.

    The checkpointer applies the reloaded setting some time after the
    reload: probe with a commit of our own until one waits, and cancel it.
    """
    name_standby(admin, MISSING_STANDBY)
    admin.execute("CREATE TABLE IF NOT EXISTS ecp_probe (x int)")
    deadline = time.monotonic() + BOUND_S
    with psycopg.connect(pg.dsn, autocommit=True) as probe:
        while time.monotonic() < deadline:
            call = BackgroundCall(lambda: probe.execute("INSERT INTO ecp_probe VALUES (1)"))
            if cancel_sync_wait(admin, call):
                return
            if call.error is not None:
                raise AssertionError(f"the probe commit failed: {call.error!r}")
            time.sleep(0.1)
            admin.execute("SELECT pg_reload_conf()")  # a reload the server missed, again
        names = probe.execute("SHOW synchronous_standby_names").fetchone()
    log = pg.log.read_text(errors="replace").splitlines()[-15:]
    raise AssertionError(
        f"commits never started waiting for the synchronous standby "
        f"(synchronous_standby_names = {names}); the server's log ends:\n" + "\n".join(log)
    )


def quiet_role_url(pg: PrivatePostgres, admin: psycopg.Connection[Any]) -> str:
    """A URL for a role at ``client_min_messages = error`` (as an operator may set it).

    Such a session is not sent the "committed locally" warning unless the
    client asks for warnings itself.
    """
    if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (QUIET_ROLE,)).fetchone() is None:
        admin.execute(f"CREATE ROLE {QUIET_ROLE} LOGIN SUPERUSER")
        admin.execute(f"ALTER ROLE {QUIET_ROLE} SET client_min_messages = error")
    url = pg.url.replace("//postgres@", f"//{QUIET_ROLE}@")
    with psycopg.connect(url.replace("+psycopg", "")) as probe:
        shown = probe.execute("SHOW client_min_messages").fetchone()
    assert shown == ("error",), shown  # the setting really applies to a plain session
    return url
