"""The review list of unknown outcomes, attacked from a keyless client (who can
only cause refused requests) and from the database operator (who can write any
row, but holds no key): an unknown outcome stays listed until a person's signed
acknowledgement, and nothing listed is taken on the database's word."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, text, update

from ecp.authority._canonical import digest_bytes
from ecp.authority._dsse import Envelope
from ecp.authority._keys import Ed25519FileSigner, generate_private_key
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.console.review import check_unknown_outcomes, unknown_outcomes
from ecp.console.review_index import AcknowledgementError, ReviewIndex, sign_acknowledgement
from ecp.lineage.ledger._evidence import (
    ActivityIdentity,
    EvidencePredicate,
    Outcome,
    OutcomeStatus,
    build_statement,
    parse_evidence,
    sign_evidence,
)
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger._merkle import leaf_hash
from ecp.lineage.ledger._store import ENTRY
from tests.lineage.support import make_envelope

WORKER = Ed25519FileSigner(generate_private_key())
APPROVER = Ed25519FileSigner(generate_private_key())
RECORDER = Ed25519FileSigner(generate_private_key())
ROGUE = Ed25519FileSigner(generate_private_key())  # trusted by nobody
TRUST = TrustStore(
    [
        TrustedKey.create(WORKER.public_key, {KeyRole.WORKER}, name="executor"),
        TrustedKey.create(APPROVER.public_key, {KeyRole.APPROVER}, name="carol"),
        TrustedKey.create(RECORDER.public_key, {KeyRole.RECORDER}, name="recorder"),
    ]
)
REASON = "grant g-1 used all 1 use(s) and attempt(s) 1 never ended"


def _evidence(
    signer: Ed25519FileSigner,
    wf: str,
    status: OutcomeStatus,
    attempt: int,
    *,
    run: str = "r1",
    grant: str = "g-1",
) -> bytes:
    p = EvidencePredicate(
        decision_id="dec-1",
        policy_digest=digest_bytes(b"p"),
        grant_id=grant,
        initiator="alice",
        activity=ActivityIdentity(
            namespace="default",
            workflow_id=wf,
            run_id=run,
            activity_id="execute:payout",
            attempt=attempt,
            activity_type="payout",
        ),
        outcome=Outcome(
            status=status,
            reason_code=None if status is OutcomeStatus.COMPLETED else "outcome_unknown",
            reason=None if status is OutcomeStatus.COMPLETED else REASON,
        ),
        started_at="2026-12-01T10:00:00.000000Z",
        finished_at="2026-12-01T10:00:01.000000Z",
    )
    done = status is OutcomeStatus.COMPLETED
    return sign_evidence(
        build_statement(
            p,
            arguments=digest_bytes(b"a"),
            grant=digest_bytes(b"g"),
            result=digest_bytes(b"r") if done else None,
        ),
        signer,
    ).to_json()


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ecp.db'}"


@pytest.fixture
def ledger(db: str) -> Iterator[Ledger]:
    with Ledger.open(db, create=True, trust=TRUST) as led:
        yield led


@pytest.fixture
def index(db: str) -> Iterator[ReviewIndex]:
    idx = ReviewIndex(db)
    yield idx
    idx.dispose()


def _listed(details: object) -> list[object]:
    assert isinstance(details, dict)
    outcomes = details["outcomes"]
    assert isinstance(outcomes, list)
    return [o["ledgerIndex"] for o in outcomes]


def _denials(ledger: Ledger, n: int, start: int = 10_000) -> None:
    """What a keyless client can cause: refused requests, each one a denial record."""
    for k in range(0, n, 500):
        ledger.append_many(
            [
                make_envelope(start + i, WORKER, status=OutcomeStatus.DENIED)
                for i in range(k, min(n, k + 500))
            ]
        )


def test_an_unknown_outcome_stays_listed_however_many_entries_follow(
    ledger: Ledger, index: ReviewIndex
) -> None:
    """Before: the list read the newest 5000 entries, and turned green after them."""
    unknown = ledger.append(_evidence(WORKER, "wf-real", OutcomeStatus.UNKNOWN, 2)).index
    _denials(ledger, 5001)
    # Each check reads at most a budget of entries, and goes on from there.
    first = check_unknown_outcomes(ledger, TRUST, index)
    assert first.status == "amber", first
    assert first.details["complete"] is False
    assert _listed(first.details) == [unknown]
    second = check_unknown_outcomes(ledger, TRUST, index)
    assert second.details["complete"] is True
    assert second.status == "amber", second
    assert _listed(second.details) == [unknown]
    assert "1 governed action(s) with an unknown outcome" in second.reason


def test_health_stays_amber_while_the_scan_is_partial(ledger: Ledger, index: ReviewIndex) -> None:
    """An outcome among the entries not yet read: never green before they are."""
    _denials(ledger, 120)
    unknown = ledger.append(_evidence(WORKER, "wf-real", OutcomeStatus.UNKNOWN, 2)).index
    seen = []
    while True:
        found = unknown_outcomes(ledger, TRUST, index, budget=50)
        seen.append(([u.ledger_index for u in found.pending], found.complete, found.unread))
        if found.complete:
            break
    assert seen == [([], False, 71), ([], False, 21), ([unknown], True, 0)]
    # A fresh index over the same ledger: the health item's first look is partial.
    _denials(ledger, 5000, start=20_000)
    fresh = ReviewIndex(index.engine)
    fresh.rescan()
    item = check_unknown_outcomes(ledger, TRUST, fresh)
    assert item.status == "amber"
    assert item.details["complete"] is False
    assert "not yet scanned" in item.reason


def test_only_a_signed_acknowledgement_takes_an_outcome_off_the_list(
    ledger: Ledger, index: ReviewIndex
) -> None:
    a = ledger.append(_evidence(WORKER, "wf-a", OutcomeStatus.UNKNOWN, 2)).index
    b = ledger.append(_evidence(WORKER, "wf-b", OutcomeStatus.UNKNOWN, 2)).index
    listed = unknown_outcomes(ledger, TRUST, index)
    assert [u.ledger_index for u in listed.pending] == [b, a]
    now = datetime.now(UTC)

    def ack(signer: Ed25519FileSigner, seq: int) -> Envelope:
        return sign_acknowledgement(
            signer,
            ledger_index=seq,
            evidence_id=ledger.entry(seq).evidence_id,
            note="refund checked with the bank: paid once",
            at=now,
        )

    # A key without the approver role (the executor's own) cannot acknowledge.
    with pytest.raises(AcknowledgementError):
        index.acknowledge(ack(WORKER, a), TRUST)
    with pytest.raises(AcknowledgementError):
        index.acknowledge(ack(ROGUE, a), TRUST)
    done = index.acknowledge(ack(APPROVER, a), TRUST)
    assert done.by == "carol"
    listed = unknown_outcomes(ledger, TRUST, index)
    assert [u.ledger_index for u in listed.pending] == [b]
    assert [(u.ledger_index, x.by) for u, x in listed.acknowledged] == [(a, "carol")]
    item = check_unknown_outcomes(ledger, TRUST, index)
    assert item.status == "amber"
    assert item.details["total"] == 1
    # The DB operator copies a's acknowledgement onto b's row, and writes
    # garbage as another: neither verifies for b, so b stays listed.
    with index.engine.begin() as c:
        raw = c.execute(
            text("SELECT ack FROM ecp_review_unknown WHERE ledger_index = :i"), {"i": a}
        )
        c.execute(
            text("UPDATE ecp_review_unknown SET ack = :k WHERE ledger_index = :i"),
            {"k": raw.scalar_one(), "i": b},
        )
    assert [u.ledger_index for u in unknown_outcomes(ledger, TRUST, index).pending] == [b]
    with index.engine.begin() as c:
        c.execute(
            text("UPDATE ecp_review_unknown SET ack = :k WHERE ledger_index = :i"),
            {"k": b"{}", "i": b},
        )
    assert [u.ledger_index for u in unknown_outcomes(ledger, TRUST, index).pending] == [b]
    # Once b is acknowledged too, the item turns green.
    index.acknowledge(ack(APPROVER, b), TRUST)
    assert check_unknown_outcomes(ledger, TRUST, index).status == "green"


def _raw(ledger: Ledger, seq: int, envelope: bytes) -> None:
    """The DB operator writes an entry row (no key: signed by one nobody trusts)."""
    leaf = envelope
    e = parse_evidence(envelope)
    a = e.predicate.activity
    with ledger.database.engine.begin() as c:
        c.execute(ENTRY.delete().where(ENTRY.c.seq == seq))
        c.execute(
            insert(ENTRY).values(
                seq=seq,
                evidence_id=e.evidence_id,
                leaf_hash=leaf_hash(leaf),
                root_after=b"\0" * 32,
                envelope=leaf,
                recorded_at=datetime.now(UTC),
                namespace=a.namespace,
                workflow_id=a.workflow_id,
                run_id=a.run_id,
                activity_id=a.activity_id,
            )
        )


def test_rows_the_database_operator_writes_are_not_listed(
    ledger: Ledger, index: ReviewIndex
) -> None:
    genuine = ledger.append(_evidence(WORKER, "wf-real", OutcomeStatus.UNKNOWN, 2)).index
    _denials(ledger, 3)
    # Beyond the head (in no tree), signed by a trusted worker key even.
    _raw(ledger, 10**9, _evidence(WORKER, "wf-beyond", OutcomeStatus.UNKNOWN, 2))
    # Below the head, over a denial's row, signed by a key nobody trusts.
    _raw(ledger, genuine + 1, _evidence(ROGUE, "wf-fake", OutcomeStatus.UNKNOWN, 2))
    listed = unknown_outcomes(ledger, TRUST, index)
    assert [u.workflow_id for u in listed.pending] == ["wf-real"]
    # Put into the index directly: still re-checked against the ledger on every read.
    with index.engine.begin() as c:
        for seq in (10**9, genuine + 1):
            c.execute(
                text("INSERT INTO ecp_review_unknown (ledger_index, evidence_id) VALUES (:i, 'x')"),
                {"i": seq},
            )
    assert [u.workflow_id for u in unknown_outcomes(ledger, TRUST, index).pending] == ["wf-real"]


def test_earlier_records_must_be_the_same_execution_by_their_signed_identity(
    ledger: Ledger, index: ReviewIndex
) -> None:
    """The lookup columns are unsigned: a relabelled record of another run is not listed."""
    other = ledger.append(_evidence(WORKER, "wf-other", OutcomeStatus.COMPLETED, 1)).index
    # Same execution, another grant's record: not this outcome's history.
    ledger.append(_evidence(WORKER, "wf-real", OutcomeStatus.COMPLETED, 1, grant="g-2"))
    ledger.append(_evidence(RECORDER, "wf-real", OutcomeStatus.DENIED, 1))  # not the gate's
    ledger.append(_evidence(WORKER, "wf-real", OutcomeStatus.FAILED, 1))  # the gate's own
    ledger.append(_evidence(WORKER, "wf-real", OutcomeStatus.UNKNOWN, 2))
    (u,) = unknown_outcomes(ledger, TRUST, index).pending
    assert u.earlier == ((1, "failed"),)
    # Relabelled by the DB operator: the lookup columns now say wf-real.
    with ledger.database.engine.begin() as c:
        c.execute(update(ENTRY).where(ENTRY.c.seq == other).values(workflow_id="wf-real"))
    (u,) = unknown_outcomes(ledger, TRUST, index).pending
    assert u.earlier == ((1, "failed"),)
