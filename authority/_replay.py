"""Single use of grants.

A grant is honoured at most ``max_attempts`` times, and each Temporal attempt at most once.

Temporal retries an activity with the same headers, so a grant cannot name
the attempt it is for. It binds ``max_attempts`` instead. The gate consumes
one of the grant's ``max_attempts`` *slots* each time it lets the body run,
recording the Temporal attempt number with it: a redelivered attempt is
refused, and so is any use once every slot is taken. Counting uses rather
than attempt numbers means attempts refused for an infrastructure fault
(before any body ran) do not eat into the budget.

The record lives in a SQLModel table (SQLite by default, PostgreSQL for
several hosts). Both checks are unique constraints, so check-and-record is
one atomic insert per slot, safe across processes without locks: two racing
consumers cannot take the same slot, and no more than ``max_attempts``
slots exist. Within one process, the admissions (and ends, and closes) of
concurrent callers share one transaction and one durable commit
(:mod:`ecp.authority._group_commit`): a use is never reported before the
commit that records it, and the commit's fsync is paid once per batch.

The store also remembers which attempts *ended* (:meth:`ReplayGuard.end`:
the gate saw the body return or raise) and which of them *completed*. An
attempt that took a use and never ended belongs to a worker that died while
its body may have been running. When the next attempt finds every use taken
and one of them belongs to such an attempt, or to one that completed (a
completed body closes its grant, so a further attempt means Temporal never
received that completion), the refusal is :class:`OutcomeUnknownError`
rather than plain exhaustion: the body ran or may have, the workflow cannot
know how it ended, and only a person can tell (at-most-once: it is never run
again).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import Connection, Engine, Table, UniqueConstraint, inspect, literal
from sqlalchemy import exc as sa_exc
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, select

from ecp._dburl import display_url, error_line
from ecp._syncrep import UnconfirmedCommit, confirmed_commits, warn_if_unwatched
from ecp.authority._clock import Clock, now_utc, system_clock
from ecp.authority._group_commit import GroupCommit, Pending
from ecp.authority._sql import speaks_libpq, store_engine
from ecp.authority.errors import (
    AttemptInProgressError,
    GrantAttemptsExhaustedError,
    GrantReplayedError,
    OutcomeUnknownError,
    ReplayStoreUnavailableError,
    RequestReplayedError,
    UnstorableIdError,
)

__all__ = [
    "AttemptEnd",
    "AttemptLease",
    "ClaimedRequest",
    "ConsumedGrant",
    "InMemoryReplayGuard",
    "ReplayGuard",
    "SqlReplayGuard",
    "check_attempt",
    "check_storable",
    "request_key",
    "unknown_after_expiry",
]


@runtime_checkable
class ReplayGuard(Protocol):
    """Records grant uses; refuses a second use of the same attempt."""

    def consume(self, grant_id: str, attempt: int, max_attempts: int) -> None:
        """Atomically record one use of ``grant_id`` by Temporal ``attempt``.

        Raises:
            GrantAttemptsExhaustedError: the grant was already used
                ``max_attempts`` times.
            GrantReplayedError: this attempt was consumed before, or the
                attempt number is not positive.
            ReplayStoreUnavailableError: the store cannot answer (retryable).
        """
        ...

    def claim(self, request: str, grant_id: str) -> None:
        """Atomically bind ``request`` to ``grant_id``, once and for all.

        The first grant that reaches a body for a request owns it; the same
        grant may claim it again (its own retries), any other grant is
        refused. A Temporal reset to before authorize, or a re-submission
        under the same workflow id, gets a *new* grant for the same request:
        this is what stops it from running the body a second time.

        Raises:
            RequestReplayedError: another grant owns the request.
            ReplayStoreUnavailableError: the store cannot answer (retryable).
        """
        ...

    def begin(self, grant_id: str, attempt: int, until: datetime) -> None:
        """Take the grant's lease for ``attempt`` until ``until`` (or until :meth:`end`).

        No two attempts of one grant run at once: while another attempt's
        lease is held and unexpired, this one is refused (retryably). Temporal
        schedules a retry once an attempt's start-to-close timeout passed, and
        that timeout is the lease's length, so a retry normally finds the
        lease expired (a crashed worker) or released (a finished body).

        Raises:
            AttemptInProgressError: another attempt holds the lease (retryable).
            ReplayStoreUnavailableError: the store cannot answer (retryable).
        """
        ...

    def end(self, grant_id: str, attempt: int, *, completed: bool = False) -> None:
        """Record that ``attempt`` ended (``completed``: its body returned) and release its lease.

        The lease is released only if ``attempt`` holds it.

        Raises:
            ReplayStoreUnavailableError: the store cannot answer (retryable).
        """
        ...

    def release(self, grant_id: str, attempt: int) -> None:
        """Give back the use ``attempt`` took, and its lease: its body never started.

        Only for an attempt that never ended: the gate calls it when the lease
        ran out between the admission and the body (a slow store), before the
        body could start, so the refused attempt does not spend one of the
        grant's uses. An attempt that ended keeps its use.

        Raises:
            ReplayStoreUnavailableError: the store cannot answer (retryable);
                the use then stays taken, which errs on the side of fewer runs.
        """
        ...

    def admit(
        self,
        requests: Sequence[str],
        grant_id: str,
        attempt: int,
        until: datetime,
        max_attempts: int,
    ) -> datetime:
        """:meth:`claim` each request, :meth:`begin`, then :meth:`consume`, all or nothing.

        Returns when the lease taken actually ends: ``until``, moved later by
        however long the admission waited before the store ran it (a queue, a
        busy database), so that the wait does not eat the body's time; the
        gate bounds the body by this. What the gate does before a body runs, as one atomic step (one
        durable commit in the SQL store instead of one per part): either
        every part holds and is recorded, or none is and the first refusal
        is raised.

        Raises:
            OutcomeUnknownError: every use is taken and at least one attempt
                that took a use never ended (its body may have run) or
                completed (its completion never reached Temporal).
            RequestReplayedError, AttemptInProgressError,
            GrantAttemptsExhaustedError, GrantReplayedError,
            ReplayStoreUnavailableError: as the parts do.
        """
        ...

    def unfinished(self, grant_id: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The attempts of ``grant_id`` that took a use and never ended, and those that completed.

        What the gate asks when a grant can no longer be honoured for another
        reason (it expired): an attempt in either list means a body ran or
        may have, and the refusal is an unknown outcome, not a denial.

        Raises:
            ReplayStoreUnavailableError: the store cannot answer (retryable).
        """
        ...

    def close(self, grant_id: str, max_attempts: int) -> None:
        """Spend every remaining use: the body completed, nothing may run again.

        Without this, an activity id re-scheduled after a completion could
        use the grant's unspent attempts.

        Raises:
            ReplayStoreUnavailableError: the store cannot answer (retryable).
        """
        ...


