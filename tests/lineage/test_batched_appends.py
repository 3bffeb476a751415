"""Batched sequencing: concurrent appends share transactions; no gap, fork or lost entry.

A caller told "appended" (its ``append`` returned an index) must find its
entry at that index afterwards, whatever happened to the other callers, to
its own process (kill -9 mid-batch, mid-integration) or to the database
server (an immediate restart). Each check runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ecp.authority._keys import Ed25519FileSigner
from ecp.lineage.ledger._batch import GroupCommit
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger._merkle import verify_consistency
from ecp.lineage.ledger.errors import LedgerUnavailableError
from tests.lineage.private_pg import PrivatePostgres, private_cluster
from tests.lineage.support import make_envelope, open_unverified

Ack = tuple[int, int, str, int, bool]  # writer, envelope number, evidence id, index, created


def _pem(signer: Ed25519FileSigner) -> bytes:
    return signer.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _signer(pem: bytes) -> Ed25519FileSigner:
    return Ed25519FileSigner(load_pem_private_key(pem, None))  # type: ignore[arg-type]


def _numbers(wid: int, threads: int, per_thread: int) -> list[list[int]]:
    return [[wid * 10_000 + t * 1000 + k for k in range(per_thread)] for t in range(threads)]


def _append_retrying(ledger: Ledger, env: object) -> tuple[int, bool, str]:
    # A database that went away is retried: the append is idempotent by
    # evidence id, so a retry after a lost acknowledgement finds the entry.
    for _ in range(600):
        try:
            r = ledger.append(env)  # type: ignore[arg-type]
            return r.index, r.created, str(r.evidence_id)
        except LedgerUnavailableError:
            time.sleep(0.1)
    raise AssertionError("the database never came back")


def _threaded_writer(  # type: ignore[no-untyped-def]
    url: str, wid: int, threads: int, per_thread: int, worker_pem: bytes, repeat: bool, q
) -> None:
    """``threads`` callers in one process; every acknowledged append is reported at once."""
    worker = _signer(worker_pem)
    envs = [[make_envelope(i, worker) for i in nums] for nums in _numbers(wid, threads, per_thread)]
    again = [make_envelope(k, worker) for k in range(per_thread)]  # writer 0's, thread 0's
    with open_unverified(url) as ledger:

        def run(t: int) -> None:
            for k, env in enumerate(envs[t]):
                index, created, eid = _append_retrying(ledger, env)
                q.put((wid, wid * 10_000 + t * 1000 + k, eid, index, created))
                if repeat and wid:
                    # Races on idempotency: everyone re-records writer 0's evidence.
                    index, created, eid = _append_retrying(ledger, again[k])
                    q.put((0, k, eid, index, created))

        ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        for th in ts:
            th.start()
        for th in ts:
            th.join()


def _collect(queues: Sequence, procs: Sequence[mp.process.BaseProcess]) -> Iterator[Ack]:  # type: ignore[type-arg]
    """Acks as they arrive, until every writer process has exited and its queue is drained.

    One queue per writer: a writer killed while its queue's feeder held the
    queue's lock would otherwise block every other writer's queue for good.
    """
    while True:
        got = False
        for q in queues:
            try:
                yield q.get_nowait()
                got = True
            except queue.Empty:
                pass
        if not got:
            if all(p.exitcode is not None for p in procs):
                for q in queues:
                    with contextlib.suppress(queue.Empty):
                        while True:
                            yield q.get(timeout=0.2)
                return
            time.sleep(0.01)


def _check_log(url: str, acks: Sequence[Ack], log_signer: Ed25519FileSigner) -> int:
    """Every acknowledged entry is where its caller was told; the log verifies deeply."""
    by_index: dict[int, str] = {}
    with open_unverified(url) as ledger:
        size = ledger.head().size
        for _wid, _n, eid, index, _created in acks:
            assert by_index.setdefault(index, eid) == eid, f"two evidence ids at index {index}"
            assert ledger.find(eid) == index
            assert ledger.entry(index).evidence_id == eid
        ledger.checkpoint(log_signer)
        report = ledger.verify_all(log_signer.public_key, deep=True)  # gap-free, every root
        assert report.size == size
        cps = [c.checkpoint for c in ledger.checkpoints()]
        for a, b in itertools.combinations(cps, 2):  # no fork: one history
            assert a.size <= b.size
            if a.size:
                verify_consistency(
                    a.size,
                    b.size,
                    a.root_hash,
                    b.root_hash,
                    ledger.consistency_proof(a.size, b.size),
                )
    return size


# --- the queue itself ------------------------------------------------------------------


def test_an_error_reaches_every_caller_of_its_batch_and_no_other() -> None:
    first_running = threading.Event()
    release = threading.Event()
    batches: list[list[Sequence[int]]] = []

    def run(reqs: list[Sequence[int]]) -> list[list[int]]:
        batches.append(reqs)
        if len(batches) == 1:
            first_running.set()
            release.wait()
        if len(batches) == 2:
            raise LedgerUnavailableError("the second batch fails")
        return [[x * 10 for x in r] for r in reqs]

    group: GroupCommit[int, int] = GroupCommit(run)
    out: dict[int, object] = {}

    def call(n: int) -> None:
        try:
            out[n] = group.submit([n, n + 1])
        except LedgerUnavailableError as exc:
            out[n] = exc

    lead = threading.Thread(target=call, args=(0,))
    lead.start()
    first_running.wait()
    # These queue while the first batch runs, so they form the second batch.
    followers = [threading.Thread(target=call, args=(n,)) for n in (10, 20, 30)]
    for th in followers:
        th.start()
    while len(group._queue) < 3:  # all three queued (no timing: a state condition)
        time.sleep(0.001)
    release.set()
    for th in [lead, *followers]:
        th.join()
    assert out[0] == [0, 10]
    assert [list(r) for r in batches[1]] == [[10, 11], [20, 21], [30, 31]]
    assert all(isinstance(out[n], LedgerUnavailableError) for n in (10, 20, 30))
    assert group.submit([5]) == [50]  # the queue is usable after a failed batch


def _submit_in_child(group: GroupCommit[int, int], q) -> None:  # type: ignore[no-untyped-def]
    q.put(group.submit([7]))


def test_a_forked_child_does_not_inherit_a_running_batch() -> None:
    running, release = threading.Event(), threading.Event()

    def run(reqs: list[Sequence[int]]) -> list[list[int]]:
        if not running.is_set():
            running.set()
            release.wait()
        return [[x * 10 for x in r] for r in reqs]

    group: GroupCommit[int, int] = GroupCommit(run)
    lead = threading.Thread(target=group.submit, args=([1],))
    lead.start()
    running.wait()  # the parent's batch is running (its leader holds the role)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    child = ctx.Process(target=_submit_in_child, args=(group, q))
    child.start()
    child.join(60)
    if child.exitcode is None:  # hung on the parent's batch: leave nothing behind
        child.kill()
        child.join()
    release.set()
    lead.join()
    assert child.exitcode == 0
    assert q.get(timeout=5) == [70]  # the child led its own batch


def test_concurrent_callers_of_one_ledger_share_transactions(
    ledger_url: str, worker, log_signer
) -> None:
    envs = [make_envelope(i, worker) for i in range(96)]
    results: dict[int, tuple[int, bool]] = {}
    with open_unverified(ledger_url) as ledger:
        calls: list[int] = []
        inner = ledger._group._run

        def counting(reqs):  # type: ignore[no-untyped-def]
            calls.append(len(reqs))
            return inner(reqs)

        ledger._group._run = counting

        def run(t: int) -> None:
            for i in range(t, 96, 12):
                r = ledger.append(envs[i])
                results[i] = (r.index, r.created)
            # A repeat from another thread maps to the existing entry.
            r = ledger.append(envs[(t + 1) % 12])
            assert not r.created

        ts = [threading.Thread(target=run, args=(t,)) for t in range(12)]
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        assert sum(calls) == 96 + 12  # every request went through a batch, once
        assert sorted(ix for ix, _ in results.values()) == list(range(96))
        assert all(created for _, created in results.values())
        for i, (ix, _) in results.items():
            assert ledger.entry(ix).envelope == envs[i]
        ledger.checkpoint(log_signer)
        assert ledger.verify_all(log_signer.public_key, deep=True).size == 96


# --- writer processes ------------------------------------------------------------------

WRITERS = 4
THREADS = 4
PER_THREAD = 8


def test_writer_processes_with_concurrent_callers(ledger_url: str, worker, log_signer) -> None:
    open_unverified(ledger_url).close()  # schema first, like a deployment would
    ctx = mp.get_context("fork")
    qs = [ctx.Queue() for _ in range(WRITERS)]
    procs = [
        ctx.Process(
            target=_threaded_writer,
            args=(ledger_url, w, THREADS, PER_THREAD, _pem(worker), True, qs[w]),
        )
        for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    acks = list(_collect(qs, procs))
    for p in procs:
        p.join()
        assert p.exitcode == 0
    created = [a for a in acks if a[4]]
    assert len(created) == WRITERS * THREADS * PER_THREAD  # each evidence created exactly once
    assert len({a[2] for a in created}) == len(created)
    size = _check_log(ledger_url, acks, log_signer)
    assert size == WRITERS * THREADS * PER_THREAD


def test_writer_killed_mid_stream_loses_nothing_acknowledged(
    ledger_url: str, worker, log_signer
) -> None:
    open_unverified(ledger_url).close()
    ctx = mp.get_context("fork")
    qs = [ctx.Queue() for _ in range(WRITERS)]
    procs = [
        ctx.Process(
            target=_threaded_writer,
            args=(ledger_url, w, THREADS, 40 if w == 0 else PER_THREAD, _pem(worker), False, qs[w]),
        )
        for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    acks: list[Ack] = []
    killed = False
    for a in _collect(qs, procs):
        acks.append(a)
        # Writer 0 dies with batches in flight once it has been told of some appends.
        if not killed and sum(1 for x in acks if x[0] == 0) == 12:
            os.kill(procs[0].pid, signal.SIGKILL)  # type: ignore[arg-type]
            killed = True
    for p in procs:
        p.join()
    assert procs[0].exitcode == -signal.SIGKILL
    assert all(p.exitcode == 0 for p in procs[1:])
    size = _check_log(ledger_url, acks, log_signer)
    assert size < WRITERS * THREADS * PER_THREAD + 3 * THREADS * 40  # writer 0 did not finish
    # The log goes on: writer 0's unfinished work is appended by a new process.
    with open_unverified(ledger_url) as ledger:
        for nums in _numbers(0, THREADS, 40):
            for i in nums:
                ledger.append(make_envelope(i, worker))
        assert ledger.head().size == 3 * THREADS * PER_THREAD + THREADS * 40
        ledger.verify_all(deep=True)


def _integrator_killed(url: str, worker_pem: bytes, log_pem: bytes, q) -> None:  # type: ignore[no-untyped-def]
    # The checkpoint issued by the batch that reaches size 8 runs inside the
    # sequencing transaction, after its entry, subtree and head rows are
    # written and before COMMIT: the process dies right there.
    def die(*_a: object, **_k: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    Ledger._checkpoint_in = die  # type: ignore[assignment,method-assign]
    worker, log = _signer(worker_pem), _signer(log_pem)
    envs = [make_envelope(i, worker) for i in range(20)]
    with open_unverified(url, checkpoint_signer=log, checkpoint_every=8) as ledger:

        def run(t: int) -> None:
            for i in range(t, 20, 4):
                r = ledger.append(envs[i])
                q.put((0, i, str(r.evidence_id), r.index, r.created))

        ts = [threading.Thread(target=run, args=(t,)) for t in range(4)]
        for th in ts:
            th.start()
        for th in ts:
            th.join()


def test_integrator_killed_mid_integration(ledger_url: str, worker, log_signer) -> None:
    open_unverified(ledger_url).close()
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_integrator_killed, args=(ledger_url, _pem(worker), _pem(log_signer), q))
    p.start()
    acks = list(_collect([q], [p]))
    p.join()
    assert p.exitcode == -signal.SIGKILL
    size = _check_log(ledger_url, acks, log_signer)
    assert size < 8  # the batch that reached 8 never committed
    assert len(acks) <= size
    with open_unverified(ledger_url) as ledger:
        rs = ledger.append_many([make_envelope(i, worker) for i in range(20)])
        assert sorted(r.index for r in rs) == list(range(20))
        assert sum(not r.created for r in rs) == size
        for a in acks:
            assert rs[a[1]].index == a[3]
        ledger.verify_all(deep=True)


# --- the server restarts ---------------------------------------------------------------


@pytest.fixture
def private_pg(tmp_path: Path) -> Iterator[PrivatePostgres]:
    with private_cluster(tmp_path / "pg") as pg:
        yield pg


def test_postgres_restart_mid_appends_loses_nothing_acknowledged(
    private_pg: PrivatePostgres, worker, log_signer
) -> None:
    url = private_pg.url
    open_unverified(url).close()
    ctx = mp.get_context("fork")
    qs = [ctx.Queue() for _ in range(2)]
    procs = [
        ctx.Process(target=_threaded_writer, args=(url, w, THREADS, 12, _pem(worker), False, qs[w]))
        for w in range(2)
    ]
    for p in procs:
        p.start()
    acks: list[Ack] = []
    restarted = False
    for a in _collect(qs, procs):
        acks.append(a)
        # Both writers have opened the ledger (each has been told of an append).
        if not restarted and len(acks) >= 20 and {x[0] for x in acks} == {0, 1}:
            private_pg.restart()  # crash-like: acknowledged commits must survive recovery
            restarted = True
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert restarted
    assert len({a[2] for a in acks}) == 2 * THREADS * 12
    assert _check_log(url, acks, log_signer) == 2 * THREADS * 12
