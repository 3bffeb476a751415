"""The health report: each dependency green, amber or red, always with a reason.

Checks never raise: a failing dependency is a red item, so the report (and
the page and JSON that serve it) stays up exactly when something is down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from ecp._settings import Settings
from ecp._wire import STATUS_QUERY
from ecp.authority._control import ALL_ACTIONS, fold
from ecp.authority._control_log import SqlControlLog
from ecp.authority._policy import PolicyBundle
from ecp.authority._truststore import KeyRole, TrustStore
from ecp.authority.errors import AuthorityError
from ecp.console.audit import DENIAL_WINDOW, LedgerAuditor, count_denials, log_key_from
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger._note import NoteVerifier
from ecp.lineage.ledger._store import CHECKPOINT
from ecp.lineage.ledger.errors import LineageError

__all__ = [
    "POLLER_STALE_AFTER",
    "PROBE_TIMEOUT",
    "HealthItem",
    "HealthReport",
    "Status",
    "check_denials",
    "check_halts",
    "check_ledger",
    "check_policy",
    "check_pollers",
    "check_trust_store",
    "check_verification",
    "check_witnesses",
    "collect_health",
    "probe_executor",
]

#: A poller re-polls at least every minute (long poll); older means it stopped.
POLLER_STALE_AFTER: Final = timedelta(seconds=90)
#: How long the executor liveness probe (a read-only workflow query) may take.
PROBE_TIMEOUT: Final = timedelta(seconds=3)
#: Keys expiring sooner than this turn the trust store amber.
_EXPIRY_WARNING: Final = timedelta(days=14)


class Status(StrEnum):
    """Traffic-light status; the page also spells it out, never colour alone."""

    GREEN = "green"
    AMBER = "amber"
    RED = "red"


_RANK: Final = {Status.GREEN: 0, Status.AMBER: 1, Status.RED: 2}


@dataclass(frozen=True, slots=True)
class HealthItem:
    """One checked dependency."""

    name: str
    status: Status
    reason: str
    details: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "status": self.status.value,
            "reason": self.reason,
            "details": self.details,
        }


@dataclass(frozen=True, slots=True)
class HealthReport:
    """All items and the worst of their statuses."""

    checked_at: datetime
    items: tuple[HealthItem, ...]

    @property
    def status(self) -> Status:
        """The worst item status (green when there are none)."""
        return max((i.status for i in self.items), key=_RANK.__getitem__, default=Status.GREEN)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, served at ``/api/health``."""
        return {
            "status": self.status.value,
            "checkedAt": self.checked_at.isoformat(),
            "items": [i.to_dict() for i in self.items],
        }


def _age(then: datetime, now: datetime) -> str:
    secs = max(0, int((now - then).total_seconds()))
    if secs < 120:
        return f"{secs} s"
    if secs < 7200:
        return f"{secs // 60} min"
    return f"{secs // 3600} h"


async def _pollers(client: Client, queue: str, kind: TaskQueueType.ValueType) -> list[datetime]:
    resp = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=kind,
        )
    )
    return [p.last_access_time.ToDatetime(tzinfo=UTC) for p in resp.pollers]


async def check_pollers(
    client: Client, name: str, queue: str, kinds: Sequence[TaskQueueType.ValueType], now: datetime
) -> HealthItem:
    """Whether workers poll ``queue`` for every task type in ``kinds``.

    Red when a type has no poller, amber when the newest poll is older than
    :data:`POLLER_STALE_AFTER` (Temporal keeps a stopped worker listed for a while).
    """
    seen: dict[str, object] = {}
    worst = Status.GREEN
    reasons: list[str] = []
    for kind in kinds:
        label = TaskQueueType.Name(kind).removeprefix("TASK_QUEUE_TYPE_").lower()
        try:
            times = await _pollers(client, queue, kind)
        except RPCError as exc:
            return HealthItem(
                name, Status.RED, f"Temporal did not describe task queue {queue}: {exc.message}."
            )
        if not times:
            worst = Status.RED
            reasons.append(f"no {label} poller on {queue}")
            seen[label] = {"pollers": 0, "lastSeen": None}
            continue
        newest = max(times)
        seen[label] = {"pollers": len(times), "lastSeen": newest.isoformat()}
        if now - newest > POLLER_STALE_AFTER:
            worst = max(worst, Status.AMBER, key=_RANK.__getitem__)
            reasons.append(f"{label} pollers on {queue} last seen {_age(newest, now)} ago")
        else:
            reasons.append(
                f"{len(times)} {label} poller(s) on {queue}, seen {_age(newest, now)} ago"
            )
    return HealthItem(name, worst, "; ".join(reasons) + ".", {"queue": queue, **seen})


