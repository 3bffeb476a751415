"""Turning what the gate saw into signed evidence in the ledger."""

from __future__ import annotations

from dataclasses import dataclass

from ecp.activities._evidence import predicate_for
from ecp.activities._gate import GateRecord
from ecp.authority._canonical import digest_bytes
from ecp.authority._keys import Signer
from ecp.lineage.ledger._evidence import OutcomeStatus, build_statement, sign_evidence
from ecp.lineage.ledger._ledger import AppendResult, Ledger

__all__ = ["NO_ARGUMENTS", "LedgerEvidenceSink", "evidence_for"]

#: Subject digest used when the arguments could not even be digested.
NO_ARGUMENTS = digest_bytes(b"")


def evidence_for(rec: GateRecord, signer: Signer) -> bytes:
    """The signed evidence envelope (JSON) for one gate record.

    Raises:
        MalformedEvidenceError: the record cannot form valid evidence.
    """
    grant = rec.grant.grant if rec.grant is not None else None
    predicate = predicate_for(
        namespace=rec.namespace,
        workflow_id=rec.workflow_id,
        run_id=rec.run_id,
        activity_id=rec.activity_id,
        attempt=rec.attempt,
        activity_type=rec.activity_type,
        status=OutcomeStatus(rec.outcome),
        reason_code=rec.reason_code,
        reason=rec.reason,
        decision_id=grant.decision_id if grant else None,
        policy_digest=grant.policy_digest if grant else None,
        grant_id=grant.grant_id if grant else None,
        initiator=grant.initiator if grant else None,
        initiator_auth=grant.initiator_auth if grant else None,
        started_at=rec.started_at,
        finished_at=rec.finished_at,
        admitted_at=rec.admitted_at,
        artifacts=rec.artifacts,
    )
    statement = build_statement(
        predicate,
        arguments=rec.args_digest or NO_ARGUMENTS,
        result=rec.result_digest,
        grant=digest_bytes(rec.grant.envelope.payload) if rec.grant is not None else None,
    )
    return sign_evidence(statement, signer).to_json()


@dataclass
class LedgerEvidenceSink:
    """Signs gate records with the worker key and appends them to the ledger."""

    ledger: Ledger
    signer: Signer

    def record(self, record: GateRecord) -> None:
        """Append the evidence for ``record`` (idempotent).

        Raises:
            LedgerUnavailableError: the database cannot be reached (retryable).
            MalformedEvidenceError: the record cannot form valid evidence.
        """
        self.append(record)

    def append(self, record: GateRecord) -> AppendResult:
        """Like :meth:`record`, returning where the entry landed."""
        return self.ledger.append(evidence_for(record, self.signer))
