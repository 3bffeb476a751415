"""What the ledger vouches for: a listed execution's claims checked against signed evidence.

A governed execution's search attributes (``ECPDecision``, ``ECPOutcome``,
``ECPGrantId``, ...) are what its workflow says about itself: any workflow
that a worker on the configured queue runs can set them. What the console
presents as governance state must also be what ECP's workers *recorded*:
the ledger entry for that workflow run, signed by a trusted key of a role
allowed for it (the gate's worker key for an outcome, the authority's
recorder key only for a denial). A run is **verified** when the newest such
entry agrees with what the run reports; **pending** while it is open and
has reported no outcome yet (nothing to prove so far); **unverified**
otherwise, with a one-line reason.

One batched query per page: every entry whose lookup columns name one of
the page's workflow ids. The lookup columns are not covered by the log's
hashes, so they only route: the entry itself decides, and only its signed
predicate's namespace, workflow id and run id count (an entry whose columns
were rewritten to hide it leaves its run unverified: fail closed).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select

from ecp._wire import EXECUTE_ACTIVITY_ID_PREFIX
from ecp.authority._truststore import TrustStore
from ecp.authority.errors import AuthorityError
from ecp.lineage.ledger._evidence import (
    Evidence,
    OutcomeStatus,
    parse_evidence,
    verify_evidence_signature,
)
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger._store import ENTRY
from ecp.lineage.ledger.errors import LineageError

__all__ = [
    "MAX_ENTRIES_PER_PAGE",
    "Claim",
    "Vouch",
    "vouch_for",
]

#: A governed run has a handful of entries (one per attempt); a page of 50
#: runs reads at most this many, so a workflow id with thousands of entries
#: cannot make the list page expensive. Runs past the cap are unverified.
MAX_ENTRIES_PER_PAGE: Final = 2000

#: The decisions ECP's policy engine makes.
_DECISIONS: Final = frozenset({"allow", "deny", "allow_after_approval"})
#: Outcomes after which the body ran: only an allowed call has a grant to run under.
_RAN: Final = frozenset(
    {OutcomeStatus.COMPLETED.value, OutcomeStatus.FAILED.value, OutcomeStatus.INTERRUPTED.value}
)


@dataclass(frozen=True, slots=True)
class Claim:
    """What one run says about itself (its search attributes) and whether it is open."""

    workflow_id: str
    run_id: str
    open: bool
    action: str
    decision: str
    outcome: str
    grant_id: str
    initiator: str
    policy_digest: str


@dataclass(frozen=True, slots=True)
class Vouch:
    """The ledger's word on one run.

    ``state`` is ``verified``, ``pending`` or ``unverified``; ``reason`` is
    one sentence (empty when verified); ``index`` is the ledger index of the
    entry compared, when there is one.
    """

    state: str
    reason: str = ""
    index: int | None = None

    @property
    def verified(self) -> bool:
        """Whether a signed ledger entry agrees with the run's claims."""
        return self.state == "verified"


def _short(value: str, limit: int = 40) -> str:
    # Reasons are one line: an id is cut, and shown escaped by the template.
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _disagreement(c: Claim, ev: Evidence) -> str:
    """Why the run's claims and the entry disagree; empty when they agree."""
    p = ev.predicate
    status = p.outcome.status.value
    if c.decision and c.decision not in _DECISIONS:
        return f"The workflow reports decision {_short(c.decision)!r}, which ECP never makes."
    if not c.decision:
        return f"The ledger says {status}, and the workflow reports no decision."
    if status in _RAN and c.decision == "deny":
        return f"The ledger says it ran ({status}), the workflow says the policy denied it."
    if p.grant_id and c.decision == "deny":
        return "The ledger names a grant (only allowed calls get one), the workflow says denied."
    if c.outcome and c.outcome != status:
        return f"The ledger says {status}, the workflow says {_short(c.outcome)}."
    if not c.outcome and not c.open:
        return f"The ledger says {status}, and the closed workflow reports no outcome."
    if c.action and c.action != p.activity.activity_type:
        return (
            f"The ledger's entry is for action {_short(p.activity.activity_type)!r}, "
            f"the workflow says {_short(c.action)!r}."
        )
    if c.grant_id and p.grant_id and c.grant_id != p.grant_id:
        return "The ledger names another grant than the workflow reports."
    if c.initiator and p.initiator and c.initiator != p.initiator:
        return (
            f"The ledger says {_short(p.initiator)!r} asked, "
            f"the workflow says {_short(c.initiator)!r}."
        )
    if c.policy_digest and p.policy_digest and c.policy_digest != p.policy_digest:
        return "The ledger names another policy digest than the workflow reports."
    return ""


def _verdict(c: Claim, found: tuple[int, Evidence] | None, bad: int, capped: bool) -> Vouch:
    if found is None:
        if capped:
            return Vouch(
                "unverified",
                "Too many ledger entries share these workflow ids to check them all.",
            )
        if bad:
            return Vouch(
                "unverified",
                f"The ledger's {bad} entr{'y' if bad == 1 else 'ies'} for this run do not verify "
                "against the trust store.",
            )
        if c.open and not c.outcome:
            return Vouch(
                "pending",
                "Still running: the ledger holds no evidence for this run yet, so its decision "
                "is the workflow's own report until it is proven.",
            )
        return Vouch("unverified", "No ledger evidence for this run.")
    # The newest entry that counts: the last attempt, or the last governed call.
    index, ev = found
    why = _disagreement(c, ev)
    if why:
        return Vouch("unverified", why, index)
    if c.open and not c.outcome:
        return Vouch(
            "pending",
            "Still running: the ledger has its gate's record, the workflow has not reported "
            "the outcome yet.",
            index,
        )
    return Vouch("verified", "", index)