def check_attempt(grant_id: str, attempt: int, max_attempts: int) -> None:
    """The stateless part of :meth:`ReplayGuard.consume`.

    Raises:
        GrantReplayedError: ``attempt`` or ``max_attempts`` is not positive.
    """
    if attempt < 1:
        raise GrantReplayedError(f"grant {grant_id}: attempt {attempt} is not a valid attempt")
    if max_attempts < 1:
        raise GrantReplayedError(f"grant {grant_id}: max_attempts {max_attempts} allows no use")


def check_storable(*values: str) -> None:
    """Refuse ids no store can keep as they are (PostgreSQL's text refuses NUL).

    Refused up front, with the same error from every store, rather than as a
    database error in the middle of a shared batch.

    Raises:
        UnstorableIdError: a value holds a NUL character.
    """
    for value in values:
        if "\x00" in value:
            raise UnstorableIdError(f"id {value!r} holds a NUL character; no store keeps it")


def request_key(namespace: str, workflow_id: str, activity_type: str, activity_id: str) -> str:
    """The identity of one governed request, across runs of its workflow id.

    The run id is left out on purpose: a reset or a re-submission starts a new
    run of the same request. Hashed so that ids up to Temporal's length limit
    fit a bounded column, and length-prefixed so no two tuples collide.
    """
    parts = (namespace, workflow_id, activity_type, activity_id)
    data = b"".join(len(p.encode()).to_bytes(4, "big") + p.encode() for p in parts)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _request_replayed(request: str, owner: str, grant_id: str) -> RequestReplayedError:
    return RequestReplayedError(
        f"this request already ran under grant {owner}; grant {grant_id} may not run it again "
        "(a reset or re-submission of the same workflow id and activity)"
    )


def _in_progress(grant_id: str, holder: int, until: datetime) -> AttemptInProgressError:
    return AttemptInProgressError(
        f"attempt {holder} of grant {grant_id} may still be running (lease until "
        f"{until.isoformat()}); this attempt waits"
    )


def unknown_after_expiry(
    grant_id: str, unended: Sequence[int], completed: Sequence[int]
) -> OutcomeUnknownError:
    """The refusal of an expired grant under which a body ran, or may have."""
    if completed:
        last = max(completed)
        what = (
            f"attempt {last} completed but its completion never reached Temporal, so its "
            f"result is lost: the body of attempt {last} ran"
        )
    else:
        last = max(unended)
        what = (
            f"attempt(s) {', '.join(map(str, sorted(unended)))} never ended: the body of "
            f"attempt {last} may have run"
        )
    return OutcomeUnknownError(
        f"grant {grant_id} expired and {what}; check the side effect before re-running",
        tuple(sorted(unended)),
        tuple(sorted(completed)),
    )


def _exhausted(
    grant_id: str,
    max_attempts: int,
    unended: Sequence[int] = (),
    completed: Sequence[int] = (),
) -> GrantAttemptsExhaustedError:
    """The refusal once every use is taken; unknown if an attempt never ended or completed."""
    if completed:
        last = max(completed)
        return OutcomeUnknownError(
            f"grant {grant_id} used all {max_attempts} use(s); attempt {last} completed but "
            "its completion never reached Temporal, so its result is lost: the body of "
            f"attempt {last} ran; check the side effect before re-running",
            tuple(sorted(unended)),
            tuple(sorted(completed)),
        )
    if unended:
        last = max(unended)
        return OutcomeUnknownError(
            f"grant {grant_id} used all {max_attempts} use(s) and attempt(s) "
            f"{', '.join(map(str, sorted(unended)))} never ended: the body of attempt {last} "
            "may have run; check the side effect before re-running",
            tuple(sorted(unended)),
        )
    return GrantAttemptsExhaustedError(
        f"grant {grant_id} was already honoured {max_attempts} time(s), its max_attempts"
    )


