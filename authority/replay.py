"""Single use of grants: each (grant id, attempt) may be consumed once.

Temporal retries an activity with the same headers, so a grant cannot name
the attempt it is for. It binds ``max_attempts`` instead, and the gate
consumes ``(grant_id, attempt)``: a redelivered attempt, or an attempt past
the limit, is refused. The record lives in a SQLModel table (SQLite by
default, PostgreSQL for several hosts); a composite primary key makes the
check-and-record one atomic insert, safe across processes.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Protocol, runtime_checkable

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Field, Session, SQLModel

from authority.clock import Clock, now_utc, system_clock
from authority.errors import (
    GrantAttemptsExhaustedError,
    GrantReplayedError,
    ReplayStoreUnavailableError,
)

__all__ = [
    "ConsumedGrant",
    "InMemoryReplayGuard",
    "ReplayGuard",
    "SqlReplayGuard",
    "check_attempt",
]


@runtime_checkable
class ReplayGuard(Protocol):
    """Records grant uses; refuses a second use of the same attempt."""

    def consume(self, grant_id: str, attempt: int, max_attempts: int) -> None:
        """Atomically record ``(grant_id, attempt)``.

        Raises:
            GrantAttemptsExhaustedError: ``attempt`` exceeds ``max_attempts``.
            GrantReplayedError: this attempt was consumed before, or the
                attempt number is not positive.
            ReplayStoreUnavailableError: the store cannot answer (retryable).
        """
        ...


def check_attempt(grant_id: str, attempt: int, max_attempts: int) -> None:
    """The stateless part of :meth:`ReplayGuard.consume`.

    Raises:
        GrantReplayedError: ``attempt`` is not positive.
        GrantAttemptsExhaustedError: ``attempt`` exceeds ``max_attempts``.
    """
    if attempt < 1:
        raise GrantReplayedError(f"grant {grant_id}: attempt {attempt} is not a valid attempt")
    if attempt > max_attempts:
        raise GrantAttemptsExhaustedError(
            f"grant {grant_id}: attempt {attempt} exceeds max_attempts {max_attempts}"
        )


class InMemoryReplayGuard:
    """A process-local guard, for unit tests of verification only."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def consume(self, grant_id: str, attempt: int, max_attempts: int) -> None:
        """See :meth:`ReplayGuard.consume` (never raises ReplayStoreUnavailableError)."""
        check_attempt(grant_id, attempt, max_attempts)
        with self._lock:
            if (grant_id, attempt) in self._seen:
                raise GrantReplayedError(f"grant {grant_id} attempt {attempt} was already used")
            self._seen.add((grant_id, attempt))


class ConsumedGrant(SQLModel, table=True):
    """One consumed (grant id, attempt). Not a wire model: storage only."""

    __tablename__ = "ecp_consumed_grants"

    grant_id: str = Field(primary_key=True, max_length=128)
    attempt: int = Field(primary_key=True)
    consumed_at: datetime


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    # WAL lets readers proceed while one writer inserts; busy_timeout makes
    # concurrent writers from other processes wait instead of failing.
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


class SqlReplayGuard:
    """The persistent guard over SQLite or PostgreSQL (any SQLAlchemy URL)."""

    def __init__(
        self, url_or_engine: str | Engine, *, clock: Clock = system_clock
    ) -> None:
        """Connect lazily: the table is created on first use.

        Args:
            url_or_engine: e.g. ``sqlite:///path/ecp.db`` or
                ``postgresql+psycopg://user@host/db``; defaults usually come
                from :func:`ecp.paths.default_database_url`.
            clock: stamps ``consumed_at`` (informational only).
        """
        if isinstance(url_or_engine, str):
            if url_or_engine.startswith("sqlite"):
                engine = create_engine(url_or_engine, connect_args={"timeout": 30})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(
                    url_or_engine, pool_pre_ping=True, connect_args={"connect_timeout": 5}
                )
        else:
            engine = url_or_engine
        self.engine = engine
        self._clock = clock
        self._ready = False
        self._lock = threading.Lock()

    def _ensure_table(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            table = SQLModel.metadata.tables[ConsumedGrant.__tablename__]
            try:
                table.create(self.engine, checkfirst=True)
            except SQLAlchemyError as exc:
                # Another process may have created it between our check and
                # our create; only a table that still is not there is a fault.
                if not self._table_exists():
                    raise ReplayStoreUnavailableError(
                        f"replay store unavailable: {type(exc).__name__}"
                    ) from exc
            self._ready = True

    def _table_exists(self) -> bool:
        try:
            return inspect(self.engine).has_table(ConsumedGrant.__tablename__)
        except SQLAlchemyError:
            return False

    def consume(self, grant_id: str, attempt: int, max_attempts: int) -> None:
        """See :meth:`ReplayGuard.consume`."""
        check_attempt(grant_id, attempt, max_attempts)
        self._ensure_table()
        row = ConsumedGrant(grant_id=grant_id, attempt=attempt, consumed_at=now_utc(self._clock))
        try:
            with Session(self.engine) as session:
                session.add(row)
                session.commit()
        except IntegrityError as exc:
            raise GrantReplayedError(
                f"grant {grant_id} attempt {attempt} was already used"
            ) from exc
        except SQLAlchemyError as exc:
            # Cannot tell whether it was used: refuse, but let the caller retry.
            raise ReplayStoreUnavailableError(
                f"replay store unavailable: {type(exc).__name__}"
            ) from exc

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()
