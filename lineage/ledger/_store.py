"""Ledger storage: SQLModel tables, engines and the locking write transaction.

The tables are storage only; the signed and wire models live in
:mod:`ecp.lineage.ledger._evidence`, :mod:`ecp.lineage.ledger._checkpoint` and
:mod:`ecp.lineage.ledger._receipt`.

- ``ledger_entry``: one row per entry, ``seq`` gap-free from 0, the exact
  leaf bytes (canonical DSSE envelope JSON), its RFC 6962 leaf hash, the
  evidence id (unique: the idempotency key) and the tree root right after
  this entry (so ``verify`` can name the first reordered entry exactly).
- ``ledger_node``: every completed perfect subtree of level >= 1, keyed by
  its post-order position (monotonic in append order, so inserts go to the
  end of the B-tree and one range scan covers the nodes of a run of entries).
- ``ledger_head``: one row, the tree size, root and compact range (right
  border); every writer locks it, which serialises appends and checkpoints.
- ``ledger_checkpoint``: every signed checkpoint note, in issue order.

Writers serialise on the head: SQLite with ``BEGIN IMMEDIATE`` (the database
write lock, waited for up to the busy timeout), PostgreSQL with
``SELECT … FOR UPDATE`` on the head row. Connection and I/O faults become
:class:`~ecp.lineage.ledger.errors.LedgerUnavailableError`; the transaction has then
rolled back, so nothing is half-written. The database refusing the values of
an append's rows (a data or integrity error) becomes
:class:`~ecp.lineage.ledger.errors.EntryRefusedError`, also rolled back. On
PostgreSQL with synchronous replication, an append or checkpoint whose
COMMIT the server only committed locally (the wait for the standby was
cancelled, see :mod:`ecp._syncrep`) is a ``LedgerUnavailableError`` too.

The hot paths (:meth:`LedgerDatabase.append`, :meth:`LedgerDatabase.fetch_tree`,
:meth:`LedgerDatabase.query`) speak to the driver directly, because statement
compilation in SQLAlchemy costs more than the SQLite statements themselves,
and on PostgreSQL every round trip counts: an append is two messages
(``BEGIN; lock head; look up repeats`` and ``write rows; update head;
COMMIT``), a proof, an entry or the newest checkpoint one statement.
PostgreSQL connections use psycopg's client-side binding so that one message
can carry several statements; the rows of an append are written as literals
quoted by psycopg's own dumpers (see :func:`_pg_rows`), and proofs use one
server-side prepared statement (unprepared once the server cannot keep it,
as behind a transaction-mode pooler). Connections pin ``client_encoding``
to UTF-8, whatever ``PGCLIENTENCODING`` says.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import sqlalchemy.exc as sa_exc
from psycopg.adapt import PyFormat
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    create_engine,
    event,
    make_url,
    select,
    text,
)
from sqlalchemy import (
    inspect as sa_inspect,
)
from sqlalchemy.engine import Connection
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool
from sqlmodel import Field, SQLModel

from ecp._dburl import display_url
from ecp._syncrep import UnconfirmedCommit, confirmed_commits
from ecp.authority._sql import libpq_options
from ecp.lineage.ledger.errors import EntryRefusedError, LedgerUnavailableError

__all__ = [
    "CHECKPOINT",
    "ENTRY",
    "HEAD",
    "KEY_END",
    "NODE",
    "WITNESSING",
    "AppendPlan",
    "CheckpointRow",
    "EntryRow",
    "HeadRow",
    "LedgerDatabase",
    "NodeRow",
    "StoredHead",
    "TreeHashes",
    "WitnessingRow",
    "node_key",
]

_BUSY_TIMEOUT_S = 60.0
_PG_CONNECT_TIMEOUT_S = 5
#: libpq's bounds on a silent network, as the single-use store's
#: (:mod:`ecp.authority._sql`): a peer that vanished without a reset fails
#: the connection within about ten seconds instead of blocking its caller for
#: good. They only act on a dead network, where a statement could not finish
#: anyway; a live connection is never cut short by them.
_PG_KEEPALIVES: Mapping[str, object] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": 10_000,  # ms: unacknowledged data fails the connection too
}
#: Bounds on the open's own transaction only (SET LOCAL): a table another
#: session holds locked (``LOCK TABLE ledger_head``, a long migration) makes
#: the open fail as unavailable within seconds, and a starting worker logs
#: it and retries, instead of blocking with no word. Appends keep no such
#: bound: they wait for the head lock as long as another writer holds it.
_PG_OPEN_BOUNDS = "SET LOCAL lock_timeout = '5s'; SET LOCAL statement_timeout = '10s'"
#: A read-only transaction (a hot standby, or a database set read-only).
_READ_ONLY = "25006"


class EntryRow(SQLModel, table=True):
    """One log entry (storage row)."""

    __tablename__ = "ledger_entry"

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    evidence_id: str = Field(sa_column=Column(String(80), nullable=False, unique=True))
    leaf_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    root_after: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    envelope: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    recorded_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    # Lookup index copied from the predicate for find_activity. Not committed
    # to by the tree: a wrong value can only misdirect a lookup, whose result
    # callers prove with a receipt over the entry bytes themselves.
    namespace: str = Field(sa_column=Column(String(255), nullable=False))
    workflow_id: str = Field(sa_column=Column(String(1000), nullable=False))
    run_id: str = Field(sa_column=Column(String(255), nullable=False))
    activity_id: str = Field(sa_column=Column(String(1000), nullable=False))

    __table_args__ = (Index("ix_ledger_entry_activity", "workflow_id", "activity_id"),)


class NodeRow(SQLModel, table=True):
    """A perfect subtree hash of level >= 1 (storage row)."""

    __tablename__ = "ledger_node"

    node_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class HeadRow(SQLModel, table=True):
    """The log head: one row with id 1 (storage row)."""

    __tablename__ = "ledger_head"

    id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    root_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    border: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class CheckpointRow(SQLModel, table=True):
    """A signed checkpoint note (storage row)."""

    __tablename__ = "ledger_checkpoint"

    # SQLite only autoincrements an INTEGER PRIMARY KEY.
    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    )
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    origin: str = Field(sa_column=Column(String(255), nullable=False))
    note: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class WitnessingRow(SQLModel, table=True):
    """One request to a witness for a checkpoint's cosignature, and its outcome (storage row).

    Not committed to by the tree: it records what the log asked and got, so
    a checkpoint whose witnesses were unreachable is marked unwitnessed, and
    the next request to a witness starts from the size it cosigned last.
    """

    __tablename__ = "ledger_witnessing"

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    )
    checkpoint_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    witness: str = Field(sa_column=Column(String(255), nullable=False))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    outcome: str = Field(sa_column=Column(String(32), nullable=False))
    detail: str = Field(sa_column=Column(Text, nullable=False))
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


#: The tables as SQLAlchemy Core objects, for typed queries.
ENTRY: Table = SQLModel.metadata.tables["ledger_entry"]
NODE: Table = SQLModel.metadata.tables["ledger_node"]
HEAD: Table = SQLModel.metadata.tables["ledger_head"]
CHECKPOINT: Table = SQLModel.metadata.tables["ledger_checkpoint"]
WITNESSING: Table = SQLModel.metadata.tables["ledger_witnessing"]
_TABLES = [ENTRY, NODE, HEAD, CHECKPOINT, WITNESSING]


def node_key(level: int, index: int) -> int:
    """Post-order position of the perfect subtree ``(level, index)``.

    Leaf ``n`` would sit at ``2n - popcount(n)`` and the subtrees it completes
    follow it, so keys grow with append order.
    """
    last_leaf = ((index + 1) << level) - 1
    return 2 * last_leaf - last_leaf.bit_count() + level


@dataclass(frozen=True, slots=True)
class StoredHead:
    """The log head row: size, root and compact range (right border)."""

    size: int
    root_hash: bytes
    border: bytes


#: Values of one new ``ledger_entry`` row, in :data:`_ENTRY_COLUMNS` order.
EntryValues = tuple[int, str, bytes, bytes, bytes, datetime, str, str, str, str]
_ENTRY_COLUMNS = (
    "seq",
    "evidence_id",
    "leaf_hash",
    "root_after",
    "envelope",
    "recorded_at",
    "namespace",
    "workflow_id",
    "run_id",
    "activity_id",
)


@dataclass(frozen=True, slots=True)
class AppendPlan:
    """What one append transaction writes, decided under the head lock.

    ``after`` runs inside the same transaction after the rows are written
    (an automatic checkpoint); if it raises, nothing is committed.
    """

    entries: Sequence[EntryValues]
    nodes: Sequence[tuple[int, bytes]]
    head: StoredHead
    after: Callable[[Connection], None] | None = None


#: Called under the head lock with the head and the stored entries among the
#: requested evidence ids (id → (seq, leaf hash)); returns None to write nothing.
Planner = Callable[[StoredHead, Mapping[str, tuple[int, bytes]]], AppendPlan | None]


@dataclass(frozen=True, slots=True)
class TreeHashes:
    """The head size and the requested stored hashes, read in one statement."""

    size: int
    leaves: dict[int, bytes]
    nodes: dict[int, bytes]


def _read_only(exc: BaseException) -> bool:
    """Whether ``exc`` (a driver error, or SQLAlchemy's wrapper of one) is a read-only server.

    PostgreSQL refuses every write on a hot standby (and on a database set
    ``default_transaction_read_only``) with SQLSTATE 25006, which psycopg
    raises as an ``InternalError``. It is an outage, not a fault of the
    entry: a standby being promoted accepts writes once it is the primary,
    so the write is refused as unavailable (retryable), and a starting
    worker waits for it (``ecp._startup``), then says what refused.
    """
    orig = getattr(exc, "orig", None) or exc
    return getattr(orig, "sqlstate", None) == _READ_ONLY


def _is_unavailable(exc: sa_exc.DBAPIError) -> bool:
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return True
    return bool(exc.connection_invalidated) or _read_only(exc)


#: What an unconfirmed write commit means to its caller (see LedgerDatabase._confirmed).
_NOT_APPENDED = "nothing is reported appended; check the standby and retry (appends are idempotent)"
#: ... and an unconfirmed read barrier (see LedgerDatabase.newest_checkpoint_confirmed).
_NOT_SERVED = "no receipt or tile is served from the newest checkpoint; check the standby and retry"
#: The newest checkpoint, read under a row lock in a transaction of its own: a
#: transaction that only reads writes no WAL and its COMMIT never waits for the
#: synchronous standby; a row lock is written to the WAL, so this COMMIT does
#: wait, and once the standby confirms it, everything before it in the WAL
#: (the checkpoint and every entry it covers) is there too. KEY SHARE
#: conflicts with nothing the ledger does to a stored checkpoint (appenders
#: lock ledger_head; adding a cosignature is a non-key UPDATE). One message.
_SQL_NEWEST_CHECKPOINT_PG = (
    "BEGIN; SELECT note FROM ledger_checkpoint ORDER BY id DESC LIMIT 1 FOR KEY SHARE; COMMIT"
)


class LedgerDatabase:
    """An engine for one ledger database and its transactions."""

    def __init__(
        self,
        engine: Engine,
        *,
        is_sqlite: bool,
        display_url: str,
        sqlite_path: Path | None = None,
    ) -> None:
        self.engine = engine
        self.is_sqlite = is_sqlite
        self.display_url = display_url
        self._queue = _WriterQueue(sqlite_path) if sqlite_path is not None else None
        # The driver path writes recorded_at as SQLAlchemy would (SQLite: text).
        self._time_proc = ENTRY.c.recorded_at.type.dialect_impl(engine.dialect).bind_processor(
            engine.dialect
        )
        self._time_result = ENTRY.c.recorded_at.type.dialect_impl(engine.dialect).result_processor(
            engine.dialect, None
        )
        # Proofs use a server-side prepared statement until the server says
        # it cannot keep one (a transaction-mode pooler, see _fetch_tree_pg).
        self._prepare = True

    # --- opening ------------------------------------------------------------

    @classmethod
    def open(cls, url: str, *, create: bool = True) -> LedgerDatabase:
        """Connect to ``url`` (``sqlite:///path`` or ``postgresql+psycopg://…``).

        SQLite files are opened read-write without auto-creation after the
        first open, so a moved or deleted file is an error, never a silently
        empty new log.

        Raises:
            LedgerUnavailableError: the database cannot be reached, or does not
                exist and ``create`` is false.
        """
        parsed = make_url(url)
        display = display_url(parsed)
        if parsed.get_backend_name() == "sqlite":
            path = parsed.database
            if not path or path == ":memory:":
                raise LedgerUnavailableError("the ledger needs a SQLite file, not :memory:")
            db = cls(
                _sqlite_engine(Path(path)),
                is_sqlite=True,
                display_url=display,
                sqlite_path=Path(path),
            )
            if not Path(path).exists():
                if not create:
                    raise LedgerUnavailableError(f"no ledger database at {display}")
                _create_sqlite_file(Path(path))
        else:
            engine = create_engine(
                url,
                # No ping per checkout: the hot paths retry a dead pooled
                # connection themselves, the others call _revive.
                pool_size=2,
                max_overflow=4,
                connect_args={
                    "connect_timeout": _PG_CONNECT_TIMEOUT_S,
                    # Client-side binding: several statements in one message.
                    "cursor_factory": psycopg.ClientCursor,
                    # Whatever PGCLIENTENCODING says: every text value
                    # (Temporal identities are any Unicode) can be sent.
                    "client_encoding": "utf8",
                    **_PG_KEEPALIVES,
                    # The URL's options, and the "committed locally" warning
                    # whatever client_min_messages the role or database set.
                    "options": libpq_options(url),
                },
            )
            db = cls(engine, is_sqlite=False, display_url=display)
        db._ensure_schema(create=create)
        return db

    def _ensure_schema(self, *, create: bool) -> None:
        with self.guard(), self.engine.connect() as conn, conn.begin():
            if not self.is_sqlite:
                conn.exec_driver_sql(_PG_OPEN_BOUNDS)
                # Several processes may open a fresh database at once.
                conn.execute(text("SELECT pg_advisory_xact_lock(7283529101)"))
            if create:
                SQLModel.metadata.create_all(conn, tables=_TABLES, checkfirst=True)
                exists = conn.execute(select(HEAD.c.id).where(HEAD.c.id == 1)).first()
                if exists is None:
                    conn.execute(HEAD.insert().values(id=1, size=0, root_hash=_EMPTY, border=b""))
            elif not sa_inspect(conn).has_table(HEAD.name):
                raise LedgerUnavailableError(f"no ledger in database {self.display_url}")

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()
        if self._queue is not None:
            self._queue.close()

    # --- transactions -------------------------------------------------------

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Map connection and I/O faults to :class:`LedgerUnavailableError`.

        Raises:
            LedgerUnavailableError: the database is unreachable or failed mid-way.
        """
        try:
            yield
        except sa_exc.DBAPIError as exc:
            if _is_unavailable(exc):
                first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                raise LedgerUnavailableError(
                    f"ledger database {self.display_url} unavailable: {first}"
                ) from exc
            raise

    def _revive(self, conn: Connection) -> None:
        """What ``pool_pre_ping`` did: swap a pooled connection the server dropped."""
        if self.is_sqlite:
            return
        raw: Any = conn.connection.driver_connection
        try:
            raw.execute("SELECT 1")
        except (psycopg.OperationalError, psycopg.InterfaceError):
            self._drop_stale(conn)  # the next statement reconnects

    def _drop_stale(self, conn: Connection) -> None:
        # A connection the server dropped usually means a restart: like a
        # failed pre-ping, retire the whole pool, not just this connection.
        conn.invalidate()
        self.engine.dispose(close=False)

    @contextmanager
    def read(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """A read transaction.

        SQLite transactions always read one snapshot; on PostgreSQL each
        statement does unless ``snapshot`` asks for REPEATABLE READ (several
        statements that must agree, e.g. a full verification while writers
        append).

        Raises:
            LedgerUnavailableError: see :meth:`guard`.
        """
        with self.guard(), self.engine.connect() as conn:
            if snapshot and not self.is_sqlite:
                # Before _revive's probe: the level cannot change inside a transaction.
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            self._revive(conn)
            with conn.begin():
                yield conn

    @contextmanager
    def write(self) -> Iterator[tuple[Connection, StoredHead]]:
        """The writer's transaction: holds the log-head lock until commit.

        Raises:
            LedgerUnavailableError: see :meth:`guard`.
        """
        with (
            self.guard(),
            self.engine.connect() as conn,
            self._queue if self._queue is not None else _NO_QUEUE,
        ):
            # Checkpoints queue with the appenders (see _WriterQueue): waiting
            # in SQLite's busy handler they would rarely get the lock.
            self._revive(conn)
            if self.is_sqlite:
                conn = conn.execution_options(ecp_begin="IMMEDIATE")
            with self._confirmed(conn.connection.driver_connection), conn.begin():
                stmt = select(HEAD.c.size, HEAD.c.root_hash, HEAD.c.border).where(HEAD.c.id == 1)
                if not self.is_sqlite:
                    stmt = stmt.with_for_update()
                row = conn.execute(stmt).one()
                yield conn, StoredHead(row.size, bytes(row.root_hash), bytes(row.border))

    @contextmanager
    def _confirmed(self, raw: Any, consequence: str = _NOT_APPENDED) -> Iterator[None]:
        """A commit in the block that PostgreSQL only committed locally is an outage.

        A failover to the standby may lose such a commit: entries with
        receipts the promoted log lacks, or a checkpoint (perhaps already
        witnessed) of a tree it does not extend, a fork. So the callers are
        told the append did not happen, and retry: a retry on this server
        finds its entries stored (appends are idempotent by evidence id) and
        maps them to the same sequence numbers, and its transaction still
        locks the head row (``FOR UPDATE`` writes WAL), so its own COMMIT
        waits for the standby too, and once confirmed, everything before it
        is replicated; a retry after a failover that lost them appends them
        afresh, at the promoted log's next sequence numbers (no gap, no
        duplicate).

        Raises:
            LedgerUnavailableError: a commit of the block was not confirmed.
        """
        try:
            with confirmed_commits(raw):
                yield
        except UnconfirmedCommit as exc:
            raise LedgerUnavailableError(
                f"ledger database {self.display_url}: the commit was not confirmed by its "
                f"synchronous standby (the wait for it was cancelled), so a failover may lose "
                f"it; {consequence}"
            ) from exc

    @contextmanager
    def _driver(self, *, autocommit: bool) -> Iterator[tuple[Connection, Any]]:
        """A pooled connection and its bare driver connection.

        Driver faults are mapped like :meth:`guard` does for SQLAlchemy's,
        and a connection that failed is dropped from the pool.
        """
        with self.guard(), self.engine.connect() as conn:
            if autocommit and not self.is_sqlite:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            raw = conn.connection.driver_connection
            try:
                yield conn, raw
            except (
                sqlite3.OperationalError,
                psycopg.OperationalError,
                psycopg.InterfaceError,
                psycopg.InternalError,
            ) as exc:
                if isinstance(exc, psycopg.InternalError) and not _read_only(exc):
                    raise
                conn.invalidate()
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise LedgerUnavailableError(
                    f"ledger database {self.display_url} unavailable: {first}"
                ) from exc

    def append(self, evidence_ids: Sequence[str], plan: Planner) -> None:
        """Run one append transaction: lock the head, plan, write, commit.

        ``plan`` sees the locked head and which of ``evidence_ids`` are
        already stored, so repeats and sequence numbers are decided while no
        other writer can append. The rows, the new head and ``plan.after``
        commit together or not at all.

        Raises:
            LedgerUnavailableError: see :meth:`guard`; nothing was written.
            EntryRefusedError: the database refused the values of the rows
                (naming every new entry of the transaction); nothing was written.
        """
        ids = sorted(set(evidence_ids))
        if self.is_sqlite:
            self._append_sqlite(ids, plan)
        else:
            self._append_pg(ids, plan)

    def _append_sqlite(self, ids: list[str], plan: Planner) -> None:
        with self._driver(autocommit=False) as (conn, raw):
            # The transaction is the driver's own (SQLAlchemy's begin/commit
            # cost more than the statements); statements ``plan.after`` runs
            # through SQLAlchemy join it, as the begin hook then emits nothing.
            conn = conn.execution_options(ecp_begin="")
            with self._queue if self._queue is not None else _NO_QUEUE:
                raw.execute("BEGIN IMMEDIATE")  # the database write lock
                try:
                    self._append_sqlite_in(conn, raw, ids, plan)
                    raw.execute("COMMIT")
                except BaseException:
                    if raw.in_transaction:
                        with suppress(sqlite3.Error):  # a dead connection is dropped anyway
                            raw.execute("ROLLBACK")
                    raise

    def _append_sqlite_in(
        self, conn: Connection, raw: sqlite3.Connection, ids: list[str], plan: Planner
    ) -> None:
        size, root, border = raw.execute(_SQL_HEAD).fetchone()
        existing: dict[str, tuple[int, bytes]] = {}
        if ids:
            marks = ",".join("?" * len(ids))
            for seq, eid, lh in raw.execute(
                f"SELECT seq, evidence_id, leaf_hash FROM ledger_entry "  # noqa: S608
                f"WHERE evidence_id IN ({marks})",
                ids,
            ):
                existing[eid] = (int(seq), bytes(lh))
        p = plan(StoredHead(int(size), bytes(root), bytes(border)), existing)
        if p is None:
            return
        to_db = self._time_to_db
        with _refusals(p):
            raw.executemany(
                _SQL_ENTRY_ROW.replace("%s", "?"),
                [(*e[:5], to_db(e[5]), *e[6:]) for e in p.entries],
            )
            if p.nodes:
                raw.executemany("INSERT INTO ledger_node (node_id, hash) VALUES (?, ?)", p.nodes)
            raw.execute(
                _SQL_SET_HEAD.replace("%s", "?"), (p.head.size, p.head.root_hash, p.head.border)
            )
        if p.after is not None:
            p.after(conn)

    def _append_pg(self, ids: list[str], plan: Planner) -> None:
        # Pooled connections are not pinged on checkout (a round trip per
        # append); a connection found dead by the first message, before
        # anything was written, is replaced and the append retried once.
        for retry in (True, False):
            try:
                with (
                    self._driver(autocommit=True) as (conn, raw),
                    self._confirmed(raw),
                    conn.begin(),
                ):
                    try:
                        self._append_pg_in(conn, raw, ids, plan, retry=retry)
                    except _StaleConnection:
                        self._drop_stale(conn)
                        raise
                    except BaseException:
                        # Leave no open transaction behind (nor a held head lock).
                        if not raw.closed and raw.info.transaction_status != _PG_IDLE:
                            raw.rollback()
                        raise
            except _StaleConnection:
                continue
            return

    @staticmethod
    def _append_pg_in(
        conn: Connection, raw: Any, ids: list[str], plan: Planner, *, retry: bool
    ) -> None:
        cur = raw.cursor()
        query = "BEGIN; " + _SQL_HEAD + " FOR UPDATE; "
        if ids:
            marks = ",".join(["%s"] * len(ids))
            query += (
                "SELECT seq, evidence_id, leaf_hash FROM ledger_entry "  # noqa: S608
                f"WHERE evidence_id IN ({marks})"
            )
        else:
            query += "SELECT NULL, NULL, NULL WHERE false"
        try:
            cur.execute(query, ids)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if retry and raw.closed:
                raise _StaleConnection from exc
            raise
        cur.nextset()
        size, root, border = cur.fetchone()
        cur.nextset()
        existing = {eid: (int(seq), bytes(lh)) for seq, eid, lh in cur.fetchall()}
        p = plan(StoredHead(int(size), bytes(root), bytes(border)), existing)
        if p is None:
            cur.execute("COMMIT")
            return
        # One message: node rows, entry rows, head, COMMIT. The order inside
        # the transaction is free; node rows go first so that a statement
        # hook (the fault tests kill the backend there) sees them by name.
        with _refusals(p):  # the dumpers refuse values too (a NUL in text)
            parts = _pg_rows(raw, p)
            if p.after is None:
                parts.append("COMMIT")
            # Sent as written (no_parameters): every value is already a
            # literal quoted by psycopg's own dumpers, see _pg_rows.
            conn.execution_options(no_parameters=True).exec_driver_sql("; ".join(parts))
        if p.after is not None:
            p.after(conn)
            cur.execute("COMMIT")

    def _time_to_db(self, value: datetime) -> object:
        return self._time_proc(value) if self._time_proc is not None else value

    def fetch_tree(self, leaves: Sequence[int], nodes: Sequence[int]) -> TreeHashes:
        """The head size and the stored hashes of ``leaves`` and ``nodes`` (keys).

        One statement, so one consistent snapshot and, on PostgreSQL, one
        round trip outside any explicit transaction. Missing rows are simply
        absent from the result.

        Keys outside a signed 64-bit integer (the columns are BIGINT) cannot
        be stored, so they are absent too: dropped here, because the drivers
        refuse to send them (PostgreSQL: ``NumericValueOutOfRange``, SQLite:
        ``OverflowError``), and the caller then finds the size beyond the log.

        Raises:
            LedgerUnavailableError: see :meth:`guard`.
        """
        leaves = [k for k in leaves if 0 <= k < KEY_END]
        nodes = [k for k in nodes if 0 <= k < KEY_END]
        if self.is_sqlite:
            query = "SELECT 0, size, NULL FROM ledger_head WHERE id = 1"
            if leaves:
                query += (
                    " UNION ALL SELECT 1, seq, leaf_hash FROM ledger_entry "  # noqa: S608
                    f"WHERE seq IN ({','.join('?' * len(leaves))})"
                )
            if nodes:
                query += (
                    " UNION ALL SELECT 2, node_id, hash FROM ledger_node "  # noqa: S608
                    f"WHERE node_id IN ({','.join('?' * len(nodes))})"
                )
            rows = self.query(query, (*leaves, *nodes))
        else:
            rows = self._fetch_tree_pg(leaves, nodes)
        size = -1
        got: tuple[dict[int, bytes], dict[int, bytes]] = ({}, {})
        for kind, key, value in rows:
            if kind == 0:
                size = int(key)
            else:
                got[kind - 1][int(key)] = value
        if size < 0:
            raise LedgerUnavailableError(f"no ledger head in database {self.display_url}")
        return TreeHashes(size, got[0], got[1])

    def _fetch_tree_pg(self, leaves: list[int], nodes: list[int]) -> list[Any]:
        # One statement text for every proof (arrays, not IN lists of varying
        # length), bound server-side and prepared on each pooled connection
        # at first use: the server parses and plans it once, not per proof.
        # Behind a transaction-mode pooler (PgBouncer before 1.21, or with
        # max_prepared_statements = 0) the named statement may be missing
        # from, or already exist on, the server connection the pooler picked:
        # then the proof is retried once unprepared, and this database stops
        # preparing from then on (see _PREPARE_FAULTS).
        stale_retry = True
        while True:
            with self._driver(autocommit=True) as (conn, raw):
                try:
                    cur = psycopg.Cursor(raw)
                    cur.execute(_SQL_TREE_PG, (leaves, nodes), prepare=self._prepare, binary=True)
                    return cur.fetchall()
                except _PREPARE_FAULTS:
                    if not self._prepare:
                        raise
                    self._prepare = False
                except (psycopg.OperationalError, psycopg.InterfaceError):
                    if stale_retry and raw.closed:  # a pooled connection the server dropped
                        stale_retry = False
                        self._drop_stale(conn)
                        continue
                    raise

    def query(self, statement: str, params: Sequence[object] = ()) -> list[Any]:
        """The rows of one read-only statement, through the bare driver, outside a transaction.

        One statement reads one consistent snapshot on both databases, so
        the reads that need no more than that (proofs, an entry, the newest
        checkpoint, the head) skip SQLAlchemy's transaction and statement
        layers: on PostgreSQL one round trip instead of four (ping, BEGIN,
        SELECT, COMMIT). ``statement`` uses ``?`` placeholders on SQLite and
        ``%s`` on PostgreSQL (see :attr:`mark`); rows are plain tuples.

        Raises:
            LedgerUnavailableError: see :meth:`guard`.
        """
        return self._read(lambda raw: list(raw.execute(statement, params).fetchall()))

    def _read(self, read: Callable[[Any], list[Any]]) -> list[Any]:
        """``read`` on a pooled bare-driver connection, retried once if the server dropped it."""
        for retry in (not self.is_sqlite, False):
            with self._driver(autocommit=True) as (conn, raw):
                try:
                    return read(raw)
                except (psycopg.OperationalError, psycopg.InterfaceError):
                    if retry and raw.closed:  # a pooled connection the server dropped
                        self._drop_stale(conn)
                        continue
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    def newest_checkpoint_confirmed(self) -> list[Any]:
        """The newest checkpoint's note (no row: none yet), confirmed by the synchronous standby.

        What a receipt or a tile is built from must survive a failover: a
        checkpoint PostgreSQL only committed locally (its write was refused
        as unavailable, but the row is there) could otherwise be handed out,
        the log key's signature on a tree the promoted server does not
        extend, a fork. A plain read would return it at once, so on
        PostgreSQL the read is a locking transaction whose COMMIT waits for
        the standby (see ``_SQL_NEWEST_CHECKPOINT_PG``): one message, as the
        plain read, plus the commit's WAL flush and the standby's
        confirmation. SQLite has no standby: a plain read.

        Raises:
            LedgerUnavailableError: see :meth:`guard`; or the standby never
                confirmed it (the wait was cancelled): retry later.
        """
        if self.is_sqlite:
            return self.query("SELECT note FROM ledger_checkpoint ORDER BY id DESC LIMIT 1")

        def read(raw: Any) -> list[Any]:
            with self._confirmed(raw, _NOT_SERVED):
                cur = raw.execute(_SQL_NEWEST_CHECKPOINT_PG)
                cur.nextset()  # BEGIN's result, then the SELECT's
                rows = list(cur.fetchall())
            return rows

        return self._read(read)

    @property
    def mark(self) -> str:
        """The driver's placeholder for :meth:`query`."""
        return "?" if self.is_sqlite else "%s"

    def time_from_db(self, value: object) -> datetime:
        """A ``recorded_at`` value read by :meth:`query`, as SQLAlchemy would return it."""
        out = self._time_result(value) if self._time_result is not None else value
        if not isinstance(out, datetime):
            raise TypeError(f"stored time {out!r} is not a timestamp")
        return out

    def bulk_query(self, conn: Connection) -> Callable[[str, tuple[int, ...]], list[Any]]:
        """A raw statement runner on ``conn``'s driver connection, in its transaction.

        For scans of the whole log: rows come back as plain tuples, and on
        PostgreSQL in binary form (``bytea`` unescaped by the server, not
        decoded from hex: a third less time per row).
        """
        raw: Any = conn.connection.driver_connection
        if self.is_sqlite:
            return lambda q, params: list(raw.execute(q, params).fetchall())
        cur = psycopg.Cursor(raw)
        return lambda q, params: list(cur.execute(q, params, binary=True).fetchall())

    def read_head(self, conn: Connection) -> StoredHead:
        """The head as seen by ``conn``."""
        row = conn.execute(
            select(HEAD.c.size, HEAD.c.root_hash, HEAD.c.border).where(HEAD.c.id == 1)
        ).one()
        return StoredHead(row.size, bytes(row.root_hash), bytes(row.border))


_PG_IDLE = psycopg.pq.TransactionStatus.IDLE


def _pg_rows(raw: Any, p: AppendPlan) -> list[str]:
    """The INSERTs of ``p``'s node and entry rows and its head UPDATE, values as literals.

    psycopg's client-side binding would do the same quoting, but first
    splits the whole statement text for placeholders, and caches that split
    only for statements of at most 50 parameters: a batch of 16 entries has
    about 190, so every batch paid 12 µs per entry to re-split it. Here each
    value goes through the connection's own psycopg dumper for its type
    (``Dumper.quote``: the escaping client-side binding uses, aware of the
    connection's encoding and ``standard_conforming_strings``), with the
    casts client-side binding adds; integers are ours (sequence numbers,
    node keys, sizes) and written in decimal.
    """
    adapters = raw.adapters
    q_text = adapters.get_dumper(str, PyFormat.TEXT)(str, raw).quote
    q_bytes = adapters.get_dumper(bytes, PyFormat.TEXT)(bytes, raw).quote
    q_time = adapters.get_dumper(datetime, PyFormat.TEXT)(datetime, raw).quote
    enc = raw.info.encoding

    def text(v: str) -> str:
        return bytes(q_text(v)).decode(enc)

    def blob(v: bytes) -> str:
        return bytes(q_bytes(v)).decode(enc) + "::bytea"

    parts: list[str] = []
    if p.nodes:
        parts.append(
            "INSERT INTO ledger_node (node_id, hash) VALUES "  # noqa: S608 - quoted literals
            + ",".join(f"({int(k)},{blob(h)})" for k, h in p.nodes)
        )
    rows = []
    for seq, eid, lh, root, leaf, at, ns, wf, run, act in p.entries:
        stamp = bytes(q_time(at)).decode(enc)
        try:
            idents = f"{text(ns)},{text(wf)},{text(run)},{text(act)}"
        except UnicodeError as exc:
            # A text the connection's encoding cannot carry (the engine pins
            # UTF-8, so only if a session changed it): this entry's values
            # are refused, as the database would refuse them, not the batch.
            raise EntryRefusedError((eid,), f"{type(exc).__name__}: {exc}") from exc
        rows.append(
            f"({int(seq)},{text(eid)},{blob(lh)},{blob(root)},{blob(leaf)},{stamp}::timestamptz,"
            f"{idents})"
        )
    parts.append(_SQL_ENTRY_ROWS + ",".join(rows))
    parts.append(
        f"UPDATE ledger_head SET size = {int(p.head.size)}, "  # noqa: S608 - quoted literals
        f"root_hash = {blob(p.head.root_hash)}, "
        f"border = {blob(p.head.border)} WHERE id = 1"
    )
    return parts


#: What a database says when it will not store the values it was given (as
#: opposed to not answering): PostgreSQL's SQLSTATE classes 22 and 23 (a NUL in
#: a text column, a value too long, a constraint), SQLite's constraints. The
#: bare drivers' own and SQLAlchemy's wrappers of them.
_REFUSALS: tuple[type[BaseException], ...] = (
    sa_exc.DataError,
    sa_exc.IntegrityError,
    psycopg.DataError,
    psycopg.IntegrityError,
    sqlite3.DataError,
    sqlite3.IntegrityError,
)


@contextmanager
def _refusals(p: AppendPlan) -> Iterator[None]:
    """Map the database refusing the plan's rows to :class:`EntryRefusedError`.

    Only around the writes of entry, subtree and head rows: a refusal there is
    about the values of some entry, so the batch can be split to find whose
    (a fault of ``plan.after``, the checkpoint, is not).
    """
    try:
        yield
    except _REFUSALS as exc:
        orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig else exc
        lines = str(orig).strip().splitlines()
        reason = lines[0] if lines else type(orig).__name__
        raise EntryRefusedError(tuple(e[1] for e in p.entries), reason) from exc


class _WriterQueue:
    """Appenders of one SQLite file wait for each other in the kernel, not in SQLite.

    SQLite's busy handler polls for its write lock with sleeps of up to
    100 ms, so with several writer processes the lock often sits free while
    every waiter sleeps (throughput drops, latency spikes). Appenders first
    take an exclusive ``flock`` on ``<db>-writers`` (released by the kernel
    the moment the holder unlocks or dies), then ``BEGIN IMMEDIATE`` as
    before. Only the wake-up changes: SQLite's own lock still decides who
    writes, and if the lock file cannot be opened, appends simply wait in
    SQLite as they used to. (Not the database file itself: closing any
    descriptor of it would drop SQLite's POSIX locks in this process.)
    """

    def __init__(self, db_path: Path) -> None:
        self._path = Path(f"{db_path.resolve()}-writers")
        self._fd: int | None = None
        # One descriptor per database handle: its threads queue here first
        # (flock on a shared descriptor would not exclude them).
        self._mutex = threading.Lock()

    def __enter__(self) -> None:
        self._mutex.acquire()
        try:
            if self._fd is None:
                with suppress(OSError):
                    self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            if self._fd is not None:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX)
                except OSError:
                    self._close()
        except BaseException:
            self._mutex.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            if self._fd is not None:
                with suppress(OSError):
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._mutex.release()

    def _close(self) -> None:
        if self._fd is not None:
            with suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        with self._mutex:
            self._close()


_NO_QUEUE = nullcontext()


class _StaleConnection(Exception):
    """A pooled PostgreSQL connection was dead before anything was sent on it."""


#: Keys (``seq``, ``node_id``) are BIGINT: every stored key is below this.
KEY_END = 2**63

#: A named prepared statement the server connection does not have, or has
#: already: what a transaction-mode pooler causes (see _fetch_tree_pg).
_PREPARE_FAULTS = (
    psycopg.errors.InvalidSqlStatementName,
    psycopg.errors.DuplicatePreparedStatement,
)

_SQL_HEAD = "SELECT size, root_hash, border FROM ledger_head WHERE id = 1"
_SQL_TREE_PG = (
    "SELECT 0, size, NULL FROM ledger_head WHERE id = 1"
    " UNION ALL SELECT 1, seq, leaf_hash FROM ledger_entry WHERE seq = ANY(%s::bigint[])"
    " UNION ALL SELECT 2, node_id, hash FROM ledger_node WHERE node_id = ANY(%s::bigint[])"
)
_SQL_SET_HEAD = "UPDATE ledger_head SET size = %s, root_hash = %s, border = %s WHERE id = 1"
_SQL_ENTRY_ROWS = f"INSERT INTO ledger_entry ({', '.join(_ENTRY_COLUMNS)}) VALUES "  # noqa: S608
_SQL_ENTRY_VALUES = "(" + ", ".join(["%s"] * len(_ENTRY_COLUMNS)) + ")"
_SQL_ENTRY_ROW = _SQL_ENTRY_ROWS + _SQL_ENTRY_VALUES

_EMPTY = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def _create_sqlite_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    try:
        # WAL lets readers (proofs, verify) run beside the single writer.
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


def _sqlite_engine(path: Path) -> Engine:
    resolved = path.resolve()
    uri = f"file:{quote(str(resolved))}?mode=rw"

    def connect() -> sqlite3.Connection:
        # mode=rw: never create a file here; autocommit so we issue BEGIN ourselves.
        con = sqlite3.connect(
            uri, uri=True, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        # An acknowledged append must survive a crash: a checkpoint may sign it.
        con.execute("PRAGMA synchronous=FULL")
        return con

    engine = create_engine(
        "sqlite://", creator=connect, poolclass=QueuePool, pool_size=4, max_overflow=8
    )

    @event.listens_for(engine, "connect")
    def _remember_file(dbapi_con: object, record: ConnectionPoolEntry) -> None:
        st = os.stat(resolved)
        record.info["ecp_file"] = (st.st_dev, st.st_ino)

    @event.listens_for(engine, "checkout")
    def _same_file(dbapi_con: object, record: ConnectionPoolEntry, proxy: object) -> None:
        # A pooled connection keeps working on a file that was moved or
        # deleted; the log at this path is then gone, so say so.
        try:
            st = os.stat(resolved)
        except OSError as exc:
            raise sa_exc.DisconnectionError(f"{resolved} is gone") from exc
        if record.info.get("ecp_file") != (st.st_dev, st.st_ino):
            raise sa_exc.DisconnectionError(f"{resolved} was replaced")

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("ecp_begin", "DEFERRED")
        if mode:  # "": the driver-level caller has begun the transaction itself
            conn.exec_driver_sql(f"BEGIN {mode}")

    return engine
