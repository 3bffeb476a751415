"""The watchdog's halt checks on a running body, against a real control log (SQLite).

Built directly, as the gate builds one, over a control log whose reads the
test can hang or spoil: a halt this gate verified must interrupt the body
whatever the database then does, and a resume it can read must not.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from temporalio.exceptions import CancelledError

from ecp.activities._control_watch import ControlWatch
from ecp.activities._watchdog import Watchdog
from ecp.authority._clock import FixedClock
from ecp.authority._control import ControlRow
from ecp.authority._control_log import SqlControlLog, issue_control
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.authority.errors import HaltedError

#: A hang guard, not a timing: a body interrupted as it must be stops long before.
_GUARD_BEATS = 1200
_BEAT_SECONDS = 0.05


class _HangingLog:
    """A real control log whose reads, once ``hang()`` was called, block until released."""

    def __init__(self, inner: SqlControlLog) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.hanging = threading.Event()
        self._hang = False

    def hang(self) -> None:
        self._hang = True

    def rows(self) -> list[ControlRow]:
        if self._hang:
            self.hanging.set()
            self.release.wait()
        return self.inner.rows()

    def append(self, row: ControlRow) -> None:
        self.inner.append(row)


@pytest.fixture
def keys() -> tuple[Ed25519FileSigner, Ed25519FileSigner]:
    return Ed25519FileSigner.generate(), Ed25519FileSigner.generate()


@pytest.fixture
def trust(keys: tuple[Ed25519FileSigner, Ed25519FileSigner]) -> TrustStore:
    halt, authority = keys
    return TrustStore(
        [
            TrustedKey.create(halt.public_key, {KeyRole.HALT}, name="operator"),
            TrustedKey.create(authority.public_key, {KeyRole.AUTHORITY}, name="authority"),
        ]
    )


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[tuple[SqlControlLog, str]]:
    url = f"sqlite:///{tmp_path / 'control.db'}"
    log = SqlControlLog(url)
    yield log, url
    log.dispose()


def _watchdog(
    watch: ControlWatch, trust: TrustStore, authority: Ed25519FileSigner, clock: FixedClock
) -> Watchdog:
    return Watchdog(
        action="payout",
        grant_id="g-1",
        issuer_key=TrustedKey.create(authority.public_key, {KeyRole.AUTHORITY}).key_id,
        controls=watch,
        trust=lambda: trust,
        clock=clock,
        lifetime_seconds=None,
        heartbeat_seconds=None,
        is_async=True,
        recheck_seconds=watch.refresh_seconds,
    )


async def _heartbeating_body(dog: Watchdog) -> str:
    # Heartbeats until interrupted (the watchdog cancels an async body), or
    # gives up after the guard and returns: the test then sees no verdict.
    for _ in range(_GUARD_BEATS):
        dog.on_heartbeat()
        await asyncio.sleep(_BEAT_SECONDS)
    return "ran to the end"


def _halt(log: SqlControlLog, key: Ed25519FileSigner, trust: TrustStore, kind: str) -> None:
    issue_control(log, key, trust, kind=kind, target="payout", reason="test")  # type: ignore[arg-type]


async def test_a_verified_halt_interrupts_the_body_while_the_log_hangs(
    sqlite: tuple[SqlControlLog, str],
    keys: tuple[Ed25519FileSigner, Ed25519FileSigner],
    trust: TrustStore,
) -> None:
    inner, _ = sqlite
    halt_key, authority = keys
    log = _HangingLog(inner)
    clock = FixedClock(datetime.now(UTC))
    watch = ControlWatch(log, lambda: trust, clock, refresh_seconds=0.2, bound_seconds=5)
    # The gate refused a call: the halt is verified and cached.
    _halt(inner, halt_key, trust, "halt")
    with pytest.raises(HaltedError):
        await asyncio.to_thread(watch.check, "payout", "g-0")
    # Then the database hangs, and the cache ages past its bound while the
    # body (admitted before the halt) keeps heartbeating.
    log.hang()
    dog = _watchdog(watch, trust, authority, clock)

    async def age_the_cache() -> None:
        await asyncio.to_thread(log.hanging.wait)
        clock.advance(timedelta(seconds=60))

    ager = asyncio.create_task(age_the_cache())
    try:
        with pytest.raises((CancelledError, asyncio.CancelledError)):
            await dog.run(_heartbeating_body(dog))
    finally:
        dog.stop()
        log.release.set()  # let the hung reads (threads) end
        await ager
    assert isinstance(dog.verdict, HaltedError), dog.verdict
    assert "payout is halted" in str(dog.verdict)
    assert "not re-confirmed" in str(dog.verdict)


async def test_a_verified_halt_interrupts_the_body_when_the_log_holds_garbage(
    sqlite: tuple[SqlControlLog, str],
    keys: tuple[Ed25519FileSigner, Ed25519FileSigner],
    trust: TrustStore,
) -> None:
    log, url = sqlite
    halt_key, authority = keys
    clock = FixedClock(datetime.now(UTC))
    watch = ControlWatch(log, lambda: trust, clock, refresh_seconds=0.2, bound_seconds=600)
    _halt(log, halt_key, trust, "halt")
    with pytest.raises(HaltedError):
        await asyncio.to_thread(watch.check, "payout", "g-0")
    # A writer outside ecp stores the envelope as TEXT: the confirming read
    # fails with a TypeError inside SqlControlLog.rows.
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE ecp_control_log SET envelope = CAST(envelope AS TEXT)"))
    engine.dispose()
    dog = _watchdog(watch, trust, authority, clock)
    try:
        with pytest.raises((CancelledError, asyncio.CancelledError)):
            await dog.run(_heartbeating_body(dog))
    finally:
        dog.stop()
    assert isinstance(dog.verdict, HaltedError), dog.verdict
    assert "did not write" in str(dog.verdict)


async def test_a_resume_the_watchdog_can_read_interrupts_nothing(
    sqlite: tuple[SqlControlLog, str],
    keys: tuple[Ed25519FileSigner, Ed25519FileSigner],
    trust: TrustStore,
) -> None:
    log, _ = sqlite
    halt_key, authority = keys
    clock = FixedClock(datetime.now(UTC))  # never moves: the cached halt stays "fresh"
    watch = ControlWatch(log, lambda: trust, clock, refresh_seconds=60, bound_seconds=600)
    _halt(log, halt_key, trust, "halt")
    with pytest.raises(HaltedError):
        await asyncio.to_thread(watch.check, "payout", "g-0")
    _halt(log, halt_key, trust, "resume")
    dog = _watchdog(watch, trust, authority, clock)

    async def body() -> str:
        # Heartbeat until a watchdog re-check has read the resume (the cached
        # view changes only by a confirming read here), then a few more.
        for _ in range(_GUARD_BEATS):
            dog.on_heartbeat()
            await asyncio.sleep(_BEAT_SECONDS)
            state = watch.last_verified()
            if state is not None and not state.halts:
                break
        for _ in range(5):
            dog.on_heartbeat()
            await asyncio.sleep(_BEAT_SECONDS)
        return "done"

    try:
        assert await dog.run(body()) == "done"
    finally:
        dog.stop()
    assert dog.verdict is None
    state = watch.last_verified()
    assert state is not None
    assert not state.halts
