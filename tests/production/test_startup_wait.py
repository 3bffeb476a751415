"""A starting worker waits up to ECP_STARTUP_WAIT_SECONDS for a database or Temporal.

Each case runs ``python -m ecp worker`` as its own process: against a private
PostgreSQL that starts only once the worker is waiting for it (the worker
then serves a governed payout end to end), against a Temporal dev server that
starts late, against dependencies that never come up (it gives up naming the
store and the setting), and against faults that waiting cannot mend (it
fails at once however long the bound: no retry is logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL, make_url
from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from ecp._devserver import temporal_binary
from ecp._keyring import KeyFiles, init_keyring
from ecp._runtime import build_plugin
from ecp._settings import Role, Settings
from ecp._startup import StartupWait
from ecp.authority._keys import load_public_key
from ecp.authority.errors import ReplayStoreUnavailableError
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger._receipt import verify_receipt
from ecp.lineage.ledger._store import LedgerDatabase
from ecp.lineage.ledger.errors import LedgerUnavailableError
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import GovernedRequest, TaskQueues
from ecp.workflows._search_attributes import ALL_KEYS
from tests.lineage.private_pg import PrivatePostgres, _free_port, private_cluster

from .conftest import ecp_env, run_ecp, spawn_worker
from .grpc_stub import GrpcStub

ORIGIN = "ecp.test/startup"
#: What the worker logs for each retry (ecp._startup).
RETRY = "unavailable (attempt "


@pytest.fixture
def keys(tmp_path: Path) -> KeyFiles:
    return init_keyring(tmp_path / "keys")


@pytest.fixture
def queues() -> TaskQueues:
    q = uuid.uuid4().hex[:8]
    return TaskQueues(f"auth-{q}", f"exec-{q}")


@pytest.fixture
def stopped_pg(tmp_path: Path) -> Iterator[PrivatePostgres]:
    """A private cluster, initialised but not started (the test starts it)."""
    with private_cluster(tmp_path / "pg", start=False) as pg:
        yield pg


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _env(tmp_path: Path, keys: KeyFiles, queues: TaskQueues, **extra: str) -> dict[str, str]:
    return ecp_env(
        ECP_HOME=str(tmp_path / "home"),
        ECP_KEYS_DIR=str(keys.directory),
        ECP_AUTHORITY_QUEUE=queues.authority,
        ECP_EXECUTOR_QUEUE=queues.executor,
        ECP_ALLOW_UNAUTHENTICATED="true",
        ECP_LOG_ORIGIN=ORIGIN,
        **extra,
    )


async def _until_logged(
    proc: subprocess.Popen[bytes], log: Path, text: str, *, attempts: int = 3000
) -> None:
    """Wait until the worker's log holds ``text``; fail if the worker exits first."""
    for _ in range(attempts):
        if text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise AssertionError(f"worker exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"worker never logged {text!r}:\n{log.read_text()[-3000:]}")


async def _pollers(client: Client, queues: TaskQueues) -> int:
    count = 0
    for name in (queues.authority, queues.executor):
        for kind in (
            TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        ):
            resp = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=name, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
                    task_queue_type=kind,
                )
            )
            count += len(resp.pollers)
    return count


async def _governed_payout(client: Client, queues: TaskQueues, keys: KeyFiles) -> None:
    """One payout through verify, authorize, execute and prove, its receipt checked."""
    handle = await client.start_workflow(
        GovernedExecution.run,
        GovernedRequest(
            "payout",
            [{"amount": 250, "currency": "EUR", "recipient": "acme"}],
            "alice",
            "startup wait test",
            queues=queues,
        ),
        id=f"startup-{uuid.uuid4().hex[:8]}",
        task_queue=queues.executor,
    )
    # A safety net for a worker that never serves, not a measurement.
    result = await asyncio.wait_for(handle.result(), timeout=240)
    assert (result.decision, result.outcome) == ("allow", "completed"), result.reason
    verify_receipt(result.receipt, load_public_key(keys.log), origin=ORIGIN)


