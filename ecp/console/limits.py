"""Bounds on the work one lineage request may cause, and the renders it may start.

A hostile (or merely long) history must not take the console down: before
this, one lineage request for a 15,725-event history grew the process from
175 MB to 3.2 GB and kept it busy for about 105 s after the client had gone.
Now a request reads at most ``max_events`` events, draws at most
``max_nodes`` nodes, waits for ``dot`` at most ``dot_timeout`` seconds, at
most ``concurrent`` renders run at once (a further one is refused, not
queued), and a render stops, ``dot`` included, when its client disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, TypeVar

from starlette.requests import Request

from ecp.console.errors import ConsoleError

__all__ = [
    "DEFAULT_LIMITS",
    "ConsoleBusyError",
    "LineageGate",
    "LineageLimits",
    "LineageTooLargeError",
    "run_dot",
    "until_disconnect",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LineageLimits:
    """What one lineage request may cost.

    Attributes:
        max_events: history events read per request (all runs together).
        max_nodes: graph nodes handed to Graphviz; a larger graph is offered as exports.
        concurrent: lineage requests served at once; a further one gets a 503.
        dot_timeout: seconds ``dot`` may take before the render is abandoned.
    """

    max_events: int = 10_000
    max_nodes: int = 2_000
    concurrent: int = 2
    dot_timeout: float = 20.0


DEFAULT_LIMITS: Final = LineageLimits()


class LineageTooLargeError(ConsoleError):
    """The history or its graph is beyond what the console reads or draws per request.

    Attributes:
        events: the history length that was found (0 when the node cap was hit).
        nodes: the node count that was found (0 when the event cap was hit).
    """

    status = 413
    code = "lineage_too_large"

    def __init__(self, message: str, *, events: int = 0, nodes: int = 0) -> None:
        super().__init__(message)
        self.events = events
        self.nodes = nodes


class ConsoleBusyError(ConsoleError):
    """As many lineage renders as allowed are running; try again shortly."""

    status = 503
    code = "console_busy"


@dataclass
class LineageGate:
    """The concurrent-render limit, with counters a monitor (or a test) can read.

    Attributes:
        active: renders running now.
        cancelled: renders stopped because their client disconnected.
    """

    limits: LineageLimits = DEFAULT_LIMITS
    active: int = 0
    cancelled: int = 0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one render slot for the ``async with`` body.

        Raises:
            ConsoleBusyError: every slot is taken.
        """
        async with self._lock:
            if self.active >= self.limits.concurrent:
                raise ConsoleBusyError(
                    f"The console is drawing {self.active} other lineage graphs, its limit; "
                    "try again in a moment."
                )
            self.active += 1
        try:
            yield
        finally:
            self.active -= 1


class _Disconnected(Exception):
    """The client went away before the answer was ready."""


async def until_disconnect(request: Request, gate: LineageGate, work: Awaitable[T]) -> T:
    """``work``'s result, or cancel it as soon as the client disconnects.

    Raises:
        asyncio.CancelledError: the client disconnected (nobody is left to answer).
    """
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        # A GET has no body: after its one (empty) request message, the next
        # message the server hands over is the disconnect.
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            gate.cancelled += 1
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            watcher.cancel()
            raise asyncio.CancelledError
        watcher.cancel()
    return task.result()


async def run_dot(dot_source: str, timeout: float, on_missing: Callable[[], Exception]) -> str:
    """``dot -Tsvg`` over ``dot_source``, killed on timeout or cancellation.

    Raises:
        Exception: ``on_missing()`` when Graphviz is not installed.
        TimeoutError: ``dot`` took longer than ``timeout`` seconds.
        RuntimeError: ``dot`` failed (its first line of stderr).
    """
    dot = shutil.which("dot")
    if dot is None:
        raise on_missing()
    proc = await asyncio.create_subprocess_exec(
        dot,
        "-Tsvg",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(dot_source.encode()), timeout)
    except BaseException:
        # Timed out or cancelled (the client left): dot must not outlive the request.
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        lines = err.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(f"dot failed: {lines[0] if lines else proc.returncode}")
    return out.decode("utf-8")
