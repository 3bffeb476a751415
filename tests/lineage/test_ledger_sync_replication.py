"""An append or checkpoint PostgreSQL only committed locally is not reported durable.

On a private cluster that names a synchronous standby which never connects,
every COMMIT waits for it until the test cancels the wait; PostgreSQL then
answers with success and a warning ("committed locally, but might not have
been replicated"). A failover could lose such a commit, leaving a receipt
for an entry the promoted log lacks (or a checkpoint of a tree it does not
extend), so the ledger must report it unavailable, and a retry must neither
duplicate the entry nor be reported durable before the standby has it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ecp.authority._keys import Ed25519FileSigner
from ecp.lineage.ledger._ledger import AppendResult, Ledger
from ecp.lineage.ledger._tiles import write_tiles
from ecp.lineage.ledger.errors import LedgerUnavailableError
from tests.lineage.private_pg import (
    BackgroundCall,
    PrivatePostgres,
    cancel_sync_wait,
    name_standby,
    private_cluster,
    quiet_role_url,
    require_sync_standby,
)
from tests.lineage.support import make_envelope, open_unverified


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[PrivatePostgres]:
    with private_cluster(tmp_path / "pg") as pg:
        yield pg


@pytest.fixture
def admin(cluster: PrivatePostgres) -> Iterator[psycopg.Connection[Any]]:
    with cluster.admin() as conn:
        yield conn


def assert_unconfirmed(call: BackgroundCall) -> None:
    assert isinstance(call.error, LedgerUnavailableError), call.error or call.result
    assert call.error.retryable
    assert "not confirmed by its synchronous standby" in str(call.error)
    assert "\n" not in str(call.error)


def stored(admin: psycopg.Connection[Any]) -> tuple[list[int], int]:
    """The sequence numbers of the stored entries, and the head's size."""
    seqs = [int(r[0]) for r in admin.execute("SELECT seq FROM ledger_entry ORDER BY seq")]
    size = admin.execute("SELECT size FROM ledger_head WHERE id = 1").fetchone()
    assert size is not None
    return seqs, int(size[0])


def test_an_append_only_committed_locally_is_unavailable_and_its_retry_waits_too(
    cluster: PrivatePostgres, admin: psycopg.Connection[Any], worker: Ed25519FileSigner
) -> None:
    ledger = open_unverified(cluster.url)
    try:
        first = ledger.append(make_envelope(0, worker))  # no standby named yet
        require_sync_standby(cluster, admin)
        env = make_envelope(1, worker)

        call = BackgroundCall(lambda: ledger.append(env))
        assert cancel_sync_wait(admin, call), "the append's commit never waited for the standby"
        assert_unconfirmed(call)
        # PostgreSQL did commit it, on this server only.
        assert stored(admin) == ([0, 1], 2)

        # The retry finds the entry stored, but it must not be told so
        # before the standby has it: its commit waits as well.
        again = BackgroundCall(lambda: ledger.append(env))
        assert cancel_sync_wait(admin, again), "the retry was reported without the standby"
        assert_unconfirmed(again)

        # The standby is back: the retry maps to the same entry, once.
        name_standby(admin, None)
        done = ledger.append(env)
        assert isinstance(done, AppendResult)
        assert (done.index, done.created) == (first.index + 1, False)
        assert stored(admin) == ([0, 1], 2)
    finally:
        ledger.close()


def test_a_checkpoint_only_committed_locally_is_unavailable(
    cluster: PrivatePostgres,
    admin: psycopg.Connection[Any],
    worker: Ed25519FileSigner,
    log_signer: Ed25519FileSigner,
) -> None:
    ledger: Ledger = open_unverified(cluster.url)
    try:
        ledger.append(make_envelope(0, worker))
        require_sync_standby(cluster, admin)
        call = BackgroundCall(lambda: ledger.checkpoint(log_signer))
        assert cancel_sync_wait(admin, call), "the checkpoint's commit never waited"
        assert_unconfirmed(call)
        rows = admin.execute("SELECT size FROM ledger_checkpoint").fetchall()
        assert rows == [(1,)]  # committed here, never handed out
    finally:
        ledger.close()


def test_no_receipt_or_tile_from_a_checkpoint_only_committed_locally(
    cluster: PrivatePostgres,
    admin: psycopg.Connection[Any],
    worker: Ed25519FileSigner,
    log_signer: Ed25519FileSigner,
    tmp_path: Path,
) -> None:
    # Both writes were refused, correctly; but their rows are on this server,
    # and a plain read hands them out at once: the log key's checkpoint of a
    # tree a promoted standby does not extend (a fork). The receipt's read
    # must wait for the standby like a write does, or be refused.
    ledger: Ledger = open_unverified(cluster.url)
    try:
        ledger.append(make_envelope(0, worker))
        require_sync_standby(cluster, admin)
        env = make_envelope(1, worker)
        call = BackgroundCall(lambda: ledger.append(env))
        assert cancel_sync_wait(admin, call), "the append's commit never waited"
        assert_unconfirmed(call)
        call = BackgroundCall(lambda: ledger.checkpoint(log_signer))
        assert cancel_sync_wait(admin, call), "the checkpoint's commit never waited"
        assert_unconfirmed(call)
        assert admin.execute("SELECT size FROM ledger_checkpoint").fetchall() == [(2,)]

        for fetch in (
            lambda: ledger.receipt(1),
            lambda: ledger.receipt(1, signer=log_signer),  # what the prove activity calls
            lambda: write_tiles(ledger, tmp_path / "tiles"),
        ):
            call = BackgroundCall(fetch)
            assert cancel_sync_wait(admin, call), f"served without the standby: {call.result!r}"
            assert_unconfirmed(call)
        assert not (tmp_path / "tiles").exists()

        # The standby is back: the same checkpoint is served.
        name_standby(admin, None)
        assert ledger.receipt(1).tree_size == 2
        assert ledger.receipt(1, signer=log_signer).tree_size == 2
        assert write_tiles(ledger, tmp_path / "tiles").size == 2
    finally:
        ledger.close()


def test_a_role_that_hides_warnings_does_not_hide_an_unconfirmed_append(
    cluster: PrivatePostgres, admin: psycopg.Connection[Any], worker: Ed25519FileSigner
) -> None:
    # The ledger's connections ask for warnings in their options, over the
    # role's client_min_messages = error (which would drop the one notice
    # that tells an unconfirmed commit).
    ledger = open_unverified(quiet_role_url(cluster, admin))
    try:
        ledger.append(make_envelope(0, worker))
        require_sync_standby(cluster, admin)
        env = make_envelope(1, worker)
        call = BackgroundCall(lambda: ledger.append(env))
        assert cancel_sync_wait(admin, call), "the append's commit never waited"
        assert_unconfirmed(call)
    finally:
        ledger.close()
