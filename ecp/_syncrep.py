"""A PostgreSQL COMMIT that only committed locally: its synchronous standby never confirmed it.

With synchronous replication (``synchronous_commit`` at ``on`` or above and
``synchronous_standby_names`` set) a COMMIT waits until a standby has the
transaction. When that wait is cancelled (``pg_cancel_backend``, a client's
cancel request; ``statement_timeout`` does not bound it), PostgreSQL still
answers COMMIT with *success*, and says only, as a notice::

    WARNING:  canceling wait for synchronous replication due to user request
    DETAIL:  The transaction has already committed locally, but might not
             have been replicated to the standby.

After a failover to that standby the transaction may be gone. ECP's stores
report a write as durable only once it would survive that failover, so such
a commit is an outage to them (the single-use store: the use is not
established; the ledger: the entry is not appended), never a success.

How it is told: PostgreSQL 15 files this warning under SQLSTATE 01000, the
generic ``warning`` shared by every ``RAISE WARNING`` of any function or
trigger, so the SQLSTATE alone cannot tell it. The server routine that
raised it can: ``SyncRepWaitForLSN`` (the ``R`` field, never translated)
raises only the two warnings of a cut-short wait, the cancel above and
``57P01`` when the backend is terminated (the connection is then lost too,
which the stores already treat as an outage). The English message is the
fallback for a server or a proxy that leaves the routine out; it is
translated under another ``lc_messages``, which is why it is not the first
test.

Only psycopg 3 hands notices to a callback with these fields (psycopg2 keeps
message strings, pg8000 a bounded deque); other drivers are not watched: a
store on one says so once, as a WARNING (:func:`warn_if_unwatched`), rather
than refuse a deployment that worked before.

The warning reaches the client only if ``client_min_messages`` lets it
through: a role, database or ``postgresql.conf`` at ``error`` would hide
it, and every such commit would read as confirmed. ECP's own engines pass
:data:`WARNINGS_OPTION` with the connection (a client's options win over
those settings); on any other connection the watch, when installed, lowers
an ``error`` level to ``warning`` for the session (see :func:`_let_warnings_through`).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = [
    "WARNINGS_OPTION",
    "UnconfirmedCommit",
    "confirmed_commits",
    "is_unconfirmed_commit",
    "warn_if_unwatched",
]

#: The server routine that waits for the synchronous standby (syncrep.c).
_WAIT_ROUTINE = "SyncRepWaitForLSN"
#: Its two warnings (cancel, terminate), for a notice without the routine.
_WAIT_MESSAGES = (
    "canceling wait for synchronous replication",
    "canceling the wait for synchronous replication",
)

#: libpq ``options`` for a connection whose commits are watched: the
#: "committed locally" warning is sent whatever the role, the database or
#: the server's configuration set ``client_min_messages`` to.
WARNINGS_OPTION = "-c client_min_messages=warning"
#: The same for a connection opened without it; ``error`` is the only level
#: above ``warning`` PostgreSQL accepts for this setting (a lower one, e.g.
#: ``notice``, shows the warning already and is left as it is).
_LET_WARNINGS_THROUGH = (
    "SELECT set_config('client_min_messages', 'warning', false)"
    " WHERE current_setting('client_min_messages') = 'error'"
)


class UnconfirmedCommit(Exception):
    """A commit on the connection was not confirmed by the synchronous standby.

    Never reaches a caller of ECP: each store maps it to its own
    "unavailable" error (``ReplayStoreUnavailableError``,
    ``LedgerUnavailableError``).
    """


def is_unconfirmed_commit(diag: Any) -> bool:
    """Whether a psycopg ``Diagnostic`` is PostgreSQL's "committed locally" warning."""
    if getattr(diag, "source_function", None) == _WAIT_ROUTINE:
        return True
    message = getattr(diag, "message_primary", None) or ""
    return isinstance(message, str) and message.startswith(_WAIT_MESSAGES)