class InMemoryReplayGuard:
    """A process-local guard, for unit tests of verification only."""

    def __init__(self, *, clock: Clock = system_clock) -> None:
        self._seen: set[tuple[str, int]] = set()
        self._claims: dict[str, str] = {}
        self._leases: dict[str, tuple[int, datetime]] = {}
        #: (grant, attempt) -> whether that attempt's body completed.
        self._ended: dict[tuple[str, int], bool] = {}
        self._now = clock
        self._lock = threading.Lock()

    def begin(self, grant_id: str, attempt: int, until: datetime) -> None:
        """See :meth:`ReplayGuard.begin` (never raises ReplayStoreUnavailableError)."""
        with self._lock:
            held = self._leases.get(grant_id)
            if held is not None and held[0] != attempt and held[1] > now_utc(self._now):
                raise _in_progress(grant_id, *held)
            self._leases[grant_id] = (attempt, until)

    def end(self, grant_id: str, attempt: int, *, completed: bool = False) -> None:
        """See :meth:`ReplayGuard.end`: the first end of an attempt is the one kept.

        As in the SQL store: the gate ends an attempt that completed, and may
        end it again (not completed) on its way out; the second must not
        change what the first recorded, nor the other way round.
        """
        with self._lock:
            self._ended.setdefault((grant_id, attempt), completed)
            if self._leases.get(grant_id, (None,))[0] == attempt:
                del self._leases[grant_id]

    def claim(self, request: str, grant_id: str) -> None:
        """See :meth:`ReplayGuard.claim`."""
        with self._lock:
            owner = self._claims.setdefault(request, grant_id)
        if owner != grant_id:
            raise _request_replayed(request, owner, grant_id)

    def consume(self, grant_id: str, attempt: int, max_attempts: int) -> None:
        """See :meth:`ReplayGuard.consume` (never raises ReplayStoreUnavailableError)."""
        check_attempt(grant_id, attempt, max_attempts)
        check_storable(grant_id)
        with self._lock:
            if (grant_id, attempt) in self._seen:
                raise GrantReplayedError(f"grant {grant_id} attempt {attempt} was already used")
            if sum(1 for g, _ in self._seen if g == grant_id) >= max_attempts:
                raise _exhausted(grant_id, max_attempts)
            self._seen.add((grant_id, attempt))

    def admit(
        self,
        requests: Sequence[str],
        grant_id: str,
        attempt: int,
        until: datetime,
        max_attempts: int,
    ) -> datetime:
        """See :meth:`ReplayGuard.admit`: checks everything, then records everything."""
        check_attempt(grant_id, attempt, max_attempts)
        check_storable(grant_id, *requests)
        with self._lock:
            for request in requests:
                owner = self._claims.get(request, grant_id)
                if owner != grant_id:
                    raise _request_replayed(request, owner, grant_id)
            held = self._leases.get(grant_id)
            if held is not None and held[0] != attempt and held[1] > now_utc(self._now):
                raise _in_progress(grant_id, *held)
            if (grant_id, attempt) in self._seen:
                raise GrantReplayedError(f"grant {grant_id} attempt {attempt} was already used")
            if sum(1 for g, _ in self._seen if g == grant_id) >= max_attempts:
                mine = [a for g, a in self._seen if g == grant_id and a >= 1]
                unended = [a for a in mine if (grant_id, a) not in self._ended]
                completed = [a for a in mine if self._ended.get((grant_id, a))]
                raise _exhausted(grant_id, max_attempts, unended, completed)
            for request in requests:
                self._claims[request] = grant_id
            self._leases[grant_id] = (attempt, until)
            self._seen.add((grant_id, attempt))
        return until

    def release(self, grant_id: str, attempt: int) -> None:
        """See :meth:`ReplayGuard.release`."""
        with self._lock:
            # Negative attempts are the slots close() spent: never given back.
            if attempt < 1 or (grant_id, attempt) in self._ended:
                return
            self._seen.discard((grant_id, attempt))
            if self._leases.get(grant_id, (None,))[0] == attempt:
                del self._leases[grant_id]

    def unfinished(self, grant_id: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """See :meth:`ReplayGuard.unfinished`."""
        with self._lock:
            mine = sorted(a for g, a in self._seen if g == grant_id and a >= 1)
            return (
                tuple(a for a in mine if (grant_id, a) not in self._ended),
                tuple(a for a in mine if self._ended.get((grant_id, a))),
            )

    def close(self, grant_id: str, max_attempts: int) -> None:
        """See :meth:`ReplayGuard.close`."""
        with self._lock:
            # Negative "attempts" stand for spent slots; real ones are >= 1.
            for slot in range(1, max_attempts + 1):
                if sum(1 for g, _ in self._seen if g == grant_id) >= max_attempts:
                    return
                self._seen.add((grant_id, -slot))


class ConsumedGrant(SQLModel, table=True):
    """One use of a grant: which slot, by which attempt. Storage only."""

    __tablename__ = "ecp_grant_uses"
    __table_args__ = (UniqueConstraint("grant_id", "attempt", name="uq_grant_use_attempt"),)

    grant_id: str = Field(primary_key=True, max_length=128)
    slot: int = Field(primary_key=True)
    attempt: int
    consumed_at: datetime


class ClaimedRequest(SQLModel, table=True):
    """Which grant owns a governed request (see :func:`request_key`). Storage only."""

    __tablename__ = "ecp_request_claims"

    request: str = Field(primary_key=True, max_length=80)
    grant_id: str = Field(max_length=128)
    claimed_at: datetime


class AttemptLease(SQLModel, table=True):
    """Which attempt of a grant may be running, and until when. Storage only."""

    __tablename__ = "ecp_grant_leases"

    grant_id: str = Field(primary_key=True, max_length=128)
    attempt: int
    until: datetime


class AttemptEnd(SQLModel, table=True):
    """An attempt whose end the gate saw (its body returned or raised). Storage only.

    A table of its own, so that stores created before it existed only gain a
    table (created on first use) and need no migration.
    """

    __tablename__ = "ecp_grant_attempt_ends"

    grant_id: str = Field(primary_key=True, max_length=128)
    attempt: int = Field(primary_key=True)
    #: The body returned (and the grant was closed): a further attempt of
    #: this grant means Temporal never received the completion.
    completed: bool = False
    ended_at: datetime


_TABLES = (ConsumedGrant, ClaimedRequest, AttemptLease, AttemptEnd)


def _insert_ignoring_conflicts(engine: Engine) -> Callable[[Table], Any]:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING 1`` in the engine's dialect.

    A row comes back only when the insert happened (rowcount is not reliable
    for this statement with every driver: psycopg reports -1).
    """
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return lambda table: dialect.insert(table).on_conflict_do_nothing().returning(literal(1))


def _inserted(result: Any) -> bool:
    return result.first() is not None


def _unfinished(conn: Connection, grant_id: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The attempts of a grant that never ended, and those that completed.

    Real attempts only (>= 1): close() writes negative ones.
    """
    uses = ConsumedGrant.__table__  # type: ignore[attr-defined]
    ends = AttemptEnd.__table__  # type: ignore[attr-defined]
    taken = conn.execute(
        sa_select(uses.c.attempt, ends.c.completed)
        .select_from(
            uses.outerjoin(
                ends,
                (ends.c.grant_id == uses.c.grant_id) & (ends.c.attempt == uses.c.attempt),
            )
        )
        .where(uses.c.grant_id == grant_id, uses.c.attempt >= 1)
        .order_by(uses.c.attempt)
    ).all()
    return (
        tuple(int(t.attempt) for t in taken if t.completed is None),
        tuple(int(t.attempt) for t in taken if t.completed),
    )


class _AdmitSql:
    """The statements of one admission, in the DB-API's parameter style.

    The same SQL on SQLite (3.35+: ``RETURNING``) and PostgreSQL.
    """

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect.name

        def style(statement: str) -> str:
            return statement.replace("?", "%s") if dialect == "postgresql" else statement

        self.claim = style(
            "INSERT INTO ecp_request_claims (request, grant_id, claimed_at) VALUES (?, ?, ?) "
            "ON CONFLICT (request) DO NOTHING"
        )
        self.owner = style("SELECT grant_id FROM ecp_request_claims WHERE request = ?")
        # A row comes back when the lease was inserted or taken over.
        self.lease = style(
            'INSERT INTO ecp_grant_leases (grant_id, attempt, "until") VALUES (?, ?, ?) '
            'ON CONFLICT (grant_id) DO UPDATE SET attempt = excluded.attempt, "until" = '
            "excluded.until WHERE ecp_grant_leases.attempt = excluded.attempt "
            'OR ecp_grant_leases."until" <= ? RETURNING 1'
        )
        self.used = style("SELECT 1 FROM ecp_grant_uses WHERE grant_id = ? AND attempt = ?")
        # Both: slots 1..max_attempts as rows (a recursive CTE: the same SQL
        # on SQLite and PostgreSQL), in one statement however many there are.
        # The first free slot of 2..max_attempts, in one statement: rows go
        # in in order, a taken slot is skipped (primary key), and once one
        # row is in, every later one conflicts on (grant_id, attempt).
        # ``WHERE`` before ``ON CONFLICT``: SQLite's parser needs one there.
        self.later = style(
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < ?) "
            "INSERT INTO ecp_grant_uses (grant_id, slot, attempt, consumed_at) "
            "SELECT ?, n, ?, ? FROM s WHERE n >= 2 ORDER BY n ON CONFLICT DO NOTHING RETURNING 1"
        )
        # close(): every free slot, spent by a negative attempt (-slot).
        self.close = style(
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < ?) "
            "INSERT INTO ecp_grant_uses (grant_id, slot, attempt, consumed_at) "
            "SELECT ?, n, -n, ? FROM s WHERE true ON CONFLICT DO NOTHING"
        )
        # Slot 1, unless a use of the grant holds it or this attempt already
        # used one: the common case (a first use) in one statement.
        self.take = style(
            "INSERT INTO ecp_grant_uses (grant_id, slot, attempt, consumed_at) "
            "SELECT ?, 1, ?, ? WHERE NOT EXISTS (SELECT 1 FROM ecp_grant_uses "
            "WHERE grant_id = ? AND (slot = 1 OR attempt = ?)) "
            "ON CONFLICT DO NOTHING RETURNING 1"
        )
        #: PostgreSQL over psycopg 3 with a libpq that pipelines: one
        #: admission's statements go in one round trip. Any other driver
        #: (psycopg2, pg8000) takes the step-by-step path.
        self.pipelined = dialect == "postgresql" and _pipelines(engine)


