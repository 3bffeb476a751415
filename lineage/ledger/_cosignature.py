r"""C2SP tlog-cosignature/v1: witness cosignatures on checkpoints, and k-of-n policies.

A cosignature is a note signature line by a witness key of type 0x04. Its
signature is an 8-byte big-endian POSIX timestamp followed by an Ed25519
signature over::

    cosignature/v1\\n
    time <timestamp>\\n
    <the checkpoint body, with its final newline>

It states that, as of that time, this is the largest tree the witness has
seen for the origin, and that it is consistent with every earlier one it
cosigned. A verifier that requires *k* of *n* trusted witnesses refuses a
checkpoint with fewer valid cosignatures: a log that rewrote its history
cannot get them, since each witness only cosigns a checkpoint that extends
the last one it cosigned.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ecp.authority._keys import Signer
from ecp.lineage.ledger._note import (
    Note,
    NoteKeyType,
    NoteSignature,
    NoteVerifier,
    parse_note,
)
from ecp.lineage.ledger.errors import (
    MalformedNoteError,
    NoteSignatureError,
    VerifierKeyError,
    WitnessQuorumError,
)

__all__ = [
    "COSIGNATURE_HEADER",
    "MAX_TIMESTAMP",
    "Cosignature",
    "WitnessPolicy",
    "add_cosignatures",
    "cosign",
    "cosignatures",
    "cosigned_message",
    "witness_verifier",
]

COSIGNATURE_HEADER: Final = "cosignature/v1"
#: The spec bounds timestamps to a signed 64-bit value.
MAX_TIMESTAMP: Final = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Cosignature:
    """A verified cosignature: which witness, when."""

    name: str
    key_id: int
    timestamp: int
    signature: NoteSignature

    def line(self) -> str:
        """The note signature line, without its newline."""
        return self.signature.line()


def witness_verifier(name: str, key: Ed25519PublicKey) -> NoteVerifier:
    """A cosignature/v1 verifier for witness ``name`` with public ``key``.

    Raises:
        VerifierKeyError: the name is not a valid note key name.
    """
    return NoteVerifier.for_key(name, key, NoteKeyType.COSIGNATURE_V1)


def cosigned_message(body: str, timestamp: int) -> bytes:
    """The bytes a cosignature/v1 signs for checkpoint ``body`` at ``timestamp``."""
    return f"{COSIGNATURE_HEADER}\ntime {timestamp}\n".encode() + body.encode("utf-8")


def cosign(body: str, signer: Signer, name: str, timestamp: int) -> NoteSignature:
    """Cosign checkpoint ``body`` (the note text) as witness ``name`` at ``timestamp``.

    Raises:
        VerifierKeyError: the name is invalid.
        MalformedNoteError: the timestamp is out of range.
    """
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise MalformedNoteError(f"cosignature timestamp {timestamp} is out of range")
    verifier = witness_verifier(name, signer.public_key)
    sig = struct.pack(">Q", timestamp) + signer.sign(cosigned_message(body, timestamp))
    return NoteSignature(name, verifier.key_id, sig)


def cosignatures(note: str | bytes, witnesses: Iterable[NoteVerifier]) -> list[Cosignature]:
    """The valid cosignatures on ``note`` by the given ``witnesses``.

    Lines by other keys are ignored (as C2SP requires); a line that claims to
    be by a trusted witness but does not verify is an error, not skipped, so
    a forged cosignature is reported rather than silently not counted.

    Raises:
        MalformedNoteError: the note is malformed.
        VerifierKeyError: a witness verifier is not a cosignature/v1 key.
        NoteSignatureError: a cosignature by a trusted witness does not verify.
    """
    parsed: Note = parse_note(note)
    known: dict[tuple[str, int], NoteVerifier] = {}
    for w in witnesses:
        if w.key_type is not NoteKeyType.COSIGNATURE_V1:
            raise VerifierKeyError(f"key {w.name!r} is not a cosignature/v1 witness key")
        known[(w.name, w.key_id)] = w
    text = parsed.text.encode("utf-8")
    found: dict[tuple[str, int], Cosignature] = {}
    for sig in parsed.signatures:
        v = known.get((sig.name, sig.key_id))
        if v is None or (sig.name, sig.key_id) in found:
            continue
        if not v.verify(text, sig.signature):
            raise NoteSignatureError(
                f"cosignature by witness {sig.name} ({sig.key_id:08x}) does not verify"
            )
        (timestamp,) = struct.unpack(">Q", sig.signature[:8])
        if timestamp > MAX_TIMESTAMP:
            raise NoteSignatureError(f"cosignature by {sig.name} has an out-of-range timestamp")
        found[(sig.name, sig.key_id)] = Cosignature(sig.name, sig.key_id, timestamp, sig)
    return list(found.values())


def add_cosignatures(note: str, lines: Iterable[str | NoteSignature]) -> str:
    """``note`` with the given signature lines added (duplicates dropped).

    Used by the log to move the witnesses' answers onto its own view of the
    checkpoint (C2SP tlog-witness: the client concatenates them).

    Raises:
        MalformedNoteError: the note or a line is malformed.
    """
    parsed = parse_note(note)
    sigs = list(parsed.signatures)
    for line in lines:
        if isinstance(line, NoteSignature):
            new: Sequence[NoteSignature] = (line,)
        else:
            # Parse the line as the signature block of a one-line note.
            new = parse_note("x\n\n" + line.rstrip("\n") + "\n").signatures
        for sig in new:
            if sig not in sigs:
                sigs.append(sig)
    return Note(parsed.text, tuple(sigs)).to_text()


@dataclass(frozen=True, slots=True)
class WitnessPolicy:
    """Which witnesses a verifier trusts, and how many of them must have cosigned."""

    witnesses: tuple[NoteVerifier, ...]
    minimum: int

    def __post_init__(self) -> None:
        for w in self.witnesses:
            if w.key_type is not NoteKeyType.COSIGNATURE_V1:
                raise VerifierKeyError(f"key {w.name!r} is not a cosignature/v1 witness key")
        if not 0 <= self.minimum <= len(self.witnesses):
            raise WitnessQuorumError(
                f"cannot require {self.minimum} of {len(self.witnesses)} trusted witnesses"
            )

    @classmethod
    def from_vkeys(cls, vkeys: Sequence[str], minimum: int | None = None) -> WitnessPolicy:
        """A policy over the witnesses' verifier keys; ``minimum`` defaults to all of them.

        Raises:
            VerifierKeyError: a key is malformed or not a witness key.
            WitnessQuorumError: more witnesses required than trusted.
        """
        ws = tuple(NoteVerifier.from_vkey(v) for v in vkeys)
        return cls(ws, len(ws) if minimum is None else minimum)

    def check(self, note: str | bytes) -> list[Cosignature]:
        """The valid trusted cosignatures on ``note``, if at least ``minimum``.

        Raises:
            WitnessQuorumError: fewer than ``minimum`` trusted witnesses cosigned
                (for example an unwitnessed checkpoint, or a forked one no
                honest witness would cosign).
            NoteSignatureError: a trusted witness's cosignature does not verify.
            MalformedNoteError: the note is malformed.
        """
        found = cosignatures(note, self.witnesses) if self.witnesses else []
        if len(found) < self.minimum:
            names = ", ".join(c.name for c in found) or "none"
            raise WitnessQuorumError(
                f"checkpoint is cosigned by {len(found)} of the {len(self.witnesses)} trusted "
                f"witnesses ({names}); {self.minimum} required"
            )
        return found
