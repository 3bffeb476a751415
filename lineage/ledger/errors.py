"""The lineage error family.

Every failure raised by ``lineage`` derives from :class:`LineageError`. Each
subclass carries a stable ``code`` (for evidence records, CLI output and
Temporal ``ApplicationError`` types) and a ``retryable`` flag: verification
failures are final, an unreachable database is not.
"""

from __future__ import annotations

from ecp.errors import EcpError

__all__ = [
    "CheckpointError",
    "CheckpointForkError",
    "CheckpointOriginError",
    "ConsistencyProofError",
    "EntryNotFoundError",
    "EntryRefusedError",
    "EvidenceError",
    "EvidenceSignatureError",
    "HashLengthError",
    "InclusionProofError",
    "InconsistentCheckpointError",
    "LedgerError",
    "LedgerUnavailableError",
    "LineageError",
    "MalformedCheckpointError",
    "MalformedEvidenceError",
    "MalformedNoteError",
    "MalformedReceiptError",
    "NoCheckpointError",
    "NonCanonicalEvidenceError",
    "NoteError",
    "NoteSignatureError",
    "ProofError",
    "ProofLengthError",
    "ProofSizeError",
    "ProofSizeMismatchError",
    "ReceiptEntryMismatchError",
    "ReceiptError",
    "ReceiptKeyError",
    "ReceiptOriginMismatchError",
    "RootMismatchError",
    "StaleCheckpointError",
    "TamperError",
    "UnverifiedNoteError",
    "VerifierKeyError",
    "WitnessConflictError",
    "WitnessError",
    "WitnessQuorumError",
    "WitnessRefusedError",
    "WitnessUnreachableError",
]


class LineageError(EcpError):
    """Root of every error raised by the ledger (``ecp.lineage.ledger``)."""

    code = "lineage_error"


# --- evidence ---------------------------------------------------------------


class EvidenceError(LineageError):
    """An evidence envelope or statement is not acceptable."""

    code = "evidence_invalid"


class MalformedEvidenceError(EvidenceError):
    """The envelope or its in-toto Statement does not match the evidence schema."""

    code = "evidence_malformed"


class NonCanonicalEvidenceError(MalformedEvidenceError):
    """The statement payload is not RFC 8785 canonical JSON.

    Refused because the idempotency key is the digest of the payload bytes:
    two spellings of one statement would otherwise become two entries.
    """

    code = "evidence_not_canonical"


class EvidenceSignatureError(EvidenceError):
    """The evidence envelope is not signed by a trusted worker key."""

    code = "evidence_signature_invalid"


# --- Merkle proofs ----------------------------------------------------------


class ProofError(LineageError):
    """A Merkle inclusion or consistency proof does not verify."""

    code = "proof_invalid"


class HashLengthError(ProofError):
    """A leaf hash, root or proof hash is not 32 bytes."""

    code = "proof_bad_hash_length"


class ProofSizeError(ProofError):
    """Index and tree sizes do not describe a provable statement.

    For example an index beyond the tree, ``size1 = 0``, ``size1 > size2``,
    or a non-empty proof for equal sizes.
    """

    code = "proof_bad_size"


class ProofLengthError(ProofError):
    """The proof has more or fewer hashes than the sizes call for."""

    code = "proof_bad_length"


class RootMismatchError(ProofError):
    """The root recomputed from the proof is not the expected root."""

    code = "proof_root_mismatch"


class InclusionProofError(RootMismatchError):
    """An inclusion proof leads to another root than the tree's."""

    code = "inclusion_proof_invalid"


class ConsistencyProofError(RootMismatchError):
    """A consistency proof does not lead to both trees' roots."""

    code = "consistency_proof_invalid"


# --- signed notes and checkpoints -------------------------------------------


class NoteError(LineageError):
    """A C2SP signed note is malformed or does not verify."""

    code = "note_invalid"


class MalformedNoteError(NoteError):
    """The note text or a signature line is malformed."""

    code = "note_malformed"


class VerifierKeyError(NoteError):
    """A verifier key string is malformed, has an unknown algorithm or a wrong key id."""

    code = "note_verifier_key_invalid"


class NoteSignatureError(NoteError):
    """A signature by a known key does not verify."""

    code = "note_signature_invalid"


class UnverifiedNoteError(NoteError):
    """No signature on the note is by a known key."""

    code = "note_unverified"


class CheckpointError(LineageError):
    """A tlog checkpoint is malformed or not acceptable."""

    code = "checkpoint_invalid"


class MalformedCheckpointError(CheckpointError):
    """The checkpoint body does not follow C2SP tlog-checkpoint."""

    code = "checkpoint_malformed"


class WitnessQuorumError(CheckpointError):
    """Fewer trusted witnesses cosigned a checkpoint than the verifier requires."""

    code = "checkpoint_witness_quorum"


