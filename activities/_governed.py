"""Declaring an activity *governed*: the gate refuses to run it without a grant."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["GOVERNED_ATTR", "governed", "is_governed"]

GOVERNED_ATTR = "__ecp_governed__"

F = TypeVar("F", bound=Callable[..., object])


def governed(fn: F) -> F:
    """Mark an activity function as governed.

    Apply it under ``@activity.defn`` (closer to the function) so the mark is
    on the callable the worker invokes.
    """
    setattr(fn, GOVERNED_ATTR, True)
    return fn


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
