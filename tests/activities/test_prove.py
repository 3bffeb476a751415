"""Who may write which evidence: roles, the prove step, and the database operator.

- An outcome is the gate's own record: only an executor (worker) key may sign
  it. The authority side's recorder key may sign denials, nothing else.
- The prove step certifies the gate's record; it never writes an outcome.
- A ledger without a trust store accepts nothing.
- Someone with write access to the database can append rows with perfectly
  consistent hashes; full verification names the entry nobody trusted signed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from ecp._keyring import init_keyring
from ecp.activities._contracts import ProveInput
from ecp.activities._prove import ProveActivities, _Execution
from ecp.authority._canonical import digest_bytes
from ecp.authority._clock import system_clock
from ecp.authority._keys import Ed25519FileSigner, load_public_key
from ecp.authority._truststore import TrustStore
from ecp.lineage.ledger._evidence import OutcomeStatus, parse_evidence
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger._receipt import verify_receipt
from ecp.lineage.ledger.errors import EvidenceSignatureError, TamperError
from tests.lineage.support import make_envelope, open_unverified

T = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
WHO = _Execution("default", "wf-0", "run-1", "0")


def _input(outcome: str) -> ProveInput:
    return ProveInput(
        namespace="ignored",
        workflow_id="ignored",
        run_id="ignored",
        activity_id="0",
        action="transfer_funds",
        initiator="alice@example.com",
        decision_id="dec-0",
        policy_digest=digest_bytes(b"policy-bundle"),
        outcome=outcome,
        reason_code="ecp.policy_denied" if outcome == "denied" else "",
        reason="amount above limit" if outcome == "denied" else "",
        grant_id="grant-0",
    )


@pytest.fixture
def setup(tmp_path: Path) -> tuple[ProveActivities, Ledger, TrustStore, Path]:
    keys = init_keyring(tmp_path / "keys")
    trust = TrustStore.load(keys.trust_store)
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ecp.db'}", trust=trust)
    prove = ProveActivities(
        ledger=ledger,
        log_signer=Ed25519FileSigner.from_file(keys.log),
        recorder=Ed25519FileSigner.from_file(keys.recorder),
        clock=system_clock,
    )
    return prove, ledger, trust, keys.directory


def test_the_recorder_key_cannot_sign_an_outcome(setup) -> None:  # type: ignore[no-untyped-def]
    _, ledger, _, keys = setup
    recorder = Ed25519FileSigner.from_file(keys / "recorder.key")
    with pytest.raises(EvidenceSignatureError, match="completed evidence signature"):
        ledger.append(make_envelope(0, recorder))
    with pytest.raises(EvidenceSignatureError):
        ledger.append(make_envelope(1, recorder, status=OutcomeStatus.FAILED))
    # Denials it may sign; the executor's key signs either.
    ledger.append(make_envelope(2, recorder, status=OutcomeStatus.DENIED))
    ledger.append(make_envelope(3, Ed25519FileSigner.from_file(keys / "worker.key")))
    ledger.close()


def test_prove_never_writes_an_outcome(setup) -> None:  # type: ignore[no-untyped-def]
    prove, ledger, _, _ = setup
    args = digest_bytes(b"args-0")
    with pytest.raises(ApplicationError) as info:
        prove._prove(WHO, _input("completed"), args, T)
    assert info.value.type == "ecp.outcome_unrecorded"
    assert info.value.non_retryable
    assert ledger.head().size == 0
    ledger.close()


def test_prove_certifies_the_gates_record(setup) -> None:  # type: ignore[no-untyped-def]
    prove, ledger, _, keys = setup
    gate = ledger.append(make_envelope(0, Ed25519FileSigner.from_file(keys / "worker.key")))
    done = prove._prove(WHO, _input("completed"), digest_bytes(b"args-0"), T)
    assert done.index == gate.index
    assert ledger.head().size == 1  # nothing added
    v = verify_receipt(done.receipt, load_public_key(keys / "log.key"), origin=ledger.origin)
    assert parse_evidence(v.entry).predicate.outcome.status is OutcomeStatus.COMPLETED
    # A "failed" claim about the same execution is not what the gate recorded.
    with pytest.raises(ApplicationError, match="no gate record shows 'failed'"):
        prove._prove(WHO, _input("failed"), digest_bytes(b"args-0"), T)
    ledger.close()


def test_prove_records_denials_under_the_ids_it_was_given(setup) -> None:  # type: ignore[no-untyped-def]
    prove, ledger, trust, keys = setup
    denied = prove._prove(WHO, _input("denied"), digest_bytes(b"args-0"), T)
    rec = parse_evidence(ledger.entry(denied.index).envelope).predicate
    assert (rec.activity.workflow_id, rec.activity.run_id) == ("wf-0", "run-1")
    assert rec.outcome.status is OutcomeStatus.DENIED
    # Idempotent: proving the same denial again finds it.
    assert prove._prove(WHO, _input("denied"), digest_bytes(b"args-0"), T).index == denied.index
    assert ledger.verify_all(load_public_key(keys / "log.key"), trust=trust).size == 1
    ledger.close()


def test_a_ledger_without_a_trust_store_accepts_nothing(tmp_path: Path) -> None:
    with Ledger.open(f"sqlite:///{tmp_path / 'x.db'}") as ledger:
        with pytest.raises(EvidenceSignatureError, match="without a trust store"):
            ledger.append(make_envelope(0, Ed25519FileSigner.generate()))
        assert ledger.head().size == 0


def test_full_verification_names_an_entry_the_operator_wrote(setup) -> None:  # type: ignore[no-untyped-def]
    _, ledger, trust, keys = setup
    worker = Ed25519FileSigner.from_file(keys / "worker.key")
    ledger.append(make_envelope(0, worker))
    url = f"sqlite:///{keys.parent / 'ecp.db'}"
    ledger.close()
    # The operator's own tool: every hash consistent, but signed by a key of theirs.
    with open_unverified(url) as operator:
        operator.append(make_envelope(1, Ed25519FileSigner.generate()))
        operator.append(make_envelope(2, worker))
        assert operator.verify_all().size == 3  # hashes alone cannot tell
        with pytest.raises(TamperError, match="entry 1: entry is not evidence signed by a trusted"):
            operator.verify_all(trust=trust)


def test_an_unknown_outcome_is_the_gates_to_record_and_is_never_overwritten(setup) -> None:  # type: ignore[no-untyped-def]
    prove, ledger, _, keys = setup
    recorder = Ed25519FileSigner.from_file(keys / "recorder.key")
    with pytest.raises(EvidenceSignatureError):
        ledger.append(make_envelope(0, recorder, status=OutcomeStatus.UNKNOWN))
    worker = Ed25519FileSigner.from_file(keys / "worker.key")
    gate = ledger.append(make_envelope(0, worker, status=OutcomeStatus.UNKNOWN))
    done = prove._prove(WHO, _input("unknown"), digest_bytes(b"args-0"), T)
    assert done.index == gate.index
    v = verify_receipt(done.receipt, load_public_key(keys / "log.key"), origin=ledger.origin)
    assert parse_evidence(v.entry).predicate.outcome.status is OutcomeStatus.UNKNOWN
    # Neither a denial beside it (a body may have run) nor a completion claim.
    with pytest.raises(ApplicationError, match="does not record a denial of what ran"):
        prove._prove(WHO, _input("denied"), digest_bytes(b"args-0"), T)
    with pytest.raises(ApplicationError, match="no gate record shows 'completed'"):
        prove._prove(WHO, _input("completed"), digest_bytes(b"args-0"), T)
    assert ledger.head().size == 1
    ledger.close()
