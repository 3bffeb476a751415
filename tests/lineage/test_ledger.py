"""The ledger on real SQLite files and the real PostgreSQL server."""

from __future__ import annotations

import base64
import json

import pytest

from ecp.authority._canonical import canonical_json, digest_bytes
from ecp.authority._dsse import Envelope, sign_envelope
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.lineage.ledger._evidence import (
    INTOTO_PAYLOAD_TYPE,
    OutcomeStatus,
    build_statement,
    parse_evidence,
    sign_evidence,
)
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger._merkle import verify_consistency, verify_inclusion
from ecp.lineage.ledger._receipt import Receipt, verify_receipt
from ecp.lineage.ledger.errors import (
    CheckpointOriginError,
    EntryNotFoundError,
    EvidenceSignatureError,
    InconsistentCheckpointError,
    MalformedEvidenceError,
    MalformedReceiptError,
    NoCheckpointError,
    NonCanonicalEvidenceError,
    ProofSizeError,
    ProofSizeMismatchError,
    ReceiptEntryMismatchError,
    ReceiptKeyError,
    ReceiptOriginMismatchError,
    StaleCheckpointError,
)
from tests.lineage.support import make_envelope, make_predicate, open_unverified


def test_append_prove_checkpoint_receipt(ledger_url: str, worker, log_signer) -> None:
    with open_unverified(ledger_url) as ledger:
        results = [ledger.append(make_envelope(i, worker)) for i in range(13)]
        assert [r.index for r in results] == list(range(13))
        assert all(r.created for r in results)
        cp1 = ledger.checkpoint(log_signer)
        batch = ledger.append_many([make_envelope(i, worker) for i in range(13, 40)])
        assert [r.index for r in batch] == list(range(13, 40))
        cp2 = ledger.checkpoint(log_signer)
        assert ledger.checkpoint(log_signer) == cp2  # no growth: same checkpoint
        head = ledger.head()
        assert (head.size, head.root_hash) == (40, cp2.checkpoint.root_hash)
        for i in (0, 12, 39):
            verify_inclusion(
                i,
                40,
                results[i].leaf_hash if i < 13 else batch[i - 13].leaf_hash,
                ledger.inclusion_proof(i),
                head.root_hash,
            )
        verify_consistency(
            13, 40, cp1.checkpoint.root_hash, head.root_hash, ledger.consistency_proof(13, 40)
        )
        receipt = ledger.receipt(7)
        v = verify_receipt(receipt.to_json(), log_signer.public_key, origin=ledger.origin)
        assert (v.log_index, v.tree_size, v.origin) == (7, 40, "ecp.local/ledger")
        assert parse_evidence(v.entry).predicate.decision_id == "dec-7"
        report = ledger.verify_all(log_signer.public_key)
        assert (report.size, report.checkpoints) == (40, 2)


def test_idempotent_append(ledger_url: str, worker) -> None:
    with open_unverified(ledger_url) as ledger:
        env = make_envelope(1, worker)
        first = ledger.append(env)
        again = ledger.append(env.to_json())  # same statement, as bytes
        # Re-signed by another worker key: same statement, same evidence id.
        other = ledger.append(
            sign_envelope(INTOTO_PAYLOAD_TYPE, env.payload, Ed25519FileSigner.generate())
        )
        assert first.created
        assert not again.created
        assert not other.created
        assert first.index == again.index == other.index == 0
        batch = ledger.append_many([make_envelope(2, worker), env, make_envelope(2, worker)])
        assert [(r.index, r.created) for r in batch] == [(1, True), (0, False), (1, False)]
        assert ledger.head().size == 2


def test_bad_evidence_appends_nothing(sqlite_url: str, worker) -> None:
    with open_unverified(sqlite_url) as ledger:
        env = make_envelope(1, worker)
        doc = json.loads(canonical_json(parse_evidence(env).statement.to_dict()))
        bad_docs = [
            {**doc, "predicateType": "https://example.com/other"},
            {**doc, "subject": []},
            {**doc, "predicate": {**doc["predicate"], "policyDigest": "md5:00"}},
            {**doc, "predicate": {**doc["predicate"], "extra": 1}},
            {**doc, "predicate": {**doc["predicate"], "outcome": {"status": "failed"}}},
            {**doc, "predicate": {**doc["predicate"], "finishedAt": "2020-01-01T00:00:00Z"}},
            # The gate admits a body between the start of its checks and the
            # outcome, and never admits what it denies.
            {**doc, "predicate": {**doc["predicate"], "admittedAt": "2025-01-02T03:04:04Z"}},
            {**doc, "predicate": {**doc["predicate"], "admittedAt": "2025-01-02T03:04:07Z"}},
            {**doc, "predicate": {**doc["predicate"], "admittedAt": "yesterday"}},
            # PostgreSQL cannot store a NUL in the lookup columns: refused up front.
            {
                **doc,
                "predicate": {
                    **doc["predicate"],
                    "activity": {**doc["predicate"]["activity"], "activityId": "x\u0000y"},
                },
            },
            {
                **doc,
                "predicate": {
                    **doc["predicate"],
                    "admittedAt": "2025-01-02T03:04:05.5Z",
                    "outcome": {"status": "denied", "reasonCode": "x", "reason": "no"},
                },
            },
        ]
        for bad in bad_docs:
            with pytest.raises(MalformedEvidenceError):
                ledger.append(sign_envelope(INTOTO_PAYLOAD_TYPE, canonical_json(bad), worker))
        admitted = {
            **doc,
            "predicate": {**doc["predicate"], "admittedAt": "2025-01-02T03:04:05.5Z"},
        }
        ok = ledger.append(sign_envelope(INTOTO_PAYLOAD_TYPE, canonical_json(admitted), worker))
        assert parse_evidence(ledger.entry(ok.index).envelope).predicate.admitted_at == (
            "2025-01-02T03:04:05.5Z"
        )
        with pytest.raises(MalformedEvidenceError):
            ledger.append(b"{not json")
        with pytest.raises(MalformedEvidenceError):
            ledger.append(sign_envelope("application/json", env.payload, worker))
        pretty = json.dumps(doc, indent=1).encode()
        with pytest.raises(NonCanonicalEvidenceError):
            ledger.append(sign_envelope(INTOTO_PAYLOAD_TYPE, pretty, worker))
        with pytest.raises(MalformedEvidenceError):
            ledger.append_many([make_envelope(5, worker), b"[]"])
        assert ledger.head().size == 1  # the admitted one only


