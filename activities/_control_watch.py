"""The gate's view of halts and revocations: fresh within a stated bound, or none.

Every gate reads the control log (see :mod:`ecp.authority._control_log`) at
most every ``refresh_seconds`` and re-verifies it against the current trust
store, so a halt, a grant revocation or a key revocation reaches every
executor within ``refresh_seconds`` plus one read. When the log cannot be
read, the last verified state serves until ``bound_seconds`` after it was
read; past that the gate refuses every governed body (fail-closed) rather
than run one that might have been halted.

A resume takes effect for the next check: :meth:`ControlWatch.check` lets
a cached state pass a call (the common, not halted, path costs no read), but
refuses a call as halted only once a read that *began after the check was
asked* still shows the halt. A cached view may be older than a resume the
caller already saw succeed (it is up to ``refresh_seconds`` old, or older
while another read is under way or the log is briefly unreadable); a read
begun after the call arrived cannot be. If that read fails, the call is
still refused (fail-closed: only a verified newer statement lifts a halt),
but retryably, as an outage (:class:`ControlStateUnavailableError`, or
:class:`ControlLogTamperedError`), not as the final ``halted``: the halt may
have been lifted, and the retry finds out once the log can be read. One read
at a time: every call waiting to confirm a halt shares the next read begun
after it came, so a standing halt costs about one read per read's duration,
not one per refused call.

A watcher also remembers the digest of every statement it has verified:
a log that later lacks one of them, or holds another in its place, was
rolled back or rewritten, and the gate refuses until it is repaired.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ecp.authority._clock import Clock, now_utc
from ecp.authority._control import ControlRow, ControlState, fold
from ecp.authority._control_log import ControlLog, rows_digests
from ecp.authority._truststore import TrustStore
from ecp.authority.errors import (
    AuthorityError,
    ControlLogTamperedError,
    ControlStateUnavailableError,
    HaltedError,
    InfrastructureError,
)

__all__ = ["DEFAULT_BOUND_SECONDS", "DEFAULT_REFRESH_SECONDS", "ControlWatch"]

log = logging.getLogger("ecp.gate")

#: How often a gate reads the control log at most.
DEFAULT_REFRESH_SECONDS = 2.0
#: How stale the gate's view may grow while the log cannot be read.
DEFAULT_BOUND_SECONDS = 10.0


@dataclass
class ControlWatch:
    """A cached, verified view of the control log, shared by one worker's gates."""

    log: ControlLog
    trust: Callable[[], TrustStore]
    clock: Clock
    refresh_seconds: float = DEFAULT_REFRESH_SECONDS
    bound_seconds: float = DEFAULT_BOUND_SECONDS
    _state: ControlState | None = field(init=False, default=None)
    _read_at: datetime | None = field(init=False, default=None)
    _seen: list[str] = field(init=False, default_factory=list)
    #: How many reads have begun, and which of them gave ``_state`` (1-based).
    _reads_begun: int = field(init=False, default=0)
    _state_read: int = field(init=False, default=0)
    #: The read under way (0: none); one at a time, so a slow or hung
    #: database holds one caller, and the others share what it brings.
    _reading: int = field(init=False, default=0)
    #: The newest read that failed, and how (shared by those who waited on it).
    _failed_read: int = field(init=False, default=0)
    _failure: InfrastructureError | None = field(init=False, default=None)
    _lock: threading.Condition = field(init=False, default_factory=threading.Condition)

    def __post_init__(self) -> None:
        if not 0 < self.refresh_seconds <= self.bound_seconds:
            raise ValueError("need 0 < refresh_seconds <= bound_seconds")

    def check(self, action: str, grant_id: str) -> None:
        """Refuse ``action`` under ``grant_id`` if a halt or revocation is in force.

        What a gate asks before a body starts. A halt found in a cached state
        is confirmed by a read begun after this call (see the module
        docstring), so an ``ecp resume`` that returned before the call came
        is never refused as halted. Blocking: call it off the event loop.

        Raises:
            HaltedError: the action, or every action, is halted (confirmed).
            GrantRevokedError: the grant was revoked.
            ControlStateUnavailableError: see :meth:`current`; or a halt
                could not be re-confirmed (see :meth:`confirm`).
            ControlLogTamperedError: see :meth:`current` and :meth:`confirm`.
        """
        since = self.ticket()
        self.confirm(self.current(), action, grant_id, since=since)

    def ticket(self) -> int:
        """A mark for :meth:`confirm`: reads begun after it see what was stored before it."""
        with self._lock:
            return self._reads_begun

    def confirm(
        self,
        state: ControlState,
        action: str,
        grant_id: str,
        *,
        since: int,
        wait_seconds: float | None = None,
    ) -> None:
        """``state.check``, but a halt refuses only if a read begun after ``since`` shows it too.

        ``state`` is a view this watcher verified (from :meth:`current` or
        :meth:`last_verified`), ``since`` a :meth:`ticket` taken before it.
        A halt found in a read that began after ``since`` (the usual case when
        :meth:`current` just read the log) refuses at once; otherwise the
        next read begun after ``since`` decides (shared with every other
        caller waiting for one), waiting at most ``wait_seconds`` (default
        ``bound_seconds``) in all. Revocations are never lifted, so they
        refuse from any view.

        Raises:
            HaltedError: the halt is in the fresh read.
            ControlStateUnavailableError: that read could not be made (the
                log unreadable, or a read under way for longer than
                ``wait_seconds``), or failed in an unexpected way: the call
                is refused (the halt may stand), retryably; the message
                names the halt and ends in ``(not re-confirmed: <why>)``.
            ControlLogTamperedError: as above, the log being tampered with.
            GrantRevokedError: the grant was revoked.
        """
        try:
            state.check(action, grant_id)
        except HaltedError as halted:
            wait = self.bound_seconds if wait_seconds is None else wait_seconds
            try:
                fresh = self._read_since(since, wait)
            except Exception as exc:  # whatever failed, the halt is not lifted
                # Fail-closed: a halt this watcher verified is lifted only by
                # a verified newer statement, never by a read that failed.
                # Retryable, not `halted`: the operator may have resumed, and
                # a retry learns so once the log can be read again.
                if not isinstance(exc, AuthorityError):
                    log.error("confirming a halt of %s failed", action, exc_info=True)
                why = str(exc) if isinstance(exc, AuthorityError) else _fault(exc)
                kind = (
                    ControlLogTamperedError
                    if isinstance(exc, ControlLogTamperedError)
                    else ControlStateUnavailableError
                )
                raise kind(f"{halted} (not re-confirmed: {why})") from None
            fresh.check(action, grant_id)

    def _read_since(self, since: int, wait_seconds: float) -> ControlState:
        """A verified state from a read begun after ticket ``since`` (shared if under way)."""
        deadline = time.monotonic() + wait_seconds
        with self._lock:
            while True:
                if self._state is not None and self._state_read > since:
                    # Another caller's read began after ours was asked: as fresh.
                    return self._state
                failure = self._failure
                if failure is not None and self._failed_read > since:
                    # The read we waited on failed: so does this confirmation
                    # (a fresh exception, one per caller).
                    raise type(failure)(str(failure))
                if not self._reading:
                    number = self._begin()
                    break
                # A read is under way: if it began after ``since`` it decides
                # for us too; if before (perhaps before a resume was stored),
                # the next one does. Not on a hung database for good.
                left = deadline - time.monotonic()
                if left <= 0 or not self._lock.wait(left):
                    raise ControlStateUnavailableError(
                        "a read of the control log has been under way for more than "
                        f"{wait_seconds:g} s"
                    )
        return self._read(number)

    def current(self, *, fresh: bool = False) -> ControlState:
        """The state in force, read again if older than ``refresh_seconds`` (or ``fresh``).

        Blocking (it may read the database): call it off the event loop. One
        read at a time; while one is under way, other callers get the last
        verified state if it is within the bound instead of queueing (past
        the bound they wait for it, at most ``bound_seconds``). So the
        state may predate a statement already stored: to refuse a call, use
        :meth:`check` (or :meth:`confirm`), which confirms a halt first.

        Raises:
            ControlStateUnavailableError: the log could not be read for longer
                than ``bound_seconds``.
            ControlLogTamperedError: the log does not verify, or lost or
                changed a statement this watcher had seen.
        """
        with self._lock:
            state, age = self._cached(now_utc(self.clock))
            if state is not None and age < self.refresh_seconds and not fresh:
                return state
            within_bound = state is not None and age < self.bound_seconds
            if self._reading and within_bound:
                assert state is not None
                return state
            if not self._lock.wait_for(lambda: not self._reading, timeout=self.bound_seconds):
                raise ControlStateUnavailableError(
                    f"halt state unknown for more than {self.bound_seconds:g} s (a read of "
                    "the control log is under way and has not answered); refusing governed "
                    "bodies until the control log can be read"
                )
            # The read this caller waited for may have refreshed the view:
            # share it rather than read again.
            state, age = self._cached(now_utc(self.clock))
            if state is not None and age < self.refresh_seconds and not fresh:
                return state
            number = self._begin()
        try:
            return self._read(number)
        except ControlStateUnavailableError as exc:
            # The view's age when the read failed, not when this caller
            # arrived: a read that hung past the bound (a blackholed
            # database) must not hand out a view older than the bound.
            state, age = self._cached(now_utc(self.clock))
            if state is not None and age < self.bound_seconds:
                return state
            raise ControlStateUnavailableError(
                f"halt state unknown for more than {self.bound_seconds:g} s ({exc}); "
                "refusing governed bodies until the control log can be read"
            ) from None

    def _cached(self, now: datetime) -> tuple[ControlState | None, float]:
        with self._lock:
            if self._state is None or self._read_at is None:
                return None, float("inf")
            return self._state, (now - self._read_at).total_seconds()

    def _begin(self) -> int:
        # With ``_lock`` held and no read under way. Counted before the log
        # is asked, so a read numbered above a ticket began after that ticket.
        self._reads_begun += 1
        self._reading = self._reads_begun
        return self._reading

    def _read(self, number: int) -> ControlState:
        """Make read ``number`` (from :meth:`_begin`) and end it, waking its waiters.

        Raises only :class:`InfrastructureError` (unavailable or tampered).
        """
        try:
            # The time this read began, not when its caller arrived: the age
            # of the view is measured from here.
            now = now_utc(self.clock)
            state, digests = self._verified(now)
        except InfrastructureError as exc:
            with self._lock:
                self._reading = 0
                self._failed_read, self._failure = number, exc
                self._lock.notify_all()
            raise
        except BaseException:
            with self._lock:
                self._reading = 0
                self._lock.notify_all()
            raise
        with self._lock:
            self._seen = digests
            self._state = state
            self._state_read = number
            self._read_at = now
            self._reading = 0
            self._lock.notify_all()
        return state

    def _verified(self, now: datetime) -> tuple[ControlState, list[str]]:
        try:
            rows = self.log.rows()
        except InfrastructureError:
            raise
        except (TypeError, ValueError) as exc:
            # A row of the wrong type (a SQLite writer stored text, say):
            # the store holds what ecp never wrote there.
            raise ControlLogTamperedError(
                f"control log holds a row ecp did not write ({_fault(exc)})"
            ) from None
        except Exception as exc:  # any fault of the store: an outage
            log.error("reading the control log failed", exc_info=True)
            raise ControlStateUnavailableError(f"control log unreadable ({_fault(exc)})") from None
        for row in rows:
            _require_row(row)
        digests = rows_digests(rows)
        if digests[: len(self._seen)] != self._seen:
            lost = next(
                (i + 1 for i, d in enumerate(self._seen) if i >= len(digests) or digests[i] != d),
                len(self._seen),
            )
            raise ControlLogTamperedError(
                f"control statement #{lost} this gate verified is gone or changed "
                "(the control log was rolled back or rewritten)"
            )
        try:
            state = fold(rows, self.trust(), at=now)
        except InfrastructureError:
            raise
        except AuthorityError as exc:
            # The trust store itself could not be read: as unavailable.
            raise ControlStateUnavailableError(str(exc)) from None
        except Exception as exc:  # a fault while verifying: never a pass
            log.error("verifying the control log failed", exc_info=True)
            raise ControlStateUnavailableError(
                f"control log could not be verified ({_fault(exc)})"
            ) from None
        return state, digests

    def last_verified(self) -> ControlState | None:
        """The newest state this watcher verified, however old (``None``: never)."""
        return self._state

    def age(self) -> timedelta | None:
        """How long ago the state in use was read (``None``: never)."""
        if self._read_at is None:
            return None
        return now_utc(self.clock) - self._read_at


def _require_row(row: ControlRow) -> None:
    # Where the rows are consumed, whatever the store: a ``ControlLog`` other
    # than SqlControlLog may hand back what its database holds unconverted.
    if type(row.seq) is not int or not isinstance(row.envelope, bytes):
        raise ControlLogTamperedError(
            f"control log row {row.seq!r} holds a {type(row.envelope).__name__} envelope, "
            "not bytes (the log was written outside ecp)"
        )


def _fault(exc: BaseException) -> str:
    """``Type: first line`` of an unexpected exception (one line for a person)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
