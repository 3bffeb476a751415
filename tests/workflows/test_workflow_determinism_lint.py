"""ECP's workflow code reads no clock, randomness, environment or file of its own.

Temporal's sandbox would not catch it: ``ecp`` is a pass-through module
(``PASSTHROUGH_MODULES``), imported outside the sandbox with the real
``datetime``, ``time`` and ``open``, and ``GovernedExecution`` runs
unsandboxed. A non-deterministic call in these modules would only show up
when a history replays differently, so this test looks for one in the
source: time comes from ``workflow.now()``, ids from ``workflow.uuid4()``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ecp.workflows

#: The modules whose code runs inside workflow activations.
WORKFLOW_CODE = (
    "_call.py",
    "_governed.py",
    "_approval_check.py",
    "_grant_header.py",
    "_in_workflow.py",
    "_models.py",
    "_search_attributes.py",
)

#: Dotted names that read the outside world (suffix match on the call's name).
BANNED = (
    "datetime.now",
    "datetime.utcnow",
    "datetime.today",
    "date.today",
    "time.time",
    "time.time_ns",
    "time.monotonic",
    "time.perf_counter",
    "time.sleep",
    "uuid.uuid1",
    "uuid.uuid4",
    "os.environ",
    "os.getenv",
    "os.urandom",
    "system_clock",
    "now_utc",
)
BANNED_IMPORTS = ("random", "secrets", "threading", "socket", "subprocess")
BANNED_CALLS = ("open", "input")


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def findings(source: str) -> list[str]:
    """Every outside-world read in ``source``, as ``line: what``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [
                f"{node.lineno}: import {a.name}"
                for a in node.names
                if a.name.split(".")[0] in BANNED_IMPORTS
            ]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if mod.split(".")[0] in BANNED_IMPORTS:
                found.append(f"{node.lineno}: from {mod} import ...")
            found += [
                f"{node.lineno}: from {mod} import {a.name}"
                for a in node.names
                if a.name in BANNED or f"{mod}.{a.name}".endswith(BANNED)
            ]
        elif isinstance(node, ast.Attribute | ast.Name):
            name = _dotted(node)
            if name and any(name == b or name.endswith("." + b) for b in BANNED):
                found.append(f"{node.lineno}: {name}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in BANNED_CALLS
        ):
            found.append(f"{node.lineno}: {node.func.id}()")
    return found


@pytest.mark.parametrize("module", WORKFLOW_CODE)
def test_workflow_code_reads_nothing_outside_the_history(module: str) -> None:
    path = Path(ecp.workflows.__file__).parent / module
    assert findings(path.read_text()) == [], f"{module} reads the outside world"


def test_the_lint_finds_what_it_bans() -> None:
    # Each of these would make a replay diverge; the lint must name them all.
    bad = """
import random
from datetime import datetime
from ecp.authority._clock import system_clock, now_utc
import uuid, os, time
a = datetime.now()
b = time.monotonic()
c = uuid.uuid4()
d = os.environ["X"]
e = open("f")
"""
    got = findings(bad)
    for what in (
        "import random",
        "datetime.now",
        "time.monotonic",
        "uuid.uuid4",
        "os.environ",
        "open()",
        "import system_clock",
        "import now_utc",
    ):
        assert any(what in f for f in got), (what, got)
    ok = "from temporalio import workflow\nt = workflow.now()\nu = workflow.uuid4()\n"
    assert findings(ok) == []