def _pipelines(engine: Engine) -> bool:
    if engine.dialect.driver != "psycopg":
        return False
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the dialect imported it
        return False
    return bool(psycopg.Pipeline.is_supported())


#: The bounds on every statement of the store on PostgreSQL: a lock waited
#: for at most 3 s (an outside session holding a lease row), a statement run
#: for at most 5 s (a stalled server). Both fail the statement with an error
#: the batch maps to "unavailable", instead of stalling every later
#: admission of the process behind it. On the store's own engine they come
#: with the connection (no round trip); on an engine it was handed, each
#: batch sets them for its own transaction (``LOCAL``: nothing leaks to the
#: engine's other users).
_PG_SESSION_TIMEOUTS = {"options": "-c lock_timeout=3000 -c statement_timeout=5000"}
_PG_BATCH_TIMEOUTS = "SET LOCAL lock_timeout = '3s'; SET LOCAL statement_timeout = '5s'"


@dataclass(frozen=True, slots=True)
class _Op:
    """One caller's write, queued for the batch's transaction."""

    grant_id: str
    #: Raises the caller's own refusal, if any, having undone its own writes.
    run: Callable[[Connection], None]


#: SQLSTATEs of a store that failed rather than an operation it refused:
#: connection (08), transaction rollback: serialization or deadlock (40),
#: resources (53), operator intervention, e.g. a statement timeout or a
#: shutdown (57), system errors (58), a lock not granted in time (55P03), a
#: read-only server after a failover (25006), an idle-in-transaction timeout
#: (25P03). Read from the error itself, because drivers file them under
#: different classes (pg8000 reports a lock timeout as a ProgrammingError).
_OUTAGE_CLASSES = ("08", "40", "53", "57", "58")
_OUTAGE_STATES = frozenset({"55P03", "25006", "25P03"})


#: The refusal of every caller of a batch PostgreSQL only committed locally.
_UNCONFIRMED = (
    "the single-use store's commit was not confirmed by its synchronous standby (the wait "
    "for it was cancelled), so a failover may lose it: what it recorded is treated as not "
    "established (an admitted body does not run); check the standby, then retry"
)


