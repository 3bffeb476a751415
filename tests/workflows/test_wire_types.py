"""The wire dataclasses keep evaluated annotations, and GovernedExecution runs unsandboxed.

Both are CPU per governed action (docs/performance.md, "Where the time
goes"): Temporal's converter calls ``typing.get_type_hints`` on each
dataclass it decodes, which compiles and evaluates string annotations
(``from __future__ import annotations``) at every call; and the sandbox
costs the SDK several trips through it for every payload of every
workflow activation.
"""

from __future__ import annotations

import dataclasses
import inspect
from types import ModuleType

import pytest
from temporalio import workflow

from ecp.activities import _contracts
from ecp.workflows import _models
from ecp.workflows._governed import GovernedExecution


def _dataclasses(module: ModuleType) -> list[type]:
    return [
        c
        for _, c in inspect.getmembers(module, inspect.isclass)
        if dataclasses.is_dataclass(c) and c.__module__ == module.__name__
    ]


@pytest.mark.parametrize("module", [_contracts, _models], ids=lambda m: m.__name__)
def test_wire_dataclasses_have_evaluated_annotations(module: ModuleType) -> None:
    classes = _dataclasses(module)
    assert len(classes) >= 4
    for cls in classes:
        strings = {n: a for n, a in cls.__annotations__.items() if isinstance(a, str)}
        assert not strings, f"{cls.__name__} has string annotations {strings}"


def test_governed_execution_is_unsandboxed() -> None:
    defn = workflow._Definition.must_from_class(GovernedExecution)
    assert defn.sandboxed is False
