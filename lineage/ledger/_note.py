r"""C2SP signed notes: parse, verify and sign (the format of Go's sumdb and Rekor v2).

A note is UTF-8 text without control characters except newline, ending in a
newline, followed by a blank line and one or more signature lines
``— <name> <base64(4-byte key id ‖ signature)>``. The signed message is the
text including its final newline. Signatures by keys the verifier does not
know are skipped, not errors; a note with no known signature is refused.

Two key types are understood: Ed25519 (type byte 0x01, signs the text) and
tlog-cosignature/v1 witness keys (type byte 0x04: the signature is an 8-byte
big-endian timestamp ‖ an Ed25519 signature over
``cosignature/v1\\ntime <timestamp>\\n`` ‖ text).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ecp.authority._keys import Signer, public_key_raw, verify_ed25519
from ecp.lineage.ledger.errors import (
    MalformedNoteError,
    NoteSignatureError,
    UnverifiedNoteError,
    VerifierKeyError,
)

__all__ = [
    "MAX_SIGNATURES",
    "Note",
    "NoteKeyType",
    "NoteSignature",
    "NoteVerifier",
    "VerifiedNote",
    "note_key_id",
    "parse_note",
    "sign_note",
    "verify_note",
]

#: Go's limit; C2SP requires accepting at least 16.
MAX_SIGNATURES = 100
_SIG_PREFIX = "— "  # U+2014 EM DASH, space


class NoteKeyType(IntEnum):
    """Signature algorithm identifiers (the key's type byte)."""

    ED25519 = 0x01
    COSIGNATURE_V1 = 0x04


def _is_text(value: str) -> bool:
    # A str may hold lone surrogates, which no UTF-8 note can carry.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _valid_name(name: str) -> bool:
    return (
        bool(name) and "+" not in name and not any(ch.isspace() for ch in name) and _is_text(name)
    )


def note_key_id(name: str, key_type: NoteKeyType, public_key: bytes) -> int:
    r"""C2SP key id: the first 4 bytes of SHA-256(name ‖ "\\n" ‖ type ‖ key), big-endian."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([key_type]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A named public key that can verify note signatures."""

    name: str
    key_id: int
    key_type: NoteKeyType
    public_key: Ed25519PublicKey

    @classmethod
    def for_key(
        cls, name: str, key: Ed25519PublicKey, key_type: NoteKeyType = NoteKeyType.ED25519
    ) -> NoteVerifier:
        """Build a verifier for ``key`` under ``name``.

        Raises:
            VerifierKeyError: the name is empty or holds whitespace or ``+``.
        """
        if not _valid_name(name):
            raise VerifierKeyError(f"invalid key name {name!r}")
        return cls(name, note_key_id(name, key_type, public_key_raw(key)), key_type, key)

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse a verifier key string ``<name>+<hex key id>+<base64(type ‖ key)>``.

        Raises:
            VerifierKeyError: malformed, unknown algorithm, wrong key length, or
                a key id that does not match the key.
        """
        # The base64 part may itself contain '+': split on the first two only.
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise VerifierKeyError("verifier key must be <name>+<hex id>+<base64 key>")
        name, hex_id, b64 = parts
        if not _valid_name(name):
            raise VerifierKeyError(f"verifier key has an invalid name {name[:64]!r}")
        if len(hex_id) != 8 or any(c not in "0123456789abcdefABCDEF" for c in hex_id):
            raise VerifierKeyError("verifier key id must be 8 hex digits")
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise VerifierKeyError("verifier key is not valid base64") from exc
        if not raw:
            raise VerifierKeyError("verifier key is empty")
        try:
            key_type = NoteKeyType(raw[0])
        except ValueError as exc:
            raise VerifierKeyError(f"verifier key has unknown algorithm 0x{raw[0]:02x}") from exc
        if len(raw) != 33:
            raise VerifierKeyError(f"Ed25519 verifier key must be 32 bytes, got {len(raw) - 1}")
        if note_key_id(name, key_type, raw[1:]) != int(hex_id, 16):
            raise VerifierKeyError(f"verifier key id {hex_id} does not match the key")
        try:
            public_key = Ed25519PublicKey.from_public_bytes(raw[1:])
        except ValueError as exc:
            raise VerifierKeyError("verifier key is not an Ed25519 public key") from exc
        return cls(name, int(hex_id, 16), key_type, public_key)

    def vkey(self) -> str:
        """The verifier key string of this key."""
        raw = bytes([self.key_type]) + public_key_raw(self.public_key)
        return f"{self.name}+{self.key_id:08x}+{base64.b64encode(raw).decode()}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (without the key id prefix) signs ``text``."""
        if self.key_type is NoteKeyType.COSIGNATURE_V1:
            if len(signature) != 8 + 64:
                return False
            (timestamp,) = struct.unpack(">Q", signature[:8])
            message = b"cosignature/v1\ntime %d\n" % timestamp + text
            return verify_ed25519(self.public_key, signature[8:], message)
        return verify_ed25519(self.public_key, signature, text)


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line of a note."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        """The signature line, without its newline."""
        blob = self.key_id.to_bytes(4, "big") + self.signature
        return f"{_SIG_PREFIX}{self.name} {base64.b64encode(blob).decode()}"


@dataclass(frozen=True, slots=True)
class Note:
    """A parsed (not yet verified) note."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def to_text(self) -> str:
        """The note in wire form."""
        return self.text + "\n" + "".join(s.line() + "\n" for s in self.signatures)


@dataclass(frozen=True, slots=True)
class VerifiedNote:
    """A note with at least one signature verified by a known key."""

    text: str
    verified: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...]

    @property
    def verified_by(self) -> tuple[str, ...]:
        """Names of the keys whose signatures verified."""
        return tuple(s.name for s in self.verified)


