"""Evidence builders shared by the lineage tests and the benchmark."""

from __future__ import annotations

from typing import Any

from ecp.authority._canonical import digest_bytes
from ecp.authority._dsse import Envelope
from ecp.authority._keys import Ed25519FileSigner, Signer
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.lineage.ledger._evidence import (
    ActivityIdentity,
    EvidencePredicate,
    Outcome,
    OutcomeStatus,
    build_statement,
    sign_evidence,
)
from ecp.lineage.ledger._ledger import ACCEPT_UNVERIFIED, Ledger

__all__ = ["make_envelope", "make_predicate"]


def make_predicate(i: int, *, status: OutcomeStatus = OutcomeStatus.COMPLETED) -> EvidencePredicate:
    """A valid predicate for the ``i``-th governed call."""
    denied = status is not OutcomeStatus.COMPLETED
    return EvidencePredicate(
        decision_id=f"dec-{i}",
        policy_digest=digest_bytes(b"policy-bundle"),
        grant_id=None if status is OutcomeStatus.DENIED else f"grant-{i}",
        initiator="alice@example.com",
        activity=ActivityIdentity(
            namespace="default",
            workflow_id=f"wf-{i}",
            run_id="run-1",
            activity_id=str(i),
            attempt=1,
            activity_type="transfer_funds",
        ),
        outcome=Outcome(
            status=status,
            reason_code="policy_denied" if denied else None,
            reason="amount above limit" if denied else None,
        ),
        started_at="2025-01-02T03:04:05.000000Z",
        finished_at="2025-01-02T03:04:06.500000Z",
    )


def make_envelope(
    i: int, signer: Signer, *, status: OutcomeStatus = OutcomeStatus.COMPLETED
) -> Envelope:
    """A signed evidence envelope, distinct for every ``i``."""
    pred = make_predicate(i, status=status)
    return sign_evidence(
        build_statement(
            pred,
            arguments=digest_bytes(b"args-%d" % i),
            result=digest_bytes(b"result-%d" % i) if status is OutcomeStatus.COMPLETED else None,
            grant=digest_bytes(b"grant-%d" % i) if status is not OutcomeStatus.DENIED else None,
        ),
        signer,
    )


def trust_of(*workers: Ed25519FileSigner) -> TrustStore:
    """A trust store in which ``workers`` may sign evidence."""
    return TrustStore(
        [
            TrustedKey.create(w.public_key, {KeyRole.WORKER}, name=f"worker-{i}")
            for i, w in enumerate(workers)
        ]
    )


def open_unverified(url: str, **kw: Any) -> Ledger:
    """A ledger that appends without checking signers: for tests of the tree itself."""
    return Ledger.open(url, trust=ACCEPT_UNVERIFIED, **kw)
