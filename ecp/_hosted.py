"""Loading a user's activities for ``ecp worker --activities MODULE[:NAME]``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from temporalio import activity

from ecp.activities._governed import is_governed
from ecp.errors import EcpError

__all__ = ["ActivitySpecError", "HostedActivities", "load_activities"]


class ActivitySpecError(EcpError):
    """A ``--activities`` entry names no importable activity."""

    code = "activity_spec_invalid"


@dataclass(frozen=True)
class HostedActivities:
    """What a worker hosts: governed activities (behind the gate) and plain ones."""

    governed: tuple[Callable[..., object], ...]
    plain: tuple[Callable[..., object], ...]
    modules: tuple[str, ...]


def _is_activity(obj: object) -> bool:
    return callable(obj) and activity._Definition.from_callable(obj) is not None


def load_activities(specs: Sequence[str]) -> HostedActivities:
    """Import ``MODULE`` (every activity in it) or ``MODULE:NAME`` (that one).

    Raises:
        ActivitySpecError: a module does not import, a name is missing, or
            names no ``@activity.defn`` function; or nothing governed is named.
    """
    governed: list[Callable[..., object]] = []
    plain: list[Callable[..., object]] = []
    modules: list[str] = []
    for spec in specs:
        module_name, _, name = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ActivitySpecError(
                f"--activities {spec}: cannot import {module_name}: {exc}"
            ) from None
        if name:
            obj = getattr(module, name, None)
            if obj is None or not _is_activity(obj):
                raise ActivitySpecError(
                    f"--activities {spec}: {module_name} has no @activity.defn named {name}"
                )
            found = [obj]
        else:
            found = [v for v in vars(module).values() if _is_activity(v)]
        for fn in found:
            (governed if is_governed(fn) else plain).append(fn)
        if module_name not in modules:
            modules.append(module_name)
    if not governed:
        raise ActivitySpecError(f"--activities {' '.join(specs)}: no @governed activity among them")
    return HostedActivities(tuple(governed), tuple(plain), tuple(modules))
