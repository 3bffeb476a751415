"""Fixtures for the production-shape tests: a dev server per session, a fresh
PostgreSQL database per test, and helpers to run ``python -m ecp`` processes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import psycopg
import pytest
from temporalio.testing import WorkflowEnvironment

from ecp._devserver import temporal_binary
from ecp.workflows._search_attributes import ALL_KEYS

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        search_attributes=list(ALL_KEYS),
        dev_server_log_level="error",
    )
    async with env:
        yield env


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the local PostgreSQL, dropped afterwards."""
    name = f"ecp_prod_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is required and not reachable: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ecp_env(**settings: str) -> dict[str, str]:
    """The process environment with only the given ``ECP_*`` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECP_")}
    env.update(settings)
    return env


def run_ecp(
    args: list[str], env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ecp ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "ecp", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def spawn_worker(role: str, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m ecp worker --role ROLE`` in the background."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ecp", "worker", "--role", role],
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
