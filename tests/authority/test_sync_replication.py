"""A COMMIT PostgreSQL only committed locally (no synchronous standby confirmed it) is no use.

Each test runs on a private PostgreSQL cluster (never the shared server)
that names a synchronous standby which does not exist, so every COMMIT of
the store waits for it (``wait_event = 'SyncRep'``) until the test cancels
that wait with ``pg_cancel_backend``. PostgreSQL then answers the COMMIT with
success and a warning ("committed locally, but might not have been
replicated"); the store must refuse, retryably, and the verifier (the gate's
only way to a body) must not admit.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from ecp._syncrep import is_unconfirmed_commit
from ecp.authority._clock import FixedClock
from ecp.authority._control import ControlRow, ControlState
from ecp.authority._control_log import SqlControlLog, issue_control
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._replay import SqlReplayGuard, request_key
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.authority._verify import VerifiedGrant, verify_grant
from ecp.authority.errors import (
    AttemptInProgressError,
    ControlStateUnavailableError,
    OutcomeUnknownError,
    ReplayStoreUnavailableError,
)
from tests.authority.support import T0, Keys, good_expected, good_grant, signed
from tests.lineage.private_pg import (
    BOUND_S,
    BackgroundCall,
    PrivatePostgres,
    cancel_sync_wait,
    name_standby,
    private_cluster,
    quiet_role_url,
    require_sync_standby,
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    with private_cluster(tmp_path_factory.mktemp("syncrep") / "pg") as pg:
        yield pg


@pytest.fixture
def admin(cluster: PrivatePostgres) -> Iterator[psycopg.Connection[Any]]:
    with cluster.admin() as conn:
        yield conn
        name_standby(conn, None)  # the next test starts without one


def uses(admin: psycopg.Connection[Any], grant_id: str) -> list[int]:
    rows = admin.execute(
        "SELECT attempt FROM ecp_grant_uses WHERE grant_id = %s ORDER BY slot", (grant_id,)
    ).fetchall()
    return [int(r[0]) for r in rows]


def assert_unconfirmed(call: BackgroundCall) -> None:
    assert isinstance(call.error, ReplayStoreUnavailableError), call.error or call.result
    assert call.error.retryable
    assert "not confirmed by its synchronous standby" in str(call.error)
    assert "\n" not in str(call.error)


def test_an_admission_only_committed_locally_admits_no_body(
    cluster: PrivatePostgres, admin: psycopg.Connection[Any], keys: Keys
) -> None:
    clock = FixedClock(T0)
    guard = SqlReplayGuard(cluster.url, clock=clock)
    gid = str(uuid.uuid4())
    grant = good_grant(keys.authority.key_id, grant_id=gid)  # max_attempts=2
    envelope = signed(grant, keys.authority).to_json()

    def verify(attempt: int) -> VerifiedGrant:
        return verify_grant(
            envelope,
            trust=keys.trust,
            expected=good_expected(attempt=attempt),
            clock=clock,
            replay=guard,
        )

    try:
        guard.unfinished(gid)  # the tables, before commits wait for the standby
        require_sync_standby(cluster, admin)

        first = BackgroundCall(lambda: verify(1))
        assert cancel_sync_wait(admin, first), "the admission's commit never waited for the standby"
        # The gate's only path to a body is a VerifiedGrant: none came back.
        assert first.result is None
        assert_unconfirmed(first)
        # PostgreSQL did commit it, on this server only: the use is burnt here.
        assert uses(admin, gid) == [1]

        # The standby is back. The retry is a new Temporal attempt: it waits
        # for the refused attempt's lease, then takes the grant's other use.
        name_standby(admin, None)
        with pytest.raises(AttemptInProgressError):
            verify(2)
        clock.advance(timedelta(seconds=grant.scope.execute_timeout_seconds + 1))
        assert verify(2).grant.grant_id == gid
        guard.end(gid, 2)  # its body ran and failed; the gate ended it
        # Both uses taken (one by an attempt whose body never ran): fewer
        # runs, never more; a further attempt is refused for good.
        with pytest.raises(OutcomeUnknownError):
            verify(3)
        assert uses(admin, gid) == [1, 2]
    finally:
        guard.dispose()


def test_ends_closes_and_scoped_uses_only_committed_locally_are_refused(
    cluster: PrivatePostgres, admin: psycopg.Connection[Any]
) -> None:
    clock = FixedClock(T0)
    guard = SqlReplayGuard(cluster.url, clock=clock)
    gid, other, scope = (str(uuid.uuid4()) for _ in range(3))
    until = T0 + timedelta(minutes=5)
    try:
        # No standby named yet: these commit as usual.
        guard.admit([request_key("default", "wf", "payout", gid)], gid, 1, until, 3)
        guard.admit([request_key("default", "wf", "payout", other)], other, 1, until, 3)
        require_sync_standby(cluster, admin)
        for what, fn in (
            ("end", lambda: guard.end(gid, 1, completed=True)),
            ("close", lambda: guard.close(gid, 3)),
            ("claim", lambda: guard.claim(request_key("default", "wf", "scoped", "1"), scope)),
            ("consume", lambda: guard.consume(scope, 1, 5)),
            ("release", lambda: guard.release(other, 1)),
        ):
            call = BackgroundCall(fn)
            assert cancel_sync_wait(admin, call), f"{what}'s commit never waited for the standby"
            assert_unconfirmed(call)
        # Each did commit on this server.
        assert uses(admin, gid) == [1, -2, -3]
        assert uses(admin, scope) == [1]
        assert uses(admin, other) == []
    finally:
        guard.dispose()


def test_every_caller_of_a_batch_only_committed_locally_is_refused(
    cluster: PrivatePostgres, admin: psycopg.Connection[Any]
) -> None:
    guard = SqlReplayGuard(cluster.url, clock=FixedClock(T0))
    until = T0 + timedelta(minutes=5)
    grants = [str(uuid.uuid4()) for _ in range(3)]

    def admit(gid: str) -> BackgroundCall:
        return BackgroundCall(
            lambda: guard.admit([request_key("ns", "wf", "a", gid)], gid, 1, until, 1)
        )

    try:
        guard.unfinished(grants[0])
        require_sync_standby(cluster, admin)
        # The first admission's batch waits for the standby; the next two
        # queue behind it and form the next batch together.
        lead = admit(grants[0])
        deadline = time.monotonic() + BOUND_S
        while (
            admin.execute("SELECT 1 FROM pg_stat_activity WHERE wait_event = 'SyncRep'").fetchone()
            is None
        ):
            assert time.monotonic() < deadline
            assert lead.thread.is_alive()
            time.sleep(0.02)
        rest = [admit(g) for g in grants[1:]]
        while len(guard._group._queue) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert cancel_sync_wait(admin, lead)
        assert_unconfirmed(lead)
        # One batch, one commit, one cancel: both its callers are refused
        # (the batch is not re-run one operation at a time either, which
        # would find each admission's own use and call it a replay).
        assert cancel_sync_wait(admin, rest[0])
        rest[1].join()
        for call in rest:
            assert_unconfirmed(call)
        for gid in grants:
            assert uses(admin, gid) == [1]  # each committed here, none admitted
    finally:
        guard.dispose()


def test_only_the_wait_for_the_standby_is_told_apart(
    cluster: PrivatePostgres, admin: psycopg.Connection[Any]
) -> None:
    # Its SQLSTATE is the generic warning's (01000), so a function's own
    # RAISE WARNING must not count; the server routine does, and the English
    # message when a server or proxy leaves the routine out.
    seen: list[tuple[str | None, bool]] = []
    with psycopg.connect(cluster.dsn, autocommit=True) as conn:
        # A notice's fields are read inside the callback (the result is freed after).
        conn.add_notice_handler(lambda d: seen.append((d.sqlstate, is_unconfirmed_commit(d))))
        conn.execute("DO $$ BEGIN RAISE WARNING 'a warning of our own'; END $$")
    assert seen == [("01000", False)]
    cut_short = "canceling wait for synchronous replication due to user request"
    assert is_unconfirmed_commit(SimpleNamespace(source_function=None, message_primary=cut_short))
    assert is_unconfirmed_commit(
        SimpleNamespace(source_function="SyncRepWaitForLSN", message_primary="übersetzt")
    )


def test_a_halt_only_committed_locally_is_reported_not_stored(
    cluster: PrivatePostgres, admin: psycopg.Connection[Any]
) -> None:
    # An operator told "halted" must be able to rely on it after a failover:
    # a halt the standby never confirmed is refused, and signing again (the
    # standby back) stacks an equal statement on top, so the halt stands.
    halt_key = Ed25519FileSigner.generate()
    trust = TrustStore([TrustedKey.create(halt_key.public_key, {KeyRole.HALT}, name="operator")])
    log = SqlControlLog(cluster.url)
    target = f"payout-{uuid.uuid4().hex[:8]}"

    def halt() -> tuple[ControlRow, ControlState]:
        return issue_control(log, halt_key, trust, kind="halt", target=target, reason="incident 1")

    try:
        log.ensure_ready()
        before = len(log.rows())
        require_sync_standby(cluster, admin)
        call = BackgroundCall(halt)
        assert cancel_sync_wait(admin, call), "the halt's commit never waited for the standby"
        assert isinstance(call.error, ControlStateUnavailableError), call.error or call.result
        assert "not confirmed by the database's synchronous standby" in str(call.error)
        assert "\n" not in str(call.error)
        assert len(log.rows()) == before + 1  # committed on this server only
        name_standby(admin, None)
        row, state = halt()
        assert row.seq == before + 2
        assert state.halt_for(target) is not None
    finally:
        log.dispose()


@pytest.mark.parametrize("handed_in", [False, True], ids=["own-engine", "handed-in-engine"])
def test_a_role_that_hides_warnings_does_not_hide_an_unconfirmed_admission(
    cluster: PrivatePostgres, admin: psycopg.Connection[Any], handed_in: bool
) -> None:
    # The "committed locally" warning is all that tells such a commit; a
    # role at client_min_messages = error would drop it and the admission
    # would read as a use. The store's own connections ask for warnings in
    # their options; an engine handed in (no options) has its session
    # lowered from error when the watch is installed.
    from sqlalchemy import create_engine

    url = quiet_role_url(cluster, admin)
    engine = create_engine(url) if handed_in else None
    guard = SqlReplayGuard(engine if engine is not None else url, clock=FixedClock(T0))
    gid = str(uuid.uuid4())
    until = T0 + timedelta(minutes=5)
    try:
        guard.unfinished(gid)
        require_sync_standby(cluster, admin)
        call = BackgroundCall(
            lambda: guard.admit([request_key("ns", "wf", "quiet", gid)], gid, 1, until, 1)
        )
        assert cancel_sync_wait(admin, call), "the admission's commit never waited"
        assert_unconfirmed(call)
        assert uses(admin, gid) == [1]  # committed here, not admitted
    finally:
        guard.dispose()
        if engine is not None:
            engine.dispose()