def _decode(data: bytes | str) -> str:
    if isinstance(data, str):
        if not _is_text(data):
            # Signatures are over the UTF-8 bytes; these have none.
            raise MalformedNoteError("note text holds a lone surrogate")
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedNoteError("note is not valid UTF-8") from exc
    raise MalformedNoteError(f"a note is text, not {type(data).__name__}")


def parse_note(data: bytes | str) -> Note:
    """Split a note into text and signature lines, checking the format strictly.

    Raises:
        MalformedNoteError: invalid UTF-8 (or text with a lone surrogate), a
            control character, no blank line
            before the signatures, no final newline, a line in the signature
            block that is not a signature, a bad name or base64, or more than
            :data:`MAX_SIGNATURES` signatures.
    """
    msg = _decode(data)
    for ch in msg:
        if ch < " " and ch != "\n":
            raise MalformedNoteError(f"note contains control character U+{ord(ch):04X}")
    split = msg.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError("note has no blank line before its signatures")
    text, block = msg[: split + 1], msg[split + 2 :]
    if not block or not block.endswith("\n"):
        raise MalformedNoteError("note has no signatures or no final newline")
    sigs: list[NoteSignature] = []
    for line in block[:-1].split("\n"):
        if not line.startswith(_SIG_PREFIX):
            raise MalformedNoteError("line in the signature block is not a signature")
        name, _, b64 = line[len(_SIG_PREFIX) :].partition(" ")
        try:
            blob = base64.b64decode(b64, validate=True) if b64 else b""
        except (binascii.Error, ValueError) as exc:
            raise MalformedNoteError(f"signature by {name[:64]!r} is not valid base64") from exc
        if not _valid_name(name) or len(blob) < 5:
            raise MalformedNoteError(f"malformed signature line for {name[:64]!r}")
        if len(sigs) == MAX_SIGNATURES:
            # Bounds the work an attacker can make a verifier do.
            raise MalformedNoteError(f"note has more than {MAX_SIGNATURES} signatures")
        sigs.append(NoteSignature(name, int.from_bytes(blob[:4], "big"), blob[4:]))
    return Note(text, tuple(sigs))


def verify_note(data: bytes | str, verifiers: Iterable[NoteVerifier]) -> VerifiedNote:
    """Parse ``data`` and verify its signatures by the known ``verifiers``.

    Raises:
        MalformedNoteError: see :func:`parse_note`.
        NoteSignatureError: a signature by a known key (same name and key id)
            does not verify.
        UnverifiedNoteError: no signature is by a known key.
    """
    note = parse_note(data)
    known = {(v.name, v.key_id): v for v in verifiers}
    text = note.text.encode("utf-8")
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    seen: set[tuple[str, int]] = set()
    for sig in note.signatures:
        v = known.get((sig.name, sig.key_id))
        if v is None:
            if sig not in unverified:
                unverified.append(sig)
            continue
        if (sig.name, sig.key_id) in seen:
            continue
        seen.add((sig.name, sig.key_id))
        if not v.verify(text, sig.signature):
            raise NoteSignatureError(f"signature by {sig.name} ({sig.key_id:08x}) does not verify")
        verified.append(sig)
    if not verified:
        names = ", ".join(sorted({s.name[:64] for s in note.signatures})[:8])
        raise UnverifiedNoteError(f"note carries no signature by a known key (signed by {names})")
    return VerifiedNote(note.text, tuple(verified), tuple(unverified))


def sign_note(text: str, signer: Signer, name: str) -> str:
    """Sign ``text`` with an Ed25519 ``signer`` under key ``name``; return the note.

    Raises:
        MalformedNoteError: the text does not end with a newline, holds a blank
            line, a control character or a lone surrogate.
        VerifierKeyError: the name is invalid.
    """
    if not text.endswith("\n") or "\n\n" in text or text.startswith("\n"):
        raise MalformedNoteError("note text must be non-empty lines each ending in a newline")
    if any(ch < " " and ch != "\n" for ch in text):
        raise MalformedNoteError("note text contains a control character")
    if not _is_text(text):
        raise MalformedNoteError("note text holds a lone surrogate")
    verifier = NoteVerifier.for_key(name, signer.public_key)
    sig = NoteSignature(name, verifier.key_id, signer.sign(text.encode("utf-8")))
    return Note(text, (sig,)).to_text()
