"""Group commit: the single-use store's concurrent writes in one process share one transaction.

A durable commit costs an fsync (about three times the gate's crypto floor
on this project's disks), and the single-use store may not skip it: a use
that a power loss could roll back lets a body run once more. What it can do
is share it. The callers of one :class:`~ecp.authority._replay.SqlReplayGuard`
queue their operations; whichever caller finds no transaction running
becomes the leader, takes every queued operation and runs them in one
transaction with one commit, then wakes exactly those callers. A batch is
whatever queued while the previous one committed (no timer), so a lone
caller pays no added latency and a busy worker gets large batches.

Each caller returns only once the transaction holding its operation has
committed. An operation's own refusal is that caller's alone: the store
rolls back only that operation (to a savepoint of its own) and the batch
goes on. When ``run`` raises, the exception reaches every caller of the
batch, and then none of it counts as written (nothing was, or PostgreSQL
committed it only locally, see :mod:`ecp._syncrep`), so no caller is ever
told it succeeded when it did not (the single-use store's ``run`` first
re-runs a batch one operation at a time when the fault may be one
operation's). A
caller interrupted while it waits leaves the queue and hands the leader's
role on, so no queue is left without a leader. The ledger's group commit
(``ecp.lineage.ledger._batch``) works the same way; this one is the
authority's own, so the layer before execution needs nothing from the one
after it.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")

_ALL: weakref.WeakSet[GroupCommit[object]] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for group in list(_ALL):
        group._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)


class Pending(Generic[T]):
    """One caller's queued operation; the runner sets ``error`` for its refusal."""

    __slots__ = ("done", "error", "item", "wake")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.error: BaseException | None = None
        self.wake = threading.Event()


class GroupCommit(Generic[T]):
    """Runs the queued operations of concurrent callers as one batch.

    ``run`` gets the batch in queue order, runs it as one transaction and
    sets ``error`` on each operation refused on its own; if it raises, every
    operation of the batch gets that exception (``run`` must then have
    committed nothing durably).
    """

    def __init__(self, run: Callable[[list[Pending[T]]], None], *, max_batch: int = 128) -> None:
        self._run = run
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[Pending[T]] = []
        #: The caller holding the leader's role, or handed it and not yet
        #: awake (``None``: no batch runs, the next caller leads).
        self._leader: Pending[T] | None = None
        _ALL.add(self)  # type: ignore[arg-type]

    def _after_fork(self) -> None:
        # A forked child has only the forking thread: operations queued by
        # other threads, and a leader's role, belong to the parent.
        self._lock = threading.Lock()
        self._queue = []
        self._leader = None

    def submit(self, item: T) -> None:
        """Queue ``item`` and return once the transaction holding it committed.

        Raises:
            BaseException: ``item``'s own refusal, or whatever failed its batch.
        """
        req = Pending(item)
        with self._lock:
            self._queue.append(req)
            if self._leader is None:
                self._leader = req
            lead = self._leader is req
        try:
            if not lead:
                # Woken once: either our batch is done, or the previous leader
                # handed us the role (each waiter is woken by name).
                req.wake.wait()
            while not req.done:
                self._lead(req)
        except BaseException:
            # Interrupted (a KeyboardInterrupt in the main thread) while
            # waiting or leading: nobody may be left waiting for a leader
            # that is gone.
            self._leave(req)
            raise
        if req.error is not None:
            raise req.error

    def _lead(self, req: Pending[T]) -> None:
        """Take one batch, run it, wake its callers and hand the role on when done."""
        batch: list[Pending[T]] = []
        stop: BaseException | None = None
        try:
            with self._lock:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
            self._run(batch)
        except BaseException as exc:  # noqa: BLE001 - re-raised below unless an Exception
            # Every caller of the batch sees it: none may be told it
            # committed, and none may wait forever.
            for r in batch:
                r.error = exc
            if not isinstance(exc, Exception):
                stop = exc  # interrupted: still wake everyone, then re-raise
        finally:
            for r in batch:
                r.done = True
            for r in batch:
                if r is not req:
                    r.wake.set()
        # Our own operation may still be queued (the batch was full): then
        # keep leading. Otherwise hand over or release the role.
        if req.done or stop is not None:
            self._leave(req)
        if stop is not None:
            raise stop

    def _leave(self, req: Pending[T]) -> None:
        """``req``'s caller stops waiting or leading: hand the role on if it had it."""
        nxt = None
        with self._lock:
            if req in self._queue:
                self._queue.remove(req)  # never taken: it simply leaves
            if self._leader is req:
                self._leader = nxt = self._queue[0] if self._queue else None
        if nxt is not None:
            nxt.wake.set()
