"""Worker bootstrap: builds the governance pieces a role needs from settings.

The authority role loads the authority, log and recorder private keys; the
executor role loads only the worker key and public trust material. Nothing
here assumes both run in one process, though ``ecp dev`` does that.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from pathlib import Path

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from ecp._connect import ensure_search_attributes
from ecp._keyring import KeyFiles
from ecp._observe import ObservedLedger, TelemetryInterceptor
from ecp._settings import Role, Settings, SettingsError, env_name
from ecp._startup import StartupWait
from ecp.activities import examples
from ecp.activities._authority_side import AuthorityActivities
from ecp.activities._control_watch import ControlWatch
from ecp.activities._evidence_sink import LedgerEvidenceSink
from ecp.activities._executor_side import ExecutorActivities
from ecp.activities._gate import GateConfig, GateInterceptor
from ecp.activities._prove import ProveActivities
from ecp.authority._attestation import measure_environment
from ecp.authority._clock import Clock, system_clock
from ecp.authority._control_log import SqlControlLog
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._oidc import OidcIssuer
from ecp.authority._policy import PolicyBundle
from ecp.authority._replay import SqlReplayGuard
from ecp.authority._truststore import TrustStore, TrustStoreReader
from ecp.authority.errors import PolicyBundleError
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.witness._client import parse_witness_spec
from ecp.workflows._models import TaskQueues
from ecp.workflows._plugin import EcpPlugin

__all__ = [
    "DEMO_GOVERNED_ACTIVITIES",
    "GOVERNED_MODULES",
    "build_plugin",
    "run_workers",
]

#: The demo's governed activities, and the modules whose source is attested.
DEMO_GOVERNED_ACTIVITIES: tuple[Callable[..., object], ...] = (
    examples.payout,
    examples.change_infrastructure,
    examples.deploy_model,
    examples.train_model,
)
GOVERNED_MODULES: tuple[str, ...] = ("ecp.activities.examples",)


def _activity_name(fn: Callable[..., object]) -> str:
    defn = activity._Definition.from_callable(fn)
    if defn is None or defn.name is None:
        raise TypeError(f"{fn!r} is not an @activity.defn activity")
    return defn.name


def _accepted_digests(settings: Settings) -> frozenset[str] | None:
    # Fail closed by default: with nothing configured, honour grants only
    # under the bundle this deployment is configured with; any bundle only
    # when ECP_ACCEPTED_POLICY_DIGESTS=* says so.
    accepted = settings.accepted_digests
    if accepted is None or accepted:
        return accepted
    try:
        return frozenset({PolicyBundle.load(settings.policy).digest})
    except PolicyBundleError as exc:
        raise PolicyBundleError(
            f"{exc}; an executor honours grants only under the configured bundle's digest "
            "(set ECP_POLICY_BUNDLE, or pin digests with ECP_ACCEPTED_POLICY_DIGESTS)"
        ) from exc


def _oidc_issuers(settings: Settings) -> tuple[OidcIssuer, ...]:
    """The configured OpenID Connect issuer, if any (discovery happens at start)."""
    if settings.oidc_issuer is None:
        return ()
    if not settings.oidc_audience:
        raise SettingsError("ECP_OIDC_ISSUER is set: set ECP_OIDC_AUDIENCE too")
    if settings.oidc_jwks_file is not None:
        issuer = OidcIssuer.from_jwks_file(
            settings.oidc_jwks_file,
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
        )
    else:
        issuer = OidcIssuer.discover(settings.oidc_issuer, audience=settings.oidc_audience)
    return (dataclasses.replace(issuer, principal_claim=settings.oidc_principal_claim),)


def _local_bundle(settings: Settings) -> PolicyBundle | None:
    try:
        return PolicyBundle.load(settings.policy)
    except PolicyBundleError:
        return None  # then scoped calls are refused; per-call grants still work


def _trust_loader(path: Path) -> Callable[[], TrustStore]:
    # Re-read on every call so a revocation takes effect at once; an
    # unreadable store raises TrustStoreError and the gate refuses. Only
    # bytes not seen before are parsed again (TrustStoreReader).
    return TrustStoreReader(path)


def build_plugin(
    settings: Settings,
    *,
    role: Role,
    governed_activities: Sequence[Callable[..., object]] = DEMO_GOVERNED_ACTIVITIES,
    governed_modules: Sequence[str] = GOVERNED_MODULES,
    clock: Clock = system_clock,
    ledger: Ledger | None = None,
    startup: StartupWait | None = None,
) -> tuple[EcpPlugin, Ledger]:
    """Build the plugin for ``role`` from ``settings``.

    Opens every store the role uses (the ledger; for executors the
    single-use store and the halt list too) before it returns, so no worker
    built on the plugin takes a task its stores could not serve. A store
    that is down is waited for within ``startup`` (see :class:`StartupWait`),
    sleeping on the calling thread meanwhile. Without ``startup`` there is
    no wait (the first failure is raised), unless ``ECP_STARTUP_WAIT_SECONDS``
    is set explicitly (environment or settings file): this is usually called
    from async code, whose event loop a wait would stall. An async caller
    that wants the wait runs this in a thread (``asyncio.to_thread``);
    ``ecp worker`` always waits, before anything else runs on its loop.

    Raises:
        KeyFileError: a key this role needs is missing or unreadable.
        TrustStoreError: the trust store cannot be loaded.
        PolicyBundleError: the policy bundle does not load or validate.
        LedgerUnavailableError: the ledger database cannot be reached.
        ReplayStoreUnavailableError: the single-use store cannot be reached.
        ControlStateUnavailableError: the halt list cannot be reached.
    """
    if startup is None:
        explicit = "startup_wait_seconds" in settings.model_fields_set
        startup = StartupWait.from_settings(settings) if explicit else StartupWait(0)
    wait = startup
    keys = KeyFiles(settings.keys)
    trust = _trust_loader(settings.trust)
    trust()  # fail at start, in one line, rather than at the first request
    # Traced and measured; with no OTel exporter configured that is a no-op.
    # Appends must be signed by a worker-role key the deployment trusts, so
    # nobody with database access alone can slip evidence in through ECP.
    # Witnesses (ECP_WITNESSES) are asked to cosign each checkpoint the
    # prove step signs; unreachable ones leave it unwitnessed, not refused.
    # Keys, trust store and policy are files: a fault there is the
    # deployment's and fails at once. A database slow to accept is waited for.
    if ledger is None:
        trusted, witnesses = trust(), [parse_witness_spec(w) for w in settings.witness_specs]
        ledger = wait.call(
            "ledger",
            lambda: ObservedLedger.open(
                settings.db_url, origin=settings.log_origin, trust=trusted, witnesses=witnesses
            ),
        )
    queues = TaskQueues(settings.authority_queue, settings.executor_queue)
    authority_acts: list[Callable[..., object]] = []
    executor_acts: list[Callable[..., object]] = []
    gate: GateInterceptor | None = None
    if role in (Role.AUTHORITY, Role.ALL):
        bundle = PolicyBundle.load(settings.policy)
        bundle.validate()
        authority = AuthorityActivities(
            bundle=bundle,
            signer=Ed25519FileSigner.from_file(keys.authority),
            trust=trust,
            clock=clock,
            grant_ttl=timedelta(seconds=settings.grant_ttl_seconds),
            allow_unauthenticated=settings.allow_unauthenticated,
            oidc=_oidc_issuers(settings),
        )
        prove = ProveActivities(
            ledger=ledger,
            log_signer=Ed25519FileSigner.from_file(keys.log),
            recorder=Ed25519FileSigner.from_file(keys.recorder),
            clock=clock,
        )
        authority_acts = [*authority.activities(), *prove.activities()]
    if role in (Role.EXECUTOR, Role.ALL):
        worker_key = Ed25519FileSigner.from_file(keys.worker)
        executor = ExecutorActivities(
            worker_key, measure_environment(governed_modules), governed_activities
        )
        replay = SqlReplayGuard(settings.db_url, clock=clock)
        wait.call("single-use store", replay.ensure_ready)
        # The halt list shares the single-use store's database, which every
        # executor already reaches, unless it has its own.
        control_log = SqlControlLog(settings.halt_database_url or replay.engine)
        # Say which setting points at it: the error names the database.
        where = env_name("halt_database_url" if settings.halt_database_url else "database_url")
        wait.call(f"halt list ({where})", control_log.ensure_ready)
        gate = GateInterceptor(
            GateConfig(
                trust=trust,
                replay=replay,
                evidence=LedgerEvidenceSink(ledger, worker_key),
                environment_digest=executor.digest,
                clock=clock,
                accepted_policy_digests=_accepted_digests(settings),
                # Governed by name too: whichever function a worker registers
                # under these activity types, the gate asks for a grant.
                governed_names=frozenset(_activity_name(fn) for fn in governed_activities)
                | settings.governed_action_names,
                # Calls under a scope are decided by the policy at the gate:
                # the configured bundle, and this worker's attested claims
                # (as the authority sees them once it verified them).
                bundle=_local_bundle(settings),
                environment_claims={**executor.attestation.claims(), "attested": True},
                controls=ControlWatch(
                    control_log,
                    trust,
                    clock,
                    refresh_seconds=settings.halt_refresh_seconds,
                    bound_seconds=max(settings.halt_bound_seconds, settings.halt_refresh_seconds),
                ),
            )
        )
        executor_acts = [*executor.activities(), *governed_activities]
    plugin = EcpPlugin(
        queues=queues,
        authority_activities=authority_acts,
        executor_activities=executor_acts,
        # Spans and metrics around the gate (and the governance steps on
        # authority workers, which have no gate).
        gate=TelemetryInterceptor(gate),
        governed_names=settings.governed_action_names,
    )
    return plugin, ledger


@contextlib.asynccontextmanager
async def run_workers(
    client: Client,
    settings: Settings,
    plugin: EcpPlugin,
    *,
    role: Role,
    extra_workflows: Sequence[type] = (),
    extra_activities: Sequence[Callable[..., object]] = (),
) -> AsyncIterator[list[Worker]]:
    """Run the workers of ``role`` on ``client`` until the block exits.

    ``extra_workflows`` and ``extra_activities`` (an app's own, ungoverned
    ones) are registered on the executor queue beside ``GovernedExecution``
    and the governed activities.
    """
    # Governed workflows upsert ECP's search attributes: without them every
    # workflow task fails (and the submitter waits forever). Register them,
    # or refuse to start in one line saying how.
    await ensure_search_attributes(client, client.namespace)
    workers: list[Worker] = []
    # None keeps the SDK's default. A worker that takes more tasks than it
    # can finish within their start-to-close timeout turns overload into
    # timed-out attempts, which a one-use grant then reports as unknown.
    slots = settings.max_concurrent_activities
    if role in (Role.AUTHORITY, Role.ALL):
        workers.append(
            Worker(
                client,
                task_queue=settings.authority_queue,
                plugins=[plugin],
                max_concurrent_activities=slots,
            )
        )
    if role in (Role.EXECUTOR, Role.ALL):
        workers.append(
            Worker(
                client,
                task_queue=settings.executor_queue,
                workflows=list(extra_workflows),
                activities=list(extra_activities),
                plugins=[plugin],
                max_concurrent_activities=slots,
            )
        )
    async with contextlib.AsyncExitStack() as stack:
        for w in workers:
            await stack.enter_async_context(w)
        yield workers
