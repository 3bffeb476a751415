"""Receipts: an entry, its inclusion proof and a signed checkpoint, in one JSON document.

Verifiable offline with nothing but the log's public key: this module never
touches a database. Wire form (``mediaType`` names the version)::

    {
      "mediaType": "application/vnd.ecp.receipt.v1+json",
      "logIndex": 41,
      "leafHash": "<base64 of the 32-byte RFC 6962 leaf hash>",
      "entry": { <the DSSE envelope: payload, payloadType, signatures> },
      "inclusionProof": {"treeSize": 42, "hashes": ["<base64>", ...]},
      "checkpoint": "<C2SP signed note: origin, size, root, signatures>"
    }

The leaf is the RFC 8785 canonical JSON of ``entry``, so any spelling of the
same envelope (key order, base64 alphabet) proves the same leaf.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ecp.authority._canonical import canonical_json, parse_json_strict
from ecp.authority._dsse import Envelope
from ecp.authority.errors import AuthorityError, CanonicalizationError
from ecp.lineage.ledger._checkpoint import MAX_TREE_SIZE, Checkpoint, open_checkpoint
from ecp.lineage.ledger._merkle import Hash, leaf_hash, verify_inclusion
from ecp.lineage.ledger._note import NoteVerifier, VerifiedNote, parse_note
from ecp.lineage.ledger.errors import (
    MalformedReceiptError,
    ProofSizeMismatchError,
    ReceiptEntryMismatchError,
    ReceiptKeyError,
    ReceiptOriginMismatchError,
    StaleCheckpointError,
    UnverifiedNoteError,
)

__all__ = [
    "MAX_RECEIPT_BYTES",
    "RECEIPT_MEDIA_TYPE",
    "Receipt",
    "VerifiedReceipt",
    "entry_leaf",
    "verify_receipt",
]

RECEIPT_MEDIA_TYPE: Final = "application/vnd.ecp.receipt.v1+json"
#: Entries are at most 64 KiB; a proof is at most 64 hashes.
MAX_RECEIPT_BYTES: Final = 256 * 1024
_FIELDS: Final = {"mediaType", "logIndex", "leafHash", "entry", "inclusionProof", "checkpoint"}


def entry_leaf(envelope: Envelope) -> bytes:
    """The leaf bytes the log hashes for ``envelope``: its canonical JSON."""
    return canonical_json(envelope.to_dict())


@dataclass(frozen=True, slots=True)
class Receipt:
    """A receipt as issued by the ledger (not yet verified)."""

    log_index: int
    leaf_hash: Hash
    entry: Envelope
    tree_size: int
    proof: tuple[Hash, ...]
    checkpoint_note: str

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (see the module docstring)."""
        return {
            "mediaType": RECEIPT_MEDIA_TYPE,
            "logIndex": self.log_index,
            "leafHash": base64.b64encode(self.leaf_hash).decode(),
            "entry": self.entry.to_dict(),
            "inclusionProof": {
                "treeSize": self.tree_size,
                "hashes": [base64.b64encode(h).decode() for h in self.proof],
            },
            "checkpoint": self.checkpoint_note,
        }

    def to_json(self) -> bytes:
        """Pretty JSON bytes, newline-terminated."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes | str) -> Receipt:
        """Parse a receipt document strictly.

        Raises:
            MalformedReceiptError: too large, not JSON, duplicate or unknown
                keys, missing or mistyped fields, bad base64, a hash that is
                not 32 bytes, or an entry that is not a DSSE envelope.
        """
        if isinstance(data, str):
            try:
                raw = data.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise MalformedReceiptError("receipt text holds a lone surrogate") from exc
        elif isinstance(data, bytes | bytearray | memoryview):
            raw = bytes(data)
        else:
            raise MalformedReceiptError(f"a receipt is JSON text, not {type(data).__name__}")
        if len(raw) > MAX_RECEIPT_BYTES:
            raise MalformedReceiptError(f"receipt is {len(raw)} bytes, limit {MAX_RECEIPT_BYTES}")
        try:
            doc = parse_json_strict(raw)
        except AuthorityError as exc:
            raise MalformedReceiptError(f"receipt is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise MalformedReceiptError("receipt must be a JSON object")
        if set(doc) != _FIELDS:
            missing, extra = _FIELDS - set(doc), set(doc) - _FIELDS
            raise MalformedReceiptError(
                f"receipt fields wrong (missing {sorted(missing)}, unknown {sorted(extra)})"
            )
        if doc["mediaType"] != RECEIPT_MEDIA_TYPE:
            raise MalformedReceiptError(f"receipt mediaType must be {RECEIPT_MEDIA_TYPE}")
        index = _int(doc["logIndex"], "logIndex")
        proof_doc = doc["inclusionProof"]
        if not isinstance(proof_doc, dict) or set(proof_doc) != {"treeSize", "hashes"}:
            raise MalformedReceiptError("inclusionProof must be {treeSize, hashes}")
        size = _int(proof_doc["treeSize"], "inclusionProof.treeSize")
        hashes = proof_doc["hashes"]
        if not isinstance(hashes, list) or len(hashes) > 64:
            raise MalformedReceiptError("inclusionProof.hashes must be a list of at most 64")
        proof = tuple(_hash(h, f"inclusionProof.hashes[{i}]") for i, h in enumerate(hashes))
        note = doc["checkpoint"]
        if not isinstance(note, str):
            raise MalformedReceiptError("checkpoint must be a signed note string")
        try:
            entry = Envelope.from_dict(doc["entry"])
        except AuthorityError as exc:
            raise MalformedReceiptError(f"entry is not a DSSE envelope: {exc}") from exc
        return cls(index, _hash(doc["leafHash"], "leafHash"), entry, size, proof, note)


def _int(value: object, what: str) -> int:
    # bool is an int in Python; JSON true is not an index. Indexes and sizes
    # are unsigned 64-bit, as in the checkpoint.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TREE_SIZE:
        raise MalformedReceiptError(f"{what} must be an unsigned 64-bit integer")
    return value


def _hash(value: object, what: str) -> Hash:
    if not isinstance(value, str):
        raise MalformedReceiptError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedReceiptError(f"{what} is not valid base64") from exc
    if len(raw) != 32:
        raise MalformedReceiptError(f"{what} must be 32 bytes, got {len(raw)}")
    return Hash(raw)


@dataclass(frozen=True, slots=True)
class VerifiedReceipt:
    """What a verified receipt establishes: this entry is at this index of this log."""

    origin: str
    log_index: int
    tree_size: int
    root_hash: Hash
    leaf_hash: Hash
    entry: Envelope
    checkpoint: Checkpoint
    note: VerifiedNote


def verify_receipt(
    receipt: bytes | str | Receipt,
    log_key: Ed25519PublicKey | NoteVerifier,
    *,
    origin: str | None = None,
    min_tree_size: int = 0,
    witnesses: Sequence[NoteVerifier] = (),
) -> VerifiedReceipt:
    """Verify a receipt offline with the log's public key.

    Order: parse → checkpoint format → origin → log signature → freshness →
    proof size → leaf → inclusion proof.

    Args:
        receipt: the receipt document or a parsed :class:`Receipt`.
        log_key: the log's public key (its note key name is the origin) or a
            full note verifier.
        origin: the log the caller expects; a checkpoint of another log fails.
        min_tree_size: the size of the newest checkpoint the caller has
            already seen; an older checkpoint is stale.
        witnesses: optional witness cosigners, reported in ``note.verified_by``.

    Raises:
        MalformedReceiptError: the document is malformed (or, for a
            :class:`Receipt` built by hand, its entry has no canonical JSON).
        MalformedNoteError, MalformedCheckpointError: the checkpoint is malformed.
        ReceiptOriginMismatchError: the checkpoint is for another origin.
        ReceiptKeyError: the checkpoint is not signed by ``log_key``.
        NoteSignatureError: a signature that claims to be the log's is invalid.
        StaleCheckpointError: the checkpoint does not cover the entry or is
            older than ``min_tree_size``.
        ProofSizeMismatchError: the proof is for another size than the checkpoint.
        ReceiptEntryMismatchError: the leaf hash does not match the entry.
        ProofError: the inclusion proof does not verify (a subclass names why).
    """
    r = receipt if isinstance(receipt, Receipt) else Receipt.from_json(receipt)
    body = Checkpoint.parse(parse_note(r.checkpoint_note).text)
    if origin is not None and body.origin != origin:
        raise ReceiptOriginMismatchError(
            f"checkpoint is for log {body.origin!r}, expected {origin!r}"
        )
    try:
        checkpoint, note = open_checkpoint(
            r.checkpoint_note, log_key, origin=origin, witnesses=tuple(witnesses)
        )
    except UnverifiedNoteError as exc:
        raise ReceiptKeyError(
            f"checkpoint of {body.origin!r} is not signed by this log key"
        ) from exc
    if checkpoint.size <= r.log_index:
        raise StaleCheckpointError(
            f"checkpoint size {checkpoint.size} does not cover entry {r.log_index}"
        )
    if checkpoint.size < min_tree_size:
        raise StaleCheckpointError(
            f"checkpoint size {checkpoint.size} is older than the known size {min_tree_size}"
        )
    if r.tree_size != checkpoint.size:
        raise ProofSizeMismatchError(
            f"inclusion proof is for tree size {r.tree_size}, checkpoint is size {checkpoint.size}"
        )
    try:
        leaf = leaf_hash(entry_leaf(r.entry))
    except CanonicalizationError as exc:
        # Only a hand-built Receipt can get here (from_json refuses such text).
        raise MalformedReceiptError(f"entry has no canonical form: {exc}") from exc
    if leaf != r.leaf_hash:
        raise ReceiptEntryMismatchError("leafHash does not match the entry")
    verify_inclusion(r.log_index, r.tree_size, leaf, r.proof, checkpoint.root_hash)
    return VerifiedReceipt(
        checkpoint.origin,
        r.log_index,
        r.tree_size,
        Hash(checkpoint.root_hash),
        leaf,
        r.entry,
        checkpoint,
        note,
    )
