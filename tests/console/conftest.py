"""A console serving a real governed stack: dev server, workers, SQLite ledger, and
governed runs (one allowed, one denied) made before any page is opened.

The stack lives for the module so the browser tests share one set of runs; the
console runs in its own thread (uvicorn), the browser is Debian's Chromium.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.async_api import Browser, ViewportSize, async_playwright
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from ecp._keyring import KeyFiles, init_keyring
from ecp._runtime import build_plugin, run_workers
from ecp._settings import Role, Settings
from ecp.console import create_app
from ecp.workflows._models import GovernedRequest, GovernedResult, TaskQueues
from ecp.workflows._start import start_governed
from ecp.workflows.examples import DirectCall
from tests.workflows.conftest import temporal_env  # noqa: F401 (the session dev server)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WIDE: ViewportSize = {"width": 1280, "height": 800}
NARROW: ViewportSize = {"width": 390, "height": 844}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ConsoleServer:
    """uvicorn in a thread, with its own event loop, stopped on exit."""

    def __init__(
        self,
        settings: Settings,
        temporal_ui: str | None = None,
        port: int | None = None,
        **options: Any,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings, temporal_ui=temporal_ui, **options),
            host="127.0.0.1",
            port=self.port,
            log_level="error",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ConsoleServer:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("console server did not start")
            threading.Event().wait(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join()


@dataclass
class Governed:
    client: Client
    settings: Settings
    keys: KeyFiles
    allowed_id: str
    allowed: GovernedResult
    denied_id: str
    denied: GovernedResult
    console: ConsoleServer


async def _visible(client: Client, query: str, count: int) -> None:
    # Visibility trails the run's close; wait for it on the server's own state.
    while True:
        n = 0
        async for _ in client.list_workflows(query):
            n += 1
        if n >= count:
            return
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def governed(
    temporal_env: WorkflowEnvironment,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Governed]:
    home = tmp_path_factory.mktemp("console")
    init_keyring(home / "keys")
    q = uuid.uuid4().hex[:8]
    client = temporal_env.client
    settings = Settings(
        home=home,
        temporal_address=client.service_client.config.target_host,
        namespace=client.namespace,
        authority_queue=f"auth-{q}",
        executor_queue=f"exec-{q}",
        database_url=f"sqlite:///{home / 'ecp.db'}",
        # Requests here carry no initiator proof: accepted, marked unauthenticated.
        allow_unauthenticated=True,
    )
    plugin, ledger = build_plugin(settings, role=Role.ALL)
    queues = TaskQueues(settings.authority_queue, settings.executor_queue)
    initiator = "alice"
    async with run_workers(client, settings, plugin, role=Role.ALL, extra_workflows=[DirectCall]):
        allowed_id, denied_id = f"pay-{q}", f"bad-{q}"
        h1 = await start_governed(
            client,
            GovernedRequest(
                action="payout",
                args=[{"amount": 250, "currency": "EUR", "recipient": "acme"}],
                initiator=initiator,
                purpose="invoice 42",
                queues=queues,
            ),
            workflow_id=allowed_id,
        )
        h2 = await start_governed(
            client,
            GovernedRequest(
                action="launch_missiles",
                args=[{"target": "moon"}],
                initiator=initiator,
                queues=queues,
            ),
            workflow_id=denied_id,
        )
        allowed, denied = await h1.result(), await h2.result()
        assert allowed.outcome == "completed", allowed.reason
        assert denied.decision == "deny"
        await _visible(client, f"WorkflowId = '{allowed_id}' AND ECPOutcome = 'completed'", 1)
        await _visible(client, f"WorkflowId = '{denied_id}' AND ECPOutcome = 'denied'", 1)
        with ConsoleServer(settings, temporal_ui="http://127.0.0.1:8233") as console:
            yield Governed(
                client,
                settings,
                KeyFiles(settings.keys),
                allowed_id,
                allowed,
                denied_id,
                denied,
                console,
            )
    ledger.close()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is not installed: apt-get install -y chromium")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the page tests save their screenshots.

    Every run takes them; they replace the committed ones under
    ``docs/screenshots`` only with ``ECP_UPDATE_SCREENSHOTS=1``, so an
    ordinary test run leaves the work tree clean.
    """
    if os.environ.get("ECP_UPDATE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")