def test_trusted_worker_signature_required(sqlite_url: str, worker) -> None:
    trust = TrustStore([TrustedKey.create(worker.public_key, [KeyRole.WORKER])])
    with Ledger.open(sqlite_url, trust=trust) as ledger:
        ledger.append(make_envelope(1, worker))
        with pytest.raises(EvidenceSignatureError):
            ledger.append(make_envelope(2, Ed25519FileSigner.generate()))
        assert ledger.head().size == 1


def test_denied_and_failed_outcomes(sqlite_url: str, worker) -> None:
    with open_unverified(sqlite_url) as ledger:
        d = ledger.append(make_envelope(1, worker, status=OutcomeStatus.DENIED))
        f = ledger.append(make_envelope(2, worker, status=OutcomeStatus.FAILED))
        assert (d.index, f.index) == (0, 1)
        ev = parse_evidence(ledger.entry(0).envelope)
        assert ev.predicate.grant_id is None
        assert set(ev.subjects) == {"arguments"}


def test_checkpoints_refuse_inconsistency_and_other_origins(sqlite_url: str, worker, log_signer):
    with open_unverified(sqlite_url, origin="example.org/log") as ledger:
        ledger.append_many([make_envelope(i, worker) for i in range(5)])
        ledger.checkpoint(log_signer)
        with pytest.raises(CheckpointOriginError):
            ledger.checkpoint(log_signer, "another.org/log")
        ledger.append(make_envelope(5, worker))
        # Rewrite history under the checkpoint: entry 2's leaf and all derived state.
        with ledger.database.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE ledger_node SET hash = zeroblob(32)")
        with pytest.raises(InconsistentCheckpointError):
            ledger.checkpoint(log_signer)
        assert len(ledger.checkpoints()) == 1


def test_auto_checkpoint_every(sqlite_url: str, worker, log_signer) -> None:
    with open_unverified(sqlite_url, checkpoint_signer=log_signer, checkpoint_every=4) as ledger:
        results = [ledger.append(make_envelope(i, worker)) for i in range(10)]
        issued = [r.checkpoint.checkpoint.size for r in results if r.checkpoint]
        assert issued == [4, 8]
        ledger.verify_all(log_signer.public_key)


def test_proof_and_lookup_errors(sqlite_url: str, worker, log_signer) -> None:
    with open_unverified(sqlite_url) as ledger:
        ledger.append_many([make_envelope(i, worker) for i in range(3)])
        with pytest.raises(NoCheckpointError):
            ledger.receipt(0)
        with pytest.raises(EntryNotFoundError):
            ledger.entry(3)
        with pytest.raises(EntryNotFoundError):
            ledger.inclusion_proof(0, 4)
        with pytest.raises(ProofSizeError):
            ledger.inclusion_proof(3, 3)
        with pytest.raises(ProofSizeError):
            ledger.consistency_proof(0, 3)
        assert ledger.receipt(2, signer=log_signer).tree_size == 3


def _receipt_doc(sqlite_url: str, worker, log_signer, n: int = 6, index: int = 2) -> dict:
    with open_unverified(sqlite_url) as ledger:
        ledger.append_many([make_envelope(i, worker) for i in range(n)])
        ledger.checkpoint(log_signer)
        return json.loads(ledger.receipt(index).to_json())