def _unavailable(exc: BaseException) -> ReplayStoreUnavailableError:
    """The retryable refusal of a caller whose batch ``exc`` failed (a new one per caller).

    A commit PostgreSQL only committed locally (:class:`UnconfirmedCommit`,
    see :mod:`ecp._syncrep`) is refused like a lost connection in the middle
    of a COMMIT, which may have committed too: what the batch wrote is on
    this server but perhaps not on the standby a failover promotes.

    - An admission: its body must not run, since after a failover the use
      may be gone and a retry admitted again (a second use). The retry is a
      new Temporal attempt: on this server it finds the lease of the refused
      attempt and waits (retryably) until the lease ends, then takes a later
      slot; with none left, it is refused as an unknown outcome (an attempt
      took a use and never ended). Either way fewer runs, never more: the
      refused attempt's use is not given back, because that commit could be
      cut short too. After a failover that lost the batch, the retry takes
      the use afresh, exactly once. Its success writes (a lease, a use), so
      its own commit waits for the standby, which then has everything before
      it as well.
    - An end or a close: the gate records these after the body, best effort
      (it logs the refusal and goes on; the body is never re-run for it). A
      failover that loses one leaves the attempt un-ended (a later refusal
      says the outcome is unknown) or the grant's later slots free, exactly
      as when the store was unreachable at that moment.
    """
    if isinstance(exc, UnconfirmedCommit):
        err = ReplayStoreUnavailableError(_UNCONFIRMED)
    else:
        err = ReplayStoreUnavailableError(f"replay store unavailable: {type(exc).__name__}")
    err.__cause__ = exc
    return err


def _outage_state(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None) or exc
    state = getattr(orig, "sqlstate", None)  # psycopg 3
    if state is None:
        state = getattr(orig, "pgcode", None)  # psycopg2
    if state is None and orig.args and isinstance(orig.args[0], dict):
        state = orig.args[0].get("C")  # pg8000
    if not isinstance(state, str):
        return False
    return state[:2] in _OUTAGE_CLASSES or state in _OUTAGE_STATES


