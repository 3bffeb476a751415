"""The trust store: public keys with ids, roles, validity periods and revocation.

On disk it is one JSON document (``truststore.json``, usually inside a trust
directory). It holds public keys only, so executor workers can carry it
without carrying any signing power: Ed25519 keys (``keys``) and, for
approvers who approve with a passkey, WebAuthn credentials (``passkeys``,
:class:`~ecp.authority._webauthn.PasskeyCredential`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ecp.authority._canonical import parse_json_strict, printable
from ecp.authority._keys import KeyId, key_id_for, public_key_from_b64, public_key_to_b64
from ecp.authority._webauthn import PasskeyCredential, passkey_key_id
from ecp.authority.errors import (
    AuthorityError,
    KeyExpiredError,
    KeyRoleError,
    RevokedKeyError,
    TrustStoreError,
    UnknownKeyError,
)

__all__ = [
    "TRUST_STORE_ENV",
    "TRUST_STORE_FILENAME",
    "KeyRole",
    "TrustStore",
    "TrustStoreReader",
    "TrustedKey",
]

TRUST_STORE_FILENAME = "truststore.json"
#: Environment variable naming a trust store file or directory.
TRUST_STORE_ENV = "ECP_TRUST_STORE"
_FORMAT = "ecp.truststore/v1"


class KeyRole(StrEnum):
    """What a key may sign."""

    AUTHORITY = "authority"  # grants
    APPROVER = "approver"  # approvals
    LOG = "log"  # ledger checkpoints
    WORKER = "worker"  # the gate's evidence (outcomes, gate denials) and attestations
    RECORDER = "recorder"  # the authority side's evidence: decisions and denials only
    INITIATOR = "initiator"  # signed requests: the key's name is who asks
    HALT = "halt"  # the kill switch: halts, resumes and grant revocations
    ATTESTER = "attester"  # artifact attestations (build provenance): in-toto statements


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_time(value: object, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TrustStoreError(f"{what} must be an RFC 3339 string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise TrustStoreError(f"{what} is not an RFC 3339 time: {value[:64]!r}") from exc
    if parsed.tzinfo is None:
        raise TrustStoreError(f"{what} must carry a time zone: {value[:64]!r}")
    return parsed


def _fmt_time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _parse_roles(doc: Mapping[str, object], where: str) -> frozenset[KeyRole]:
    roles_doc = doc.get("roles", [])
    if not isinstance(roles_doc, list) or not all(isinstance(r, str) for r in roles_doc):
        raise TrustStoreError(f"{where}: roles must be a list of strings")
    known = {r.value for r in KeyRole}
    unknown = sorted(r for r in roles_doc if r not in known)
    if unknown:
        raise TrustStoreError(f"{where}: unknown roles {[r[:40] for r in unknown[:5]]!r}")
    return frozenset(KeyRole(r) for r in roles_doc)


def _parse_name(doc: Mapping[str, object], where: str) -> str:
    name = doc.get("name", "")
    if name is None:
        name = ""
    if not isinstance(name, str) or not _is_text(name):
        raise TrustStoreError(f"{where}: name must be a string")
    return name


def _passkey_from_dict(doc: Mapping[str, object], where: str) -> PasskeyCredential:
    """Parse one ``passkeys`` entry; ``where`` names it in errors.

    Raises:
        TrustStoreError: malformed entry, a key id that does not match its
            credential id, an unusable key, or a role other than approver
            (a passkey signs WebAuthn assertions, nothing ECP signs with DSSE).
    """
    cred_id, public_key, rp_id, origins = PasskeyCredential.fields_from_dict(doc, where)
    roles = _parse_roles(doc, where)
    if roles != {KeyRole.APPROVER}:
        raise TrustStoreError(f"{where}: a passkey's roles must be exactly ['approver']")
    key_id = passkey_key_id(cred_id)
    if doc.get("key_id", key_id) != key_id:
        raise TrustStoreError(f"{where}: key_id does not match the credential id")
    cred = PasskeyCredential(
        key_id,
        cred_id,
        public_key,
        rp_id,
        origins,
        frozenset(roles),
        _parse_name(doc, where),
        _parse_time(doc.get("not_before"), f"{where}.not_before"),
        _parse_time(doc.get("not_after"), f"{where}.not_after"),
        _parse_time(doc.get("revoked_at"), f"{where}.revoked_at"),
    )
    cred.check(where)
    return cred


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A public key the deployment trusts for some roles, for some time."""

    key_id: KeyId
    public_key: Ed25519PublicKey = field(compare=False)
    roles: frozenset[KeyRole]
    name: str = ""
    not_before: datetime | None = None
    not_after: datetime | None = None
    revoked_at: datetime | None = None

    @classmethod
    def create(
        cls,
        public_key: Ed25519PublicKey,
        roles: Iterable[KeyRole],
        *,
        name: str = "",
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> TrustedKey:
        """Build an entry whose key id is derived from the key itself."""
        return cls(
            key_id_for(public_key), public_key, frozenset(roles), name, not_before, not_after
        )

    def to_dict(self) -> dict[str, object]:
        """JSON form of the entry."""
        return {
            "key_id": self.key_id,
            "public_key": public_key_to_b64(self.public_key),
            "roles": sorted(r.value for r in self.roles),
            "name": self.name,
            "not_before": _fmt_time(self.not_before),
            "not_after": _fmt_time(self.not_after),
            "revoked_at": _fmt_time(self.revoked_at),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, object], where: str) -> TrustedKey:
        """Parse one entry; ``where`` names it in errors.

        Raises:
            TrustStoreError: malformed entry, or a key id that does not match its key.
        """
        if "public_key" not in doc:
            raise TrustStoreError(f"{where}: missing field 'public_key'")
        pub_doc = doc["public_key"]
        if not isinstance(pub_doc, str):
            raise TrustStoreError(f"{where}: public_key must be a base64 string")
        try:
            pub = public_key_from_b64(pub_doc)
        except (AuthorityError, ValueError) as exc:
            raise TrustStoreError(f"{where}: {printable(str(exc))}") from exc
        roles = _parse_roles(doc, where)
        name = _parse_name(doc, where)
        key_id = key_id_for(pub)
        if doc.get("key_id", key_id) != key_id:
            # A key id that lies about its key would let one entry shadow another.
            raise TrustStoreError(f"{where}: key_id does not match the public key")
        return cls(
            key_id,
            pub,
            roles,
            name,
            _parse_time(doc.get("not_before"), f"{where}.not_before"),
            _parse_time(doc.get("not_after"), f"{where}.not_after"),
            _parse_time(doc.get("revoked_at"), f"{where}.revoked_at"),
        )