class CheckpointForkError(CheckpointError):
    """A checkpoint is not consistent with one seen before: the log forked or was rewritten.

    Raised by audits against a saved checkpoint and by verifiers that remember
    the newest checkpoint they saw. Final: no retry makes two views agree.
    """

    code = "checkpoint_fork"


# --- witnesses --------------------------------------------------------------


class WitnessError(LineageError):
    """A witness did not cosign a checkpoint."""

    code = "witness_error"


class WitnessUnreachableError(WitnessError):
    """The witness could not be reached or answered with a server error; retry later."""

    code = "witness_unreachable"
    retryable = True


class WitnessRefusedError(WitnessError):
    """The witness refused the checkpoint (tlog-witness 4xx answer).

    Attributes:
        status: the HTTP status code (403 unknown key, 404 unknown log,
            422 bad consistency proof, 400 malformed, 409 conflict).
    """

    code = "witness_refused"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"witness answered {status}: {message}")
        self.status = status


class WitnessConflictError(WitnessRefusedError):
    """409: the witness's latest cosigned size is not the old size sent (or its root differs).

    Attributes:
        size: the witness's size, when it said (``text/x.tlog.size``).
    """

    code = "witness_conflict"

    def __init__(self, size: int | None, message: str) -> None:
        super().__init__(409, message)
        self.size = size


# --- receipts ---------------------------------------------------------------


class ReceiptError(LineageError):
    """A receipt does not prove what it claims."""

    code = "receipt_invalid"


class MalformedReceiptError(ReceiptError):
    """The receipt document does not match the receipt schema."""

    code = "receipt_malformed"


class ReceiptOriginMismatchError(ReceiptError):
    """The receipt's checkpoint belongs to another log (origin differs)."""

    code = "receipt_origin_mismatch"


class ReceiptKeyError(ReceiptError):
    """The receipt's checkpoint is not signed by the given log key."""

    code = "receipt_wrong_key"


class StaleCheckpointError(ReceiptError):
    """The checkpoint is older than the entry or than a checkpoint already seen."""

    code = "receipt_stale_checkpoint"


class ProofSizeMismatchError(ReceiptError):
    """The inclusion proof is for another tree size than the checkpoint's."""

    code = "receipt_proof_wrong_size"


class ReceiptEntryMismatchError(ReceiptError):
    """The receipt's leaf hash or index does not match its entry."""

    code = "receipt_entry_mismatch"


# --- the ledger -------------------------------------------------------------


class LedgerError(LineageError):
    """The ledger refused an operation or found itself inconsistent."""

    code = "ledger_error"


class EntryNotFoundError(LedgerError):
    """No entry (or tree size) as asked for exists in the log."""

    code = "ledger_entry_not_found"


class EntryRefusedError(LedgerError):
    """The database refused to store an entry's values (a data or integrity error).

    Final: the same values are refused again, so retrying does not help.
    Only the request that carried them fails; the appends that shared its
    transaction are written without it (see :mod:`ecp.lineage.ledger._batch`).

    Attributes:
        evidence_ids: the evidence ids of the refused append (one request's).
        reason: the database's first line about it.
    """

    code = "ledger_entry_refused"

    def __init__(self, evidence_ids: tuple[str, ...], reason: str) -> None:
        shown = ", ".join(evidence_ids[:3])
        more = f" and {len(evidence_ids) - 3} more" if len(evidence_ids) > 3 else ""
        super().__init__(f"the ledger database refused evidence {shown}{more}: {reason}")
        self.evidence_ids = evidence_ids
        self.reason = reason


class NoCheckpointError(LedgerError):
    """No signed checkpoint covers the entry yet."""

    code = "ledger_no_checkpoint"


class InconsistentCheckpointError(LedgerError):
    """A new checkpoint would not be consistent with the previous one; refused."""

    code = "ledger_checkpoint_inconsistent"


class CheckpointOriginError(InconsistentCheckpointError):
    """A checkpoint was asked for under another origin than the log's."""

    code = "ledger_checkpoint_origin"


class TamperError(LedgerError):
    """Stored data does not match what the log committed to.

    Attributes:
        index: the first entry index found bad (``None`` when the damage is
            not tied to an entry, e.g. a checkpoint's signature).
        what: a short description of the damage.
    """

    code = "ledger_tampered"

    def __init__(self, index: int | None, what: str) -> None:
        where = f"entry {index}" if index is not None else "log"
        super().__init__(f"{where}: {what}")
        self.index = index
        self.what = what


class LedgerUnavailableError(LedgerError):
    """The database cannot be reached or answered with an I/O fault.

    Retryable: no partial write remains (the transaction rolled back), and
    append is idempotent, so the same call can simply be made again. On
    PostgreSQL with synchronous replication it may also mean the commit was
    only local (the wait for the standby was cancelled): the retry then finds
    the same entries, and is answered once the standby confirms it.
    """

    code = "ledger_unavailable"
    retryable = True
