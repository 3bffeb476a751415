"""Where control statements are kept: one table beside the single-use store.

Every executor already shares the replay store's database (single use must
hold across executors), so the halt list lives there too and reaches every
gate that can count a grant's uses. The table is append-only by contract:
``seq`` is the primary key, so two operators signing at once cannot both take
the same place, and a rewrite by whoever runs the database is caught by the
chain (see :mod:`ecp.authority._control`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ecp._dburl import display_url, error_line
from ecp._syncrep import UnconfirmedCommit, confirmed_commits, warn_if_unwatched
from ecp.authority._clock import Clock, now_utc, system_clock
from ecp.authority._control import (
    ControlKind,
    ControlRow,
    ControlState,
    envelope_digest,
    fold,
    sign_control,
)
from ecp.authority._keys import Signer
from ecp.authority._sql import store_engine
from ecp.authority._truststore import KeyRole, TrustStore
from ecp.authority.errors import (
    ControlStatementError,
    ControlStateUnavailableError,
    VerificationError,
)

__all__ = [
    "ControlLog",
    "InMemoryControlLog",
    "SeqTakenError",
    "SqlControlLog",
    "issue_control",
    "rows_digests",
]

_META = MetaData()
_TABLE = Table(
    "ecp_control_log",
    _META,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("envelope", LargeBinary, nullable=False),
)


class SeqTakenError(ControlStatementError):
    """Another statement took this place in the log first (sign again on top of it)."""

    code = "control_seq_taken"


class ControlLog(Protocol):
    """An append-only, ordered store of control statements."""

    def rows(self) -> list[ControlRow]:
        """Every statement, in ``seq`` order.

        Raises:
            ControlStateUnavailableError: the store cannot be read.
        """
        ...

    def append(self, row: ControlRow) -> None:
        """Store ``row`` at its ``seq``.

        Raises:
            SeqTakenError: that place is taken.
            ControlStateUnavailableError: the store cannot be written.
        """
        ...


class InMemoryControlLog:
    """For tests and single-process use (``ecp dev`` uses the database)."""

    def __init__(self) -> None:
        self._rows: list[ControlRow] = []
        self._lock = threading.Lock()

    def rows(self) -> list[ControlRow]:
        """See :meth:`ControlLog.rows`."""
        with self._lock:
            return list(self._rows)

    def append(self, row: ControlRow) -> None:
        """See :meth:`ControlLog.append`."""
        with self._lock:
            if row.seq != len(self._rows) + 1:
                raise SeqTakenError(f"control log place #{row.seq} is not the next one")
            self._rows.append(row)


class SqlControlLog:
    """The control log in SQLite or PostgreSQL (the deployment's database URL)."""

    def __init__(self, url_or_engine: str | Engine) -> None:
        """Connect lazily; the table is created on first use."""
        # Bounded reads: a gate must learn "unavailable" rather than hang on
        # a silent network or a locked table.
        engine = store_engine(
            url_or_engine,
            postgres_args={
                "options": "-c statement_timeout=5000",
                "keepalives": 1,
                "keepalives_idle": 5,
                "keepalives_interval": 2,
                "keepalives_count": 2,
            },
        )
        warn_if_unwatched(engine, "halt list")
        self.engine = engine
        self._ready = False

    def ensure_ready(self) -> None:
        """Reach the database and create the table now, not on first read.

        A worker calls this at startup so it takes no task before its halt
        list answers.

        Raises:
            ControlStateUnavailableError: the database cannot be reached.
        """
        self._ensure()

    def _ensure(self) -> None:
        if self._ready:
            return
        try:
            _META.create_all(self.engine, checkfirst=True)
        except SQLAlchemyError:
            # Another process may have created it at the same moment.
            try:
                with self.engine.connect() as conn:
                    conn.execute(select(_TABLE.c.seq).limit(1))
            except SQLAlchemyError as exc:
                raise ControlStateUnavailableError(
                    f"control log unavailable at {display_url(self.engine.url)}: {error_line(exc)}"
                ) from None
        self._ready = True

    def rows(self) -> list[ControlRow]:
        """See :meth:`ControlLog.rows`."""
        self._ensure()
        try:
            with self.engine.connect() as conn:
                found = conn.execute(
                    select(_TABLE.c.seq, _TABLE.c.envelope).order_by(_TABLE.c.seq)
                ).all()
        except SQLAlchemyError as exc:
            raise ControlStateUnavailableError(
                f"control log unavailable: {type(exc).__name__}"
            ) from None
        return [ControlRow(int(r.seq), bytes(r.envelope)) for r in found]

    def append(self, row: ControlRow) -> None:
        """See :meth:`ControlLog.append`."""
        self._ensure()
        try:
            # A statement PostgreSQL only committed locally (its synchronous
            # standby never confirmed it) may be gone after a failover: a
            # halt the operator was told of would vanish. It is reported as
            # not stored; signing again stacks an equal statement on top.
            with (
                self.engine.connect() as conn,
                confirmed_commits(conn.connection.driver_connection),
                conn.begin(),
            ):
                conn.execute(_TABLE.insert().values(seq=row.seq, envelope=row.envelope))
        except IntegrityError:
            raise SeqTakenError(f"control log place #{row.seq} is taken") from None
        except UnconfirmedCommit:
            raise ControlStateUnavailableError(
                f"control log place #{row.seq} was not confirmed by the database's "
                "synchronous standby (its wait was cancelled); the statement is not "
                "established: once the standby is back, check `ecp halts` and sign it "
                "again (after a failover see docs/contracts.md)"
            ) from None
        except SQLAlchemyError as exc:
            raise ControlStateUnavailableError(
                f"control log unavailable: {type(exc).__name__}"
            ) from None

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()


def issue_control(
    log: ControlLog,
    signer: Signer,
    trust: TrustStore,
    *,
    kind: ControlKind,
    target: str,
    reason: str,
    clock: Clock = system_clock,
) -> tuple[ControlRow, ControlState]:
    """Sign a statement on top of the log and store it; the state it leads to.

    The current log is verified first, so nobody signs on top of a rewritten
    one. Concurrent signers race for the next place; the loser signs again.

    Raises:
        ControlLogTamperedError: the log does not verify.
        ControlStatementError: the statement would not be valid, or the signer
            holds no halt key (the statement would have no effect).
        ControlStateUnavailableError: the store cannot be reached.
    """
    try:
        trust.require(signer.key_id, role=KeyRole.HALT, at=now_utc(clock))
    except VerificationError as exc:
        raise ControlStatementError(
            f"{exc}; gates ignore control statements not signed by a trusted halt key"
        ) from None
    for _ in range(5):
        rows = log.rows()
        fold(rows, trust)
        at: datetime = now_utc(clock)
        envelope = sign_control(
            signer,
            seq=len(rows) + 1,
            prev=envelope_digest(rows[-1].envelope) if rows else "",
            kind=kind,
            target=target,
            reason=reason,
            issued_at=at,
        )
        row = ControlRow(len(rows) + 1, envelope)
        try:
            log.append(row)
        except SeqTakenError:
            continue
        return row, fold([*rows, row], trust, at=at)
    raise ControlStateUnavailableError("control log is too busy: five signers raced this one")


def rows_digests(rows: Sequence[ControlRow]) -> list[str]:
    """The digest of each row (what a watcher remembers)."""
    return [envelope_digest(r.envelope) for r in rows]
