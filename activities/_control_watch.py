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
begun after the call arrived cannot be. If that read fails, the halt stands
(fail-closed): only a verified newer statement lifts a halt.

A watcher also remembers the digest of every statement it has verified:
a log that later lacks one of them, or holds another in its place, was
rolled back or rewritten, and the gate refuses until it is repaired.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ecp.authority._clock import Clock, now_utc
from ecp.authority._control import ControlState, fold
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
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _io: threading.Lock = field(init=False, default_factory=threading.Lock)

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
            HaltedError: the action, or every action, is halted (confirmed,
                or the confirming read failed: the halt stands).
            GrantRevokedError: the grant was revoked.
            ControlStateUnavailableError: see :meth:`current`.
            ControlLogTamperedError: see :meth:`current`.
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
        :meth:`current` just read the log) refuses at once; otherwise the log
        is read again first, after waiting at most ``wait_seconds`` (default
        ``bound_seconds``) for a read already under way. Revocations are
        never lifted, so they refuse from any view.

        Raises:
            HaltedError: the halt is in the fresh read, or that read could not
                be made (the log unreadable or tampered with, or a read under
                way for longer than ``wait_seconds``): the halt stands.
            GrantRevokedError: the grant was revoked.
        """
        try:
            state.check(action, grant_id)
        except HaltedError as halted:
            wait = self.bound_seconds if wait_seconds is None else wait_seconds
            try:
                fresh = self._read_since(since, wait)
            except InfrastructureError as exc:
                # Fail-closed: a halt this watcher verified is lifted only by
                # a verified newer statement, never by a read that failed.
                raise HaltedError(f"{halted} (not re-confirmed: {exc})") from None
            fresh.check(action, grant_id)

    def _read_since(self, since: int, wait_seconds: float) -> ControlState:
        """A verified state from a read begun after ticket ``since``."""
        now = now_utc(self.clock)
        # Wait for a read under way (it may have begun before the resume was
        # stored, so it cannot confirm), but not on a hung database for good.
        if not self._io.acquire(timeout=wait_seconds):
            raise ControlStateUnavailableError(
                f"another read of the control log is under way for more than {wait_seconds:g} s"
            )
        try:
            with self._lock:
                if self._state is not None and self._state_read > since:
                    # Another caller's read began after ours was asked: as fresh.
                    return self._state
            return self._read(now)
        finally:
            self._io.release()

    def current(self, *, fresh: bool = False) -> ControlState:
        """The state in force, read again if older than ``refresh_seconds`` (or ``fresh``).

        Blocking (it may read the database): call it off the event loop. One
        read at a time; while one is under way, other callers get the last
        verified state if it is within the bound instead of queueing. So the
        state may predate a statement already stored: to refuse a call, use
        :meth:`check` (or :meth:`confirm`), which confirms a halt first.

        Raises:
            ControlStateUnavailableError: the log could not be read for longer
                than ``bound_seconds``.
            ControlLogTamperedError: the log does not verify, or lost or
                changed a statement this watcher had seen.
        """
        now = now_utc(self.clock)
        state, age = self._cached(now)
        if state is not None and age < self.refresh_seconds and not fresh:
            return state
        within_bound = state is not None and age < self.bound_seconds
        if not self._io.acquire(blocking=not within_bound):
            assert state is not None
            return state
        try:
            return self._read(now)
        except ControlStateUnavailableError as exc:
            if within_bound:
                assert state is not None
                return state
            raise ControlStateUnavailableError(
                f"halt state unknown for more than {self.bound_seconds:g} s ({exc}); "
                "refusing governed bodies until the control log can be read"
            ) from None
        finally:
            self._io.release()

    def _cached(self, now: datetime) -> tuple[ControlState | None, float]:
        with self._lock:
            if self._state is None or self._read_at is None:
                return None, float("inf")
            return self._state, (now - self._read_at).total_seconds()

    def _read(self, now: datetime) -> ControlState:
        # Called with ``_io`` held. Counted before the log is asked, so a read
        # numbered above a ticket began after that ticket was taken.
        with self._lock:
            self._reads_begun += 1
            number = self._reads_begun
        rows = self.log.rows()
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
        except ControlLogTamperedError:
            raise
        except AuthorityError as exc:
            # The trust store itself could not be read: as unavailable.
            raise ControlStateUnavailableError(str(exc)) from None
        with self._lock:
            self._seen = digests
            self._state = state
            self._state_read = number
            self._read_at = now
        return state

    def last_verified(self) -> ControlState | None:
        """The newest state this watcher verified, however old (``None``: never)."""
        return self._state

    def age(self) -> timedelta | None:
        """How long ago the state in use was read (``None``: never)."""
        if self._read_at is None:
            return None
        return now_utc(self.clock) - self._read_at
