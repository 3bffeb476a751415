"""A bounded, logged wait for a worker's dependencies at startup.

A worker opens its stores (ledger, single-use store, halt list) and connects
to Temporal before it takes any task. Under load a database can be slow to
accept connections for a while; exiting at once is fail-closed but makes a
supervisor crash-loop the worker. :class:`StartupWait` retries an opening
that failed with an outage (one of :data:`WAITS_FOR`) with capped
exponential backoff and jitter, one log line per retry, for at most
``ECP_STARTUP_WAIT_SECONDS`` in all; then the same error is raised, saying
how long it waited. A failure that will not heal by waiting (a wrong schema,
an unknown database or role, a refused password, a client-side connection
setting libpq rejects, an unreadable TLS file, Temporal refusing the
credentials or TLS) is raised at once, whatever the bound.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio.service import RPCError

from ecp._connect import FINAL_STATUSES, TemporalUnreachableError
from ecp._settings import Settings, env_name
from ecp.authority.errors import ControlStateUnavailableError, ReplayStoreUnavailableError
from ecp.errors import EcpError
from ecp.lineage.ledger.errors import LedgerUnavailableError

__all__ = ["ATTEMPT_GRACE", "SETTING", "WAITS_FOR", "StartupWait", "heals"]

T = TypeVar("T")

log = logging.getLogger("ecp.startup")

#: The setting that bounds the wait, as operators write it.
SETTING = env_name("startup_wait_seconds")

#: The outages worth waiting for: each is raised when a dependency did not
#: answer, never when it answered no.
WAITS_FOR: tuple[type[EcpError], ...] = (
    LedgerUnavailableError,
    ReplayStoreUnavailableError,
    ControlStateUnavailableError,
    TemporalUnreachableError,
)

# First delay, growth and cap of the backoff (seconds). The cap keeps a
# worker whose database came back from idling long after it did.
_FIRST_DELAY = 0.5
_GROWTH = 2.0
_MAX_DELAY = 8.0

# SQLSTATE classes of a server that could not serve *now* (as the single-use
# store reads them): connection (08), rollback on serialization or deadlock
# (40), resources such as too many connections (53), operator intervention
# such as "starting up" or a shutdown (57), system errors (58); and a lock not
# granted in time (55P03), a read-only standby not yet promoted (25006).
_HEALING_CLASSES = ("08", "40", "53", "57", "58")
_HEALING_STATES = frozenset({"55P03", "25006"})

# libpq keeps no SQLSTATE for a connection the server refused at start, only
# its message. These (PostgreSQL's own wording, as servers log in their
# default locale) say the server answered and refused for a reason waiting
# does not change: a missing database or role, failed authentication, no
# pg_hba.conf line, no CONNECT privilege. And libpq's own (English unless
# the client runs in a translated locale) for a fault of the client's
# configuration, which no server change mends:
# no password to send, SSL required of a server without it, a certificate
# that does not verify, an unknown or malformed connection option. Any other
# connection failure (refused, timed out, no such host yet, "starting up",
# too many clients) is waited for.
_REFUSALS = (
    "does not exist",
    "authentication failed",
    "no pg_hba.conf entry",
    "permission denied",
    "no password supplied",
    "does not support SSL",
    "certificate verify failed",
    "invalid sslmode value",
    "invalid connection option",
    "for connection option",
    "bad value for",
)

# SQLite: only a busy or locked database heals by waiting; anything else
# (no such table or column, a file that cannot be opened) is the file's or
# the deployment's fault.
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6

#: How far past the bound one Temporal connect attempt may run (seconds):
#: each is given the time left plus this, so the last one still gets a fair
#: try, and a frontend that accepts and never answers cannot hold a start
#: for the SDK's own 30 s.
ATTEMPT_GRACE = 5.0


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from or during (``from None`` too), innermost last."""
    out: list[BaseException] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        out.append(cur)
        # SQLAlchemy keeps the driver's error on .orig.
        orig = getattr(cur, "orig", None)
        if isinstance(orig, BaseException) and id(orig) not in seen:
            out.append(orig)
            seen.add(id(orig))
        cur = cur.__cause__ or cur.__context__
    return out


def _sqlstate(err: BaseException) -> str | None:
    state = getattr(err, "sqlstate", None)  # psycopg 3
    if state is None:
        state = getattr(err, "pgcode", None)  # psycopg2
    if state is None and err.args and isinstance(err.args[0], dict):
        state = err.args[0].get("C")  # pg8000
    return state if isinstance(state, str) else None