async def probe_executor(client: Client, queue: str) -> tuple[bool | None, str]:
    """Whether a workflow worker on ``queue`` answers now: (answered, what was done).

    Temporal keeps a stopped worker's pollers listed for minutes, so pollers
    alone lag. This asks the newest closed ``GovernedExecution`` on the queue
    its ``ecp.status`` query: read-only (a query changes no history), cheap (a
    replay of one short history), and only a live executor can answer it.
    None when there is nothing to ask yet.
    """
    if "'" in queue or "\\" in queue:
        return None, "queue name not usable in a visibility query"
    query = (
        f"TaskQueue = '{queue}' AND WorkflowType = 'GovernedExecution' "
        "AND ExecutionStatus != 'Running'"
    )
    try:
        it = client.list_workflows(query, page_size=1)
        await it.fetch_next_page()
    except RPCError as exc:
        return None, f"no execution to probe ({exc.message})"
    rows = it.current_page or []
    if not rows:
        return None, "no closed governed execution to probe yet"
    wf = rows[0]
    handle = client.get_workflow_handle(wf.id, run_id=wf.run_id)
    try:
        await handle.query(STATUS_QUERY, result_type=dict, rpc_timeout=PROBE_TIMEOUT)
    except (RPCError, WorkflowQueryFailedError) as exc:
        first = (str(exc) or type(exc).__name__).splitlines()[0]
        return (
            False,
            f"no workflow worker answered a read-only query within "
            f"{int(PROBE_TIMEOUT.total_seconds())} s ({first})",
        )
    return True, f"a workflow worker answered a read-only query about {wf.id}"


def check_ledger(ledger: Ledger | None, error: str | None, now: datetime) -> HealthItem:
    """Ledger size and how far the latest checkpoint lags behind the head."""
    if ledger is None:
        return HealthItem("ledger", Status.RED, error or "The ledger is not open.")
    try:
        head = ledger.head()
        # The checkpoint's issue time is only on its storage row.
        with ledger.database.read() as conn:
            row = conn.execute(
                select(CHECKPOINT.c.size, CHECKPOINT.c.created_at)
                .order_by(CHECKPOINT.c.id.desc())
                .limit(1)
            ).first()
    except LineageError as exc:
        return HealthItem("ledger", Status.RED, f"The ledger cannot be read: {exc}.")
    details: dict[str, object] = {"size": head.size, "rootHash": head.root_hash.hex()}
    if row is None:
        status = Status.AMBER if head.size else Status.GREEN
        reason = (
            f"{head.size} entries and no signed checkpoint yet."
            if head.size
            else "The ledger is empty."
        )
        return HealthItem("ledger", status, reason, details)
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    details |= {
        "checkpointSize": row.size,
        "checkpointAt": created.isoformat(),
        "checkpointAgeSeconds": int((now - created).total_seconds()),
    }
    if row.size < head.size:
        return HealthItem(
            "ledger",
            Status.AMBER,
            f"{head.size} entries; the latest checkpoint ({_age(created, now)} old) covers "
            f"only {row.size}.",
            details,
        )
    return HealthItem(
        "ledger",
        Status.GREEN,
        f"{head.size} entries, all covered by a checkpoint signed {_age(created, now)} ago.",
        details,
    )


