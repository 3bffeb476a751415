"""Single-use store on real SQLite and real PostgreSQL, including concurrent processes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import Connection, create_engine, event

from ecp.authority._group_commit import GroupCommit, Pending
from ecp.authority._replay import (
    AttemptLease,
    ConsumedGrant,
    InMemoryReplayGuard,
    ReplayGuard,
    SqlReplayGuard,
    _Op,
    request_key,
)
from ecp.authority.errors import (
    AttemptInProgressError,
    GrantAttemptsExhaustedError,
    GrantReplayedError,
    OutcomeUnknownError,
    ReplayStoreUnavailableError,
    RequestReplayedError,
    UnstorableIdError,
)

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=5"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database for this session, dropped afterwards."""
    name = f"ecp_authority_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL at 127.0.0.1:5432 (user postgres, db test) is required for the "
            f"replay-store tests and is not reachable: {exc}. Start it (./test does) and rerun."
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'replay.db'}"
    return str(request.getfixturevalue("pg_url"))


def _exercise(guard: ReplayGuard) -> None:
    gid = str(uuid.uuid4())
    guard.consume(gid, 1, 3)
    with pytest.raises(GrantReplayedError) as info:
        guard.consume(gid, 1, 3)
    assert type(info.value) is GrantReplayedError
    guard.consume(gid, 2, 3)
    guard.consume(gid, 3, 3)
    with pytest.raises(GrantAttemptsExhaustedError):
        guard.consume(gid, 4, 3)
    with pytest.raises(GrantReplayedError):
        guard.consume(gid, 0, 3)
    guard.consume(str(uuid.uuid4()), 1, 1)


def _budget(guard: ReplayGuard) -> None:
    # Attempts refused before the body ran (an outage) never consumed a use:
    # the first use may come at attempt 3, and the budget still allows two.
    gid = str(uuid.uuid4())
    guard.consume(gid, 3, 2)
    guard.consume(gid, 5, 2)
    with pytest.raises(GrantAttemptsExhaustedError):
        guard.consume(gid, 6, 2)
    with pytest.raises(GrantReplayedError):
        guard.consume(gid, 5, 2)


def test_in_memory_budget_counts_uses_not_attempt_numbers() -> None:
    _budget(InMemoryReplayGuard())


def test_sql_budget_counts_uses_not_attempt_numbers(store_url: str) -> None:
    guard = SqlReplayGuard(store_url)
    try:
        _budget(guard)
    finally:
        guard.dispose()


def _closing(guard: ReplayGuard) -> None:
    # After a completed body the grant is spent, whatever attempts remain.
    gid = str(uuid.uuid4())
    guard.consume(gid, 1, 3)
    guard.close(gid, 3)
    with pytest.raises(GrantAttemptsExhaustedError):
        guard.consume(gid, 2, 3)
    guard.close(gid, 3)  # closing twice is harmless


def test_in_memory_close_spends_the_grant() -> None:
    _closing(InMemoryReplayGuard())


def test_sql_close_spends_the_grant(store_url: str) -> None:
    guard = SqlReplayGuard(store_url)
    try:
        _closing(guard)
    finally:
        guard.dispose()


def _releasing(guard: ReplayGuard) -> None:
    # An attempt whose body never started gives its use (and lease) back: a
    # one-use grant can still run once. An attempt that ended keeps its use,
    # and the slots close() spent are never given back.
    until = datetime.now(UTC) + timedelta(seconds=60)
    gid = str(uuid.uuid4())
    guard.admit(["r1"], gid, 1, until, 1)
    guard.release(gid, 1)
    guard.admit(["r1"], gid, 2, until, 1)  # the lease is free and the use is back
    guard.end(gid, 2)
    with pytest.raises(GrantAttemptsExhaustedError):
        guard.admit(["r1"], gid, 3, until, 1)
    guard.release(gid, 2)  # ended: its use stays taken
    with pytest.raises(GrantAttemptsExhaustedError):
        guard.admit(["r1"], gid, 4, until, 1)
    closed = str(uuid.uuid4())
    guard.admit([], closed, 1, until, 2)
    guard.end(closed, 1, completed=True)
    guard.close(closed, 2)
    for slot in (1, 2):
        guard.release(closed, -slot)
    with pytest.raises(GrantAttemptsExhaustedError):
        guard.admit([], closed, 2, until, 2)


def test_in_memory_release_gives_back_an_unstarted_use() -> None:
    _releasing(InMemoryReplayGuard())


def test_sql_release_gives_back_an_unstarted_use(store_url: str) -> None:
    guard = SqlReplayGuard(store_url)
    try:
        _releasing(guard)
    finally:
        guard.dispose()


def test_in_memory_guard() -> None:
    _exercise(InMemoryReplayGuard())


def test_sql_guard(store_url: str) -> None:
    guard = SqlReplayGuard(store_url)
    try:
        assert isinstance(guard, ReplayGuard)
        _exercise(guard)
    finally:
        guard.dispose()


