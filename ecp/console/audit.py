"""Background checks the health report shows.

The last full ledger verification and the gate's denials over the last hour.

Both only read. The full verification recomputes every hash, so it runs in a
worker thread at most once per interval and its result is cached with its
time; the denial count reads a bounded number of the newest entries.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from ecp.authority._truststore import KeyRole, TrustStore
from ecp.lineage.ledger._evidence import OutcomeStatus, parse_evidence
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger._store import ENTRY
from ecp.lineage.ledger.errors import LineageError, TamperError

__all__ = [
    "DENIAL_SCAN_CAP",
    "DENIAL_WINDOW",
    "AuditResult",
    "DenialCount",
    "LedgerAuditor",
    "count_denials",
    "log_key_from",
]

#: Gate denials are counted over this window.
DENIAL_WINDOW: Final = timedelta(hours=1)
#: At most this many of the newest entries are read for the count.
DENIAL_SCAN_CAP: Final = 5000


@dataclass(frozen=True, slots=True)
class AuditResult:
    """The outcome of one full verification."""

    finished_at: datetime
    ok: bool
    summary: str
    seconds: float
    tampered: bool = False


@dataclass
class LedgerAuditor:
    """Runs ``Ledger.verify_all`` in a thread at most every ``interval``; keeps the last result."""

    interval: timedelta
    first_wait: float = 5.0
    _last: AuditResult | None = None
    _task: asyncio.Future[AuditResult] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        """Whether a verification is under way."""
        return self._task is not None and not self._task.done()

    async def latest(
        self,
        ledger: Ledger,
        log_key: Ed25519PublicKey | None,
        now: datetime,
        trust: TrustStore | None = None,
    ) -> AuditResult | None:
        """The last result, starting a new run when it is due.

        The very first run is awaited up to ``first_wait`` seconds, so a small
        ledger has a verdict on the first health check.
        """
        due = self._last is None or now - self._last.finished_at >= self.interval
        if due and not self.running:
            self._task = asyncio.ensure_future(asyncio.to_thread(_verify, ledger, log_key, trust))
            self._task.add_done_callback(self._store)
        if self._last is None and self._task is not None:
            await asyncio.wait({self._task}, timeout=self.first_wait)
        return self._last

    def _store(self, task: asyncio.Future[AuditResult]) -> None:
        if not task.cancelled() and task.exception() is None:
            self._last = task.result()


def _verify(
    ledger: Ledger, log_key: Ed25519PublicKey | None, trust: TrustStore | None
) -> AuditResult:
    start = time.monotonic()
    try:
        # With the trust store, every entry's signature too: a database
        # operator can rewrite rows and hashes, but cannot sign.
        report = ledger.verify_all(log_key, trust=trust)
    except TamperError as exc:
        return AuditResult(
            datetime.now(UTC),
            False,
            _first(f"the ledger is damaged: {exc}"),
            time.monotonic() - start,
            tampered=True,
        )
    except LineageError as exc:
        return AuditResult(
            datetime.now(UTC),
            False,
            _first(f"the verification could not run: {exc}"),
            time.monotonic() - start,
        )
    keyed = (
        "signatures checked with the trusted log key"
        if log_key
        else ("no trusted log key, signatures not checked")
    )
    return AuditResult(
        datetime.now(UTC),
        True,
        f"all {report.size} entries and {report.checkpoints} checkpoint(s) verified ({keyed})",
        time.monotonic() - start,
    )


def _first(text: str) -> str:
    return text.strip().splitlines()[0].rstrip(".") if text.strip() else "unknown error"


def log_key_from(store: TrustStore, now: datetime) -> Ed25519PublicKey | None:
    """The first currently valid log-role key in the trust store, if any."""
    for k in store.by_role(KeyRole.LOG):
        if (k.revoked_at is None or k.revoked_at > now) and (
            k.not_before is None or k.not_before <= now
        ):
            return k.public_key
    return None


@dataclass(frozen=True, slots=True)
class DenialCount:
    """Denials recorded in the window, by reason code."""

    by_reason: dict[str, int]
    scanned: int
    complete: bool  # False when the cap stopped the scan inside the window
    unreadable: int


def count_denials(
    ledger: Ledger,
    now: datetime,
    *,
    window: timedelta = DENIAL_WINDOW,
    cap: int = DENIAL_SCAN_CAP,
) -> DenialCount:
    """Count denied outcomes among entries recorded within ``window`` before ``now``.

    Reads from the head backwards and stops at the first entry older than
    the window, or after ``cap`` entries.

    Raises:
        LineageError: the ledger cannot be read.
    """
    since = now - window
    counts: Counter[str] = Counter()
    scanned = unreadable = 0
    complete = True
    with ledger.database.read() as conn:
        rows = conn.execute(
            select(ENTRY.c.envelope, ENTRY.c.recorded_at)
            .order_by(ENTRY.c.seq.desc())
            .limit(cap + 1)
        )
        for row in rows:
            at = row.recorded_at if row.recorded_at.tzinfo else row.recorded_at.replace(tzinfo=UTC)
            if at < since:
                break
            if scanned == cap:
                complete = False
                break
            if at > now:
                continue  # after the window (only when ``now`` is in the past)
            scanned += 1
            try:
                ev = parse_evidence(bytes(row.envelope))
            except LineageError:
                unreadable += 1
                continue
            outcome = ev.predicate.outcome
            if outcome.status is OutcomeStatus.DENIED:
                counts[outcome.reason_code or "unspecified"] += 1
    return DenialCount(dict(counts.most_common()), scanned, complete, unreadable)