async def check_verification(
    settings: Settings, ledger: Ledger | None, auditor: LedgerAuditor, now: datetime
) -> HealthItem:
    """The cached result of the last full ledger verification, with its age."""
    name = "ledger verification"
    if ledger is None:
        return HealthItem(name, Status.RED, "Unknown: the ledger is not open.")
    trust: TrustStore | None
    try:
        trust = TrustStore.load(settings.trust)
        key = log_key_from(trust, now)
    except AuthorityError:
        trust, key = None, None
    last = await auditor.latest(ledger, key, now, trust)
    every = _age(now - auditor.interval, now)
    if last is None:
        return HealthItem(
            name,
            Status.AMBER,
            "The first full verification is still running.",
            {"running": True, "intervalSeconds": int(auditor.interval.total_seconds())},
        )
    details: dict[str, object] = {
        "ok": last.ok,
        "finishedAt": last.finished_at.isoformat(),
        "ageSeconds": int((now - last.finished_at).total_seconds()),
        "durationSeconds": round(last.seconds, 3),
        "running": auditor.running,
        "intervalSeconds": int(auditor.interval.total_seconds()),
    }
    age = _age(last.finished_at, now)
    if not last.ok:
        status = Status.RED if last.tampered else Status.AMBER
        return HealthItem(
            name, status, f"Last full verification, {age} ago: {last.summary}.", details
        )
    if now - last.finished_at > 2 * auditor.interval:
        return HealthItem(
            name,
            Status.AMBER,
            f"The last full verification passed but is {age} old (due every {every}).",
            details,
        )
    return HealthItem(
        name, Status.GREEN, f"Last full verification passed {age} ago: {last.summary}.", details
    )


