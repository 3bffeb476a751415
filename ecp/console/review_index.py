"""The review index: every unknown outcome the ledger holds, until a person acknowledges it.

Why a table and not a read of the newest entries: the ledger grows without
bound, and a list built from its newest N entries loses an unknown outcome
once N later entries arrive (a keyless client can cause those with refused
requests, each one a denial record). Here a scan reads the ledger in order
from where it last stopped (a cursor), at most a budget of entries per call,
and puts every verified ``unknown`` record it meets into the index; an
outcome found once stays listed, however many entries follow it.

It leaves the list only when a person *acknowledges* it: ``ecp review ack``
signs a statement (payload type :data:`ACK_PAYLOAD_TYPE`) with a key holding
the ``approver`` role, naming the entry's index and evidence id, and stores
it beside the index row. Every read re-verifies it against the trust store,
so the database operator cannot acknowledge on a person's behalf; the
acknowledgement says who (the key's trust-store name) and when.

What the index does not protect against: it is an unsigned table, like the
ledger's lookup columns. A database operator can delete its rows, or move
its cursor past an entry, and so hide an outcome from this list (never from
the ledger, the workflow's result, ``ecp lineage`` or the cross-check, which
all read the signed records). ``ecp review scan --rescan`` rebuilds the
index from the whole ledger; acknowledgements stored in it are kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ecp.authority._canonical import canonical_json, parse_json_strict
from ecp.authority._dsse import Envelope, sign_envelope, verify_envelope
from ecp.authority._keys import Signer
from ecp.authority._sql import store_engine
from ecp.authority._truststore import KeyRole, TrustStore
from ecp.authority.errors import AuthorityError
from ecp.console.errors import ConsoleError
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
    "ACK_PAYLOAD_TYPE",
    "REVIEW_SCAN_BUDGET",
    "Acknowledgement",
    "AcknowledgementError",
    "IndexedOutcome",
    "ReviewIndex",
    "ReviewIndexUnavailableError",
    "ScanState",
    "sign_acknowledgement",
    "verified_unknown",
]

#: What a person's acknowledgement of an unknown outcome is signed as.
ACK_PAYLOAD_TYPE: Final = "application/vnd.ecp.review-ack+json"
_ACK_SCHEMA: Final = "ecp.review-ack/v1"
#: How many ledger entries one scan reads at most (a health check must stay
#: quick; the next one goes on from there).
REVIEW_SCAN_BUDGET: Final = 5000

_META = MetaData()
_UNKNOWN = Table(
    "ecp_review_unknown",
    _META,
    Column("ledger_index", Integer, primary_key=True, autoincrement=False),
    Column("evidence_id", String(128), nullable=False),
    Column("ack", LargeBinary, nullable=True),
)
_CURSOR = Table(
    "ecp_review_cursor",
    _META,
    Column("id", Integer, primary_key=True, autoincrement=False),
    #: The next ledger index the scan reads.
    Column("next_index", Integer, nullable=False),
)


class ReviewIndexUnavailableError(ConsoleError):
    """The review index's database cannot be read or written."""

    status = 503
    code = "review_index_unavailable"


class AcknowledgementError(ConsoleError):
    """An acknowledgement names no listed unknown outcome, or does not verify."""

    status = 400
    code = "review_ack_invalid"


@dataclass(frozen=True, slots=True)
class ScanState:
    """How far the scan has read: ``next_index`` of the ledger's ``size`` entries."""

    next_index: int
    size: int

    @property
    def complete(self) -> bool:
        """Every entry below the head has been read."""
        return self.next_index >= self.size


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """A verified acknowledgement: who (trust-store name and key id), when, and why."""

    by: str
    key_id: str
    at: str
    note: str


@dataclass(frozen=True, slots=True)
class IndexedOutcome:
    """One index row: the entry, and its acknowledgement if one verifies."""

    ledger_index: int
    evidence_id: str
    acknowledged: Acknowledgement | None


def verified_unknown(ev: Evidence, trust: TrustStore) -> bool:
    """The gate's own ``unknown`` record: a worker key signed it (checked at its signing time)."""
    if ev.predicate.outcome.status is not OutcomeStatus.UNKNOWN:
        return False
    try:
        at = datetime.fromisoformat(ev.predicate.finished_at.replace("Z", "+00:00"))
        # evidence_roles: an unknown outcome needs a worker key, nothing else.
        verify_evidence_signature(ev, trust, at)
    except (LineageError, AuthorityError, ValueError):
        return False
    return True


def sign_acknowledgement(
    signer: Signer, *, ledger_index: int, evidence_id: str, note: str, at: datetime
) -> Envelope:
    """A person's signed statement that they checked the side effect of this outcome."""
    payload = {
        "schema": _ACK_SCHEMA,
        "ledgerIndex": ledger_index,
        "evidenceId": evidence_id,
        "note": note,
        "at": at.astimezone(UTC).isoformat(),
    }
    return sign_envelope(ACK_PAYLOAD_TYPE, canonical_json(payload), signer)


def _check_ack(
    raw: bytes, ledger_index: int, evidence_id: str, trust: TrustStore
) -> Acknowledgement | None:
    try:
        env = Envelope.from_json(raw)
        claims = parse_json_strict(env.payload)
        if not isinstance(claims, dict):
            return None
        at = datetime.fromisoformat(str(claims.get("at", "")))
        verified = verify_envelope(
            env, payload_type=ACK_PAYLOAD_TYPE, trust=trust, role=KeyRole.APPROVER, at=at
        )
    except (AuthorityError, ValueError):
        return None
    if (
        claims.get("schema") != _ACK_SCHEMA
        or claims.get("ledgerIndex") != ledger_index
        or claims.get("evidenceId") != evidence_id
    ):
        return None  # an acknowledgement of another entry, copied here
    return Acknowledgement(
        by=verified.key.name or verified.key.key_id,
        key_id=verified.key.key_id,
        at=at.isoformat(),
        note=str(claims.get("note", "")),
    )


