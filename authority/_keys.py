"""Ed25519 key pairs, key ids and the pluggable :class:`Signer` interface.

Private keys are PKCS#8 PEM files written with mode 0600 and never logged.
A KMS or HSM signer only has to implement :class:`Signer`.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import NewType, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ecp.authority.errors import KeyFileError

__all__ = [
    "Ed25519FileSigner",
    "KeyId",
    "Signer",
    "generate_private_key",
    "key_id_for",
    "load_private_key",
    "load_public_key",
    "public_key_from_b64",
    "public_key_raw",
    "public_key_to_b64",
    "verify_ed25519",
    "write_private_key",
    "write_public_key",
]

#: Key id: ``ed25519:`` + the first 16 bytes of SHA-256 over the raw public key, hex.
KeyId = NewType("KeyId", str)

ED25519_SIGNATURE_SIZE = 64


def public_key_raw(key: Ed25519PublicKey) -> bytes:
    """Return the 32 raw bytes of an Ed25519 public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_for(key: Ed25519PublicKey) -> KeyId:
    """Derive the stable key id of a public key."""
    return KeyId("ed25519:" + hashlib.sha256(public_key_raw(key)).hexdigest()[:32])


def public_key_to_b64(key: Ed25519PublicKey) -> str:
    """Standard base64 of the raw public key."""
    return base64.b64encode(public_key_raw(key)).decode("ascii")


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    """Parse a base64 raw Ed25519 public key.

    Raises:
        KeyFileError: not base64 or not 32 bytes.
    """
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"public key is not valid base64: {exc}") from exc
    if len(raw) != 32:
        raise KeyFileError(f"Ed25519 public key must be 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_ed25519(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """Return whether ``signature`` is a valid Ed25519 signature of ``message``.

    A bool is right here: this is the primitive; callers turn ``False`` into
    their own specific error.
    """
    if len(signature) != ED25519_SIGNATURE_SIZE:
        return False
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


@runtime_checkable
class Signer(Protocol):
    """Something that signs bytes with an Ed25519 key it may not expose."""

    @property
    def key_id(self) -> KeyId:
        """The key id of the signing key."""
        ...

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half, for trust stores and checkpoints."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``message``."""
        ...


class Ed25519FileSigner:
    """A :class:`Signer` holding the private key in memory (loaded from a file)."""

    __slots__ = ("_key", "_key_id", "_public")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self._public = private_key.public_key()
        self._key_id = key_id_for(self._public)

    @classmethod
    def from_file(cls, path: Path) -> Ed25519FileSigner:
        """Load a signer from a PEM private key file.

        Raises:
            KeyFileError: missing, unreadable, or not an Ed25519 private key.
        """
        return cls(load_private_key(path))

    @classmethod
    def generate(cls) -> Ed25519FileSigner:
        """Create a signer over a fresh random key."""
        return cls(generate_private_key())

    @property
    def key_id(self) -> KeyId:
        return self._key_id

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._public

    @property
    def private_key(self) -> Ed25519PrivateKey:
        """The private key, for writing it to a file once at creation."""
        return self._key

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        # Never include key material in reprs: they end up in logs.
        return f"Ed25519FileSigner(key_id={self._key_id!r})"


def generate_private_key() -> Ed25519PrivateKey:
    """Generate a new Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def write_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write ``key`` as PKCS#8 PEM, creating the file with mode 0600.

    The file is created with restrictive permissions from the start (not
    chmod-ed afterwards) so the key is never world-readable, even briefly.

    Raises:
        KeyFileError: the file already exists or cannot be written.
    """
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"{path}: refusing to overwrite an existing key") from exc
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create key file: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def write_public_key(key: Ed25519PublicKey, path: Path) -> None:
    """Write ``key`` as SubjectPublicKeyInfo PEM."""
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise KeyFileError(f"{path}: key file not found") from exc
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror}") from exc


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load an unencrypted PEM Ed25519 private key.

    Raises:
        KeyFileError: missing, unreadable, malformed or not Ed25519.
    """
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load a PEM Ed25519 public key (or derive it from a private key file).

    Raises:
        KeyFileError: missing, unreadable, malformed or not Ed25519.
    """
    data = _read(path)
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 public key")
    return key
