"""Fixtures for the Temporal tests: one real dev server per session, and a
governed stack (keys, trust store, SQLite ledger, workers) per test on fresh
task queues."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from ecp._devserver import temporal_binary
from ecp._keyring import KeyFiles, init_keyring
from ecp._runtime import build_plugin, run_workers
from ecp._settings import Role, Settings
from ecp.lineage.ledger._ledger import Ledger
from ecp.workflows._models import TaskQueues
from ecp.workflows._search_attributes import ALL_KEYS
from ecp.workflows.examples import DirectCall


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        search_attributes=list(ALL_KEYS),
        dev_server_log_level="error",
    )
    async with env:
        yield env


@dataclass
class Stack:
    client: Client
    settings: Settings
    ledger: Ledger
    queues: TaskQueues
    keys: KeyFiles


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    init_keyring(tmp_path / "keys")
    q = uuid.uuid4().hex[:8]
    return Settings(
        home=tmp_path,
        authority_queue=f"auth-{q}",
        executor_queue=f"exec-{q}",
        database_url=f"sqlite:///{tmp_path / 'ecp.db'}",
        # Requests here carry no initiator proof: accepted, marked unauthenticated.
        allow_unauthenticated=True,
    )


@pytest.fixture
async def stack(temporal_env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[Stack]:
    plugin, ledger = build_plugin(settings, role=Role.ALL)
    client = temporal_env.client
    async with run_workers(client, settings, plugin, role=Role.ALL, extra_workflows=[DirectCall]):
        yield Stack(
            client,
            settings,
            ledger,
            TaskQueues(settings.authority_queue, settings.executor_queue),
            KeyFiles(settings.keys),
        )
    ledger.close()
