"""The prove step certifies what the workflow observed, repairing the ledger
when the newest record for the activity tells another story."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ecp._keyring import init_keyring
from ecp.activities._contracts import ProveInput
from ecp.activities._prove import ProveActivities
from ecp.authority._canonical import digest_bytes
from ecp.authority._clock import system_clock
from ecp.authority._keys import Ed25519FileSigner, load_public_key
from ecp.lineage.ledger._evidence import parse_evidence
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger._receipt import verify_receipt

T = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
POLICY = "sha256:" + "2" * 64


def _input(outcome: str, reason: str = "") -> ProveInput:
    return ProveInput(
        namespace="default",
        workflow_id="wf-1",
        run_id="run-1",
        activity_id="execute:payout",
        action="payout",
        initiator="alice",
        decision_id="sha256:" + "1" * 64,
        policy_digest=POLICY,
        outcome=outcome,
        reason_code="boom" if reason else "",
        reason=reason,
        grant_id="grant-1",
    )


def test_a_disagreeing_record_is_repaired_and_the_receipt_proves_the_observed_outcome(
    tmp_path: Path,
) -> None:
    keys = init_keyring(tmp_path / "keys")
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ecp.db'}")
    prove = ProveActivities(
        ledger=ledger,
        log_signer=Ed25519FileSigner.from_file(keys.log),
        recorder=Ed25519FileSigner.from_file(keys.recorder),
        clock=system_clock,
    )
    args = digest_bytes(b"args")
    try:
        # Attempt 1 failed and was recorded; the completion's record was lost.
        failed = prove._prove(_input("failed", "worker lost\tits\nconnection  "), args, T)
        assert parse_evidence(ledger.entry(failed.index).envelope).predicate.outcome.reason == (
            "worker lost its"  # one clean line, whatever the exception text held
        )
        done = prove._prove(_input("completed"), args, T)
        assert done.index != failed.index
        verified = verify_receipt(done.receipt, load_public_key(keys.log), origin=ledger.origin)
        assert parse_evidence(verified.entry).predicate.outcome.status.value == "completed"
        # Proving the same outcome again finds that entry instead of adding one.
        again = prove._prove(_input("completed"), args, T)
        assert again.index == done.index
        assert ledger.head().size == 2
    finally:
        ledger.close()
