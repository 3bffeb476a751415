"""One entry the database refuses fails only its own append, never the ones batched with it.

Concurrent appends share one transaction (``_batch``). When the database
refuses one request's values (a data or integrity error), the batch is split
until that request runs alone: it gets a final ``EntryRefusedError``, and
every other caller of the batch gets its entry. Each check runs on SQLite and
PostgreSQL; the refusal is the database's own (a trigger or constraint on the
entry table, or on PostgreSQL a NUL in a text column with the evidence
validator deliberately bypassed).
"""

from __future__ import annotations

import dataclasses
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from ecp.authority._canonical import digest_bytes
from ecp.authority._dsse import Envelope
from ecp.authority._keys import Ed25519FileSigner
from ecp.lineage.ledger._batch import GroupCommit
from ecp.lineage.ledger._evidence import build_statement, sign_evidence
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger.errors import EntryRefusedError, LedgerError, LedgerUnavailableError
from tests.lineage.support import make_envelope, make_predicate, open_unverified

POISON_WF = "wf-poison"


def _poison_envelope(i: int, signer: Ed25519FileSigner) -> Envelope:
    """Valid evidence the test database is set up to refuse (its workflow id)."""
    p = make_predicate(i)
    p = p.model_copy(update={"activity": p.activity.model_copy(update={"workflow_id": POISON_WF})})
    return sign_evidence(
        build_statement(
            p,
            arguments=digest_bytes(b"a%d" % i),
            result=digest_bytes(b"r%d" % i),
            grant=digest_bytes(b"g%d" % i),
        ),
        signer,
    )


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def _refuse_poison(url: str) -> None:
    """Make the database itself refuse entries of ``POISON_WF``."""
    if url.startswith("sqlite"):
        con = sqlite3.connect(_sqlite_path(url), isolation_level=None)
        try:
            con.execute(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON ledger_entry "
                f"WHEN NEW.workflow_id = '{POISON_WF}' "
                "BEGIN SELECT RAISE(ABORT, 'poisoned entry refused'); END"
            )
        finally:
            con.close()
    else:
        with psycopg.connect(_dsn(url), autocommit=True) as pg:
            pg.execute(
                "ALTER TABLE ledger_entry ADD CONSTRAINT refuse_poison "
                f"CHECK (workflow_id <> '{POISON_WF}')"
            )