def test_record_survives_a_new_process_view(store_url: str) -> None:
    gid = str(uuid.uuid4())
    a = SqlReplayGuard(store_url)
    a.consume(gid, 1, 1)
    a.dispose()
    b = SqlReplayGuard(store_url)
    try:
        with pytest.raises(GrantReplayedError):
            b.consume(gid, 1, 1)
    finally:
        b.dispose()


def _race(
    url: str,
    grant_ids: list[str],
    start: multiprocessing.synchronize.Event,
    out: multiprocessing.Queue,
) -> None:  # type: ignore[name-defined]
    guard = SqlReplayGuard(url)
    start.wait()
    won: list[str] = []
    for gid in grant_ids:
        try:
            guard.consume(gid, 1, 1)
        except GrantReplayedError:
            continue
        won.append(gid)
    guard.dispose()
    out.put(won)


def test_concurrent_processes_consume_each_grant_once(store_url: str) -> None:
    # Create the table up front so the race is about inserts only.
    SqlReplayGuard(store_url).consume(str(uuid.uuid4()), 1, 1)
    ctx = multiprocessing.get_context("spawn")
    grant_ids = [str(uuid.uuid4()) for _ in range(40)]
    start = ctx.Event()
    out = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(store_url, grant_ids, start, out)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    winners = [gid for r in results for gid in r]
    assert sorted(winners) == sorted(grant_ids)  # every grant used exactly once overall


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
        "sqlite:////proc/no/such/dir/replay.db",
    ],
    ids=["postgres-down", "sqlite-unwritable"],
)
def test_unreachable_store_is_retryable_and_refuses(url: str) -> None:
    guard = SqlReplayGuard(url)
    with pytest.raises(ReplayStoreUnavailableError) as info:
        guard.consume(str(uuid.uuid4()), 1, 1)
    assert info.value.retryable
    # Uses are counted in the store: without it nothing is known, so nothing runs.
    with pytest.raises(ReplayStoreUnavailableError):
        guard.consume(str(uuid.uuid4()), 2, 1)


def _race_attempts(
    url: str,
    grant_id: str,
    attempts: list[int],
    start: multiprocessing.synchronize.Event,
    out: multiprocessing.Queue,
) -> None:  # type: ignore[name-defined]
    guard = SqlReplayGuard(url)
    start.wait()
    won: list[int] = []
    for attempt in attempts:
        try:
            guard.consume(grant_id, attempt, 3)
        except (GrantReplayedError, GrantAttemptsExhaustedError):
            continue
        won.append(attempt)
    guard.dispose()
    out.put(won)