#: Workflow ids per query (a database's limit on bound parameters is far above).
_IDS_PER_QUERY: Final = 500
#: How many checked entries the console remembers, and for how long a
#: signature check stands (a key's validity window can close meanwhile; a
#: revocation changes the trust store, which is part of the key).
_CACHE_ENTRIES: Final = 50_000
_CACHE_SECONDS: Final = 60.0

_Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Checked:
    ident: tuple[str, str, str] | None  # signed (namespace, workflow id, run id); None: unreadable
    evidence: Evidence | None  # None: unreadable, or no trusted signature
    at: datetime


class _CheckedEntries:
    """Entries already parsed and checked, by (entry bytes digest, trust store digest).

    Parsing and a signature check cost about half a millisecond an entry; a
    list page and its charts read the same entries on every load. The key is
    the digest of the entry's bytes, so an entry rewritten in the database
    is checked afresh.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: dict[tuple[bytes, bytes], _Checked] = {}

    def check(self, envelope: bytes, trust: TrustStore, trust_id: bytes, at: datetime) -> _Checked:
        key = (hashlib.sha256(envelope).digest(), trust_id)
        with self._lock:
            hit = self._done.get(key)
        if hit is not None and abs((at - hit.at).total_seconds()) < _CACHE_SECONDS:
            return hit
        checked = _check(envelope, trust, at)
        with self._lock:
            if len(self._done) >= _CACHE_ENTRIES:
                self._done.pop(next(iter(self._done)))  # the oldest insertion
            self._done[key] = checked
        return checked


def _check(envelope: bytes, trust: TrustStore, at: datetime) -> _Checked:
    try:
        ev = parse_evidence(envelope)
    except LineageError:
        return _Checked(None, None, at)  # cannot say whose it is: it vouches for nobody
    a = ev.predicate.activity
    ident = (a.namespace, a.workflow_id, a.run_id)
    try:
        verify_evidence_signature(ev, trust, at)
    except (LineageError, AuthorityError):
        return _Checked(ident, None, at)
    return _Checked(ident, ev, at)


_CHECKED: Final = _CheckedEntries()


def _is_execute_step(activity_id: str) -> bool:
    # Scoped calls (``scope:...``) set no search attributes of their own.
    return activity_id.startswith(EXECUTE_ACTIVITY_ID_PREFIX)


def vouch_for(
    ledger: Ledger,
    trust: TrustStore,
    namespace: str,
    claims: Iterable[Claim],
    *,
    at: datetime,
    max_entries: int = MAX_ENTRIES_PER_PAGE,
) -> dict[_Key, Vouch]:
    """The ledger's word on each claim, keyed by (workflow id, run id).

    One query (per 500 workflow ids: one for a page of the list) reads the
    entries of the claims' workflow ids, at most ``max_entries`` in all,
    newest first. For each claim its entries are tried newest first until
    one counts: it parses as evidence, its *signed* identity names the
    claim's namespace, workflow and run (the lookup columns only route), and
    a trusted key of a role allowed for it signed it (checked at ``at``).

    Raises:
        LineageError: the ledger cannot be read.
    """
    wanted = {(c.workflow_id, c.run_id): c for c in claims}
    if not wanted:
        return {}
    ids = sorted({wf for wf, _ in wanted})
    rows: list[Any] = []
    with ledger.database.read() as conn:
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start : start + _IDS_PER_QUERY]
            rows.extend(
                conn.execute(
                    select(
                        ENTRY.c.seq,
                        ENTRY.c.workflow_id,
                        ENTRY.c.run_id,
                        ENTRY.c.activity_id,
                        ENTRY.c.envelope,
                    )
                    .where(ENTRY.c.namespace == namespace, ENTRY.c.workflow_id.in_(chunk))
                    # Newest first: past the cap, the oldest entries are not read.
                    .order_by(ENTRY.c.seq.desc())
                    .limit(max_entries + 1)
                ).all()
            )
    rows.sort(key=lambda r: -int(r.seq))
    capped = len(rows) > max_entries
    candidates: dict[_Key, list[Any]] = {k: [] for k in wanted}
    for row in rows[:max_entries]:
        routed = candidates.get((row.workflow_id, row.run_id))
        if routed is not None:
            routed.append(row)
    trust_id = hashlib.sha256(trust.to_json()).digest()
    out: dict[_Key, Vouch] = {}
    for key, claim in wanted.items():
        found: tuple[int, Evidence] | None = None
        bad = 0
        # A governed call's own steps first (what the search attributes
        # report), newest first; then anything else recorded for the run (an
        # ungranted call the gate refused), which may contradict them. The
        # column only orders the tries: the entry tried is judged as signed.
        ordered = sorted(
            candidates[key],
            key=lambda r: (not _is_execute_step(r.activity_id), -int(r.seq)),
        )
        for row in ordered:
            checked = _CHECKED.check(bytes(row.envelope), trust, trust_id, at)
            if checked.ident != (namespace, *key):
                continue  # the lookup columns lied: not this run's entry
            if checked.evidence is None:
                bad += 1
                continue
            found = (int(row.seq), checked.evidence)
            break
        out[key] = _verdict(claim, found, bad, capped)
    return out
