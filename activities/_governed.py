"""Declaring an activity *governed*: its body runs only inside a gate that verified a grant.

``@governed`` does two things. It marks the function, so the gate asks for a
grant before running it. And it wraps the function, so the body itself checks
that the gate admitted *this* function for *this* activity execution before its
first line runs. The second half is what makes ECP fail-closed by
construction: a worker built without the plugin, a wrapper activity that calls
the governed function, a ``functools.partial`` of it or a dynamic activity that
dispatches to it all reach the body without the gate's admission, and the
body refuses.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from temporalio import activity

from ecp._failure import to_application_error
from ecp._wire import GATE_MARK
from ecp.authority.errors import VerificationError

__all__ = ["GOVERNED_ATTR", "GateMissingError", "admitted", "body_of", "governed", "is_governed"]

GOVERNED_ATTR = "__ecp_governed__"
_BODY_ATTR = "__ecp_body__"

F = TypeVar("F", bound=Callable[..., object])


class GateMissingError(VerificationError):
    """A governed body was reached without the gate's admission for that execution."""

    code = "gate_missing"


@dataclass(frozen=True, slots=True)
class _Admission:
    body: object
    namespace: str
    workflow_id: str
    run_id: str
    activity_id: str
    attempt: int


# Set by the gate around exactly one body call, after verify_grant returned.
# Context variables are per task (and copied into the thread of a sync
# activity), so concurrent activities never see each other's admission.
_admission: ContextVar[_Admission | None] = ContextVar("ecp_admission", default=None)


def body_of(fn: object) -> object:
    """The original function behind a ``@governed`` wrapper (else ``fn``)."""
    return getattr(fn, _BODY_ATTR, fn)


@contextmanager
def admitted(fn: object, info: activity.Info) -> Iterator[None]:
    """Admit the governed body of ``fn`` for the current activity execution.

    Only the gate calls this, and only with a verified grant in hand.
    """
    token = _admission.set(
        _Admission(
            body_of(fn),
            info.namespace,
            info.workflow_id or "",
            info.workflow_run_id or "",
            info.activity_id,
            info.attempt,
        )
    )
    try:
        yield
    finally:
        _admission.reset(token)


def _refuse(body: object, why: str) -> None:
    name = getattr(body, "__qualname__", repr(body))
    exc = GateMissingError(f"governed {name} refused to run: {why}")
    raise to_application_error(exc, str(exc), GATE_MARK)


def _check(body: object) -> None:
    adm = _admission.get()
    if adm is None:
        _refuse(body, "no gate admitted it (worker without the ECP gate, or called indirectly)")
        return
    if adm.body is not body:
        _refuse(body, "the gate admitted another function for this activity")
    try:
        info = activity.info()
    except RuntimeError:
        _refuse(body, "called outside an activity")
        return
    here = (
        info.namespace,
        info.workflow_id or "",
        info.workflow_run_id or "",
        info.activity_id,
        info.attempt,
    )
    if here != (adm.namespace, adm.workflow_id, adm.run_id, adm.activity_id, adm.attempt):
        _refuse(body, "the gate admitted it for another activity execution")


def governed(fn: F) -> F:
    """Declare an activity function governed.

    Apply it under ``@activity.defn`` (closer to the function), so that the
    worker calls the checking wrapper.

    Raises:
        TypeError: applied over ``@activity.defn``: the worker would call the
            unwrapped function.
    """
    if hasattr(fn, "__temporal_activity_definition"):
        raise TypeError(f"apply @governed under @activity.defn on {fn.__qualname__}")
    body = fn
    wrapper: Callable[..., Any]
    if inspect.iscoroutinefunction(fn):

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            _check(body)
            return await cast(Callable[..., Any], body)(*args, **kwargs)

        wrapper = async_wrapper
    else:

        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            _check(body)
            return body(*args, **kwargs)

        wrapper = sync_wrapper
    functools.update_wrapper(wrapper, fn)
    setattr(wrapper, GOVERNED_ATTR, True)
    setattr(wrapper, _BODY_ATTR, body)
    return cast(F, wrapper)


def is_governed(fn: object) -> bool:
    """Whether ``fn`` (or the function it wraps) was marked governed."""
    seen: set[int] = set()
    cur: object | None = fn
    while cur is not None and id(cur) not in seen:
        if getattr(cur, GOVERNED_ATTR, False):
            return True
        seen.add(id(cur))
        cur = getattr(cur, "__wrapped__", None) or getattr(cur, "__func__", None)
    return False