def test_concurrent_attempts_never_exceed_the_budget(store_url: str) -> None:
    # Four processes race over attempts 1..8 of one grant allowing 3 uses.
    SqlReplayGuard(store_url).consume(str(uuid.uuid4()), 1, 1)
    ctx = multiprocessing.get_context("spawn")
    gid = str(uuid.uuid4())
    start = ctx.Event()
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_race_attempts, args=(store_url, gid, list(range(1, 9)), start, out))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    start.set()
    won = [a for _ in procs for a in out.get(timeout=120)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(won) == 3
    assert len(set(won)) == 3


def _claims(guard: ReplayGuard) -> None:
    req = request_key("default", f"wf-{uuid.uuid4()}", "payout", "execute:payout")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    guard.claim(req, first)
    guard.claim(req, first)  # the owner's own retries
    with pytest.raises(RequestReplayedError, match=first):
        guard.claim(req, second)
    # Another request is unaffected.
    guard.claim(request_key("default", "other", "payout", "execute:payout"), second)


def test_in_memory_one_grant_per_request() -> None:
    _claims(InMemoryReplayGuard())


def test_sql_one_grant_per_request(store_url: str) -> None:
    guard = SqlReplayGuard(store_url)
    try:
        _claims(guard)
    finally:
        guard.dispose()


def test_request_keys_do_not_collide_across_field_boundaries() -> None:
    assert request_key("a", "b c", "d", "e") != request_key("a b", "c", "d", "e")
    assert request_key("ns", "wf", "payout", "x") != request_key("ns", "wf", "payou", "tx")
    assert request_key("ns", "wf ", "payout", "x") != request_key("ns", "wf", "payout", "x")


def _leases(guard: ReplayGuard) -> None:
    gid = str(uuid.uuid4())
    now = datetime.now(UTC)
    guard.begin(gid, 1, now + timedelta(minutes=5))
    guard.begin(gid, 1, now + timedelta(minutes=5))  # the holder itself
    with pytest.raises(AttemptInProgressError, match="attempt 1 of grant"):
        guard.begin(gid, 2, now + timedelta(minutes=5))
    guard.end(gid, 2)  # not the holder: no effect
    with pytest.raises(AttemptInProgressError):
        guard.begin(gid, 2, now + timedelta(minutes=5))
    guard.end(gid, 1)
    guard.begin(gid, 2, now + timedelta(minutes=5))
    # An expired lease (a crashed worker) is taken over.
    other = str(uuid.uuid4())
    guard.begin(other, 1, now - timedelta(seconds=1))
    guard.begin(other, 2, now + timedelta(minutes=5))
    assert AttemptInProgressError.retryable


def test_in_memory_attempts_do_not_overlap() -> None:
    _leases(InMemoryReplayGuard())


def test_sql_attempts_do_not_overlap(store_url: str) -> None:
    guard = SqlReplayGuard(store_url)
    try:
        _leases(guard)
    finally:
        guard.dispose()


# --- admit: the gate's whole admission as one atomic step ------------------


def _admission(guard: ReplayGuard) -> None:
    soon = datetime.now(UTC) + timedelta(minutes=5)
    req = request_key("default", f"wf-{uuid.uuid4()}", "payout", "execute:payout")
    signed = request_key("default", "signed-request", str(uuid.uuid4()), "")
    gid, other = str(uuid.uuid4()), str(uuid.uuid4())
    guard.admit([req, signed], gid, 1, soon, 2)
    with pytest.raises(GrantReplayedError):
        guard.admit([req, signed], gid, 1, soon, 2)  # the same attempt again
    with pytest.raises(AttemptInProgressError):
        guard.admit([req], gid, 2, soon, 2)  # attempt 1 still holds the lease
    guard.end(gid, 1)
    guard.admit([req], gid, 2, soon, 2)
    guard.end(gid, 2)
    with pytest.raises(GrantAttemptsExhaustedError):
        guard.admit([req], gid, 3, soon, 2)
    # Another grant for the same request (a reset, a re-submission) is refused ...
    with pytest.raises(RequestReplayedError, match=gid):
        guard.admit([signed], other, 1, soon, 1)
    # ... and the refusal recorded nothing: all or nothing.
    fresh = request_key("default", f"wf-{uuid.uuid4()}", "payout", "execute:payout")
    with pytest.raises(RequestReplayedError):
        guard.admit([fresh, signed], other, 1, soon, 1)
    guard.claim(fresh, gid)  # fresh was not claimed by the refused admission
    guard.begin(other, 5, soon)  # nor was other's lease taken
    guard.end(other, 5)
    guard.consume(other, 1, 1)  # nor its slot
    # An exhausted grant's refusal leaves no lease behind either.
    with pytest.raises(GrantAttemptsExhaustedError):
        guard.admit([req], gid, 4, soon, 2)
    guard.begin(gid, 9, soon)


def test_in_memory_admission_is_all_or_nothing() -> None:
    _admission(InMemoryReplayGuard())


def test_sql_admission_is_all_or_nothing(store_url: str) -> None:
    guard = SqlReplayGuard(store_url)
    try:
        _admission(guard)
    finally:
        guard.dispose()


def _race_admit(
    url: str,
    grant_ids: list[str],
    start: multiprocessing.synchronize.Event,
    out: multiprocessing.Queue,
) -> None:  # type: ignore[name-defined]
    guard = SqlReplayGuard(url)
    start.wait()
    won: list[str] = []
    soon = datetime.now(UTC) + timedelta(minutes=5)
    for gid in grant_ids:
        # Every process tries attempt 1 and 2 of every grant (one use each,
        # one request each): only one admission per grant may win.
        for attempt in (1, 2):
            try:
                guard.admit([f"req-{gid}"], gid, attempt, soon, 1)
            except (GrantReplayedError, AttemptInProgressError):
                continue
            won.append(gid)
    guard.dispose()
    out.put(won)


def test_concurrent_processes_admit_each_grant_once(store_url: str) -> None:
    guard = SqlReplayGuard(store_url)
    guard.consume(str(uuid.uuid4()), 1, 1)  # tables first: the race is about admissions
    guard.dispose()
    ctx = multiprocessing.get_context("spawn")
    grant_ids = [str(uuid.uuid4()) for _ in range(30)]
    start = ctx.Event()
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_race_admit, args=(store_url, grant_ids, start, out)) for _ in range(8)
    ]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    winners = [gid for r in results for gid in r]
    assert sorted(winners) == sorted(grant_ids)  # each grant admitted exactly once overall


def test_sql_admission_commits_whoever_keeps_frames_alive(store_url: str) -> None:
    # A profiler, a tracer or a held traceback keeps finished frames, and with
    # them the statement results they held. An admission must not depend on
    # the interpreter freeing those first: on SQLite an unread RETURNING
    # statement stays in progress and the commit is refused, so every governed
    # call would be turned away as an outage while such a tool runs.
    guard = SqlReplayGuard(store_url)
    gid = str(uuid.uuid4())
    soon = datetime.now(UTC) + timedelta(minutes=5)
    kept: list[object] = []

    def keep(frame: object, event: str, arg: object) -> None:
        if event == "return":
            kept.append(frame)

    try:
        guard.consume(str(uuid.uuid4()), 1, 1)  # tables first
        sys.setprofile(keep)
        try:
            guard.admit([f"req-{gid}"], gid, 1, soon, 1)
        finally:
            sys.setprofile(None)
            kept.clear()
        # It was admitted, and for good: the same attempt again is a replay.
        with pytest.raises(GrantReplayedError):
            guard.admit([f"req-{gid}"], gid, 1, soon, 1)
    finally:
        guard.dispose()


# --- group commit: one process's concurrent admissions share a transaction --