def check_denials(ledger: Ledger | None, now: datetime) -> HealthItem:
    """Gate denials recorded in the ledger over the last hour, by reason code.

    Denials are the gate doing its job, so they inform (green); the item is
    amber only when the count is incomplete.
    """
    name = "gate denials"
    if ledger is None:
        return HealthItem(name, Status.AMBER, "Unknown: the ledger is not open.")
    try:
        found = count_denials(ledger, now)
    except LineageError as exc:
        return HealthItem(name, Status.AMBER, f"The denials cannot be counted: {exc}.")
    total = sum(found.by_reason.values())
    hour = int(DENIAL_WINDOW.total_seconds() // 3600)
    details: dict[str, object] = {
        "windowSeconds": int(DENIAL_WINDOW.total_seconds()),
        "total": total,
        "byReason": found.by_reason,
        "entriesScanned": found.scanned,
        "complete": found.complete,
        "unreadable": found.unreadable,
    }
    listed = ", ".join(f"{code} × {n}" for code, n in found.by_reason.items())
    text = f"{total} denial(s) in the last {hour} h" + (f": {listed}" if listed else "")
    if not found.complete:
        return HealthItem(
            name,
            Status.AMBER,
            f"At least {text}; only the newest {found.scanned} entries were read.",
            details,
        )
    if found.unreadable:
        return HealthItem(
            name,
            Status.AMBER,
            f"{text}; {found.unreadable} entries could not be parsed.",
            details,
        )
    return HealthItem(name, Status.GREEN, f"{text}.", details)


#: A witness whose latest cosignature is older than this turns amber.
WITNESS_STALE_AFTER: Final = timedelta(hours=1)


def check_witnesses(settings: Settings, ledger: Ledger | None, now: datetime) -> list[HealthItem]:
    """One item per configured witness (``ECP_WITNESSES``): last answer, latest cosignature's age.

    Red when it last refused (it saw a checkpoint inconsistent with one it
    cosigned: the log may have forked), amber when it was unreachable (new
    checkpoints are unwitnessed) or its cosignature is old, green otherwise.
    """
    items: list[HealthItem] = []
    names = [NoteVerifier.from_vkey(w.partition("@")[0]).name for w in settings.witness_specs]
    if not names:
        return items
    records = []
    error = None
    if ledger is None:
        error = "Unknown: the ledger is not open."
    else:
        try:
            records = ledger.witnessing(limit=1000)
        except (LineageError, SQLAlchemyError) as exc:
            error = f"The ledger's witnessing records cannot be read: {str(exc).splitlines()[0]}."
    for name in names:
        label = f"witness {name}"
        if error is not None:
            items.append(HealthItem(label, Status.AMBER, error))
            continue
        mine = [r for r in records if r.witness == name]
        cosigned = next((r for r in mine if r.outcome == "cosigned"), None)
        details: dict[str, object] = {}
        if cosigned is not None:
            details = {
                "cosignedSize": cosigned.size,
                "cosignedAt": cosigned.at.isoformat(),
                "ageSeconds": int((now - cosigned.at).total_seconds()),
            }
        age = (
            f"latest cosignature {_age(cosigned.at, now)} ago at size {cosigned.size}"
            if cosigned
            else "no cosignature yet"
        )
        if not mine:
            items.append(
                HealthItem(
                    label, Status.AMBER, "Not asked yet: no checkpoint since it was configured."
                )
            )
        elif mine[0].outcome == "refused":
            items.append(
                HealthItem(
                    label,
                    Status.RED,
                    f"Refused to cosign the checkpoint at size {mine[0].size} (the log may have "
                    f"been rewritten): {mine[0].detail[:200]}; {age}.",
                    details,
                )
            )
        elif mine[0].outcome != "cosigned":
            items.append(
                HealthItem(
                    label,
                    Status.AMBER,
                    f"Unreachable at the checkpoint of size {mine[0].size}, which is "
                    f"unwitnessed; {age}.",
                    details,
                )
            )
        elif cosigned is not None and now - cosigned.at > WITNESS_STALE_AFTER:
            items.append(
                HealthItem(
                    label, Status.AMBER, f"Cosigned, but the {age[0].lower()}{age[1:]}.", details
                )
            )
        else:
            items.append(HealthItem(label, Status.GREEN, f"Cosigns: {age}.", details))
    return items


def check_trust_store(settings: Settings, now: datetime) -> HealthItem:
    """Keys by role, revoked and soon-expiring ones; red without a usable log or authority key."""
    try:
        store = TrustStore.load(settings.trust)
    except AuthorityError as exc:
        return HealthItem("trust store", Status.RED, f"The trust store cannot be loaded: {exc}.")
    by_role: dict[str, object] = {}
    missing: list[str] = []
    expiring: list[str] = []
    revoked = [
        k.name or k.key_id for k in store if k.revoked_at is not None and k.revoked_at <= now
    ]
    for role in KeyRole:
        keys = store.by_role(role)
        active = [
            k
            for k in keys
            if (k.revoked_at is None or k.revoked_at > now)
            and (k.not_after is None or k.not_after > now)
            and (k.not_before is None or k.not_before <= now)
        ]
        by_role[role.value] = {"active": len(active), "total": len(keys)}
        if not active and role in (KeyRole.AUTHORITY, KeyRole.LOG, KeyRole.WORKER):
            missing.append(role.value)
        expiring += [
            k.name or k.key_id
            for k in active
            if k.not_after is not None and k.not_after - now < _EXPIRY_WARNING
        ]
    details: dict[str, object] = {"roles": by_role, "revoked": revoked, "expiringSoon": expiring}
    if missing:
        return HealthItem(
            "trust store", Status.RED, f"No usable key for role(s): {', '.join(missing)}.", details
        )
    if expiring:
        return HealthItem(
            "trust store",
            Status.AMBER,
            f"Keys expiring within 14 days: {', '.join(expiring)}.",
            details,
        )
    tail = f"; {len(revoked)} revoked" if revoked else ""
    return HealthItem("trust store", Status.GREEN, f"{len(store)} keys{tail}.", details)


def check_halts(settings: Settings, now: datetime) -> HealthItem:
    """Halts and grant revocations in force (the kill switch), as the gates read them."""
    log = SqlControlLog(settings.halt_db_url)
    try:
        rows = log.rows()
        state = fold(rows, TrustStore.load(settings.trust), at=now)
    except AuthorityError as exc:
        # Gates refuse governed bodies while they cannot read or verify it.
        return HealthItem("halts", Status.RED, f"The halt list cannot be read: {exc}.")
    finally:
        log.dispose()
    halts = [
        {
            "action": "every action" if target == ALL_ACTIONS else target,
            "reason": eff.reason,
            "statement": eff.seq,
            "signedBy": eff.signer or eff.key_id,
            "since": eff.issued_at.isoformat(),
        }
        for target, eff in sorted(state.halts.items())
    ]
    details: dict[str, object] = {
        "statements": state.head_seq,
        "halts": halts,
        "revokedGrants": sorted(state.revoked),
        "ignored": [seq for seq, _ in state.ignored],
    }
    if halts:
        what = "; ".join(f"{h['action']}: {h['reason']} (#{h['statement']})" for h in halts)
        return HealthItem("halts", Status.AMBER, f"Halted: {what}.", details)
    tail = f"; {len(state.revoked)} grant(s) revoked" if state.revoked else ""
    return HealthItem("halts", Status.GREEN, f"No halts in force{tail}.", details)


def check_policy(settings: Settings) -> HealthItem:
    """The digest of the policy bundle this deployment loads."""
    try:
        bundle = PolicyBundle.load(settings.policy)
    except AuthorityError as exc:
        return HealthItem("policy", Status.RED, f"The policy bundle does not load: {exc}.")
    return HealthItem(
        "policy",
        Status.GREEN,
        f"Policy bundle {bundle.digest} is loaded.",
        {"digest": bundle.digest, "path": settings.policy.name},
    )


async def collect_health(
    settings: Settings,
    client: Client | None,
    temporal_error: str | None,
    ledger: Ledger | None,
    ledger_error: str | None,
    *,
    auditor: LedgerAuditor | None = None,
    now: datetime | None = None,
) -> HealthReport:
    """Every check, in a fixed order.

    Args:
        settings: which queues, trust store and policy to check.
        client: a connected client, or None when Temporal is unreachable.
        temporal_error: why there is no client.
        ledger: the open ledger, or None.
        ledger_error: why there is no ledger.
        auditor: runs and caches the full ledger verification (none: not shown).
        now: the clock (injected by tests).
    """
    now = now or datetime.now(UTC)
    items: list[HealthItem] = []
    if client is None:
        why = temporal_error or "Temporal is not connected."
        items.append(HealthItem("temporal", Status.RED, why))
        for name in ("authority workers", "executor workers"):
            items.append(HealthItem(name, Status.RED, "Unknown: Temporal is unreachable."))
    else:
        items.append(
            HealthItem(
                "temporal",
                Status.GREEN,
                f"Temporal answers at {settings.temporal_address} (namespace {client.namespace}).",
            )
        )
        act = TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
        wf = TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
        items.append(
            await check_pollers(client, "authority workers", settings.authority_queue, [act], now)
        )
        executor = await check_pollers(
            client, "executor workers", settings.executor_queue, [wf, act], now
        )
        if executor.status is not Status.RED:
            answered, how = await probe_executor(client, settings.executor_queue)
            details = {**executor.details, "probe": how}
            if answered is False:
                executor = HealthItem(
                    executor.name,
                    Status.RED,
                    f"Executor workers on {settings.executor_queue} are down: {how}; "
                    f"{executor.reason[0].lower()}{executor.reason[1:]}",
                    details,
                )
            else:
                executor = HealthItem(executor.name, executor.status, executor.reason, details)
        items.append(executor)
    items.append(check_ledger(ledger, ledger_error, now))
    if auditor is not None:
        items.append(await check_verification(settings, ledger, auditor, now))
    items.extend(check_witnesses(settings, ledger, now))
    items.append(check_denials(ledger, now))
    # Imported here: the review module builds its item from this module's types.
    from ecp.console.review import check_unknown_outcomes
    from ecp.console.review_index import ReviewIndex

    try:
        review_trust: TrustStore | None = TrustStore.load(settings.trust)
    except AuthorityError:
        review_trust = None
    # The index lives beside the ledger (the deployment's database): on the
    # ledger's own engine, so a health check opens no pool of its own.
    index = ReviewIndex(ledger.database.engine) if ledger is not None else None
    items.append(check_unknown_outcomes(ledger, review_trust, index))
    items.append(check_halts(settings, now))
    items.append(check_trust_store(settings, now))
    items.append(check_policy(settings))
    return HealthReport(now, tuple(items))
