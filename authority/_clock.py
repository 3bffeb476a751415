"""Injected clocks: every time-dependent check asks a :data:`Clock`, never the OS.

Verification takes the clock as an argument so tests can pin time and so a
Temporal workflow can hand in ``workflow.now()`` where determinism matters.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ecp.authority.errors import ClockError

__all__ = ["Clock", "FixedClock", "now_utc", "system_clock"]

#: A zero-argument callable returning the current time, time-zone aware.
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The operating system's current time in UTC."""
    return datetime.now(UTC)


def now_utc(clock: Clock) -> datetime:
    """Ask ``clock`` for the time and normalise it to UTC.

    Raises:
        ClockError: the clock returned a naive datetime. Comparing a naive
            time with the aware times in signed artifacts would be a guess,
            and verification does not guess.
    """
    now = clock()
    if now.tzinfo is None or now.utcoffset() is None:
        raise ClockError("clock returned a datetime without a time zone")
    return now.astimezone(UTC)


class FixedClock:
    """A clock that stands still until told to move. For tests and replays."""

    __slots__ = ("_now",)

    def __init__(self, at: datetime) -> None:
        """Start at ``at``.

        Raises:
            ClockError: ``at`` has no time zone.
        """
        if at.tzinfo is None:
            raise ClockError("FixedClock needs a time-zone aware datetime")
        self._now = at.astimezone(UTC)

    def __call__(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        """Move the clock by ``delta`` (may be negative)."""
        self._now += delta

    def set(self, at: datetime) -> None:
        """Jump to ``at``.

        Raises:
            ClockError: ``at`` has no time zone.
        """
        if at.tzinfo is None:
            raise ClockError("FixedClock needs a time-zone aware datetime")
        self._now = at.astimezone(UTC)