def test_concurrent_callers_in_one_process_take_exactly_the_budget(store_url: str) -> None:
    # 32 threads of one worker race for one grant allowing 3 uses: attempts
    # 1..16, each asked twice. The leases lapse at once (until is in the
    # past), so only the use budget and the attempt numbers decide.
    guard = SqlReplayGuard(store_url)
    gid = str(uuid.uuid4())
    lapsed = datetime.now(UTC) - timedelta(seconds=1)
    start = threading.Barrier(32)
    won: list[int] = []
    refused: list[Exception] = []
    lock = threading.Lock()

    def one(attempt: int) -> None:
        start.wait()
        try:
            guard.admit([f"req-{gid}"], gid, attempt, lapsed, 3)
        except (GrantReplayedError, AttemptInProgressError) as exc:
            with lock:
                refused.append(exc)
            return
        with lock:
            won.append(attempt)

    try:
        guard.consume(str(uuid.uuid4()), 1, 1)  # tables first
        threads = [threading.Thread(target=one, args=(1 + i % 16,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 3
        assert len(set(won)) == 3
        assert len(refused) == 29
        for exc in refused:
            if isinstance(exc, OutcomeUnknownError):
                # Every use taken, none ended: exactly the winners are unended.
                assert sorted(exc.attempts) == sorted(won)
                assert exc.completed == ()
            else:
                assert type(exc) is GrantReplayedError  # the same attempt twice
        # And the store holds exactly those uses.
        for attempt in won:
            with pytest.raises(GrantReplayedError):
                guard.admit([f"req-{gid}"], gid, attempt, lapsed, 3)
        assert guard.unfinished(gid) == (tuple(sorted(won)), ())
    finally:
        guard.dispose()


def _hold_the_leader(guard: SqlReplayGuard) -> tuple[threading.Event, threading.Thread]:
    """Make one batch run and block inside it, so later callers queue behind it."""
    release, inside = threading.Event(), threading.Event()

    def blocking(conn: Connection) -> None:
        inside.set()
        release.wait()

    op = _Op("", blocking)
    leader = threading.Thread(target=guard._group.submit, args=(op,))
    leader.start()
    inside.wait()
    return release, leader


def _queued(guard: SqlReplayGuard) -> int:
    with guard._group._lock:
        return len(guard._group._queue)


def _one_batch(
    guard: SqlReplayGuard, calls: list[Callable[[], None]]
) -> tuple[list[BaseException | None], int]:
    """Run ``calls`` from threads queued in this order, then as one batch.

    Returns each call's outcome (None: it returned) and how many commits the
    store saw for them (one when they shared a batch).
    """
    commits = 0

    def count(conn: object) -> None:
        nonlocal commits
        commits += 1

    release, leader = _hold_the_leader(guard)
    outcomes: list[BaseException | None] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            calls[i]()
        except BaseException as exc:  # the outcome is what the test reads
            outcomes[i] = exc

    threads = []
    for i in range(len(calls)):
        t = threading.Thread(target=run, args=(i,))
        t.start()
        threads.append(t)
        while _queued(guard) < i + 1:  # queue order = call order
            time.sleep(0.001)
    event.listen(guard.engine, "commit", count)
    release.set()
    leader.join()
    for t in threads:
        t.join()
    event.remove(guard.engine, "commit", count)
    return outcomes, commits - 1  # the held leader's own batch committed too


def test_a_refused_admission_in_a_batch_neither_fails_nor_alters_the_others(
    store_url: str,
) -> None:
    guard = SqlReplayGuard(store_url)
    soon = datetime.now(UTC) + timedelta(minutes=5)
    a, b, c, owner = (str(uuid.uuid4()) for _ in range(4))
    taken, fresh = f"req-{uuid.uuid4()}", f"req-{uuid.uuid4()}"
    try:
        guard.admit([taken], owner, 1, soon, 1)  # another grant owns ``taken``
        outcomes, commits = _one_batch(
            guard,
            [
                lambda: guard.admit([f"req-{a}"], a, 1, soon, 2),
                # Claims ``fresh``, then finds ``taken`` owned: refused, and
                # its claim of ``fresh`` and its lease must be undone.
                lambda: guard.admit([fresh, taken], b, 1, soon, 1),
                lambda: guard.admit([f"req-{c}"], c, 1, soon, 1),
                # The same grant again in the same batch: it sees the first's
                # lease, exactly as if the two ran one after the other.
                lambda: guard.admit([f"req-{a}"], a, 2, soon, 2),
                lambda: guard.admit([f"req-{owner}"], owner, 1, soon, 1),  # a replay
            ],
        )
        assert commits == 1  # they did share one transaction
        assert outcomes[0] is None
        assert type(outcomes[1]) is RequestReplayedError
        assert outcomes[2] is None
        assert type(outcomes[3]) is AttemptInProgressError
        assert type(outcomes[4]) is GrantReplayedError
        # The admitted ones are recorded for good ...
        for gid in (a, c):
            with pytest.raises(GrantReplayedError):
                guard.admit([f"req-{gid}"], gid, 1, soon, 2)
        # ... and the refused one left nothing: ``fresh`` is free, b's lease
        # and slot too.
        guard.claim(fresh, c)
        guard.begin(b, 7, soon)
        guard.end(b, 7)
        guard.consume(b, 1, 1)
    finally:
        guard.dispose()


def test_a_batch_serialises_uses_of_one_grant(store_url: str) -> None:
    # One use allowed, two attempts in one batch: the second sees the first's
    # use (and, as it never ended, says the outcome is unknown).
    guard = SqlReplayGuard(store_url)
    lapsed = datetime.now(UTC) - timedelta(seconds=1)
    gid = str(uuid.uuid4())
    try:
        guard.consume(str(uuid.uuid4()), 1, 1)  # tables first
        outcomes, commits = _one_batch(
            guard,
            [
                lambda: guard.admit([f"req-{gid}"], gid, 1, lapsed, 1),
                lambda: guard.admit([f"req-{gid}"], gid, 2, lapsed, 1),
                lambda: guard.end(gid, 1, completed=True),
                lambda: guard.admit([f"req-{gid}"], gid, 3, lapsed, 1),
            ],
        )
        assert commits == 1
        assert outcomes[0] is None
        assert isinstance(outcomes[1], OutcomeUnknownError)
        assert (outcomes[1].attempts, outcomes[1].completed) == ((1,), ())
        assert outcomes[2] is None
        assert isinstance(outcomes[3], OutcomeUnknownError)
        assert (outcomes[3].attempts, outcomes[3].completed) == ((), (1,))
    finally:
        guard.dispose()


def _poison(guard: SqlReplayGuard, grant_id: str) -> None:
    """A trigger that makes the store fail any use recorded for ``grant_id``."""
    with guard.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER poison BEFORE INSERT ON ecp_grant_uses "
                f"WHEN NEW.grant_id = '{grant_id}' BEGIN SELECT RAISE(ABORT, 'poison'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.grant_id = '{grant_id}' THEN RAISE EXCEPTION 'poison'; END IF; "
                "RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER poison BEFORE INSERT ON ecp_grant_uses "
                "FOR EACH ROW EXECUTE FUNCTION poison()"
            )


def _cure(guard: SqlReplayGuard) -> None:
    with guard.engine.begin() as conn:
        conn.exec_driver_sql(
            "DROP TRIGGER poison"
            if conn.dialect.name == "sqlite"
            else "DROP TRIGGER poison ON ecp_grant_uses; DROP FUNCTION poison()"
        )


def test_an_operation_the_store_refuses_fails_alone_and_records_nothing(
    store_url: str,
) -> None:
    # A statement error that is one operation's fault (here a trigger; in the
    # wild a value the database refuses) fails that operation only: the
    # batch runs again one operation at a time. A completed body's close and
    # end in the same batch are not lost to it.
    guard = SqlReplayGuard(store_url)
    soon = datetime.now(UTC) + timedelta(minutes=5)
    good, bad, later, done = (str(uuid.uuid4()) for _ in range(4))
    try:
        guard.admit([f"req-{done}"], done, 1, soon, 3)
        _poison(guard, bad)
        try:
            outcomes, _ = _one_batch(
                guard,
                [
                    lambda: guard.admit([f"req-{good}"], good, 1, soon, 1),
                    lambda: guard.admit([f"req-{bad}"], bad, 1, soon, 1),
                    lambda: guard.admit([f"req-{later}"], later, 1, soon, 1),
                    lambda: guard.close(done, 3),
                    lambda: guard.end(done, 1, completed=True),
                ],
            )
        finally:
            _cure(guard)
        assert isinstance(outcomes[1], ReplayStoreUnavailableError)
        assert outcomes[1].retryable
        assert [outcomes[i] for i in (0, 2, 3, 4)] == [None] * 4
        for gid in (good, later):  # admitted for good
            with pytest.raises(GrantReplayedError):
                guard.admit([f"req-{gid}"], gid, 1, soon, 1)
        with pytest.raises(OutcomeUnknownError) as info:  # closed, and ended completed
            guard.admit([f"req-{done}"], done, 2, soon, 3)
        assert info.value.completed == (1,)
        guard.admit([f"req-{bad}"], bad, 1, soon, 1)  # nothing of it was written
    finally:
        guard.dispose()


def _lose_the_connection(conn: Connection) -> None:
    """A real outage in the middle of a batch (PostgreSQL: the server drops us)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")
    else:
        # What SQLite reports when its file cannot be written or locked.
        raise sqlite3.OperationalError("disk I/O error")


def test_a_store_outage_fails_every_caller_of_the_batch_and_records_none(
    store_url: str,
) -> None:
    guard = SqlReplayGuard(store_url)
    soon = datetime.now(UTC) + timedelta(minutes=5)
    good, later = (str(uuid.uuid4()) for _ in range(2))
    try:
        guard.consume(str(uuid.uuid4()), 1, 1)  # tables first
        outcomes, _ = _one_batch(
            guard,
            [
                lambda: guard.admit([f"req-{good}"], good, 1, soon, 1),
                lambda: guard._group.submit(_Op("", _lose_the_connection)),
                lambda: guard.admit([f"req-{later}"], later, 1, soon, 1),
            ],
        )
        for outcome in outcomes:
            assert isinstance(outcome, ReplayStoreUnavailableError)
            assert outcome.retryable
        # Nobody was told they were admitted, and nobody was: each admits now.
        for gid in (good, later):
            guard.admit([f"req-{gid}"], gid, 1, soon, 1)
    finally:
        guard.dispose()


def test_the_lease_runs_from_when_the_store_ran_the_admission(store_url: str) -> None:
    # An admission queued behind a slow batch: the time it waited moves its
    # lease later (what admit returns is what the store wrote), so the queue
    # does not eat the body's time.
    guard = SqlReplayGuard(store_url)
    gid = str(uuid.uuid4())
    try:
        guard.consume(str(uuid.uuid4()), 1, 1)  # tables first
        release, leader = _hold_the_leader(guard)
        until = datetime.now(UTC) + timedelta(seconds=8)
        got: list[datetime] = []
        t = threading.Thread(target=lambda: got.append(guard.admit([], gid, 1, until, 1)))
        t.start()
        while _queued(guard) < 1:
            time.sleep(0.001)
        time.sleep(1.0)  # queued behind the held batch for at least this long
        release.set()
        leader.join()
        t.join()
        assert got
        assert got[0] - until >= timedelta(seconds=1.0)
        with guard.engine.connect() as conn:
            stored = conn.execute(
                AttemptLease.__table__.select().where(  # type: ignore[attr-defined]
                    AttemptLease.grant_id == gid
                )
            ).one()
        stored_until = stored.until if stored.until.tzinfo else stored.until.replace(tzinfo=UTC)
        assert abs(stored_until - got[0]) < timedelta(milliseconds=1)
    finally:
        guard.dispose()


def test_a_read_only_server_fails_the_batch_once_and_is_not_split(pg_url: str) -> None:
    # After a failover onto a standby every write fails with 25006, which
    # psycopg files as an InternalError: an outage of the store, not one
    # admission's fault, so the batch is not re-run one admission at a time.
    SqlReplayGuard(pg_url).consume(str(uuid.uuid4()), 1, 1)  # tables first
    standby = create_engine(pg_url, connect_args={"options": "-c default_transaction_read_only=on"})
    guard = SqlReplayGuard(standby)
    runs = 0
    real = guard._run_once

    def counted(batch: list[Pending[_Op]]) -> None:
        nonlocal runs
        runs += 1
        real(batch)

    guard._run_once = counted  # type: ignore[method-assign]
    soon = datetime.now(UTC) + timedelta(minutes=5)
    gids = [str(uuid.uuid4()) for _ in range(3)]
    try:
        runs = 0
        outcomes, _ = _one_batch(
            guard, [lambda g=g: guard.admit([f"req-{g}"], g, 1, soon, 1) for g in gids]
        )
        for outcome in outcomes:
            assert isinstance(outcome, ReplayStoreUnavailableError), outcome
            assert outcome.retryable
        assert runs == 2  # the held leader's batch, then the three together
    finally:
        guard.dispose()


def test_close_spends_every_free_slot_in_one_transaction(store_url: str) -> None:
    guard = SqlReplayGuard(store_url)
    gid = str(uuid.uuid4())
    commits = 0

    def count(conn: object) -> None:
        nonlocal commits
        commits += 1

    try:
        guard.consume(gid, 2, 4)  # slot 1 taken by attempt 2
        event.listen(guard.engine, "commit", count)
        guard.close(gid, 4)
        event.remove(guard.engine, "commit", count)
        assert commits == 1
        for attempt in (1, 3, 4, 5):
            with pytest.raises(GrantAttemptsExhaustedError):
                guard.consume(gid, attempt, 4)
        assert guard.unfinished(gid) == ((2,), ())  # the spent slots are no attempts
    finally:
        guard.dispose()


# A worker admitting from 16 threads, printing each admission it was told of.
_ADMIT_UNTIL_KILLED = """
import os, sys, threading, uuid
from datetime import UTC, datetime, timedelta
from ecp.authority._replay import SqlReplayGuard
guard = SqlReplayGuard(sys.argv[1])
soon = datetime.now(UTC) + timedelta(minutes=5)
def loop():
    while True:
        gid = str(uuid.uuid4())
        guard.admit([f"req-{gid}"], gid, 1, soon, 1)
        os.write(1, (gid + "\\n").encode())  # one write: a whole line or nothing
for _ in range(16):
    threading.Thread(target=loop, daemon=True).start()
threading.Event().wait()
"""


def _kill_while_admitting(url: str, after: int) -> list[str]:
    """Start the worker, SIGKILL it once ``after`` uses were reported; every use it reported."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _ADMIT_UNTIL_KILLED, url], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    told: list[str] = []
    try:
        while len(told) < after:
            line = proc.stdout.readline()
            assert line, f"the worker stopped early (exit {proc.poll()})"
            told.append(line.decode().strip())
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-batch: callers are queued
        rest = proc.stdout.read()
        proc.wait()
    return told + rest.decode().split("\n")[:-1]  # whole lines only


def test_every_admission_a_caller_was_told_of_survives_a_kill(store_url: str) -> None:
    guard = SqlReplayGuard(store_url)
    try:
        guard.consume(str(uuid.uuid4()), 1, 1)  # tables first
        # Three kills at different points of the worker's batches: a use
        # reported before its commit would show up as missing in one of them.
        for after in (100, 200, 300):
            for gid in _kill_while_admitting(store_url, after):
                with pytest.raises(GrantReplayedError):
                    guard.admit([f"req-{gid}"], gid, 1, datetime.now(UTC), 1)
    finally:
        guard.dispose()


# --- bounded waits, faults of one operation, drivers --------------------------


@pytest.mark.parametrize("own_engine", [True, False], ids=["own-engine", "handed-an-engine"])
def test_an_outside_row_lock_fails_its_batch_instead_of_stalling_the_process(
    pg_url: str, own_engine: bool
) -> None:
    # Another session holds the lease row (SELECT ... FOR UPDATE, and then
    # hangs): the end that needs it fails retryably after the lock timeout,
    # and admissions of other grants go on while the lock is held. Whether
    # the store built its engine (the bound comes with each connection) or
    # was handed one (each batch sets it).
    guard = SqlReplayGuard(pg_url if own_engine else create_engine(pg_url))
    soon = datetime.now(UTC) + timedelta(minutes=5)
    held, other = str(uuid.uuid4()), str(uuid.uuid4())
    outcome: list[BaseException | None] = []

    def end_blocked() -> None:
        try:
            guard.end(held, 1)
            outcome.append(None)
        except BaseException as exc:  # the outcome is what the test reads
            outcome.append(exc)

    try:
        guard.admit([f"req-{held}"], held, 1, soon, 3)
        db = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN.replace("dbname=test", f"dbname={db}")) as outside:
            outside.execute(
                "SELECT * FROM ecp_grant_leases WHERE grant_id = %s FOR UPDATE", (held,)
            )
            t = threading.Thread(target=end_blocked, daemon=True)
            t.start()
            t.join(60)  # a liveness bound, not a timing: without a timeout it never ends
            assert not t.is_alive(), "the end waited on the outside lock with no bound"
            assert isinstance(outcome[0], ReplayStoreUnavailableError)
            assert outcome[0].retryable
            guard.admit([f"req-{other}"], other, 1, soon, 1)  # the lock is still held
        guard.end(held, 1)  # released: the retry goes through
        assert guard.unfinished(held) == ((), ())
    finally:
        guard.dispose()


def test_the_store_bounds_a_silent_network(pg_url: str) -> None:
    # A half-open connection (the peer vanished without a reset) must fail,
    # not block the batch's leader for good: TCP keepalives and a TCP user
    # timeout on every connection the store opens itself.
    guard = SqlReplayGuard(pg_url)
    try:
        with guard.engine.connect() as conn:
            dsn = conn.connection.dbapi_connection.info.dsn  # type: ignore[union-attr]
            # And the lock and statement bounds come with the connection.
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "3s"
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "5s"
        params = conninfo_to_dict(dsn)
        assert params["keepalives"] == "1"
        assert int(params["keepalives_idle"]) <= 10
        assert int(params["tcp_user_timeout"]) <= 30_000
    finally:
        guard.dispose()


def test_ids_no_store_keeps_are_refused_up_front(store_url: str) -> None:
    # PostgreSQL refuses NUL in text; every store refuses it the same way,
    # before it could reach a shared batch.
    soon = datetime.now(UTC) + timedelta(minutes=5)
    bad = f"bad\x00{uuid.uuid4()}"
    for guard in (SqlReplayGuard(store_url), InMemoryReplayGuard()):
        with pytest.raises(UnstorableIdError):
            guard.admit([f"req-{uuid.uuid4()}"], bad, 1, soon, 1)
        with pytest.raises(UnstorableIdError):
            guard.admit([f"req\x00{uuid.uuid4()}"], str(uuid.uuid4()), 1, soon, 1)
        with pytest.raises(UnstorableIdError):
            guard.consume(bad, 1, 1)
    sql = SqlReplayGuard(store_url)
    try:
        for call in (
            lambda: sql.end(bad, 1),
            lambda: sql.close(bad, 1),
            lambda: sql.claim("req", bad),
            lambda: sql.begin(bad, 1, soon),
            lambda: sql.unfinished(bad),
        ):
            with pytest.raises(UnstorableIdError):
                call()
    finally:
        sql.dispose()


def test_an_unexpected_error_of_the_store_is_a_retryable_outage(store_url: str) -> None:
    # Whatever a driver raises (here: what a driver without pipelines raised
    # when asked for one), the caller sees the store unavailable, never a
    # stray exception on the gate's completion path.
    guard = SqlReplayGuard(store_url)

    def broken(conn: Connection) -> None:
        raise AttributeError("'Connection' object has no attribute 'pipeline'")

    try:
        guard.consume(str(uuid.uuid4()), 1, 1)  # tables first
        with pytest.raises(ReplayStoreUnavailableError):
            guard._group.submit(_Op("", broken))
    finally:
        guard.dispose()


def test_postgresql_without_pipelines_takes_the_step_by_step_path(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A libpq without pipeline mode (or a driver other than psycopg 3): the
    # admission's statements go one at a time, and the store works the same.
    monkeypatch.setattr(psycopg.Pipeline, "is_supported", classmethod(lambda cls: False))
    guard = SqlReplayGuard(pg_url)
    try:
        assert guard._sql.pipelined is False
        _admission(guard)
        _exercise(guard)
        _closing(guard)
    finally:
        guard.dispose()
    # Each builds its own guard, still without pipelines.
    test_concurrent_callers_in_one_process_take_exactly_the_budget(pg_url)
    test_a_refused_admission_in_a_batch_neither_fails_nor_alters_the_others(pg_url)


def test_close_and_a_later_slot_take_one_statement_however_many_slots(tmp_path: Path) -> None:
    # Inside a shared batch, close() with a large max_attempts must not run
    # one statement per slot (nor the search for a later free slot).
    guard = SqlReplayGuard(f"sqlite:///{tmp_path / 'replay.db'}")
    inserts: list[str] = []

    def trace(conn: object, _record: object) -> None:
        conn.set_trace_callback(  # type: ignore[attr-defined]
            lambda sql: inserts.append(sql) if "INSERT INTO ecp_grant_uses" in sql else None
        )

    gid, later = str(uuid.uuid4()), str(uuid.uuid4())
    soon = datetime.now(UTC) + timedelta(minutes=5)
    try:
        guard.consume(str(uuid.uuid4()), 1, 1)  # tables first
        guard.dispose()
        event.listen(guard.engine, "connect", trace)
        guard.consume(gid, 1, 1000)
        inserts.clear()
        guard.close(gid, 1000)
        assert len(inserts) == 1
        with pytest.raises(GrantAttemptsExhaustedError):
            guard.consume(gid, 2, 1000)
        assert guard.unfinished(gid) == ((1,), ())
        # Slots 1..499 taken: the next admission takes slot 500 in one insert
        # after slot 1's.
        with guard.engine.begin() as conn:
            conn.execute(
                ConsumedGrant.__table__.insert(),  # type: ignore[attr-defined]
                [
                    {"grant_id": later, "slot": n, "attempt": n, "consumed_at": soon}
                    for n in range(1, 500)
                ],
            )
        inserts.clear()
        guard.admit([f"req-{later}"], later, 500, soon, 1000)
        assert len(inserts) == 2
        with pytest.raises(GrantReplayedError):
            guard.admit([f"req-{later}"], later, 500, soon, 1000)
    finally:
        guard.dispose()


def test_an_interrupted_waiter_leaves_the_queue_with_a_leader() -> None:
    # KeyboardInterrupt (here: a signal handler raising it) in the main
    # thread while it waits behind a running batch: it leaves the queue, and
    # the callers after it still get a leader.
    release, inside = threading.Event(), threading.Event()
    ran: list[str] = []

    def run(batch: list[Pending[str]]) -> None:
        for p in batch:
            if p.item == "leader":
                inside.set()
                release.wait()
            ran.append(p.item)

    group: GroupCommit[str] = GroupCommit(run)
    leader = threading.Thread(target=group.submit, args=("leader",))
    leader.start()
    inside.wait()

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    def queued(n: int) -> None:
        while True:
            with group._lock:
                if len(group._queue) >= n:
                    return
            time.sleep(0.001)

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        threading.Thread(
            target=lambda: (queued(1), os.kill(os.getpid(), signal.SIGUSR1)), daemon=True
        ).start()
        with pytest.raises(KeyboardInterrupt):
            group.submit("interrupted")
    finally:
        signal.signal(signal.SIGUSR1, previous)
    after = threading.Thread(target=group.submit, args=("after",), daemon=True)
    after.start()
    queued(1)
    release.set()
    leader.join()
    after.join(60)  # a liveness bound: without a leader it never returns
    assert not after.is_alive(), "the caller after the interrupted one has no leader"
    assert ran == ["leader", "after"]


def test_in_memory_store_keeps_the_first_end_of_an_attempt() -> None:
    _first_end(InMemoryReplayGuard())


def test_sql_store_keeps_the_first_end_of_an_attempt(store_url: str) -> None:
    guard = SqlReplayGuard(store_url)
    try:
        _first_end(guard)
    finally:
        guard.dispose()


def _first_end(guard: ReplayGuard) -> None:
    # The gate ends a completed attempt, and may end it again (not completed)
    # on its way out, or the other way round: the first end is the one kept.
    soon = datetime.now(UTC) + timedelta(minutes=5)
    failed, completed = str(uuid.uuid4()), str(uuid.uuid4())
    guard.admit([f"req-{failed}"], failed, 1, soon, 2)
    guard.end(failed, 1)
    guard.end(failed, 1, completed=True)
    assert guard.unfinished(failed) == ((), ())
    guard.admit([f"req-{completed}"], completed, 1, soon, 2)
    guard.end(completed, 1, completed=True)
    guard.end(completed, 1)
    assert guard.unfinished(completed) == ((), (1,))