class SqlReplayGuard:
    """The persistent guard over SQLite or PostgreSQL (any SQLAlchemy URL).

    :meth:`admit`, :meth:`end` and :meth:`close` are group-committed: the
    concurrent callers of one guard share one transaction and one durable
    commit (see :mod:`ecp.authority._group_commit`). Across processes the
    database decides races as before (SQLite's write lock, PostgreSQL's row
    locks and primary keys).
    """

    def __init__(self, url_or_engine: str | Engine, *, clock: Clock = system_clock) -> None:
        """Connect lazily: the table is created on first use.

        Args:
            url_or_engine: e.g. ``sqlite:///path/ecp.db`` or
                ``postgresql+psycopg://user@host/db``; defaults usually come
                from :func:`ecp._paths.default_database_url`.
            clock: stamps ``consumed_at`` (informational only).
        """
        engine = store_engine(url_or_engine, postgres_args=_PG_SESSION_TIMEOUTS)
        warn_if_unwatched(engine, "single-use store")
        self.engine = engine
        #: PostgreSQL, unless every connection got the bounds when it opened
        #: (an engine the store built itself, over libpq): each batch sets
        #: them, for its own transaction only.
        self._batch_timeouts = engine.dialect.name == "postgresql" and not (
            isinstance(url_or_engine, str) and speaks_libpq(url_or_engine)
        )
        self._clock = clock
        self._ready = False
        self._lock = threading.Lock()
        self._group: GroupCommit[_Op] = GroupCommit(self._run_batch)
        self._sql = _AdmitSql(engine)
        #: PostgreSQL: the last admission's savepoint is still to be released.
        #: Batch state; only one batch of this guard runs at a time.
        self._savepoint_open = False
        #: What the plain DB-API statements raise (SQLAlchemy wraps only its own).
        self._dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        stamp_type = AttemptLease.__table__.c.until.type  # type: ignore[attr-defined]
        self._stamp: Callable[[datetime], Any] = stamp_type.dialect_impl(
            engine.dialect
        ).bind_processor(engine.dialect) or (lambda value: value)

    def ensure_ready(self) -> None:
        """Reach the database and create the tables now, not on first use.

        A worker calls this at startup so it takes no task before its
        single-use store answers.

        Raises:
            ReplayStoreUnavailableError: the database cannot be reached.
        """
        self._ensure_table()

    def _ensure_table(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            try:
                for model in _TABLES:
                    SQLModel.metadata.tables[model.__tablename__].create(
                        self.engine, checkfirst=True
                    )
            except SQLAlchemyError as exc:
                # Another process may have created it between our check and
                # our create; only a table that still is not there is a fault.
                if not self._table_exists():
                    raise ReplayStoreUnavailableError(
                        f"replay store unavailable at {display_url(self.engine.url)}: "
                        f"{error_line(exc)}"
                    ) from exc
            self._ready = True

    def _table_exists(self) -> bool:
        try:
            found = inspect(self.engine)
            return all(found.has_table(m.__tablename__) for m in _TABLES)
        except SQLAlchemyError:
            return False

    def consume(self, grant_id: str, attempt: int, max_attempts: int) -> None:
        """See :meth:`ReplayGuard.consume`."""
        check_attempt(grant_id, attempt, max_attempts)
        check_storable(grant_id)
        self._ensure_table()
        now = now_utc(self._clock)
        try:
            for slot in range(1, max_attempts + 1):
                row = ConsumedGrant(grant_id=grant_id, slot=slot, attempt=attempt, consumed_at=now)
                try:
                    with self._confirmed() as conn, Session(conn) as session:
                        session.add(row)
                        session.commit()
                    return
                except IntegrityError:
                    # Either the slot is taken (try the next) or this attempt
                    # already used one (a replay).
                    if self._attempt_used(grant_id, attempt):
                        raise GrantReplayedError(
                            f"grant {grant_id} attempt {attempt} was already used"
                        ) from None
        except SQLAlchemyError as exc:
            # Cannot tell whether it was used: refuse, but let the caller retry.
            raise ReplayStoreUnavailableError(
                f"replay store unavailable: {type(exc).__name__}"
            ) from exc
        raise _exhausted(grant_id, max_attempts)

    def claim(self, request: str, grant_id: str) -> None:
        """See :meth:`ReplayGuard.claim`: one insert; the primary key decides races."""
        check_storable(request, grant_id)
        self._ensure_table()
        row = ClaimedRequest(request=request, grant_id=grant_id, claimed_at=now_utc(self._clock))
        try:
            try:
                with self._confirmed() as conn, Session(conn) as session:
                    session.add(row)
                    session.commit()
                return
            except IntegrityError:
                with Session(self.engine) as session:
                    owner = session.get(ClaimedRequest, request)
        except SQLAlchemyError as exc:
            raise ReplayStoreUnavailableError(
                f"replay store unavailable: {type(exc).__name__}"
            ) from exc
        if owner is None:
            raise ReplayStoreUnavailableError("replay store unavailable: claim vanished")
        if owner.grant_id != grant_id:
            raise _request_replayed(request, owner.grant_id, grant_id)

    def begin(self, grant_id: str, attempt: int, until: datetime) -> None:
        """See :meth:`ReplayGuard.begin`: an insert, or a conditional takeover.

        Both are single statements, so two racing attempts cannot both win:
        the primary key decides the insert, and the ``WHERE`` of the update
        lets only one of them replace an expired or own lease.
        """
        check_storable(grant_id)
        self._ensure_table()
        now = now_utc(self._clock)
        table = AttemptLease.__table__  # type: ignore[attr-defined]
        try:
            try:
                with self._confirmed() as conn, Session(conn) as session:
                    session.add(AttemptLease(grant_id=grant_id, attempt=attempt, until=until))
                    session.commit()
                return
            except IntegrityError:
                pass
            with self._confirmed() as conn, conn.begin():
                taken = conn.execute(
                    table.update()
                    .where(
                        table.c.grant_id == grant_id,
                        (table.c.attempt == attempt) | (table.c.until <= now),
                    )
                    .values(attempt=attempt, until=until)
                ).rowcount
            if taken == 1:
                return
            with Session(self.engine) as session:
                held = session.get(AttemptLease, grant_id)
        except SQLAlchemyError as exc:
            raise ReplayStoreUnavailableError(
                f"replay store unavailable: {type(exc).__name__}"
            ) from exc
        if held is None:
            raise ReplayStoreUnavailableError("replay store unavailable: lease vanished")
        raise _in_progress(grant_id, held.attempt, held.until)

    def end(self, grant_id: str, attempt: int, *, completed: bool = False) -> None:
        """See :meth:`ReplayGuard.end`: the end and the release, group-committed."""
        check_storable(grant_id)
        self._ensure_table()
        now = now_utc(self._clock)
        self._group.submit(
            _Op(grant_id, lambda conn: self._end_in(conn, grant_id, attempt, completed, now))
        )

    def _end_in(
        self, conn: Connection, grant_id: str, attempt: int, completed: bool, now: datetime
    ) -> None:
        leases = AttemptLease.__table__  # type: ignore[attr-defined]
        ends = AttemptEnd.__table__  # type: ignore[attr-defined]
        insert = _insert_ignoring_conflicts(self.engine)
        row = {"grant_id": grant_id, "attempt": attempt, "completed": completed, "ended_at": now}
        conn.execute(insert(ends).values(**row)).close()
        conn.execute(
            leases.delete().where(leases.c.grant_id == grant_id, leases.c.attempt == attempt)
        )

    def release(self, grant_id: str, attempt: int) -> None:
        """See :meth:`ReplayGuard.release`: both deletes in one transaction (rare: not batched)."""
        check_storable(grant_id)
        self._ensure_table()
        uses = ConsumedGrant.__table__  # type: ignore[attr-defined]
        leases = AttemptLease.__table__  # type: ignore[attr-defined]
        ends = AttemptEnd.__table__  # type: ignore[attr-defined]
        ended = (
            sa_select(ends.c.attempt)
            .where(ends.c.grant_id == grant_id, ends.c.attempt == attempt)
            .exists()
        )
        try:
            with self._confirmed() as conn, conn.begin():
                # attempt >= 1: the negative rows of close() are never given back.
                conn.execute(
                    uses.delete().where(
                        uses.c.grant_id == grant_id,
                        uses.c.attempt == attempt,
                        uses.c.attempt >= 1,
                        ~ended,
                    )
                )
                conn.execute(
                    leases.delete().where(
                        leases.c.grant_id == grant_id, leases.c.attempt == attempt, ~ended
                    )
                )
        except SQLAlchemyError as exc:
            raise ReplayStoreUnavailableError(
                f"replay store unavailable: {type(exc).__name__}"
            ) from exc

    def unfinished(self, grant_id: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """See :meth:`ReplayGuard.unfinished`: one read."""
        check_storable(grant_id)
        self._ensure_table()
        try:
            with self.engine.connect() as conn:
                return _unfinished(conn, grant_id)
        except SQLAlchemyError as exc:
            raise ReplayStoreUnavailableError(
                f"replay store unavailable: {type(exc).__name__}"
            ) from exc

    def close(self, grant_id: str, max_attempts: int) -> None:
        """See :meth:`ReplayGuard.close`: takes every free slot, in one transaction.

        Records a negative attempt (real attempts are >= 1, so none can collide).
        """
        check_storable(grant_id)
        self._ensure_table()
        now = now_utc(self._clock)
        self._group.submit(
            _Op(grant_id, lambda conn: self._close_in(conn, grant_id, max_attempts, now))
        )

    def _close_in(self, conn: Connection, grant_id: str, max_attempts: int, now: datetime) -> None:
        # One statement however many slots (a taken slot stays as it is).
        cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cur.execute(self._sql.close, (max_attempts, grant_id, self._stamp(now)))
        finally:
            cur.close()

    def admit(
        self,
        requests: Sequence[str],
        grant_id: str,
        attempt: int,
        until: datetime,
        max_attempts: int,
    ) -> datetime:
        """See :meth:`ReplayGuard.admit`: group-committed with this process's other admissions.

        Concurrent callers share one transaction and one commit (see
        :mod:`ecp.authority._group_commit`); each admission runs under its own
        savepoint, in queue order, so two admissions of one grant in a batch
        behave exactly as if serialised and a refusal rolls back only its own
        admission. A caller returns only once the commit holding its
        admission is durable.
        """
        check_attempt(grant_id, attempt, max_attempts)
        reqs = tuple(requests)
        check_storable(grant_id, *reqs)
        self._ensure_table()
        now = now_utc(self._clock)
        taken = [until]

        def run(conn: Connection) -> None:
            # The lease runs from when the store runs the admission, not from
            # when the caller queued it: a long queue (or a batch re-run after
            # another operation's fault) must not leave the body less time.
            late = now_utc(self._clock) - now
            taken[0] = until + late
            self._admit_in(conn, reqs, grant_id, attempt, until + late, max_attempts, now + late)

        self._group.submit(_Op(grant_id, run))
        return taken[0]

    def _admit_in(
        self,
        conn: Connection,
        requests: Sequence[str],
        grant_id: str,
        attempt: int,
        until: datetime,
        max_attempts: int,
        now: datetime,
    ) -> None:
        """One admission inside the batch's transaction, under its own savepoint.

        A refusal rolls back to the savepoint (this admission's writes only)
        and is raised; the batch goes on. Conflicts are resolved by ``INSERT
        ... ON CONFLICT`` (no statement error is part of a refusal). Plain
        DB-API statements on the batch's connection: SQLAlchemy's
        per-statement work was most of an admission's cost once the commit
        was shared. Datetimes go through the columns' own bind processors,
        so rows are stored exactly as the ORM stores them.
        """
        dbapi: Any = conn.connection.dbapi_connection
        cur = dbapi.cursor()
        try:
            try:
                if self._sql.pipelined:
                    took = self._admit_pipelined(
                        conn, dbapi, requests, grant_id, attempt, until, now
                    )
                else:
                    cur.execute("SAVEPOINT ecp_admission")
                    took = self._admit_stepwise(conn, cur, requests, grant_id, attempt, until, now)
                if not took:
                    self._take_later_slot(conn, cur, grant_id, attempt, max_attempts, now)
            except (GrantReplayedError, AttemptInProgressError):
                cur.execute("ROLLBACK TO SAVEPOINT ecp_admission")
                cur.execute("RELEASE SAVEPOINT ecp_admission")
                raise
            if self._sql.pipelined:
                # Released at the start of the next admission's round trip
                # (or by the commit): one round trip fewer per admission.
                self._savepoint_open = True
            else:
                cur.execute("RELEASE SAVEPOINT ecp_admission")
        finally:
            cur.close()

    def _admit_stepwise(
        self,
        conn: Connection,
        cur: Any,
        requests: Sequence[str],
        grant_id: str,
        attempt: int,
        until: datetime,
        now: datetime,
    ) -> bool:
        """Claims, lease and slot 1 one statement at a time (SQLite: in process, no round trips).

        Every result is read to the end: on SQLite an unread ``RETURNING``
        keeps its statement in progress, and a savepoint's release or the
        commit is then refused.
        """
        sql, stamp = self._sql, self._stamp
        for request in requests:
            cur.execute(sql.claim, (request, grant_id, stamp(now)))
            cur.execute(sql.owner, (request,))
            owner = cur.fetchall()[0][0]
            if owner != grant_id:
                raise _request_replayed(request, owner, grant_id)
        cur.execute(sql.lease, (grant_id, attempt, stamp(until), stamp(now)))
        if not cur.fetchall():
            self._lease_held(conn, grant_id)
        cur.execute(sql.take, (grant_id, attempt, stamp(now), grant_id, attempt))
        return bool(cur.fetchall())

    def _admit_pipelined(
        self,
        conn: Connection,
        dbapi: Any,
        requests: Sequence[str],
        grant_id: str,
        attempt: int,
        until: datetime,
        now: datetime,
    ) -> bool:
        """The savepoint, claims, lease and slot 1 in one round trip (PostgreSQL).

        psycopg's pipeline sends every statement before reading any result.
        The server still runs them in order, and the results are judged in
        that order afterwards: whatever ran after the first refusal is
        undone with the rest by the rollback to the savepoint.
        """
        sql, stamp = self._sql, self._stamp
        cursors: list[Any] = []

        def send(statement: str, params: tuple[object, ...] = ()) -> Any:
            c = dbapi.cursor()
            cursors.append(c)
            c.execute(statement, params or None)
            return c

        try:
            with dbapi.pipeline():
                if self._savepoint_open:  # the previous admission's, which held
                    send("RELEASE SAVEPOINT ecp_admission")
                    self._savepoint_open = False
                send("SAVEPOINT ecp_admission")
                owners = []
                for request in requests:
                    send(sql.claim, (request, grant_id, stamp(now)))
                    owners.append((request, send(sql.owner, (request,))))
                lease = send(sql.lease, (grant_id, attempt, stamp(until), stamp(now)))
                take = send(sql.take, (grant_id, attempt, stamp(now), grant_id, attempt))
            for request, c in owners:
                owner = c.fetchall()[0][0]
                if owner != grant_id:
                    raise _request_replayed(request, owner, grant_id)
            if not lease.fetchall():
                self._lease_held(conn, grant_id)
            return bool(take.fetchall())
        finally:
            for c in cursors:
                c.close()

    def _lease_held(self, conn: Connection, grant_id: str) -> None:
        leases = AttemptLease.__table__  # type: ignore[attr-defined]
        held = conn.execute(
            sa_select(leases.c.attempt, leases.c.until).where(leases.c.grant_id == grant_id)
        ).one()
        raise _in_progress(grant_id, held.attempt, held.until)

    def _take_later_slot(
        self,
        conn: Connection,
        cur: Any,
        grant_id: str,
        attempt: int,
        max_attempts: int,
        now: datetime,
    ) -> None:
        """Slot 1 was not taken: a replay, a later slot, or exhaustion.

        ``take`` inserts slot 1 only if no use of the grant holds slot 1 or
        this attempt; when it inserted nothing, one read tells a replay, and
        one insert takes the first free later slot, if any (the unique
        constraints decide, as always).
        """
        sql, stamp = self._sql, self._stamp
        cur.execute(sql.used, (grant_id, attempt))
        if cur.fetchall():
            raise GrantReplayedError(f"grant {grant_id} attempt {attempt} was already used")
        if max_attempts >= 2:
            cur.execute(sql.later, (max_attempts, grant_id, attempt, stamp(now)))
            if cur.fetchall():
                return
        unended, completed = _unfinished(conn, grant_id)
        raise _exhausted(grant_id, max_attempts, unended, completed)

    def _run_batch(self, batch: list[Pending[_Op]]) -> None:
        """Every queued operation in one transaction, one commit; see :meth:`_run_once`.

        When the batch fails, nothing of it was written. If the store failed
        (a lost connection, a lock or statement timeout, SQLite's write lock
        not granted), every caller is refused, retryably. Anything else (a
        value the database refuses, a driver that misbehaves) may be one
        operation's fault: each operation then runs again in a batch of its
        own, so only the faulty one fails (as the ledger splits a batch on a
        refused entry) and a completed body's ``close`` is not lost to
        another caller's bad admission.
        """
        try:
            self._run_once(batch)
        except Exception as exc:  # noqa: BLE001 - every failure is mapped for its callers
            if len(batch) > 1 and not self._outage(exc):
                for i, pending in enumerate(batch):
                    pending.error = None  # decided again, in its own transaction
                    self._run_batch([pending])
                    cause = pending.error.__cause__ if pending.error is not None else None
                    if cause is not None and self._outage(cause):
                        # The store itself failed meanwhile: the rest would
                        # only wait for it one by one (each up to the bounds).
                        for rest in batch[i + 1 :]:
                            rest.error = _unavailable(cause)
                        return
                return
            # Nothing of the batch is known to be durably written: every
            # caller is refused, retryably (a refusal decided inside it too:
            # its reads belonged to a transaction that did not commit, or
            # whose commit may not survive a failover, see _unavailable).
            for pending in batch:
                pending.error = _unavailable(exc)

    def _outage(self, exc: BaseException) -> bool:
        """The store failed, not one operation: a connection, timeout or lock error.

        Or a commit only committed locally: never re-run one operation at a
        time, since each admission is then already recorded (on this server)
        and would find its own use (a replay, not an outage).
        """
        if isinstance(exc, UnconfirmedCommit):
            return True
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            return True
        if _outage_state(exc):
            return True
        dbapi = self.engine.dialect.loaded_dbapi
        return isinstance(
            exc,
            (
                sa_exc.OperationalError,
                sa_exc.InterfaceError,
                sa_exc.DisconnectionError,
                sa_exc.TimeoutError,  # the pool had no connection to give
                dbapi.OperationalError,
                dbapi.InterfaceError,
            ),
        )

    def _run_once(self, batch: list[Pending[_Op]]) -> None:
        """The batch in one transaction; raises whatever failed it (nothing is then written).

        Ordered by grant (stably: one grant's operations keep their queue
        order), so two processes' batches take PostgreSQL's row locks in the
        same order instead of deadlocking. On PostgreSQL each statement may
        wait at most a few seconds for a lock and run at most a few seconds
        (see ``_PG_SESSION_TIMEOUTS``). On SQLite the transaction begins
        ``IMMEDIATE``: it takes the write lock before reading anything, so
        concurrent processes queue on ``busy_timeout`` instead of failing to
        upgrade a read lock.
        """
        ordered = sorted(batch, key=lambda p: p.item.grant_id)
        self._savepoint_open = False
        # UnconfirmedCommit after the commit, if PostgreSQL only committed
        # it locally (see _unavailable and ecp._syncrep).
        with (
            self.engine.connect() as conn,
            confirmed_commits(conn.connection.driver_connection),
            conn.begin(),
        ):
            if conn.dialect.name == "sqlite":
                dbapi = conn.connection.dbapi_connection
                # pysqlite begins implicitly only before its first write,
                # and a SAVEPOINT outside a transaction would open (and its
                # release commit) one of its own.
                if not getattr(dbapi, "in_transaction", False):
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif self._batch_timeouts:
                conn.exec_driver_sql(_PG_BATCH_TIMEOUTS)
            for pending in ordered:
                try:
                    pending.item.run(conn)
                except (GrantReplayedError, AttemptInProgressError) as refusal:
                    pending.error = refusal  # its own writes undone; the batch goes on

    @contextmanager
    def _confirmed(self) -> Iterator[Connection]:
        """A connection for one-off writes; a commit only committed locally is an outage.

        Raises:
            ReplayStoreUnavailableError: a commit on it was not confirmed by
                the synchronous standby (see :func:`_unavailable`).
        """
        with self.engine.connect() as conn:
            try:
                with confirmed_commits(conn.connection.driver_connection):
                    yield conn
            except UnconfirmedCommit as exc:
                raise _unavailable(exc) from exc

    def _attempt_used(self, grant_id: str, attempt: int) -> bool:
        with Session(self.engine) as session:
            stmt = select(ConsumedGrant).where(
                ConsumedGrant.grant_id == grant_id, ConsumedGrant.attempt == attempt
            )
            return session.exec(stmt).first() is not None

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()