class ReviewIndex:
    """The index in SQLite or PostgreSQL (by default the deployment's database)."""

    def __init__(self, url_or_engine: str | Engine) -> None:
        """Connect lazily; the tables are created on first use."""
        self.engine = store_engine(url_or_engine)
        self._ready = False

    def dispose(self) -> None:
        """Close the index's connections."""
        self.engine.dispose()

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        try:
            if not self._ready:
                _META.create_all(self.engine, checkfirst=True)
                self._ready = True
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise ReviewIndexUnavailableError(
                f"the review index cannot be used: {type(exc).__name__}"
            ) from None

    def scan(
        self, ledger: Ledger, trust: TrustStore, *, budget: int = REVIEW_SCAN_BUDGET
    ) -> ScanState:
        """Read up to ``budget`` entries from where the last scan stopped; index the unknowns.

        Only entries below the ledger's head are read (a row beyond it is in
        no tree and no receipt), and only records a worker key signed count.

        Raises:
            LineageError: the ledger cannot be read.
            ReviewIndexUnavailableError: the index cannot be used.
        """
        size = ledger.head().size
        with self._begin() as conn:
            cursor = conn.execute(select(_CURSOR.c.next_index).where(_CURSOR.c.id == 1)).first()
            start = 0 if cursor is None else int(cursor.next_index)
        if start > size:
            start = 0  # a cursor past the head belongs to another ledger: read this one whole
        stop = min(size, start + budget)
        if stop <= start:
            return ScanState(start, size)
        with ledger.database.read() as conn:
            rows = conn.execute(
                select(ENTRY.c.seq, ENTRY.c.evidence_id, ENTRY.c.envelope)
                .where(ENTRY.c.seq >= start, ENTRY.c.seq < stop)
                .order_by(ENTRY.c.seq)
            ).all()
        found: list[tuple[int, str]] = []
        for row in rows:
            try:
                ev = parse_evidence(bytes(row.envelope))
            except LineageError:
                continue  # the verification item reports unreadable entries
            if verified_unknown(ev, trust):
                found.append((int(row.seq), ev.evidence_id))
        with self._begin() as conn:
            for seq, evidence_id in found:
                if (
                    conn.execute(
                        select(_UNKNOWN.c.ledger_index).where(_UNKNOWN.c.ledger_index == seq)
                    ).first()
                    is None
                ):
                    conn.execute(
                        _UNKNOWN.insert().values(ledger_index=seq, evidence_id=evidence_id)
                    )
            moved = conn.execute(
                update(_CURSOR).where(_CURSOR.c.id == 1).values(next_index=stop)
            ).rowcount
            if not moved:
                try:
                    with conn.begin_nested():
                        conn.execute(_CURSOR.insert().values(id=1, next_index=stop))
                except IntegrityError:  # another scan created it at the same moment
                    conn.execute(update(_CURSOR).where(_CURSOR.c.id == 1).values(next_index=stop))
        return ScanState(stop, size)

    def rescan(self) -> None:
        """Start the next scan from the ledger's first entry (acknowledgements are kept).

        Raises:
            ReviewIndexUnavailableError: the index cannot be used.
        """
        with self._begin() as conn:
            conn.execute(update(_CURSOR).where(_CURSOR.c.id == 1).values(next_index=0))

    def outcomes(self, trust: TrustStore) -> list[IndexedOutcome]:
        """Every indexed outcome, newest first, with its acknowledgement if one verifies.

        Raises:
            ReviewIndexUnavailableError: the index cannot be used.
        """
        with self._begin() as conn:
            rows = conn.execute(
                select(_UNKNOWN.c.ledger_index, _UNKNOWN.c.evidence_id, _UNKNOWN.c.ack).order_by(
                    _UNKNOWN.c.ledger_index.desc()
                )
            ).all()
        return [
            IndexedOutcome(
                int(r.ledger_index),
                str(r.evidence_id),
                None
                if r.ack is None
                else _check_ack(bytes(r.ack), int(r.ledger_index), str(r.evidence_id), trust),
            )
            for r in rows
        ]

    def acknowledge(self, envelope: Envelope, trust: TrustStore) -> Acknowledgement:
        """Store a signed acknowledgement beside the outcome it names.

        Raises:
            AcknowledgementError: it does not verify, or names no indexed outcome.
            ReviewIndexUnavailableError: the index cannot be used.
        """
        raw = envelope.to_json()
        try:
            claims = parse_json_strict(envelope.payload)
        except AuthorityError as exc:
            raise AcknowledgementError(f"unreadable acknowledgement: {exc}") from None
        index = claims.get("ledgerIndex") if isinstance(claims, dict) else None
        with self._begin() as conn:
            row = conn.execute(
                select(_UNKNOWN.c.evidence_id).where(_UNKNOWN.c.ledger_index == index)
            ).first()
            if not isinstance(index, int) or row is None:
                raise AcknowledgementError(
                    f"entry {index} is not an indexed unknown outcome (run `ecp review list`)"
                )
            ack = _check_ack(raw, index, str(row.evidence_id), trust)
            if ack is None:
                raise AcknowledgementError(
                    "the acknowledgement does not verify: it needs a key with the approver "
                    "role in the trust store, and must name this entry's evidence id"
                )
            conn.execute(update(_UNKNOWN).where(_UNKNOWN.c.ledger_index == index).values(ack=raw))
        return ack
