"""Governed while it runs: re-checking a body's grant at each heartbeat.

The gate lets a body start only under a verified grant; a :class:`Watchdog`
keeps asking while it runs. At each heartbeat the body sends (and on a timer
for what needs no heartbeat: the grant's execution lifetime, and the longest
silence a long-running action may keep), it checks, off the body's thread:

* a halt of the action, or a revocation of the grant (the control log);
* a revocation of the authority key that signed the grant (the trust store);
* the execution lifetime the policy signed into the grant;
* for actions the policy marks long-running (``@heartbeat``), that the body
  did heartbeat within that many seconds.

The first that fails becomes the *verdict*. An async body is cancelled at
once (it sees ``CancelledError``, as for a Temporal cancellation); a sync
body, whose thread cannot be stopped from outside, gets ``CancelledError``
raised out of its next ``activity.heartbeat()`` call.

Besides heartbeats, the watchdog re-checks every ``recheck_seconds``, so a
body that heartbeats rarely (or an async one that never does) is reached
too. A body that returns although it was interrupted (it swallowed the
cancellation) has its result withheld and recorded as interrupted.

An outage of the control log does not interrupt a body that was admitted:
an unknown state is not a revocation. The last state this gate verified
still holds (a halt it saw is not undone by an outage or a rollback), the
trust store is checked on its own, and the gate refuses *new* bodies past
its bound (see :mod:`ecp.activities._control_watch`).

A halt found in the cached view is confirmed by a read begun after the
re-check was asked before it interrupts (so a resume stored meanwhile
interrupts nothing). That read failing, hanging, or the re-check failing in
any other way interrupts the body if the last verified state halts its
action or revokes its grant: fail-closed, without waiting on the database.
A re-check while such a halt is known is abandoned after
``max(2 * recheck_seconds, 1 s)``, any other after 10 s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from temporalio.exceptions import CancelledError

from ecp.activities._control_watch import ControlWatch
from ecp.authority._clock import Clock, now_utc
from ecp.authority._truststore import KeyRole, TrustStore
from ecp.authority.errors import (
    AuthorityError,
    ExecutionInterruptedError,
    GrantRevokedError,
    HaltedError,
    InfrastructureError,
)

__all__ = ["HeartbeatMissingError", "LifetimeExceededError", "Watchdog"]

log = logging.getLogger("ecp.gate")

#: A re-check that has not answered in this long is abandoned (and logged).
_CHECK_TIMEOUT_SECONDS = 10.0
#: While the last verified state halts the body, a re-check answers within
#: this many re-check intervals (and at least this many seconds) or the body
#: is interrupted: the confirming read must not hold a halted body for long.
_HALTED_CHECK_INTERVALS = 2.0
_HALTED_CHECK_MIN_SECONDS = 1.0


class LifetimeExceededError(ExecutionInterruptedError):
    """The body ran past the execution lifetime its grant allows."""

    code = "lifetime_exceeded"


class HeartbeatMissingError(ExecutionInterruptedError):
    """A long-running body went longer without a heartbeat than its policy allows."""

    code = "heartbeat_missing"


@dataclass
class Watchdog:
    """Watches one admitted body; see the module docstring."""

    action: str
    grant_id: str
    issuer_key: str
    controls: ControlWatch | None
    trust: Callable[[], TrustStore]
    clock: Clock
    lifetime_seconds: float | None
    heartbeat_seconds: int | None
    is_async: bool
    #: Re-check at least this often without a heartbeat (seconds).
    recheck_seconds: float = 2.0
    #: Why the body was interrupted (``None`` while its grant holds).
    verdict: AuthorityError | None = field(init=False, default=None)
    _started: datetime = field(init=False)
    _last_beat: datetime = field(init=False)
    _body: asyncio.Future[Any] | None = field(init=False, default=None)
    _checking: asyncio.Task[None] | None = field(init=False, default=None)
    _timer: asyncio.Task[None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._started = self._last_beat = now_utc(self.clock)

    async def run(self, body: Awaitable[Any]) -> Any:
        """Await ``body``, interrupting it when the verdict falls.

        Raises:
            BaseException: whatever the body raised; after an interruption,
                ``CancelledError`` (and :attr:`verdict` says why).
        """
        fut = asyncio.ensure_future(body)
        self._body = fut
        self._timer = asyncio.create_task(self._time())
        try:
            # Not ``await fut`` alone: a Temporal cancellation of this task
            # must reach the body too, and ensure_future detached it.
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            if not fut.done():
                fut.cancel()
                await asyncio.wait([fut])
            raise

    def stop(self) -> None:
        """The body is over: stop the timer and any check in flight."""
        for task in (self._timer, self._checking):
            if task is not None and not task.done():
                task.cancel()

    def on_heartbeat(self) -> None:
        """Called for each heartbeat of the body (on the worker's event loop).

        Raises:
            CancelledError: the body was interrupted; this is how a sync body
                learns it.
        """
        if self.verdict is not None:
            raise CancelledError(f"interrupted: {self.verdict}")
        self._last_beat = now_utc(self.clock)
        self._schedule_check()

    def _schedule_check(self) -> None:
        if self._checking is None or self._checking.done():
            self._checking = asyncio.get_running_loop().create_task(self._check())

    async def _check(self) -> None:
        # Bounded: a database that hangs must not leave the body unchecked
        # for good (the next heartbeat or tick starts a fresh check), and
        # not hold a body whose halt this gate already verified.
        timeout = _CHECK_TIMEOUT_SECONDS
        if self._standing() is not None:
            timeout = min(
                timeout,
                max(_HALTED_CHECK_INTERVALS * self.recheck_seconds, _HALTED_CHECK_MIN_SECONDS),
            )
        try:
            await asyncio.wait_for(asyncio.to_thread(self._recheck), timeout)
        except InfrastructureError as exc:
            self._fail_closed(str(exc))
        except AuthorityError as exc:
            self._interrupt(exc)
        except TimeoutError:
            log.error("re-check of grant %s timed out", self.grant_id)
            self._fail_closed(f"the re-check did not answer within {timeout:g} s")
        except Exception as exc:
            # A fault is not a pass: what was verified last still holds.
            log.error("re-check of grant %s failed", self.grant_id, exc_info=True)
            self._fail_closed(f"the re-check failed: {type(exc).__name__}: {exc}")

    def _standing(self) -> AuthorityError | None:
        """What the last verified control state holds against this body (no read)."""
        state = self.controls.last_verified() if self.controls is not None else None
        if state is None:
            return None
        try:
            state.check(self.action, self.grant_id)
        except (HaltedError, GrantRevokedError) as exc:
            return exc
        return None

    def _fail_closed(self, why: str) -> None:
        """The re-check could not answer: interrupt on a halt or revocation already verified."""
        held = self._standing()
        if held is not None:
            self._interrupt(type(held)(f"{held} (not re-confirmed: {why})"))

    def _recheck(self) -> None:
        """The checks that need the database or the trust store (in a thread).

        Each source separately, so that one unavailable leaves the other in force.
        """
        if self.controls is not None:
            since = self.controls.ticket()
            try:
                state = self.controls.current()
            except InfrastructureError as exc:
                # Unknown now: the last state this gate verified still holds
                # (a halt it saw is not undone by an outage or a rollback),
                # without waiting on another read of a log that just failed.
                log.error("could not re-read the halt list for grant %s: %s", self.grant_id, exc)
                held = self._standing()
                if held is not None:
                    raise type(held)(str(held)) from None
            else:
                # A halt this very call read interrupts at once; one from the
                # cache is confirmed by one more read first, so a halt lifted
                # meanwhile interrupts nothing.
                try:
                    self.controls.confirm(
                        state,
                        self.action,
                        self.grant_id,
                        since=since,
                        wait_seconds=self.recheck_seconds,
                    )
                except InfrastructureError as exc:
                    # The confirming read failed (or waited behind another
                    # for longer than a re-check interval): the verified halt
                    # stands. The message names it and why it is not re-confirmed.
                    raise HaltedError(str(exc)) from None
        try:
            self.trust().require(self.issuer_key, role=KeyRole.AUTHORITY, at=now_utc(self.clock))
        except InfrastructureError as exc:
            log.error("could not re-read the trust store for grant %s: %s", self.grant_id, exc)

    async def _time(self) -> None:
        """Deadlines that need no heartbeat, and a re-check every few seconds.

        The periodic re-check covers bodies that heartbeat rarely or never: an
        async one is cancelled as soon as it fails; a sync one learns at its
        next heartbeat, or has its result withheld when it returns.
        """
        step = 0.25
        last_check = now_utc(self.clock)
        while self.verdict is None:
            now = now_utc(self.clock)
            ran = (now - self._started).total_seconds()
            if self.lifetime_seconds is not None and ran >= self.lifetime_seconds:
                self._interrupt(
                    LifetimeExceededError(
                        f"grant {self.grant_id} allows {self.lifetime_seconds:g} s of execution "
                        f"and the body ran {ran:.1f} s"
                    )
                )
                return
            silent = (now - self._last_beat).total_seconds()
            if self.heartbeat_seconds is not None and silent > self.heartbeat_seconds:
                self._interrupt(
                    HeartbeatMissingError(
                        f"{self.action} is long-running and must heartbeat every "
                        f"{self.heartbeat_seconds} s; none for {silent:.1f} s"
                    )
                )
                return
            if (now - last_check).total_seconds() >= self.recheck_seconds:
                last_check = now
                self._schedule_check()
            await asyncio.sleep(step)

    def _interrupt(self, cause: AuthorityError) -> None:
        if self.verdict is not None:
            return
        self.verdict = cause
        if self.is_async and self._body is not None and not self._body.done():
            self._body.cancel()
