r"""C2SP tlog-checkpoint bodies: origin, tree size, root hash, extension lines.

A checkpoint is the text of a signed note (see :mod:`ecp.lineage.ledger._note`)::

    <origin>\\n<decimal size>\\n<base64 root hash>\\n[<extension line>\\n ...]

The log signs it with a key whose name is the origin, so a verifier holding
only the log's public key and the origin can open it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ecp.authority._keys import Signer
from ecp.lineage.ledger._merkle import HASH_SIZE
from ecp.lineage.ledger._note import NoteVerifier, VerifiedNote, parse_note, sign_note, verify_note
from ecp.lineage.ledger.errors import MalformedCheckpointError, UnverifiedNoteError

__all__ = [
    "MAX_TREE_SIZE",
    "Checkpoint",
    "SignedCheckpoint",
    "open_checkpoint",
]

#: Tree sizes are unsigned 64-bit integers (C2SP tlog-checkpoint, as Go parses them).
MAX_TREE_SIZE = (1 << 64) - 1
_MAX_SIZE_DIGITS = len(str(MAX_TREE_SIZE))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: which log, how many entries, what root."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise MalformedCheckpointError("checkpoint origin must be one non-empty line")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise MalformedCheckpointError("checkpoint size must be an unsigned 64-bit integer")
        if len(self.root_hash) != HASH_SIZE:
            raise MalformedCheckpointError(f"checkpoint root hash must be {HASH_SIZE} bytes")
        for ext in self.extensions:
            if not ext or "\n" in ext:
                raise MalformedCheckpointError("checkpoint extension lines must be non-empty")

    def to_text(self) -> str:
        """The checkpoint body (the note text), ending in a newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode()]
        return "".join(line + "\n" for line in [*lines, *self.extensions])

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body strictly.

        Raises:
            MalformedCheckpointError: fewer than three lines, a size that is not
                a canonical decimal below 2**64, a root that is not base64 of
                32 bytes, an empty line, or no final newline.
        """
        if not text.endswith("\n"):
            raise MalformedCheckpointError("checkpoint body must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise MalformedCheckpointError("checkpoint needs origin, size and root hash lines")
        origin, size_s, root_b64, *ext = lines
        if not size_s.isascii() or not size_s.isdigit() or (size_s != "0" and size_s[0] == "0"):
            raise MalformedCheckpointError(
                f"checkpoint size {size_s[:32]!r} is not a decimal number"
            )
        # Checked before int(): Python refuses to convert more than 4300
        # digits (a ValueError), and no tree is that large anyway.
        if len(size_s) > _MAX_SIZE_DIGITS or int(size_s) > MAX_TREE_SIZE:
            raise MalformedCheckpointError(
                f"checkpoint size {size_s[:32]!r}{'...' if len(size_s) > 32 else ''} "
                "does not fit in 64 bits"
            )
        try:
            root = base64.b64decode(root_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedCheckpointError("checkpoint root hash is not valid base64") from exc
        return cls(origin, int(size_s), root, tuple(ext))

    def sign(self, signer: Signer, name: str | None = None) -> SignedCheckpoint:
        """Sign this checkpoint as a note under key ``name`` (default: the origin).

        Raises:
            VerifierKeyError: the key name is not a valid note key name.
        """
        note = sign_note(self.to_text(), signer, name or self.origin)
        return SignedCheckpoint(self, note)


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint together with its signed-note wire form."""

    checkpoint: Checkpoint
    note: str
    #: With witnesses configured: whether every one of them cosigned this
    #: checkpoint (false: unwitnessed, verifiers requiring witnesses refuse
    #: it). ``None``: no witnesses configured, or not known here.
    witnessed: bool | None = None


def open_checkpoint(
    note: bytes | str,
    log_key: Ed25519PublicKey | NoteVerifier,
    *,
    origin: str | None = None,
    witnesses: tuple[NoteVerifier, ...] = (),
) -> tuple[Checkpoint, VerifiedNote]:
    """Verify a checkpoint note signed by the log and parse its body.

    With a bare public key, the key name is taken to be the origin (the
    expected ``origin`` if given, else the one in the note): a checkpoint of
    another log then fails for want of a signature by this log's key.

    Raises:
        MalformedNoteError, MalformedCheckpointError: not a well-formed checkpoint note.
        NoteSignatureError: the log's signature does not verify.
        UnverifiedNoteError: the note carries no signature by the log's key.
        VerifierKeyError: the origin is not a valid key name.

    The expected ``origin`` is only used as the key name here; comparing it
    with the body's origin is the caller's job, so it can raise its own error.
    """
    parsed = parse_note(note)
    body = Checkpoint.parse(parsed.text)
    if isinstance(log_key, NoteVerifier):
        verifier = log_key
    else:
        verifier = NoteVerifier.for_key(origin or body.origin, log_key)
    verified = verify_note(note, (verifier, *witnesses))
    if verifier.name not in verified.verified_by:
        # Only witnesses signed: that is no checkpoint of this log.
        raise UnverifiedNoteError(f"checkpoint is not signed by the log key {verifier.name}")
    return body, verified