def _driver_heals(err: BaseException) -> bool | None:
    """Whether one driver error heals by waiting; ``None``: not a driver error."""
    if isinstance(err, sqlite3.Error):
        code = getattr(err, "sqlite_errorcode", None)
        # Extended codes keep the primary one in the low byte.
        return isinstance(code, int) and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    if isinstance(err, RPCError):
        return err.status not in FINAL_STATUSES
    module = type(err).__module__.split(".")[0]
    if module not in ("psycopg", "psycopg2", "pg8000"):
        return None
    state = _sqlstate(err)
    if state is not None:
        return state[:2] in _HEALING_CLASSES or state in _HEALING_STATES
    text = str(err)
    return not any(refusal in text for refusal in _REFUSALS)


def heals(exc: BaseException) -> bool:
    """Whether ``exc`` is an outage that waiting may end (see the module's doc)."""
    # Not retryable: e.g. an unreadable TLS file, Temporal refusing for good.
    if not isinstance(exc, WAITS_FOR) or not exc.retryable:
        return False
    for err in _causes(exc):
        verdict = _driver_heals(err)
        if verdict is not None:
            return verdict
    # An outage with no driver error behind it (e.g. Temporal's transport
    # said "connection refused"): the dependency did not answer.
    return True


def _reason(exc: BaseException) -> str:
    """``exc`` in one line, with the driver's own first line when it adds to it."""
    text = f"{type(exc).__name__}: {exc}"
    for err in _causes(exc)[1:]:
        if _driver_heals(err) is None:
            continue
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if first not in text:
            text += f" ({first})"
        break
    return text.splitlines()[0]


class StartupWait:
    """One deadline for everything a worker opens before it takes tasks.

    Args:
        seconds: The bound (``ECP_STARTUP_WAIT_SECONDS``); 0 raises the
            first failure as it is, as before there was a wait.
        clock: Monotonic seconds (the deadline runs from construction).
        jitter: A number in [0, 1) per retry; each delay is scaled into
            [1/2, 1] of the backoff, so workers restarted together spread out.
        sleep: How :meth:`call` waits (:meth:`acall` uses asyncio's).
    """

    def __init__(
        self,
        seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.seconds = seconds
        self._clock = clock
        self._jitter = jitter
        self._sleep = sleep
        self._deadline = clock() + seconds
        self._attempts: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> StartupWait:
        """A wait bounded by ``ECP_STARTUP_WAIT_SECONDS``, starting now."""
        return cls(settings.startup_wait_seconds)

    def attempt_bound(self) -> float:
        """Seconds one attempt may take: the time left, plus :data:`ATTEMPT_GRACE`."""
        return max(0.0, self._deadline - self._clock()) + ATTEMPT_GRACE

    def attempts(self, what: str) -> int:
        """How many times opening ``what`` failed so far."""
        return self._attempts.get(what, 0)

    def call(self, what: str, open_: Callable[[], T]) -> T:
        """``open_()``, retried while it fails with an outage and time is left.

        Blocks the calling thread while it waits: meant for startup, before
        the process serves anything.

        Raises:
            EcpError: the last failure: at once if it will not heal, else
                once the bound is spent (then saying so, and for how long).
        """
        while True:
            try:
                return open_()
            except WAITS_FOR as exc:
                self._sleep(self._retry_in(what, exc))

    async def acall(self, what: str, open_: Callable[[], Awaitable[T]]) -> T:
        """As :meth:`call`, for a coroutine; waits without blocking the loop.

        Raises:
            EcpError: as for :meth:`call`.
        """
        while True:
            try:
                return await open_()
            except WAITS_FOR as exc:
                await asyncio.sleep(self._retry_in(what, exc))

    def _retry_in(self, what: str, exc: EcpError) -> float:
        """The delay before the next attempt, logged; or raise ``exc`` for good."""
        n = self._attempts[what] = self._attempts.get(what, 0) + 1
        if self.seconds <= 0 or not heals(exc):
            raise exc
        left = self._deadline - self._clock()
        if left <= 0:
            # The same error as without a wait, saying how long it waited.
            raise type(exc)(
                f"{exc} (still unavailable after {SETTING}={self.seconds:g} s, {n} attempts)"
            ) from exc
        backoff = min(_MAX_DELAY, _FIRST_DELAY * _GROWTH ** (n - 1))
        delay = min(left, backoff * (0.5 + self._jitter() / 2))
        log.warning(
            "%s unavailable (attempt %d): %s; next try in %.1f s (%s=%g, %.0f s left)",
            what,
            n,
            _reason(exc),
            delay,
            SETTING,
            self.seconds,
            left,
        )
        return delay
