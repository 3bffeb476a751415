"""Creating a deployment's key pairs and trust store in one directory.

One private key per duty, written 0600, plus ``truststore.json`` with the
public halves and their roles. In production each key goes only to the
process that needs it: ``authority.key``, ``log.key`` and ``recorder.key``
to authority workers, ``worker.key`` to executors, ``approver.key`` to its
human holder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ecp.authority._keys import Ed25519FileSigner, write_private_key, write_public_key
from ecp.authority._truststore import TRUST_STORE_FILENAME, KeyRole, TrustedKey, TrustStore
from ecp.authority.errors import KeyFileError

__all__ = ["DEMO_APPROVER", "KeyFiles", "init_keyring"]

#: The demo approver: a member of the example bundle's ``finance`` group.
DEMO_APPROVER = "carol"


@dataclass(frozen=True)
class KeyFiles:
    """Where each key of a key directory lives."""

    directory: Path

    @property
    def authority(self) -> Path:
        """Signs grants (authority role)."""
        return self.directory / "authority.key"

    @property
    def log(self) -> Path:
        """Signs checkpoints (log role)."""
        return self.directory / "log.key"

    @property
    def worker(self) -> Path:
        """Signs attestations and evidence on executors (worker role)."""
        return self.directory / "worker.key"

    @property
    def recorder(self) -> Path:
        """Signs denial evidence on the authority side (recorder role)."""
        return self.directory / "recorder.key"

    @property
    def approver(self) -> Path:
        """A human approver's key (approver role); never loaded by workers."""
        return self.directory / "approver.key"

    @property
    def halt(self) -> Path:
        """The operators' kill switch: signs halts, resumes and grant revocations (halt role)."""
        return self.directory / "halt.key"

    def initiator(self, name: str) -> Path:
        """The key with which ``name`` signs the requests they make (initiator role)."""
        return self.directory / f"initiator-{name}.key"

    @property
    def trust_store(self) -> Path:
        """The public trust store."""
        return self.directory / TRUST_STORE_FILENAME


def init_keyring(
    directory: Path, *, approver: str = DEMO_APPROVER, initiators: Sequence[str] = ()
) -> KeyFiles:
    """Create every key and the trust store in ``directory``.

    Raises:
        KeyFileError: a key or the trust store already exists there (nothing
            is overwritten), or a file cannot be written.
        TrustStoreError: the trust store cannot be written.
    """
    files = KeyFiles(directory)
    duties = (
        (files.authority, {KeyRole.AUTHORITY}, "authority"),
        (files.log, {KeyRole.LOG}, "log"),
        (files.worker, {KeyRole.WORKER}, "executor"),
        (files.recorder, {KeyRole.RECORDER}, "authority-recorder"),
        (files.approver, {KeyRole.APPROVER}, approver),
        (files.halt, {KeyRole.HALT}, "operator"),
        *((files.initiator(n), {KeyRole.INITIATOR}, n) for n in initiators),
    )
    existing = [p for p, _, _ in duties if p.exists()] + (
        [files.trust_store] if files.trust_store.exists() else []
    )
    if existing:
        raise KeyFileError(f"{existing[0]}: already exists; refusing to overwrite keys")
    entries = []
    for path, roles, name in duties:
        signer = Ed25519FileSigner.generate()
        write_private_key(signer.private_key, path)
        write_public_key(signer.public_key, path.with_suffix(".pub"))
        entries.append(TrustedKey.create(signer.public_key, roles, name=name))
    TrustStore(entries).save(files.trust_store)
    return files


def add_initiator(files: KeyFiles, name: str) -> Path:
    """Create ``name``'s request-signing key and add it to the trust store.

    Raises:
        KeyFileError: the key exists already, or cannot be written.
        TrustStoreError: the trust store cannot be read or written.
    """
    path = files.initiator(name)
    if path.exists():
        raise KeyFileError(f"{path}: already exists; refusing to overwrite keys")
    store = TrustStore.load(files.trust_store)
    signer = Ed25519FileSigner.generate()
    write_private_key(signer.private_key, path)
    write_public_key(signer.public_key, path.with_suffix(".pub"))
    TrustStore([*store, TrustedKey.create(signer.public_key, {KeyRole.INITIATOR}, name=name)]).save(
        files.trust_store
    )
    return path
