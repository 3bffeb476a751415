"""The evidence ledger: Merkle log, signed and witnessed checkpoints, receipts, evidence."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ecp._lazy import lazy_exports

if TYPE_CHECKING:
    from ecp.lineage.ledger._checkpoint import Checkpoint as Checkpoint
    from ecp.lineage.ledger._checkpoint import SignedCheckpoint as SignedCheckpoint
    from ecp.lineage.ledger._checkpoint import open_checkpoint as open_checkpoint
    from ecp.lineage.ledger._cosignature import WitnessPolicy as WitnessPolicy
    from ecp.lineage.ledger._evidence import Evidence as Evidence
    from ecp.lineage.ledger._evidence import parse_evidence as parse_evidence
    from ecp.lineage.ledger._evidence import sign_evidence as sign_evidence
    from ecp.lineage.ledger._evidence import verify_evidence_signature as verify_evidence_signature
    from ecp.lineage.ledger._ledger import ACCEPT_UNVERIFIED as ACCEPT_UNVERIFIED
    from ecp.lineage.ledger._ledger import AppendResult as AppendResult
    from ecp.lineage.ledger._ledger import Ledger as Ledger
    from ecp.lineage.ledger._ledger import VerifyReport as VerifyReport
    from ecp.lineage.ledger._merkle import consistency_proof as consistency_proof
    from ecp.lineage.ledger._merkle import inclusion_proof as inclusion_proof
    from ecp.lineage.ledger._merkle import leaf_hash as leaf_hash
    from ecp.lineage.ledger._merkle import verify_consistency as verify_consistency
    from ecp.lineage.ledger._merkle import verify_inclusion as verify_inclusion
    from ecp.lineage.ledger._note import Note as Note
    from ecp.lineage.ledger._note import NoteVerifier as NoteVerifier
    from ecp.lineage.ledger._note import parse_note as parse_note
    from ecp.lineage.ledger._note import sign_note as sign_note
    from ecp.lineage.ledger._note import verify_note as verify_note
    from ecp.lineage.ledger._receipt import Receipt as Receipt
    from ecp.lineage.ledger._receipt import VerifiedReceipt as VerifiedReceipt
    from ecp.lineage.ledger._receipt import verify_receipt as verify_receipt
    from ecp.lineage.ledger.errors import LedgerError as LedgerError
    from ecp.lineage.ledger.errors import LineageError as LineageError

__all__ = [
    "ACCEPT_UNVERIFIED",
    "AppendResult",
    "Checkpoint",
    "Evidence",
    "Ledger",
    "LedgerError",
    "LineageError",
    "Note",
    "NoteVerifier",
    "Receipt",
    "SignedCheckpoint",
    "VerifiedReceipt",
    "VerifyReport",
    "WitnessPolicy",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "open_checkpoint",
    "parse_evidence",
    "parse_note",
    "sign_evidence",
    "sign_note",
    "verify_consistency",
    "verify_evidence_signature",
    "verify_inclusion",
    "verify_note",
    "verify_receipt",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ACCEPT_UNVERIFIED": "ecp.lineage.ledger._ledger",
        "AppendResult": "ecp.lineage.ledger._ledger",
        "Checkpoint": "ecp.lineage.ledger._checkpoint",
        "Evidence": "ecp.lineage.ledger._evidence",
        "Ledger": "ecp.lineage.ledger._ledger",
        "LedgerError": "ecp.lineage.ledger.errors",
        "LineageError": "ecp.lineage.ledger.errors",
        "Note": "ecp.lineage.ledger._note",
        "NoteVerifier": "ecp.lineage.ledger._note",
        "Receipt": "ecp.lineage.ledger._receipt",
        "SignedCheckpoint": "ecp.lineage.ledger._checkpoint",
        "VerifiedReceipt": "ecp.lineage.ledger._receipt",
        "VerifyReport": "ecp.lineage.ledger._ledger",
        "WitnessPolicy": "ecp.lineage.ledger._cosignature",
        "consistency_proof": "ecp.lineage.ledger._merkle",
        "inclusion_proof": "ecp.lineage.ledger._merkle",
        "leaf_hash": "ecp.lineage.ledger._merkle",
        "open_checkpoint": "ecp.lineage.ledger._checkpoint",
        "parse_evidence": "ecp.lineage.ledger._evidence",
        "parse_note": "ecp.lineage.ledger._note",
        "sign_evidence": "ecp.lineage.ledger._evidence",
        "sign_note": "ecp.lineage.ledger._note",
        "verify_consistency": "ecp.lineage.ledger._merkle",
        "verify_evidence_signature": "ecp.lineage.ledger._evidence",
        "verify_inclusion": "ecp.lineage.ledger._merkle",
        "verify_note": "ecp.lineage.ledger._note",
        "verify_receipt": "ecp.lineage.ledger._receipt",
    },
)