class _Watch:
    """Counts the "committed locally" warnings one driver connection received."""

    __slots__ = ("count", "level_checked")

    def __init__(self) -> None:
        self.count = 0
        #: Whether the session is known to be sent the warning (see _let_warnings_through).
        self.level_checked = False

    def __call__(self, diag: Any) -> None:
        # Runs in the committing thread, inside its commit (libpq hands the
        # notice over while the COMMIT's result is read).
        if is_unconfirmed_commit(diag):
            self.count += 1


_WATCHES: weakref.WeakKeyDictionary[Any, _Watch] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
#: SQLAlchemy's names of the PostgreSQL drivers with a notice callback.
_WATCHED_DRIVERS = ("psycopg", "psycopg_async")
#: The engines already warned about, and for which stores (once each).
_WARNED: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_log = logging.getLogger("ecp.syncrep")


def warn_if_unwatched(engine: Engine, store: str) -> bool:
    """Log once per engine and store that its PostgreSQL driver cannot tell an unconfirmed commit.

    Whether it is such an engine (PostgreSQL, a driver other than psycopg 3).

    Args:
        engine: the store's engine.
        store: what the store is, for the message (e.g. "single-use store").
    """
    if engine.dialect.name != "postgresql" or engine.dialect.driver in _WATCHED_DRIVERS:
        return False
    with _LOCK:
        warned = _WARNED.setdefault(engine, set())
        if store in warned:
            return True
        warned.add(store)
    _log.warning(
        "%s: PostgreSQL driver %s passes no notices to ECP, so a commit whose wait for the "
        "synchronous standby was cancelled (committed locally only) cannot be detected and "
        "reads as durable; use a postgresql+psycopg:// URL to have it refused",
        store,
        engine.dialect.driver,
    )
    return True


def _watch(driver_connection: Any) -> _Watch | None:
    """The watch on ``driver_connection``, installed on first use; None if it takes none."""
    add = getattr(driver_connection, "add_notice_handler", None)
    if add is None:
        return None  # SQLite, or a driver that gives no callback (see above)
    with _LOCK:
        watch = _WATCHES.get(driver_connection)
        if watch is None:
            watch = _Watch()
            add(watch)
            _WATCHES[driver_connection] = watch
    if not watch.level_checked:
        # Outside the lock (a round trip); a pooled connection serves one
        # thread at a time.
        watch.level_checked = _let_warnings_through(driver_connection)
    return watch


def _let_warnings_through(conn: Any) -> bool:
    """Lower the session's ``client_min_messages`` from ``error``; whether it is now known.

    Skipped (no round trip) on a connection opened with
    :data:`WARNINGS_OPTION`. Only between transactions, in autocommit for the
    one statement: inside the caller's transaction a rollback would undo it.
    False (try again at the next use) inside a transaction or when the
    statement fails: the store's own statements then meet that fault.
    """
    import psycopg  # the only driver with notice callbacks (see _watch)

    try:
        info = conn.info
        if WARNINGS_OPTION in (info.get_parameters().get("options") or ""):
            return True
        if info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            return False
        autocommit = conn.autocommit
        conn.autocommit = True
        try:
            conn.execute(_LET_WARNINGS_THROUGH)
        finally:
            conn.autocommit = autocommit
    except psycopg.Error:
        return False
    return True


@contextmanager
def confirmed_commits(driver_connection: Any) -> Iterator[None]:
    """Raise :class:`UnconfirmedCommit` if a commit inside the block only committed locally.

    Installed per connection on first use (so it also covers engines handed
    in from outside, and connections opened before); a warning received
    before the block does not count. Nothing is checked when the block
    raises: the commit then did not happen, or its fault is already raised.

    Raises:
        UnconfirmedCommit: the standby never confirmed a commit of the block.
    """
    watch = _watch(driver_connection)
    before = watch.count if watch is not None else 0
    yield
    if watch is not None and watch.count != before:
        raise UnconfirmedCommit(
            "the commit was not confirmed by the synchronous standby (the wait was cancelled)"
        )