async def test_worker_waits_for_a_database_that_starts_late(
    tmp_path: Path,
    temporal_env: WorkflowEnvironment,
    stopped_pg: PrivatePostgres,
    keys: KeyFiles,
    queues: TaskQueues,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    client = temporal_env.client
    env = _env(
        tmp_path,
        keys,
        queues,
        ECP_DATABASE_URL=stopped_pg.url,
        ECP_TEMPORAL_ADDRESS=client.service_client.config.target_host,
        ECP_NAMESPACE=client.namespace,
        ECP_STARTUP_WAIT_SECONDS="240",
    )
    log = tmp_path / "worker.log"
    workers.append(proc := spawn_worker("all", env, log))
    # The database is down: the worker says so and waits...
    await _until_logged(proc, log, f"ledger {RETRY}1)")
    # ...without taking any task meanwhile (it has not even reached Temporal).
    assert await _pollers(client, queues) == 0
    stopped_pg.start()
    await _governed_payout(client, queues, keys)
    assert proc.poll() is None, log.read_text()[-3000:]
    text = log.read_text()
    assert "ECP_STARTUP_WAIT_SECONDS=240" in text
    # Once the ledger answered, the single-use store and the halt list did too.
    assert f"single-use store {RETRY}" not in text
    assert f"halt list {RETRY}" not in text


async def test_worker_waits_for_temporal_that_starts_late(
    tmp_path: Path,
    keys: KeyFiles,
    queues: TaskQueues,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    port = _free_port()
    env = _env(
        tmp_path,
        keys,
        queues,
        ECP_TEMPORAL_ADDRESS=f"127.0.0.1:{port}",
        ECP_STARTUP_WAIT_SECONDS="240",
    )
    log = tmp_path / "worker.log"
    workers.append(proc := spawn_worker("all", env, log))
    await _until_logged(proc, log, f"Temporal {RETRY}1)")
    late = await WorkflowEnvironment.start_local(
        port=port,
        dev_server_existing_path=str(temporal_binary()),
        search_attributes=list(ALL_KEYS),
        dev_server_log_level="error",
    )
    async with late:
        await _governed_payout(late.client, queues, keys)
    assert proc.poll() is None, log.read_text()[-3000:]


def _refused_lines(out: subprocess.CompletedProcess[str]) -> tuple[list[str], str]:
    """The retry lines, and the one error line that ends a refused start."""
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert out.returncode == 1, out.stderr
    assert lines, out.stderr
    retries = [ln for ln in lines[:-1] if RETRY in ln]
    # Nothing else: no traceback, one error line, last.
    assert len(retries) == len(lines) - 1, out.stderr
    assert lines[-1].startswith("error: "), out.stderr
    return retries, lines[-1]


#: Secrets in a database URL that is down: none may appear in any line.
SECRETS = ("s3cret-userinfo", "hunter2-query", "key-passphrase")


@pytest.mark.parametrize(
    ("store", "error"),
    [
        ("ledger", "LedgerUnavailableError: ledger database postgresql+psycopg://postgres:***@"),
        (
            "halt list (ECP_HALT_DATABASE_URL)",
            "ControlStateUnavailableError: control log unavailable at "
            "postgresql+psycopg://postgres:***@",
        ),
        ("Temporal", "TemporalUnreachableError: cannot reach Temporal"),
    ],
)
def test_gives_up_after_the_bound_naming_what_and_the_setting(
    tmp_path: Path, pg_url: str, keys: KeyFiles, queues: TaskQueues, store: str, error: str
) -> None:
    nothing = f"127.0.0.1:{_free_port()}"  # nothing listens there
    # Passwords in the user info and in the query (libpq takes both): every
    # retry line and the error show the host, never a password.
    down = (
        f"postgresql+psycopg://postgres:{SECRETS[0]}@{nothing}/ecp"
        f"?password={SECRETS[1]}&sslpassword={SECRETS[2]}"
    )
    settings = {
        "ledger": {"ECP_DATABASE_URL": down},
        # The ledger answers; the halt list has its own database, which does not.
        "halt list (ECP_HALT_DATABASE_URL)": {
            "ECP_DATABASE_URL": pg_url,
            "ECP_HALT_DATABASE_URL": down,
        },
        "Temporal": {"ECP_DATABASE_URL": pg_url, "ECP_TEMPORAL_ADDRESS": nothing},
    }[store]
    # Long enough that Temporal, tried only after the stores on a loaded
    # machine, still has time left for a retry.
    env = _env(tmp_path, keys, queues, ECP_STARTUP_WAIT_SECONDS="10", **settings)
    out = run_ecp(["worker", "--role", "executor"], env, timeout=180)
    retries, last = _refused_lines(out)
    assert retries, last
    assert all(ln.split(": ", 1)[-1].startswith(f"{store} {RETRY}") for ln in retries), retries
    assert all("ECP_STARTUP_WAIT_SECONDS=10" in ln for ln in retries), retries
    assert all(nothing in ln for ln in retries), retries  # where it is, in each line
    assert last.startswith(f"error: {error}"), last
    assert (
        f"(still unavailable after ECP_STARTUP_WAIT_SECONDS=10 s, {len(retries) + 1} attempts)"
        in (last)
    )
    assert not [s for s in SECRETS if s in out.stderr + out.stdout], out.stderr


def _url(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def _libpq_dsn(pg_url: str) -> str:
    return _url(make_url(pg_url).set(drivername="postgresql"))


def _trust_auth(pg_url: str) -> bool:
    """Whether the server lets an unknown role try (trust) rather than ask a password."""
    try:
        psycopg.connect(_libpq_dsn(pg_url).replace("//postgres@", "//nobody_probe@")).close()
    except psycopg.OperationalError as exc:
        return "does not exist" in str(exc)
    return True


def _server_has_ssl(pg_url: str) -> bool:
    with psycopg.connect(_libpq_dsn(pg_url)) as con:
        row = con.execute("SHOW ssl").fetchone()
    return row is not None and row[0] == "on"


def _wrong_schema(tmp_path: Path) -> str:
    path = tmp_path / "wrong.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE ledger_head (size INTEGER)")  # no id, root_hash, border
    return f"sqlite:///{path}"


@pytest.mark.parametrize(
    "fault",
    [
        "no such database",
        "no such role",
        "wrong schema",
        "no trust store",
        "SSL required",
        "invalid sslmode",
    ],
)
def test_faults_waiting_cannot_mend_fail_at_once(
    tmp_path: Path, pg_url: str, keys: KeyFiles, queues: TaskQueues, fault: str
) -> None:
    url = make_url(pg_url)
    settings: dict[str, str] = {}
    if fault == "no such database":
        settings["ECP_DATABASE_URL"] = _url(url.set(database=f"nodb_{uuid.uuid4().hex[:8]}"))
        expected = "does not exist"
    elif fault == "no such role":
        # Under trust auth "role ... does not exist"; under password auth
        # "password authentication failed": both refusals, both final.
        settings["ECP_DATABASE_URL"] = _url(url.set(username=f"nobody_{uuid.uuid4().hex[:6]}"))
        expected = "does not exist" if _trust_auth(pg_url) else "authentication failed"
    elif fault == "SSL required":
        if _server_has_ssl(pg_url):
            pytest.skip("the test server speaks SSL: sslmode=require would connect")
        settings["ECP_DATABASE_URL"] = _url(url.update_query_dict({"sslmode": "require"}))
        expected = "does not support SSL"
    elif fault == "invalid sslmode":
        settings["ECP_DATABASE_URL"] = _url(url.update_query_dict({"sslmode": "bogus"}))
        expected = "invalid sslmode value"
    elif fault == "wrong schema":
        settings["ECP_DATABASE_URL"] = _wrong_schema(tmp_path)
        expected = "no such column"
    else:
        # A trust store is a file: its errors are retryable at run time (the
        # gate refuses meanwhile), but a start does not wait for one.
        settings["ECP_TRUST_STORE"] = str(tmp_path / "no-such-truststore.json")
        expected = "TrustStoreError"
    # A long bound: were any of these waited for, a retry would be logged.
    env = _env(tmp_path, keys, queues, ECP_STARTUP_WAIT_SECONDS="30")
    env.update(settings)
    retries, last = _refused_lines(run_ecp(["worker", "--role", "executor"], env, timeout=120))
    assert retries == [], retries
    assert expected in last, last
    assert "ECP_STARTUP_WAIT_SECONDS" not in last, last


@pytest.mark.parametrize(
    ("refusal", "expected"),
    [
        # A client set for TLS, a frontend that speaks plaintext.
        ("TLS against plaintext", "InvalidContentType"),
        # What answers there says no: a wrong API key...
        ("UNAUTHENTICATED", "code: Unauthenticated"),
        # ...or is not a Temporal frontend (a proxy's 404).
        ("UNIMPLEMENTED", "code: Unimplemented"),
    ],
)
async def test_temporal_refusing_for_good_fails_at_once(
    tmp_path: Path,
    pg_url: str,
    temporal_env: WorkflowEnvironment,
    keys: KeyFiles,
    queues: TaskQueues,
    refusal: str,
    expected: str,
) -> None:
    settings = {"ECP_DATABASE_URL": pg_url, "ECP_STARTUP_WAIT_SECONDS": "30"}
    with contextlib.ExitStack() as stack:
        if refusal == "TLS against plaintext":
            settings["ECP_TEMPORAL_ADDRESS"] = temporal_env.client.service_client.config.target_host
            settings["ECP_TLS"] = "true"
        else:
            stub = stack.enter_context(
                GrpcStub(grpc_status=16) if refusal == "UNAUTHENTICATED" else GrpcStub()
            )
            settings["ECP_TEMPORAL_ADDRESS"] = stub.address
        env = _env(tmp_path, keys, queues, **settings)
        out = await asyncio.to_thread(run_ecp, ["worker", "--role", "executor"], env, 120)
    retries, last = _refused_lines(out)
    # Under a 30 s bound: were it waited for, a retry would be logged.
    assert retries == [], retries
    assert last.startswith("error: TemporalRefusedError: cannot reach Temporal"), last
    assert expected in last, last
    assert "ECP_STARTUP_WAIT_SECONDS" not in last, last


def test_a_temporal_that_never_answers_is_given_up_on_within_the_bound(
    tmp_path: Path, pg_url: str, keys: KeyFiles, queues: TaskQueues
) -> None:
    # The kernel completes the handshake (backlog); nothing ever reads or replies.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        env = _env(
            tmp_path,
            keys,
            queues,
            ECP_DATABASE_URL=pg_url,
            ECP_TEMPORAL_ADDRESS=address,
            ECP_STARTUP_WAIT_SECONDS="3",
        )
        out = run_ecp(["worker", "--role", "executor"], env, timeout=120)  # a hang guard
    _retries, last = _refused_lines(out)
    # The attempt was cut at the time left plus the grace (the SDK's own
    # bound, 30 s, would end it with another message).
    assert last.startswith(f"error: TemporalUnreachableError: cannot reach Temporal at {address}")
    assert "no answer within" in last, last
    assert "(still unavailable after ECP_STARTUP_WAIT_SECONDS=3 s" in last, last


def test_a_ledger_locked_by_another_session_is_retried_then_given_up(
    tmp_path: Path, pg_url: str, keys: KeyFiles, queues: TaskQueues
) -> None:
    LedgerDatabase.open(pg_url).dispose()  # the tables exist: the open only reads
    env = _env(tmp_path, keys, queues, ECP_DATABASE_URL=pg_url, ECP_STARTUP_WAIT_SECONDS="8")
    with psycopg.connect(_libpq_dsn(pg_url)) as locker:
        # Held until the block ends (the transaction stays open): a migration,
        # an operator's session left open.
        locker.execute("LOCK TABLE ledger_head")
        # A hang guard, not a measurement: without a lock timeout on the open
        # the worker would wait on the lock until this session ends.
        out = run_ecp(["worker", "--role", "executor"], env, timeout=150)
    retries, last = _refused_lines(out)
    assert retries, last
    assert all(ln.split(": ", 1)[-1].startswith(f"ledger {RETRY}") for ln in retries), retries
    assert all("lock timeout" in ln for ln in retries), retries
    assert last.startswith("error: LedgerUnavailableError: ledger database"), last
    assert "(still unavailable after ECP_STARTUP_WAIT_SECONDS=8 s" in last, last


def test_an_executor_waits_for_its_single_use_store(
    tmp_path: Path, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The single-use store alone is down: the ledger is given, the halt list
    # has a database of its own that answers. So the store's own wait is
    # what refuses (not the halt list's check on the same database).
    init_keyring(tmp_path / "keys")
    down = f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/ecp"
    settings = Settings(
        home=tmp_path, database_url=down, halt_database_url=pg_url, allow_unauthenticated=True
    )
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        with (
            caplog.at_level(logging.WARNING, logger="ecp.startup"),
            pytest.raises(ReplayStoreUnavailableError) as info,
        ):
            build_plugin(settings, role=Role.EXECUTOR, ledger=ledger, startup=StartupWait(3))
    finally:
        ledger.close()
    assert f"single-use store {RETRY}1)" in caplog.text, caplog.text
    assert "halt list" not in caplog.text, caplog.text
    assert "still unavailable after ECP_STARTUP_WAIT_SECONDS=3 s" in str(info.value)


def test_backoff_grows_capped_with_jitter_and_ends_at_the_bound() -> None:
    # The schedule alone, on a clock of its own (the processes above use the real one).
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    jitters = iter([0.0, 0.99, 0.5] * 100)
    wait = StartupWait(60, clock=lambda: now[0], jitter=lambda: next(jitters), sleep=sleep)

    def down() -> None:
        raise LedgerUnavailableError("ledger database x unavailable: connection timeout expired")

    with pytest.raises(LedgerUnavailableError) as info:
        wait.call("ledger", down)
    assert str(info.value).startswith("ledger database x unavailable: connection timeout expired")
    assert str(info.value).endswith(
        f"(still unavailable after ECP_STARTUP_WAIT_SECONDS=60 s, {len(slept) + 1} attempts)"
    )
    assert now[0] == pytest.approx(60)  # the last sleep ends at the bound, not beyond
    # Each delay is 1/2 to 1 of a backoff doubling from 0.5 s up to 8 s.
    for n, delay in enumerate(slept[:-1]):
        backoff = min(8.0, 0.5 * 2**n)
        assert backoff / 2 <= delay <= backoff, (n, slept)
    assert max(slept) <= 8.0
    assert slept[:3] == [0.25, pytest.approx(0.995), 1.5]


def test_no_wait_raises_the_first_failure_as_it_is() -> None:
    wait = StartupWait(0, sleep=lambda _s: pytest.fail("slept with ECP_STARTUP_WAIT_SECONDS=0"))
    first = LedgerUnavailableError("ledger database x unavailable: connection refused")

    def down() -> None:
        raise first

    with pytest.raises(LedgerUnavailableError) as info:
        wait.call("ledger", down)
    assert info.value is first


def test_build_plugin_in_library_code_does_not_wait_unless_asked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Called from someone's async code, a wait would sleep on their event
    # loop's thread: no wait unless ECP_STARTUP_WAIT_SECONDS is set (or a
    # StartupWait is passed, as `ecp worker` does).
    init_keyring(tmp_path / "keys")
    down = f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/ecp"
    unset = Settings(home=tmp_path, database_url=down, allow_unauthenticated=True)
    with (
        caplog.at_level(logging.WARNING, logger="ecp.startup"),
        pytest.raises(LedgerUnavailableError) as info,
    ):
        build_plugin(unset, role=Role.EXECUTOR)
    assert RETRY not in caplog.text, caplog.text
    assert "ECP_STARTUP_WAIT_SECONDS" not in str(info.value)
    # Set explicitly, it is honoured.
    explicit = unset.model_copy(update={"startup_wait_seconds": 1.0})
    with (
        caplog.at_level(logging.WARNING, logger="ecp.startup"),
        pytest.raises(LedgerUnavailableError) as info,
    ):
        build_plugin(explicit, role=Role.EXECUTOR)
    assert f"ledger {RETRY}1)" in caplog.text, caplog.text
    assert "still unavailable after ECP_STARTUP_WAIT_SECONDS=1 s" in str(info.value)