class TrustStore:
    """An immutable set of :class:`TrustedKey` entries, looked up by key id.

    Passkey credentials (:class:`PasskeyCredential`) are held beside the
    keys: iterating the store yields the Ed25519 keys only, because only
    they sign DSSE envelopes; :meth:`passkeys` lists the others.
    """

    __slots__ = ("_keys", "_passkeys")

    def __init__(
        self, keys: Iterable[TrustedKey] = (), passkeys: Iterable[PasskeyCredential] = ()
    ) -> None:
        self._keys: dict[str, TrustedKey] = {k.key_id: k for k in keys}
        self._passkeys: dict[str, PasskeyCredential] = {p.key_id: p for p in passkeys}

    def __iter__(self) -> Iterator[TrustedKey]:
        return iter(sorted(self._keys.values(), key=lambda k: k.key_id))

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, key_id: str) -> TrustedKey | None:
        """Return the entry for ``key_id`` or ``None``."""
        return self._keys.get(key_id)

    def require(self, key_id: str, *, role: KeyRole, at: datetime) -> TrustedKey:
        """Return the entry for ``key_id`` if it may sign as ``role`` at ``at``.

        Revocation is absolute: a revoked key is refused whatever time the
        artifact claims, because that time comes from the signer.

        Raises:
            UnknownKeyError: no such key.
            RevokedKeyError: the key is revoked.
            KeyExpiredError: ``at`` is outside the key's validity period.
            KeyRoleError: the key does not hold ``role``.
        """
        key = self._keys.get(key_id)
        if key is None:
            shown = printable(key_id[:128]) if isinstance(key_id, str) else repr(key_id)
            raise UnknownKeyError(f"key {shown or '(no key id)'} is not in the trust store")
        if key.revoked_at is not None:
            raise RevokedKeyError(f"key {key_id} was revoked at {_fmt_time(key.revoked_at)}")
        if key.not_before is not None and at < key.not_before:
            raise KeyExpiredError(f"key {key_id} is not valid before {_fmt_time(key.not_before)}")
        if key.not_after is not None and at >= key.not_after:
            raise KeyExpiredError(f"key {key_id} expired at {_fmt_time(key.not_after)}")
        if role not in key.roles:
            have = ", ".join(sorted(r.value for r in key.roles)) or "no role"
            raise KeyRoleError(f"key {key_id} may not sign as {role.value} (has {have})")
        return key

    def with_key(self, key: TrustedKey) -> TrustStore:
        """Return a store with ``key`` added or replaced."""
        return TrustStore(
            [*(k for k in self._keys.values() if k.key_id != key.key_id), key],
            self._passkeys.values(),
        )

    def passkeys(self) -> list[PasskeyCredential]:
        """All passkey credentials, revoked ones included, in key id order."""
        return sorted(self._passkeys.values(), key=lambda p: p.key_id)

    def with_passkey(self, passkey: PasskeyCredential) -> TrustStore:
        """Return a store with ``passkey`` added or replaced."""
        return TrustStore(
            self._keys.values(),
            [*(p for p in self._passkeys.values() if p.key_id != passkey.key_id), passkey],
        )

    def require_passkey(self, credential_id: bytes, *, at: datetime) -> PasskeyCredential:
        """Return the passkey credential ``credential_id`` if it may approve at ``at``.

        Same rules as :meth:`require` (revocation is absolute).

        Raises:
            UnknownKeyError, RevokedKeyError, KeyExpiredError, KeyRoleError:
                as :meth:`require`.
        """
        key_id = passkey_key_id(credential_id)
        cred = self._passkeys.get(key_id)
        if cred is None:
            raise UnknownKeyError(f"passkey {key_id} is not in the trust store")
        if cred.revoked_at is not None:
            raise RevokedKeyError(f"passkey {key_id} was revoked at {_fmt_time(cred.revoked_at)}")
        if cred.not_before is not None and at < cred.not_before:
            raise KeyExpiredError(
                f"passkey {key_id} is not valid before {_fmt_time(cred.not_before)}"
            )
        if cred.not_after is not None and at >= cred.not_after:
            raise KeyExpiredError(f"passkey {key_id} expired at {_fmt_time(cred.not_after)}")
        if KeyRole.APPROVER not in cred.roles:
            raise KeyRoleError(f"passkey {key_id} may not approve")
        return cred

    def revoked(self, key_id: str, at: datetime) -> TrustStore:
        """Return a store where ``key_id`` (a key or a passkey) is revoked as of ``at``.

        Raises:
            UnknownKeyError: no such key.
        """
        passkey = self._passkeys.get(key_id)
        if passkey is not None:
            return self.with_passkey(replace(passkey, revoked_at=at))
        key = self._keys.get(key_id)
        if key is None:
            raise UnknownKeyError(f"key {key_id} is not in the trust store")
        return self.with_key(replace(key, revoked_at=at))

    def by_role(self, role: KeyRole) -> list[TrustedKey]:
        """All entries holding ``role``, revoked ones included."""
        return [k for k in self if role in k.roles]

    # --- persistence --------------------------------------------------------

    def to_json(self) -> bytes:
        """Serialise the store."""
        doc: dict[str, object] = {"format": _FORMAT, "keys": [k.to_dict() for k in self]}
        if self._passkeys:
            # Only when there are some: a store without passkeys is written
            # exactly as before they existed.
            doc["passkeys"] = [p.to_dict(_fmt_time) for p in self.passkeys()]
        return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"

    @staticmethod
    def resolve_path(path: Path) -> Path:
        """A directory means its ``truststore.json``."""
        return path / TRUST_STORE_FILENAME if path.is_dir() else path

    @classmethod
    def from_json(cls, data: bytes, where: str) -> TrustStore:
        """Parse a serialised store; ``where`` names its source in errors.

        Raises:
            TrustStoreError: not JSON, wrong format, or a malformed entry.
        """
        try:
            doc = parse_json_strict(data)
        except AuthorityError as exc:
            raise TrustStoreError(f"{where}: not a valid trust store: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise TrustStoreError(f"{where}: not an {_FORMAT} document")
        keys_doc = doc.get("keys")
        if not isinstance(keys_doc, list):
            raise TrustStoreError(f"{where}: 'keys' must be a list")
        keys: list[TrustedKey] = []
        seen: set[str] = set()
        for i, k in enumerate(keys_doc):
            if not isinstance(k, dict):
                raise TrustStoreError(f"{where}: keys[{i}] must be an object")
            key = TrustedKey.from_dict(k, f"{where}: keys[{i}]")
            if key.key_id in seen:
                # A second entry could silently undo a revocation or a role limit.
                raise TrustStoreError(f"{where}: keys[{i}] repeats key {key.key_id}")
            seen.add(key.key_id)
            keys.append(key)
        # Optional: stores written before passkeys existed have none.
        passkeys_doc = doc.get("passkeys", [])
        if not isinstance(passkeys_doc, list):
            raise TrustStoreError(f"{where}: 'passkeys' must be a list")
        passkeys: list[PasskeyCredential] = []
        for i, p in enumerate(passkeys_doc):
            if not isinstance(p, dict):
                raise TrustStoreError(f"{where}: passkeys[{i}] must be an object")
            cred = _passkey_from_dict(p, f"{where}: passkeys[{i}]")
            if cred.key_id in seen:
                raise TrustStoreError(f"{where}: passkeys[{i}] repeats credential {cred.key_id}")
            seen.add(cred.key_id)
            passkeys.append(cred)
        return cls(keys, passkeys)

    @classmethod
    def read(cls, path: Path) -> tuple[bytes, str]:
        """The bytes of the store at ``path`` (a file or a directory), and its file's name.

        Raises:
            TrustStoreError: missing or unreadable.
        """
        file = cls.resolve_path(path)
        try:
            return file.read_bytes(), str(file)
        except FileNotFoundError as exc:
            raise TrustStoreError(f"{file}: trust store not found") from exc
        except OSError as exc:
            raise TrustStoreError(f"{file}: cannot read trust store: {exc.strerror}") from exc

    @classmethod
    def load(cls, path: Path) -> TrustStore:
        """Load a store from a file, or a directory holding ``truststore.json``.

        Raises:
            TrustStoreError: missing, unreadable or malformed.
        """
        data, where = cls.read(path)
        return cls.from_json(data, where)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrustStore:
        """Load the store named by ``$ECP_TRUST_STORE``.

        Raises:
            TrustStoreError: the variable is unset, or the store cannot be loaded.
        """
        env = os.environ if environ is None else environ
        where = env.get(TRUST_STORE_ENV)
        if not where:
            raise TrustStoreError(f"${TRUST_STORE_ENV} is not set")
        return cls.load(Path(where))

    def save(self, path: Path) -> None:
        """Write the store atomically (readers never see a half-written file).

        Raises:
            TrustStoreError: the file cannot be written.
        """
        file = self.resolve_path(path)
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".truststore.")
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.to_json())
            os.replace(tmp, file)
        except OSError as exc:
            raise TrustStoreError(f"{file}: cannot write trust store: {exc.strerror}") from exc


