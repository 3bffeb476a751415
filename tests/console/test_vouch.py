"""The ledger's word on a run's claims, from an attacker's position at the database.

The ledger here accepts any append (as a database an attacker can write to
would): only evidence a trusted key of an allowed role signed, naming the
very run, may vouch for what the run reports.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import update

from ecp._keyring import KeyFiles, init_keyring
from ecp.activities._evidence import predicate_for
from ecp.authority._keys import Ed25519FileSigner, Signer
from ecp.authority._truststore import TrustStore
from ecp.console.vouch import Claim, vouch_for
from ecp.lineage.ledger._evidence import OutcomeStatus, build_statement, sign_evidence
from ecp.lineage.ledger._ledger import ACCEPT_UNVERIFIED, Ledger
from ecp.lineage.ledger._store import ENTRY

NS = "default"
AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
POLICY = "sha256:" + "ab" * 32
ARGS = "sha256:" + "cd" * 32


def _evidence(
    signer: Signer,
    workflow_id: str,
    run_id: str,
    status: OutcomeStatus,
    *,
    grant_id: str = "g-1",
    attempt: int = 1,
    activity_id: str = "execute:payout",
    action: str = "payout",
) -> bytes:
    predicate = predicate_for(
        namespace=NS,
        workflow_id=workflow_id,
        run_id=run_id,
        activity_id=activity_id,
        attempt=attempt,
        activity_type=action,
        status=status,
        reason_code="" if status is OutcomeStatus.COMPLETED else "ecp.policy_denied",
        reason="" if status is OutcomeStatus.COMPLETED else "no",
        decision_id="d-1",
        policy_digest=POLICY,
        grant_id=grant_id,
        initiator="alice",
        started_at=AT,
        finished_at=AT,
    )
    return sign_evidence(build_statement(predicate, arguments=ARGS), signer).to_json()


def _claim(workflow_id: str, run_id: str = "r-1", **kw: object) -> Claim:
    values: dict[str, object] = {
        "open": False,
        "action": "payout",
        "decision": "allow",
        "outcome": "completed",
        "grant_id": "g-1",
        "initiator": "alice",
        "policy_digest": POLICY,
    }
    values.update(kw)
    return Claim(workflow_id=workflow_id, run_id=run_id, **values)  # type: ignore[arg-type]


@pytest.fixture
def stack(tmp_path: Path) -> tuple[Ledger, TrustStore, KeyFiles]:
    init_keyring(tmp_path / "keys")
    keys = KeyFiles(tmp_path / "keys")
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ecp.db'}", trust=ACCEPT_UNVERIFIED)
    return ledger, TrustStore.load(keys.trust_store), keys


def test_only_trusted_evidence_for_the_very_run_vouches(
    stack: tuple[Ledger, TrustStore, KeyFiles],
) -> None:
    ledger, trust, keys = stack
    worker = Ed25519FileSigner.from_file(keys.worker)
    recorder = Ed25519FileSigner.from_file(keys.recorder)
    stranger = Ed25519FileSigner.generate()
    ledger.append(_evidence(worker, "good", "r-1", OutcomeStatus.COMPLETED))
    # The recorder may sign denials only: its "completed" vouches for nothing.
    ledger.append(_evidence(recorder, "recorded", "r-1", OutcomeStatus.COMPLETED))
    # A key the trust store does not hold, written straight into the database.
    ledger.append(_evidence(stranger, "forged", "r-1", OutcomeStatus.COMPLETED))
    # Evidence of another run of the same id.
    ledger.append(_evidence(worker, "rerun", "r-0", OutcomeStatus.COMPLETED))
    # A failed attempt, then the completed retry: the newest entry counts.
    ledger.append(_evidence(worker, "retried", "r-1", OutcomeStatus.FAILED, attempt=1))
    last = ledger.append(_evidence(worker, "retried", "r-1", OutcomeStatus.COMPLETED, attempt=2))
    ledger.append(_evidence(worker, "denied", "r-1", OutcomeStatus.DENIED, grant_id=""))
    ledger.append(_evidence(worker, "regranted", "r-1", OutcomeStatus.COMPLETED))
    # A governed call, then scoped calls (which set no search attributes):
    # the run's attributes are checked against its governed call's record.
    ledger.append(_evidence(worker, "scoped", "r-1", OutcomeStatus.COMPLETED))
    ledger.append(
        _evidence(
            worker,
            "scoped",
            "r-1",
            OutcomeStatus.FAILED,
            grant_id="g-scope",
            activity_id="scope:s-1:1",
            action="refund",
        )
    )

    claims = [
        _claim("good"),
        _claim("recorded"),
        _claim("forged"),
        _claim("rerun"),
        _claim("retried"),
        _claim("denied"),  # claims completed, the gate recorded a denial
        _claim("denied", "r-2", open=True, decision="", outcome=""),  # open, nothing yet
        _claim("regranted", grant_id="g-other"),
        _claim("good", "r-9"),  # nothing at all for this run
        _claim("scoped"),
    ]
    words = vouch_for(ledger, trust, NS, claims, at=AT)
    got = {k: (v.state, v.reason) for k, v in words.items()}
    assert got[("good", "r-1")] == ("verified", "")
    assert words[("retried", "r-1")].verified
    assert words[("retried", "r-1")].index == last.index
    for wf in ("recorded", "forged"):
        state, reason = got[(wf, "r-1")]
        assert state == "unverified", wf
        assert "do not verify" in reason, wf
    assert got[("rerun", "r-1")] == ("unverified", "No ledger evidence for this run.")
    assert got[("good", "r-9")] == ("unverified", "No ledger evidence for this run.")
    assert got[("denied", "r-1")] == (
        "unverified",
        "The ledger says denied, the workflow says completed.",
    )
    assert got[("denied", "r-2")][0] == "pending"
    assert got[("scoped", "r-1")] == ("verified", "")
    assert got[("regranted", "r-1")][0] == "unverified"
    assert "another grant" in got[("regranted", "r-1")][1]
    # The lookup columns only route: pointing another run's entry at this
    # run (as a write to the database could) does not make it this run's.
    with ledger.database.write() as (conn, _):
        conn.execute(update(ENTRY).where(ENTRY.c.workflow_id == "rerun").values(run_id="r-1"))
    again = vouch_for(ledger, trust, NS, [_claim("rerun")], at=AT)
    assert again[("rerun", "r-1")].reason == "No ledger evidence for this run."
    # Revoking the worker key takes effect at once (checks are remembered per trust store).
    revoked = trust.revoked(worker.key_id, AT)
    after = vouch_for(ledger, trust=revoked, namespace=NS, claims=[_claim("good")], at=AT)
    assert after[("good", "r-1")].state == "unverified"
    assert vouch_for(ledger, trust, NS, [_claim("good")], at=AT)[("good", "r-1")].verified
    ledger.close()


def test_a_claimed_denial_of_what_ran_is_unverified(
    stack: tuple[Ledger, TrustStore, KeyFiles],
) -> None:
    ledger, trust, keys = stack
    worker = Ed25519FileSigner.from_file(keys.worker)
    ledger.append(_evidence(worker, "ran", "r-1", OutcomeStatus.COMPLETED))
    ledger.append(_evidence(worker, "odd", "r-1", OutcomeStatus.COMPLETED))
    words = vouch_for(
        ledger,
        trust,
        NS,
        [
            _claim("ran", decision="deny", outcome="completed"),
            _claim("odd", decision="maybe"),
        ],
        at=AT,
    )
    assert words[("ran", "r-1")].reason == (
        "The ledger says it ran (completed), the workflow says the policy denied it."
    )
    assert "which ECP never makes" in words[("odd", "r-1")].reason
    # Another namespace's console sees nothing of these entries.
    other = vouch_for(ledger, trust, "elsewhere", [_claim("ran")], at=AT)
    assert other[("ran", "r-1")].reason == "No ledger evidence for this run."
    ledger.close()
