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
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from temporalio import activity

from ecp._failure import to_application_error
from ecp._wire import GATE_MARK
from ecp.authority.errors import VerificationError

__all__ = ["GOVERNED_ATTR", "GateMissingError", "admitted", "governed", "is_governed"]

GOVERNED_ATTR = "__ecp_governed__"

F = TypeVar("F", bound=Callable[..., object])


class GateMissingError(VerificationError):
    """A governed body was reached without the gate's admission for that execution."""

    code = "gate_missing"


@dataclass(frozen=True, slots=True)
class _Admission:
    fn: object
    namespace: str
    workflow_id: str
    run_id: str
    activity_id: str
    attempt: int


# Set by the gate around exactly one body call, after verify_grant returned.
# Context variables are per task (and copied into the thread of a sync
# activity), so concurrent activities never see each other's admission.
_admission: ContextVar[_Admission | None] = ContextVar("ecp_admission", default=None)


def _function_of(fn: object) -> object:
    # A bound method (an activity on a class instance) admits its function.
    return getattr(fn, "__func__", fn)


@contextmanager
def admitted(fn: object, info: activity.Info) -> Iterator[None]:
    """Admit the governed body of ``fn`` for the current activity execution.

    Only the gate calls this, and only with a verified grant in hand.
    """
    token = _admission.set(
        _Admission(
            _function_of(fn),
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


def _refuse(me: object, why: str) -> None:
    name = getattr(me, "__qualname__", repr(me))
    exc = GateMissingError(f"governed {name} refused to run: {why}")
    raise to_application_error(exc, str(exc), GATE_MARK)


def _check(me: object) -> None:
    adm = _admission.get()
    if adm is None:
        _refuse(me, "no gate admitted it (worker without the ECP gate, or called indirectly)")
        return
    if adm.fn is not me:
        _refuse(me, "the gate admitted another function for this activity")
    try:
        info = activity.info()
    except RuntimeError:
        _refuse(me, "called outside an activity")
        return
    here = (
        info.namespace,
        info.workflow_id or "",
        info.workflow_run_id or "",
        info.activity_id,
        info.attempt,
    )
    if here != (adm.namespace, adm.workflow_id, adm.run_id, adm.activity_id, adm.attempt):
        _refuse(me, "the gate admitted it for another activity execution")


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
    # The body stays in this closure only: no attribute of the wrapper
    # (``__wrapped__`` included) hands it out to call around the check.
    body = fn
    wrapper: Callable[..., Any]
    if inspect.iscoroutinefunction(fn):

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            _check(async_wrapper)
            return await cast(Callable[..., Any], body)(*args, **kwargs)

        wrapper = async_wrapper
    else:

        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            _check(sync_wrapper)
            return body(*args, **kwargs)

        wrapper = sync_wrapper
    functools.update_wrapper(wrapper, fn)
    try:
        # Temporal reads parameter and return types from the signature and
        # the type hints; resolve them here, in the body's module, so the
        # wrapper needs no ``__wrapped__`` to point back at the body.
        hints = typing.get_type_hints(fn)
        signature = inspect.signature(fn)
    except (NameError, TypeError, ValueError):
        pass  # forward references not yet resolvable: keep __wrapped__
    else:
        delattr(wrapper, "__wrapped__")
        wrapper.__annotations__ = hints
        resolved = signature.replace(
            parameters=[
                p.replace(annotation=hints.get(p.name, p.annotation))
                for p in signature.parameters.values()
            ],
            return_annotation=hints.get("return", signature.return_annotation),
        )
        setattr(wrapper, "__signature__", resolved)  # noqa: B010 - read by inspect.signature
    setattr(wrapper, GOVERNED_ATTR, True)
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