def test_receipt_rejections(sqlite_url: str, tmp_path, worker, log_signer) -> None:
    doc = _receipt_doc(sqlite_url, worker, log_signer)
    key = log_signer.public_key
    verify_receipt(json.dumps(doc), key, origin="ecp.local/ledger")

    with pytest.raises(ReceiptOriginMismatchError):
        verify_receipt(json.dumps(doc), key, origin="other.example/log")
    with pytest.raises(ReceiptKeyError):
        verify_receipt(json.dumps(doc), Ed25519FileSigner.generate().public_key)
    with pytest.raises(StaleCheckpointError):
        verify_receipt(json.dumps(doc), key, min_tree_size=7)

    # A receipt from another log (other key, other origin).
    other_key = Ed25519FileSigner.generate()
    with open_unverified(f"sqlite:///{tmp_path / 'other.db'}", origin="other.example/log") as other:
        other.append(make_envelope(0, worker))
        other.checkpoint(other_key)
        foreign = json.loads(other.receipt(0).to_json())
    with pytest.raises(ReceiptOriginMismatchError):
        verify_receipt(json.dumps(foreign), key, origin="ecp.local/ledger")
    with pytest.raises(ReceiptKeyError):
        verify_receipt(json.dumps(foreign), key)

    # Wrong size: the proof claims another tree size than the checkpoint.
    wrong = json.loads(json.dumps(doc))
    wrong["inclusionProof"]["treeSize"] = 5
    with pytest.raises(ProofSizeMismatchError):
        verify_receipt(json.dumps(wrong), key)
    # Stale: an old checkpoint that does not cover the entry.
    with open_unverified(sqlite_url) as ledger:
        r5 = json.loads(ledger.receipt(5).to_json())
    stale = {**r5, "checkpoint": _old_checkpoint(sqlite_url, log_signer)}
    stale["inclusionProof"]["treeSize"] = 3
    with pytest.raises(StaleCheckpointError):
        verify_receipt(json.dumps(stale), key)
    # Entry swapped for another one.
    swapped = {**doc, "entry": r5["entry"]}
    with pytest.raises(ReceiptEntryMismatchError):
        verify_receipt(json.dumps(swapped), key)
    # Malformed documents.
    for bad in [
        b"not json",
        json.dumps({**doc, "extra": 1}),
        json.dumps({**doc, "logIndex": -1}),
        json.dumps({**doc, "logIndex": True}),
        json.dumps({**doc, "leafHash": base64.b64encode(b"x" * 31).decode()}),
        json.dumps({**doc, "entry": {"payload": 1}}),
        json.dumps({**doc, "mediaType": "application/json"}),
        json.dumps({**doc, "inclusionProof": {"treeSize": 6}}),
    ]:
        with pytest.raises(MalformedReceiptError):
            verify_receipt(bad, key)


def _old_checkpoint(sqlite_url: str, log_signer) -> str:
    from ecp.lineage.ledger._checkpoint import Checkpoint

    with open_unverified(sqlite_url) as ledger:
        return Checkpoint("ecp.local/ledger", 3, ledger.root_at(3)).sign(log_signer).note


def test_receipt_parse_round_trip(sqlite_url: str, worker, log_signer) -> None:
    doc = _receipt_doc(sqlite_url, worker, log_signer)
    r = Receipt.from_json(json.dumps(doc))
    assert json.loads(r.to_json()) == doc
    # URL-safe base64 spelling of the same envelope proves the same leaf.
    doc["entry"]["payload"] = base64.urlsafe_b64encode(
        Envelope.from_dict(doc["entry"]).payload
    ).decode()
    verify_receipt(json.dumps(doc), log_signer.public_key)
    assert digest_bytes(b"") != ""


def test_find_activity(ledger_url: str, worker) -> None:
    with open_unverified(ledger_url) as ledger:
        ledger.append_many([make_envelope(i, worker) for i in range(3)])
        assert ledger.find_activity("default", "wf-1", "run-1", "1") == 1
        assert ledger.find_activity("default", "wf-1", None, "1") == 1
        assert ledger.find_activity("default", "wf-1", "run-2", "1") is None
        assert ledger.find_activity("other", "wf-1", None, "1") is None


def test_find_activity_gives_the_newest_entry_and_takes_any_id(
    ledger_url: str, worker: Ed25519FileSigner
) -> None:
    # The prove step certifies the newest record of the execute step; ids
    # are bound as parameters, whatever characters they hold.
    odd = "wf-'; DROP TABLE ledger_entry; -- %s ? \\ \u00e9"
    pred = make_predicate(7)
    pred = pred.model_copy(
        update={"activity": pred.activity.model_copy(update={"workflow_id": odd})}
    )
    hostile = sign_evidence(build_statement(pred, arguments=digest_bytes(b"a")), worker)
    with open_unverified(ledger_url) as ledger:
        ledger.append_many(
            [
                make_envelope(0, worker),
                make_envelope(1, worker, status=OutcomeStatus.DENIED),
                make_envelope(2, worker),
                make_envelope(1, worker),
                hostile,
            ]
        )
        assert ledger.find_activity("default", "wf-1", "run-1", "1") == 3
        assert ledger.find_activity("default", "wf-1", None, "1") == 3
        assert ledger.find_activity("default", odd, "run-1", "7") == 4
        assert ledger.find_activity("default", odd[:-1], "run-1", "7") is None
        assert ledger.entry(0).index == 0  # the table is still there
