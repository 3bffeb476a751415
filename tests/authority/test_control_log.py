"""The control log: signed, hash-chained halts and revocations, as the gate reads them.

Attacked from the database operator's chair (rows deleted, reordered,
replaced, forged), from a key holder without the halt role, and by cutting
the database away from a gate (real PostgreSQL behind a cuttable proxy).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import create_engine, text

from ecp.activities._control_watch import ControlWatch
from ecp.authority._control import ControlRow, envelope_digest, fold, sign_control
from ecp.authority._control_log import (
    InMemoryControlLog,
    SeqTakenError,
    SqlControlLog,
    issue_control,
)
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.authority.errors import (
    ControlLogTamperedError,
    ControlStatementError,
    ControlStateUnavailableError,
    GrantRevokedError,
    HaltedError,
)
from tests.workflows.tcp_proxy import TcpProxy

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=5"


class Clock:
    """A clock the test moves (time is an input, not a wait)."""

    def __init__(self) -> None:
        # Starts at the real time: statements are signed by the system clock.
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def halt_key() -> Ed25519FileSigner:
    return Ed25519FileSigner.generate()


@pytest.fixture
def other_key() -> Ed25519FileSigner:
    return Ed25519FileSigner.generate()


@pytest.fixture
def trust(halt_key: Ed25519FileSigner, other_key: Ed25519FileSigner) -> TrustStore:
    return TrustStore(
        [
            TrustedKey.create(halt_key.public_key, {KeyRole.HALT}, name="operator"),
            TrustedKey.create(other_key.public_key, {KeyRole.APPROVER}, name="carol"),
        ]
    )


@pytest.fixture(params=["memory", "sqlite"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> InMemoryControlLog | SqlControlLog:
    if request.param == "memory":
        return InMemoryControlLog()
    return SqlControlLog(f"sqlite:///{tmp_path / 'control.db'}")


def _issue(
    log: InMemoryControlLog | SqlControlLog,
    key: Ed25519FileSigner,
    trust: TrustStore,
    kind: str,
    target: str,
) -> None:
    issue_control(log, key, trust, kind=kind, target=target, reason="test")  # type: ignore[arg-type]


def test_halts_resumes_and_revocations_fold_in_order(
    log: InMemoryControlLog | SqlControlLog, halt_key: Ed25519FileSigner, trust: TrustStore
) -> None:
    _issue(log, halt_key, trust, "halt", "payout")
    _issue(log, halt_key, trust, "halt", "*")
    _issue(log, halt_key, trust, "revoke_grant", "g-1")
    state = fold(log.rows(), trust)
    assert set(state.halts) == {"payout", "*"}
    with pytest.raises(HaltedError, match=r"every governed action is halted"):
        state.check("deploy", "g-2")
    with pytest.raises(GrantRevokedError, match=r"grant g-1 was revoked"):
        state.check("deploy", "g-1")
    _issue(log, halt_key, trust, "resume", "payout")
    state = fold(log.rows(), trust)
    assert set(state.halts) == {"*"}  # resuming one action leaves --all standing
    _issue(log, halt_key, trust, "resume", "*")
    state = fold(log.rows(), trust)
    assert state.halts == {}
    state.check("payout", "g-2")  # nothing in force for this call
    with pytest.raises(GrantRevokedError):
        state.check("payout", "g-1")  # revocation is for good


def test_a_key_without_the_halt_role_cannot_issue_and_its_rows_do_nothing(
    log: InMemoryControlLog | SqlControlLog,
    other_key: Ed25519FileSigner,
    trust: TrustStore,
) -> None:
    with pytest.raises(ControlStatementError, match="may not sign as halt"):
        _issue(log, other_key, trust, "halt", "*")
    assert log.rows() == []
    # Written straight into the store, such a statement keeps its place but no effect.
    forged = sign_control(
        other_key, seq=1, prev="", kind="halt", target="*", reason="x", issued_at=Clock()()
    )
    log.append(ControlRow(1, forged))
    state = fold(log.rows(), trust)
    assert state.halts == {}
    assert state.ignored[0][0] == 1


def test_revoking_a_halt_key_undoes_its_halts_but_not_its_grant_revocations(
    log: InMemoryControlLog | SqlControlLog, halt_key: Ed25519FileSigner, trust: TrustStore
) -> None:
    _issue(log, halt_key, trust, "halt", "*")
    _issue(log, halt_key, trust, "revoke_grant", "g-leaked")
    assert fold(log.rows(), trust).halts
    revoked = trust.revoked(halt_key.key_id, datetime.now(UTC))
    state = fold(log.rows(), revoked)
    # A stolen key's halt --all ends with the key ...
    assert state.halts == {}
    # ... but rotating the key never brings a revoked grant back.
    assert set(state.revoked) == {"g-leaked"}


def test_statements_cannot_be_backdated_or_dated_ahead(
    log: InMemoryControlLog | SqlControlLog, halt_key: Ed25519FileSigner, trust: TrustStore
) -> None:
    clock = Clock()
    rows: list[ControlRow] = []
    for seq, (target, at) in enumerate(
        [
            ("a", clock.now),
            ("b", clock.now - timedelta(hours=1)),
            ("c", clock.now + timedelta(days=1)),
        ],
        start=1,
    ):
        prev = envelope_digest(rows[-1].envelope) if rows else ""
        env = sign_control(
            halt_key, seq=seq, prev=prev, kind="halt", target=target, reason="x", issued_at=at
        )
        rows.append(ControlRow(seq, env))
        log.append(rows[-1])
    state = fold(log.rows(), trust, at=clock.now)
    assert set(state.halts) == {"a"}
    assert [seq for seq, _ in state.ignored] == [2, 3]
    assert "before an earlier statement" in state.ignored[0][1]
    assert "in the future" in state.ignored[1][1]


def test_two_signers_cannot_take_one_place(
    log: InMemoryControlLog | SqlControlLog, halt_key: Ed25519FileSigner
) -> None:
    first = sign_control(
        halt_key, seq=1, prev="", kind="halt", target="a", reason="x", issued_at=Clock()()
    )
    log.append(ControlRow(1, first))
    with pytest.raises(SeqTakenError):
        log.append(ControlRow(1, first))


@pytest.fixture
def sqlite_log(tmp_path: Path) -> Iterator[tuple[SqlControlLog, str]]:
    url = f"sqlite:///{tmp_path / 'control.db'}"
    log = SqlControlLog(url)
    yield log, url
    log.dispose()


def _run_sql(url: str, statement: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(statement))
    engine.dispose()


@pytest.mark.parametrize(
    "rewrite",
    [
        "DELETE FROM ecp_control_log WHERE seq = 2",
        "UPDATE ecp_control_log SET seq = 9 WHERE seq = 3",
        "UPDATE ecp_control_log SET envelope = (SELECT envelope FROM ecp_control_log WHERE seq = 1)"
        " WHERE seq = 2",
    ],
    ids=["deleted", "moved", "replaced"],
)
def test_the_database_operator_cannot_rewrite_the_middle(
    sqlite_log: tuple[SqlControlLog, str],
    halt_key: Ed25519FileSigner,
    trust: TrustStore,
    rewrite: str,
) -> None:
    log, url = sqlite_log
    for target in ("a", "b", "c"):
        _issue(log, halt_key, trust, "halt", target)
    _run_sql(url, rewrite)
    with pytest.raises(ControlLogTamperedError):
        fold(log.rows(), trust)
    # Nobody signs on top of a rewritten log either.
    with pytest.raises(ControlLogTamperedError):
        _issue(log, halt_key, trust, "halt", "d")


def test_a_gate_notices_the_log_rolled_back_below_what_it_saw(
    sqlite_log: tuple[SqlControlLog, str], halt_key: Ed25519FileSigner, trust: TrustStore
) -> None:
    log, url = sqlite_log
    clock = Clock()
    watch = ControlWatch(log, lambda: trust, clock, refresh_seconds=1, bound_seconds=5)
    _issue(log, halt_key, trust, "halt", "payout")
    assert "payout" in watch.current().halts
    # Dropping the newest halt leaves a valid chain, but not the one this gate saw.
    _run_sql(url, "DELETE FROM ecp_control_log WHERE seq = 1")
    clock.advance(2)
    with pytest.raises(ControlLogTamperedError, match="#1 this gate verified is gone"):
        watch.current()


def test_a_resume_lifts_a_halt_for_the_next_check_however_fresh_the_gates_view(
    log: InMemoryControlLog | SqlControlLog, halt_key: Ed25519FileSigner, trust: TrustStore
) -> None:
    # A minute between reads and a clock that does not move: the view the
    # denial read is certainly still cached when the next call comes.
    watch = ControlWatch(log, lambda: trust, Clock(), refresh_seconds=60, bound_seconds=600)
    _issue(log, halt_key, trust, "halt", "payout")
    with pytest.raises(HaltedError, match="payout is halted"):
        watch.check("payout", "g-1")
    _issue(log, halt_key, trust, "resume", "payout")
    assert "payout" in watch.current().halts  # the cached view predates the resume ...
    watch.check("payout", "g-2")  # ... but a halt refuses only once a fresh read shows it
    assert watch.current().halts == {}  # and that read is the view from now on


def test_only_a_verified_newer_statement_lifts_a_halt(
    sqlite_log: tuple[SqlControlLog, str],
    halt_key: Ed25519FileSigner,
    other_key: Ed25519FileSigner,
    trust: TrustStore,
) -> None:
    log, url = sqlite_log
    watch = ControlWatch(log, lambda: trust, Clock(), refresh_seconds=60, bound_seconds=600)
    _issue(log, halt_key, trust, "halt", "payout")
    with pytest.raises(HaltedError):
        watch.check("payout", "g-1")
    # A resume signed by a key without the halt role: in the chain, no effect.
    rows = log.rows()
    forged = sign_control(
        other_key,
        seq=2,
        prev=envelope_digest(rows[-1].envelope),
        kind="resume",
        target="payout",
        reason="let me through",
        issued_at=Clock()(),
    )
    log.append(ControlRow(2, forged))
    with pytest.raises(HaltedError, match="payout is halted"):
        watch.check("payout", "g-1")
    # The database operator drops the halt: the confirming read does not
    # verify against what this gate saw, so the call is still refused, as
    # tampering (retryable: the body runs once the log is repaired), not halted.
    _run_sql(url, "DELETE FROM ecp_control_log")
    with pytest.raises(
        ControlLogTamperedError,
        match=r"payout is halted .*not re-confirmed: control statement #1 .* is gone",
    ) as refused:
        watch.check("payout", "g-1")
    assert refused.value.retryable


class _HeldLog:
    """A real control log whose next read takes what is stored, then waits (a slow database)."""

    def __init__(self, inner: SqlControlLog) -> None:
        self.inner = inner
        self.hold: threading.Event | None = None
        self.reading = threading.Event()

    def rows(self) -> list[ControlRow]:
        hold, self.hold = self.hold, None
        rows = self.inner.rows()
        if hold is not None:
            self.reading.set()
            hold.wait()
        return rows

    def append(self, row: ControlRow) -> None:
        self.inner.append(row)


def test_a_read_under_way_before_the_resume_does_not_confirm_a_halt(
    sqlite_log: tuple[SqlControlLog, str], halt_key: Ed25519FileSigner, trust: TrustStore
) -> None:
    inner, _ = sqlite_log
    log = _HeldLog(inner)
    clock = Clock()
    watch = ControlWatch(log, lambda: trust, clock, refresh_seconds=60, bound_seconds=600)
    _issue(inner, halt_key, trust, "halt", "payout")
    with pytest.raises(HaltedError):
        watch.check("payout", "g-1")
    clock.advance(61)  # the view is due for a read, still within the bound
    release = threading.Event()
    log.hold = release
    with ThreadPoolExecutor(2) as pool:
        try:
            # One caller's read has taken the log as it was, and is slow to return.
            slow = pool.submit(watch.current)
            assert log.reading.wait(60)
            _issue(inner, halt_key, trust, "resume", "payout")
            # Not willing to wait behind that read (a watchdog's bound): refused, retryably.
            cached = watch.last_verified()
            assert cached is not None
            with pytest.raises(
                ControlStateUnavailableError,
                match=r"payout is halted .*not re-confirmed: a read of the control log .* way",
            ):
                watch.confirm(cached, "payout", "g-2", since=watch.ticket(), wait_seconds=0)
            # A call that comes now is served the cached view (a read is under
            # way), which shows the halt; neither it nor the slow read, which
            # began before the resume, may refuse the call as halted.
            call = pool.submit(watch.check, "payout", "g-2")
        finally:
            release.set()  # a failed assertion must not leave the read held
        assert "payout" in slow.result(60).halts
        call.result(60)  # no HaltedError


def test_a_row_ecp_did_not_write_refuses_as_tampering_not_a_raw_error(
    sqlite_log: tuple[SqlControlLog, str], halt_key: Ed25519FileSigner, trust: TrustStore
) -> None:
    log, url = sqlite_log
    watch = ControlWatch(log, lambda: trust, Clock(), refresh_seconds=60, bound_seconds=600)
    _issue(log, halt_key, trust, "halt", "payout")
    with pytest.raises(HaltedError):
        watch.check("payout", "g-1")
    # A writer outside ecp stores the envelope as TEXT: the driver hands back
    # a str, which SqlControlLog.rows cannot convert (a TypeError).
    _run_sql(url, "UPDATE ecp_control_log SET envelope = CAST(envelope AS TEXT)")
    # Confirming the cached halt: a typed, retryable refusal naming the halt.
    with pytest.raises(
        ControlLogTamperedError, match=r"payout is halted .*not re-confirmed: .*did not write"
    ):
        watch.check("payout", "g-1")
    # And a plain refresh: typed too, never served from the cache.
    with pytest.raises(ControlLogTamperedError, match="did not write"):
        watch.current(fresh=True)


class _FlakyLog:
    """A real control log that fails each read with ``error`` while it is set, and counts reads.

    A failing read takes ``stall`` seconds of ``clock`` first, when both are
    set (the database answered nothing for that long).
    """

    def __init__(
        self, inner: InMemoryControlLog | SqlControlLog, clock: Clock | None = None
    ) -> None:
        self.inner = inner
        self.clock = clock
        self.stall = 0.0
        self.error: Exception | None = None
        self.reads = 0
        self.hold: threading.Event | None = None
        self.reading = threading.Event()

    def rows(self) -> list[ControlRow]:
        self.reads += 1
        hold, self.hold = self.hold, None
        if hold is not None:
            self.reading.set()
            hold.wait()
        if self.error is not None:
            if self.clock is not None:
                self.clock.advance(self.stall)
            raise self.error
        return self.inner.rows()

    def append(self, row: ControlRow) -> None:
        self.inner.append(row)


def test_any_fault_of_the_confirming_read_refuses_retryably(
    sqlite_log: tuple[SqlControlLog, str], halt_key: Ed25519FileSigner, trust: TrustStore
) -> None:
    inner, _ = sqlite_log
    log = _FlakyLog(inner)
    watch = ControlWatch(log, lambda: trust, Clock(), refresh_seconds=60, bound_seconds=600)
    _issue(inner, halt_key, trust, "halt", "payout")
    with pytest.raises(HaltedError):
        watch.check("payout", "g-1")
    log.error = RuntimeError("driver bug")  # not an InfrastructureError
    with pytest.raises(
        ControlStateUnavailableError,
        match=r"payout is halted .*not re-confirmed: .*RuntimeError: driver bug",
    ):
        watch.check("payout", "g-1")
    # Other actions still pass on the verified view (no read needed).
    watch.check("refund", "g-2")


@pytest.mark.parametrize("outage", [False, True], ids=["confirmed", "read-fails"])
def test_calls_waiting_to_confirm_a_halt_share_one_read(
    sqlite_log: tuple[SqlControlLog, str],
    halt_key: Ed25519FileSigner,
    trust: TrustStore,
    outage: bool,
) -> None:
    inner, _ = sqlite_log
    log = _FlakyLog(inner)
    watch = ControlWatch(log, lambda: trust, Clock(), refresh_seconds=60, bound_seconds=600)
    _issue(inner, halt_key, trust, "halt", "payout")
    with pytest.raises(HaltedError):
        watch.check("payout", "g-1")
    assert log.reads == 1
    cached = watch.last_verified()
    assert cached is not None
    callers = 50
    release = threading.Event()
    log.hold = release
    with ThreadPoolExecutor(callers + 1) as pool:
        try:
            # One confirming read is under way, and slow ...
            first = pool.submit(watch.check, "payout", "g-0")
            assert log.reading.wait(60)
            # ... 50 calls come while it runs (it began before they came, so
            # it cannot confirm for them): all of them share the next read,
            # what it shows or how it fails.
            since = watch.ticket()
            if outage:
                log.error = ControlStateUnavailableError("control log unavailable: timeout")
            waiting = [
                pool.submit(watch.confirm, cached, "payout", f"g-{i}", since=since)
                for i in range(callers)
            ]
        finally:
            release.set()
        for call in [first, *waiting]:
            if outage:
                with pytest.raises(ControlStateUnavailableError, match="not re-confirmed"):
                    call.result(60)
            else:
                with pytest.raises(HaltedError, match="payout is halted"):
                    call.result(60)
    # The held read, and one more for all 50 (not one each).
    assert log.reads == 3


def test_a_view_is_as_old_as_its_read_not_as_its_callers_wait(
    sqlite_log: tuple[SqlControlLog, str], halt_key: Ed25519FileSigner, trust: TrustStore
) -> None:
    inner, _ = sqlite_log
    log = _FlakyLog(inner)
    clock = Clock()
    watch = ControlWatch(log, lambda: trust, clock, refresh_seconds=60, bound_seconds=600)
    _issue(inner, halt_key, trust, "halt", "payout")
    with pytest.raises(HaltedError):
        watch.check("payout", "g-1")
    cached = watch.last_verified()
    assert cached is not None
    release = threading.Event()
    log.hold = release
    entered = threading.Event()

    def waiter(since: int) -> None:
        entered.set()
        watch.confirm(cached, "payout", "g-3", since=since)

    with ThreadPoolExecutor(2) as pool:
        try:
            first = pool.submit(watch.check, "payout", "g-2")
            assert log.reading.wait(60)
            second = pool.submit(waiter, watch.ticket())
            assert entered.wait(60)
            clock.advance(30)  # while the second caller waits behind the held read
        finally:
            release.set()
        for call in (first, second):
            with pytest.raises(HaltedError):
                call.result(60)
    # The second caller's read began after the held one ended: its view is
    # as old as that read, not 30 s older (the time it spent waiting).
    assert log.reads == 3
    assert watch.age() == timedelta(0)


@pytest.fixture
def pg_url() -> Iterator[str]:
    name = f"ecp_control_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


async def test_a_gate_cut_off_from_postgres_serves_its_view_only_within_the_bound(
    pg_url: str, halt_key: Ed25519FileSigner, trust: TrustStore
) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    log = SqlControlLog(f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/{pg_url}")
    clock = Clock()
    watch = ControlWatch(log, lambda: trust, clock, refresh_seconds=1, bound_seconds=5)
    try:
        await asyncio.to_thread(_issue, log, halt_key, trust, "halt", "payout")
        assert "payout" in (await asyncio.to_thread(watch.current)).halts
        await proxy.cut()
        clock.advance(3)  # stale, still within the bound: the last verified view
        assert "payout" in (await asyncio.to_thread(watch.current)).halts
        clock.advance(3)  # past the bound: no view at all, the gate refuses
        with pytest.raises(ControlStateUnavailableError, match="halt state unknown"):
            await asyncio.to_thread(watch.current)
        await proxy.start()
        assert "payout" in (await asyncio.to_thread(watch.current)).halts
    finally:
        await asyncio.to_thread(log.dispose)
        await proxy.cut()


async def test_a_halt_stands_while_the_log_cannot_be_read_to_confirm_it(
    pg_url: str, halt_key: Ed25519FileSigner, trust: TrustStore
) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    log = SqlControlLog(f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/{pg_url}")
    # The operator's own connection, which the cut does not touch.
    direct = SqlControlLog(f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_url}")
    watch = ControlWatch(log, lambda: trust, Clock(), refresh_seconds=60, bound_seconds=600)
    try:
        await asyncio.to_thread(_issue, direct, halt_key, trust, "halt", "payout")
        with pytest.raises(HaltedError):
            await asyncio.to_thread(watch.check, "payout", "g-1")
        await proxy.cut()
        await asyncio.to_thread(_issue, direct, halt_key, trust, "resume", "payout")
        # The resume is stored, but this gate cannot read it: fail-closed,
        # and retryable (an outage), since the halt may have been lifted.
        with pytest.raises(
            ControlStateUnavailableError, match=r"payout is halted .*not re-confirmed: control log"
        ) as refused:
            await asyncio.to_thread(watch.check, "payout", "g-1")
        assert refused.value.retryable
        await proxy.start()
        await asyncio.to_thread(watch.check, "payout", "g-1")
    finally:
        await asyncio.to_thread(log.dispose)
        await asyncio.to_thread(direct.dispose)
        await proxy.cut()


def test_a_read_that_fails_past_the_bound_does_not_hand_out_the_older_view(
    log: InMemoryControlLog | SqlControlLog, halt_key: Ed25519FileSigner, trust: TrustStore
) -> None:
    # The view says "not halted"; then the operator halts payout. A call 9 s
    # later (within the 10 s bound) starts a read that hangs 120 s and fails:
    # the view is then 129 s old and must not let the call through.
    clock = Clock()
    slow = _FlakyLog(log, clock)
    watch = ControlWatch(slow, lambda: trust, clock, refresh_seconds=1, bound_seconds=10)
    assert watch.current().halt_for("payout") is None
    _issue(log, halt_key, trust, "halt", "payout")
    clock.advance(9)
    slow.error = ControlStateUnavailableError("control log unavailable: connection timeout")
    slow.stall = 120
    with pytest.raises(ControlStateUnavailableError, match="halt state unknown"):
        watch.current()
    # A read that fails quickly within the bound still serves the last view.
    fresh = ControlWatch(slow, lambda: trust, clock, refresh_seconds=1, bound_seconds=10)
    failing, slow.error = slow.error, None
    assert fresh.current().halt_for("payout") is not None
    clock.advance(2)
    slow.error, slow.stall = failing, 0.5
    assert fresh.current().halt_for("payout") is not None


class _CountingCondition(threading.Condition):
    """The watch's condition, telling which threads wait on it."""

    def __init__(self) -> None:
        super().__init__(threading.RLock())
        self.waiting: set[int] = set()

    def wait(self, timeout: float | None = None) -> bool:
        me = threading.get_ident()
        self.waiting.add(me)
        try:
            return super().wait(timeout)
        finally:
            self.waiting.discard(me)


def test_callers_that_waited_for_a_read_share_the_view_it_left(
    log: InMemoryControlLog | SqlControlLog, trust: TrustStore
) -> None:
    # Past the bound, callers wait for the read under way; once it ends with
    # a fresh view they use it instead of each reading again.
    held = _FlakyLog(log)
    watch = ControlWatch(held, lambda: trust, Clock(), refresh_seconds=60, bound_seconds=600)
    cond = _CountingCondition()
    watch._lock = cond  # before first use: only to see who waits
    gate = threading.Event()
    held.hold = gate
    first = threading.Thread(target=watch.current)
    first.start()
    assert held.reading.wait(30)
    others = [threading.Thread(target=watch.current) for _ in range(5)]
    for t in others:
        t.start()
    deadline = time.monotonic() + 30
    while len(cond.waiting) < 5:  # every other caller is blocked on the read
        assert time.monotonic() < deadline, "the callers never waited"
        time.sleep(0.01)
    gate.set()
    for t in [first, *others]:
        t.join(30)
        assert not t.is_alive()
    assert held.reads == 1