class TrustStoreReader:
    """Reads the trust store at ``path`` afresh on every call; parses only bytes it has not seen.

    Every call reads the file, so a revocation, a new key or a damaged file
    takes effect at the very next call, exactly as :meth:`TrustStore.load`
    on every call would. What is saved is the parsing (every entry's key
    decoded, its id recomputed, its times parsed), which cost a governed
    action more than a millisecond of CPU on each of its checks: when the
    bytes just read are the bytes parsed last, the store parsed from them is
    returned. The store is keyed by its whole content, not by a file's
    modification time or size, so no edit can go unseen; and a
    :class:`TrustStore` is immutable, so sharing one between calls (and
    threads) changes nothing. Whether a key has expired is decided when it
    is used (:meth:`TrustStore.require` takes the time), never at parsing.
    """

    __slots__ = ("_last", "_path")

    def __init__(self, path: Path) -> None:
        self._path = path
        # One (bytes, store) pair, replaced whole: a thread reading it sees
        # either the old pair or the new one, never half of each.
        self._last: tuple[bytes, TrustStore] | None = None

    def __call__(self) -> TrustStore:
        """The store as the file holds it now.

        Raises:
            TrustStoreError: missing, unreadable or malformed (never a
                store parsed earlier in its place).
        """
        data, where = TrustStore.read(self._path)
        last = self._last
        if last is not None and last[0] == data:
            return last[1]
        store = TrustStore.from_json(data, where)
        self._last = (data, store)
        return store
