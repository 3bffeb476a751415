"""Fixtures of the lineage graph tests: recorded histories, and the real dev
server and governed stack of ``tests.workflows`` for the cross-check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecp.lineage.graph._history import RunHistory, load_history_file
from tests.workflows.conftest import settings, stack, temporal_env  # noqa: F401

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture_index() -> dict[str, dict[str, str]]:
    """``index.json``: fixture name → workflow id, run id, what it covers."""
    data: dict[str, dict[str, str]] = json.loads((FIXTURES / "index.json").read_text())
    return data


def load(*names: str) -> list[RunHistory]:
    """The recorded histories ``names`` (file stems under ``fixtures/``)."""
    return [load_history_file(FIXTURES / f"{n}.json", namespace="default") for n in names]


ALL = ("pipeline_run1", "pipeline_run2", "pipeline_child", "governed_payout", "direct_denied")


@pytest.fixture(scope="session")
def index() -> dict[str, dict[str, str]]:
    return fixture_index()
