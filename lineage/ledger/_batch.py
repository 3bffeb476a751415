"""Group commit: concurrent appends in one process share one sequencing transaction.

Every append used to take the log-head lock for itself, so a process could
never append faster than one transaction (one fsync, one lock hand-over) per
entry. Here the callers of one :class:`~ecp.lineage.ledger._ledger.Ledger`
queue their requests; whichever caller finds no transaction running becomes
the leader, takes every queued request (up to ``max_items`` entries) and runs
them as one batch: one head lock, consecutive sequence numbers for the whole
batch, one tree-head update, one commit. Tessera pools entries in memory the
same way before sequencing them in one storage transaction.

Durability is unchanged: a caller returns only once the transaction that
holds its entries has committed, and gets the batch's error otherwise (then
none of the batch was written, or PostgreSQL committed it only locally and a
retry maps it to the same entries, see :mod:`ecp._syncrep`). A process
killed mid-batch loses only
entries whose callers were never told they were appended.

A stranger's entry must not cost a caller its own: when a batch fails with
an error that may be due to one request's values (``isolate`` says which; the
ledger's :class:`~ecp.lineage.ledger.errors.EntryRefusedError`), the batch is
split in halves and each half runs again, down to single requests, so only
the requests the database refuses on their own fail (about ``2 log2 n``
more transactions for one bad request among ``n``). Any other error (the
database unreachable) still reaches every caller of the batch.

No timer: a batch is whatever queued while the previous one was committing,
so a lone caller pays no added latency and a busy process gets large batches.
"""

from __future__ import annotations

import os
import threading
import weakref
from _thread import LockType, allocate_lock
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")

_ALL: weakref.WeakSet[GroupCommit[Any, Any]] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for group in list(_ALL):
        group._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)


class _Request(Generic[T, R]):
    __slots__ = ("done", "error", "items", "results", "wake")

    def __init__(self, items: Sequence[T]) -> None:
        self.items = items
        self.done = False
        self.results: list[R] = []
        self.error: BaseException | None = None
        # Released exactly once, by whoever wakes this caller (see submit): a
        # bare lock costs a fraction of an Event (a Condition and its waiter list).
        self.wake: LockType = allocate_lock()
        self.wake.acquire()


class GroupCommit(Generic[T, R]):
    """Runs the queued requests of concurrent callers as one batch.

    ``run`` gets one item list per request, in queue order, and returns one
    result list per request (same order); if it raises, every request of that
    batch gets the exception, unless ``isolate`` holds for it and the batch has
    more than one request: then each half of the batch is run on its own
    (recursively), so the error reaches only the requests that fail alone.
    ``run`` must have written nothing when it raises.
    """

    def __init__(
        self,
        run: Callable[[list[Sequence[T]]], list[list[R]]],
        *,
        max_items: int = 512,
        isolate: Callable[[BaseException], bool] = lambda _exc: False,
    ) -> None:
        self._run = run
        self._max_items = max_items
        self._isolate = isolate
        self._lock = threading.Lock()
        self._queue: deque[_Request[T, R]] = deque()
        self._busy = False
        _ALL.add(self)

    def _after_fork(self) -> None:
        # A forked child has only the forking thread: requests queued by other
        # threads (and a leader's role) belong to the parent, and the lock may
        # have been held at the fork.
        self._lock = threading.Lock()
        self._queue = deque()
        self._busy = False

    def submit(self, items: Sequence[T]) -> list[R]:
        """Queue ``items`` as one request and return their results once committed.

        Raises:
            BaseException: whatever ``run`` raised for the batch holding this
                request (for an ``isolate`` error: for this request alone).
        """
        req: _Request[T, R] = _Request(items)
        with self._lock:
            self._queue.append(req)
            lead = not self._busy
            if lead:
                self._busy = True
        if not lead:
            # Woken once: either our batch committed, or the previous leader
            # handed us the role (each waiter is woken by name, not all at once).
            req.wake.acquire()
        while not req.done:
            with self._lock:
                batch = self._take()
            try:
                self._run_batch(batch)
            finally:
                nxt = None
                with self._lock:
                    # Still queued (the batch was full): keep leading. Otherwise
                    # hand the role to the oldest waiter, or release it.
                    if req.done:
                        if self._queue:
                            nxt = self._queue[0]
                        else:
                            self._busy = False
                for r in batch:
                    if r is not req:
                        r.wake.release()
                if nxt is not None:
                    nxt.wake.release()
        if req.error is not None:
            raise req.error
        return req.results

    def _take(self) -> list[_Request[T, R]]:
        # FIFO, whole requests only; the first always goes, however large.
        batch = [self._queue.popleft()]
        count = len(batch[0].items)
        while self._queue and count + len(self._queue[0].items) <= self._max_items:
            req = self._queue.popleft()
            count += len(req.items)
            batch.append(req)
        return batch

    def _run_batch(self, batch: list[_Request[T, R]]) -> None:
        try:
            results = self._run([r.items for r in batch])
        except BaseException as exc:
            if len(batch) > 1 and isinstance(exc, Exception) and self._isolate(exc):
                # Perhaps one request's fault: halves, in queue order, so the
                # good requests' entries keep their relative order.
                half = len(batch) // 2
                try:
                    self._run_batch(batch[:half])
                    self._run_batch(batch[half:])
                except BaseException as stop:  # interrupted: none may wait forever
                    for r in batch:
                        if not r.done:
                            r.error = stop
                            r.done = True
                    raise
                return
            for r in batch:  # every caller of the batch sees it
                r.error = exc
                r.done = True
            if not isinstance(exc, Exception):
                raise
            return
        for r, res in zip(batch, results, strict=True):
            r.results = res
            r.done = True
