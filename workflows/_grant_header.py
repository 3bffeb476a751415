"""Carrying a grant from workflow code to the gate in an activity header.

Workflow code cannot set activity headers itself, so it puts the grant in a
context variable for the duration of one ``execute_activity`` call and the
outbound interceptor copies it into that activity's header. The variable is
per-coroutine, so concurrent activities in one workflow never swap grants.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from temporalio.api.common.v1 import Payload

# Header key the gate reads. Headers are stored in history in clear, which is
# fine: a grant holds no secrets and is useless for any other call.
from ecp._wire import GRANT_HEADER

__all__ = ["GRANT_HEADER", "attach_grant", "current_grant", "grant_payload"]


_current: ContextVar[tuple[str, bytes] | None] = ContextVar("ecp_grant", default=None)


@contextmanager
def attach_grant(envelope: bytes, header: str = GRANT_HEADER) -> Iterator[None]:
    """Attach ``envelope`` (under ``header``) to activities scheduled inside the block."""
    token = _current.set((header, envelope))
    try:
        yield
    finally:
        _current.reset(token)


def current_grant() -> tuple[str, bytes] | None:
    """The header name and grant attached in the current context, if any."""
    return _current.get()


def grant_payload(envelope: bytes) -> Payload:
    """The header payload carrying ``envelope`` byte for byte."""
    return Payload(metadata={"encoding": b"binary/plain"}, data=envelope)