@contextmanager
def _head_locked(url: str) -> Iterator[None]:
    """Another writer holds the log-head lock until the block ends."""
    if url.startswith("sqlite"):
        con = sqlite3.connect(_sqlite_path(url), isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            yield
            con.execute("ROLLBACK")
        finally:
            con.close()
    else:
        with psycopg.connect(_dsn(url), autocommit=True) as pg:
            pg.execute("BEGIN")
            pg.execute("SELECT size FROM ledger_head WHERE id = 1 FOR UPDATE")
            yield
            pg.execute("ROLLBACK")


def _appender(ledger: Ledger, env: Envelope) -> Callable[[], object]:
    return lambda: ledger.append(env)


def _cobatched(
    ledger: Ledger, url: str, lead: Callable[[], object], calls: Sequence[Callable[[], object]]
) -> tuple[dict[int, object], list[int]]:
    """Run ``calls`` so that they all queue into one batch behind ``lead``.

    Returns what each call returned (or raised) by position, and the number of
    requests of every batch the ledger ran.
    """
    sizes: list[int] = []
    inner = ledger._group._run

    def counting(reqs: list[Sequence[Any]]) -> list[list[Any]]:
        sizes.append(len(reqs))
        return inner(reqs)

    ledger._group._run = counting
    out: dict[int, object] = {}

    def call(k: int, fn: Callable[[], object]) -> None:
        try:
            out[k] = fn()
        except Exception as exc:  # the test inspects what each caller got
            out[k] = exc

    group = ledger._group
    with _head_locked(url):
        leader = threading.Thread(target=call, args=(-1, lead))
        leader.start()
        # The leader has taken its batch and waits on the database's lock (a
        # state condition, no timing): everything queued now forms the next batch.
        while not (group._busy and not group._queue and sizes):
            assert leader.is_alive(), f"the leader ended before its batch ran: {out}"
            time.sleep(0.001)
        threads = [threading.Thread(target=call, args=(k, fn)) for k, fn in enumerate(calls)]
        for th in threads:
            th.start()
        while len(group._queue) < len(calls):
            assert all(th.is_alive() for th in threads), f"a caller ended unqueued: {out}"
            time.sleep(0.001)
    for th in [leader, *threads]:
        th.join()
    return out, sizes


def _check_others_appended(
    ledger: Ledger, out: dict[int, object], envs: dict[int, Envelope], log_signer: Ed25519FileSigner
) -> None:
    indexes = []
    for k, env in envs.items():
        r = out[k]
        assert not isinstance(r, BaseException), f"caller {k} lost its entry: {r!r}"
        assert r.created  # type: ignore[attr-defined]
        assert ledger.entry(r.index).envelope == env  # type: ignore[attr-defined]
        indexes.append(r.index)  # type: ignore[attr-defined]
    assert sorted(indexes) == list(range(len(envs)))
    ledger.checkpoint(log_signer)
    assert ledger.verify_all(log_signer.public_key, deep=True).size == len(envs)


def test_a_refused_entry_fails_only_its_own_append(
    ledger_url: str, worker: Ed25519FileSigner, log_signer: Ed25519FileSigner
) -> None:
    with open_unverified(ledger_url) as ledger:
        _refuse_poison(ledger_url)
        lead_env = make_envelope(0, worker)
        envs = {k: make_envelope(k + 1, worker) for k in range(7) if k != 3}
        bad = _poison_envelope(100, worker)
        calls = [_appender(ledger, envs.get(k, bad)) for k in range(7)]
        out, sizes = _cobatched(ledger, ledger_url, lambda: ledger.append(lead_env), calls)
        assert sizes[:2] == [1, 7]  # the poisoned request shared its batch with six others
        # The leader's, the batch of seven, then two halves per level down to
        # the refused request: not one transaction per request.
        assert len(sizes) <= 1 + 1 + 2 * math.ceil(math.log2(7))
        # Every other caller got its entry (before the fix: the batch's error).
        _check_others_appended(ledger, out, {-1: lead_env} | envs, log_signer)
        refused = out[3]
        assert isinstance(refused, EntryRefusedError)
        assert isinstance(refused, LedgerError)
        assert not refused.retryable
        assert refused.code == "ledger_entry_refused"
        bad_id = ledger._prepare(bad).evidence_id
        assert refused.evidence_ids == (bad_id,)
        assert ledger.find(bad_id) is None
        # Final: alone it is refused again, and the log goes on.
        with pytest.raises(EntryRefusedError):
            ledger.append(bad)
        assert ledger.append(make_envelope(50, worker)).index == len(envs) + 1


def test_a_refused_request_of_several_entries_fails_whole(
    ledger_url: str, worker: Ed25519FileSigner, log_signer: Ed25519FileSigner
) -> None:
    # append_many is one request: all of it is written or none, batched or not.
    with open_unverified(ledger_url) as ledger:
        _refuse_poison(ledger_url)
        lead_env = make_envelope(0, worker)
        mixed = [make_envelope(90, worker), _poison_envelope(91, worker)]
        envs = {k: make_envelope(k + 1, worker) for k in (0, 2)}
        calls: list[Callable[[], object]] = [
            lambda: ledger.append(envs[0]),
            lambda: ledger.append_many(mixed),
            lambda: ledger.append(envs[2]),
        ]
        out, _ = _cobatched(ledger, ledger_url, lambda: ledger.append(lead_env), calls)
        refused = out[1]
        assert isinstance(refused, EntryRefusedError)
        assert len(refused.evidence_ids) == 2
        assert ledger.find(ledger._prepare(mixed[0]).evidence_id) is None
        _check_others_appended(ledger, out, {-1: lead_env} | envs, log_signer)


def test_a_nul_that_bypassed_the_validator_fails_only_its_own_append(
    pg_url: str, worker: Ed25519FileSigner, log_signer: Ed25519FileSigner
) -> None:
    # The red-team case: PostgreSQL's text columns cannot hold NUL (psycopg
    # refuses the value: a DataError). Evidence and the gate refuse NUL ids
    # now; the test plants one past them, as a future data error would come.
    with open_unverified(pg_url) as ledger:
        lead_env = make_envelope(0, worker)
        envs = {k: make_envelope(k + 1, worker) for k in range(5) if k != 2}
        good = ledger._prepare(make_envelope(77, worker))
        a = good.activity
        evil = dataclasses.replace(good, activity=(a[0], "wf-\x00-evil", a[2], a[3]))
        calls = [_appender(ledger, envs[k]) for k in (0, 1)]
        calls.append(lambda: ledger._group.submit([evil]))
        calls += [_appender(ledger, envs[k]) for k in (3, 4)]
        out, sizes = _cobatched(ledger, pg_url, lambda: ledger.append(lead_env), calls)
        assert sizes[:2] == [1, 5]
        _check_others_appended(ledger, out, {-1: lead_env} | envs, log_signer)
        refused = out[2]
        assert isinstance(refused, EntryRefusedError), refused
        assert "NUL" in refused.reason
        assert refused.evidence_ids == (good.evidence_id,)


# --- the queue itself ------------------------------------------------------------------


class _Refused(Exception):
    pass


def _held_batch(
    run: Callable[[list[Sequence[int]]], list[list[int]]],
    requests: Sequence[Sequence[int]],
    isolate: Callable[[BaseException], bool],
) -> tuple[dict[int, object], list[list[int]]]:
    """Submit ``requests`` concurrently so that they form one batch; what each got."""
    running, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def wrapped(reqs: list[Sequence[int]]) -> list[list[int]]:
        if not running.is_set():
            running.set()
            release.wait()
            return [[-1] for _ in reqs]
        batches.append([r[0] for r in reqs])
        return run(reqs)

    group: GroupCommit[int, int] = GroupCommit(wrapped, isolate=isolate)
    out: dict[int, object] = {}

    def call(k: int, items: Sequence[int]) -> None:
        try:
            out[k] = group.submit(items)
        except Exception as exc:  # the test inspects what each caller got
            out[k] = exc

    lead = threading.Thread(target=call, args=(-1, [0]))
    lead.start()
    running.wait()
    threads = [threading.Thread(target=call, args=(k, r)) for k, r in enumerate(requests)]
    for th in threads:
        th.start()
    while len(group._queue) < len(requests):  # all queued: a state condition
        time.sleep(0.001)
    release.set()
    for th in [lead, *threads]:
        th.join()
    return out, batches


def test_an_isolated_error_is_split_down_to_the_requests_that_fail_alone() -> None:
    bad = {30, 70}

    def run(reqs: list[Sequence[int]]) -> list[list[int]]:
        if any(x in bad for r in reqs for x in r):
            raise _Refused("refused")
        return [[x * 10 for x in r] for r in reqs]

    requests = [[10 * k, 10 * k + 1] for k in range(1, 9)]
    out, batches = _held_batch(run, requests, lambda e: isinstance(e, _Refused))
    assert batches[0] == [10 * k for k in range(1, 9)]  # one batch of eight at first
    for k, r in enumerate(requests):
        if r[0] in bad:
            assert isinstance(out[k], _Refused)
        else:
            assert out[k] == [x * 10 for x in r]
    # Each batch that succeeded is in queue order and no request ran twice successfully.
    done = [b for b in batches if not any(x in bad for x in b)]
    assert sorted(x for b in done for x in b) == [r[0] for r in requests if r[0] not in bad]


def test_an_unavailable_database_still_fails_the_whole_batch_unsplit() -> None:
    def run(reqs: list[Sequence[int]]) -> list[list[int]]:
        raise LedgerUnavailableError("down")

    out, batches = _held_batch(run, [[10], [20], [30]], lambda e: isinstance(e, EntryRefusedError))
    assert batches == [[10, 20, 30]]  # run once: a transient fault is everyone's
    assert all(isinstance(out[k], LedgerUnavailableError) for k in range(3))
