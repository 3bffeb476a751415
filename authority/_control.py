"""The kill switch: signed halts, resumes and grant revocations, as one hash-chained log.

An operator holding a key with the ``halt`` role signs *control statements*
(DSSE, payloadType :data:`CONTROL_PAYLOAD_TYPE`, RFC 8785 JSON of a
:class:`ControlStatement`):

* ``halt`` of an action name, or of ``*`` (every governed action);
* ``resume`` of an action name (lifts that action's halt) or of ``*``
  (lifts every halt);
* ``revoke_grant`` of a grant id (per-call grant or scope).

Statements form one log: statement ``n`` names ``n`` as its ``seq`` and the
SHA-256 of statement ``n - 1``'s envelope as ``prev``, and both are inside the
signature. So whoever stores the log (the database operator) can neither
reorder nor drop a statement from the middle without the chain breaking, and
a process that has seen statement ``n`` notices when the log is rolled back
below it. A statement whose signature does not verify (unknown or revoked
key, wrong role) keeps its place in the chain but has no effect: revoking a
stolen halt key undoes what it halted, and junk rows change nothing.

:func:`fold` turns the log into a :class:`ControlState`, which the gate asks
before a body starts and while it runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from ecp.authority._canonical import canonical_json
from ecp.authority._dsse import Envelope, sign_envelope, verify_envelope, verify_with_key
from ecp.authority._keys import Signer
from ecp.authority._signed import read_signed_model
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.authority.errors import (
    AuthorityError,
    ControlLogTamperedError,
    ControlStatementError,
    GrantRevokedError,
    HaltedError,
    RevokedKeyError,
)

__all__ = [
    "ALL_ACTIONS",
    "CONTROL_PAYLOAD_TYPE",
    "MAX_CLOCK_SKEW",
    "ControlEffect",
    "ControlKind",
    "ControlRow",
    "ControlState",
    "ControlStatement",
    "envelope_digest",
    "fold",
    "sign_control",
]

CONTROL_PAYLOAD_TYPE: Final = "application/vnd.ecp.control+json"
SCHEMA_VERSION: Final = "ecp.control/v1"
#: The target of a halt or resume that covers every governed action.
ALL_ACTIONS: Final = "*"
#: How far ahead of the reader's clock a statement may claim to be signed.
MAX_CLOCK_SKEW: Final = timedelta(minutes=5)

ControlKind = Literal["halt", "resume", "revoke_grant"]


class ControlStatement(BaseModel):
    """One halt, resume or revocation, as signed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal["ecp.control/v1"] = SCHEMA_VERSION
    seq: int = Field(ge=1)
    #: ``sha256:<hex>`` of the previous statement's envelope; empty for seq 1.
    prev: str = Field(max_length=71)
    kind: ControlKind
    target: str = Field(min_length=1, max_length=1000)
    reason: str = Field(min_length=1, max_length=500)
    issued_at: AwareDatetime

    @field_validator("reason", "target")
    @classmethod
    def _one_line(cls, v: str) -> str:
        # Shown verbatim in denials, the Temporal UI and the console.
        if v != v.strip() or any(c < " " or c == "\x7f" for c in v):
            raise ValueError("must be one line of printable text without padding")
        return v


@dataclass(frozen=True, slots=True)
class ControlRow:
    """A stored statement: its place in the log and its envelope bytes."""

    seq: int
    envelope: bytes


@dataclass(frozen=True, slots=True)
class ControlEffect:
    """A statement in force, and who signed it."""

    seq: int
    kind: ControlKind
    target: str
    reason: str
    issued_at: datetime
    key_id: str
    signer: str

    def describe(self) -> str:
        """One line naming the statement and its signer, for denials."""
        who = f"{self.signer} ({self.key_id})" if self.signer else self.key_id
        return f"control statement #{self.seq} signed by {who} at {self.issued_at.isoformat()}"


@dataclass(frozen=True, slots=True)
class ControlState:
    """Halts and revocations in force after the log's last statement."""

    head_seq: int = 0
    head_digest: str = ""
    halts: Mapping[str, ControlEffect] = field(default_factory=dict)
    revoked: Mapping[str, ControlEffect] = field(default_factory=dict)
    #: Statements that kept their place but had no effect, and why.
    ignored: tuple[tuple[int, str], ...] = ()

    def halt_for(self, action: str) -> ControlEffect | None:
        """The halt that stops ``action``, if any (its own first, then ``*``)."""
        return self.halts.get(action) or self.halts.get(ALL_ACTIONS)

    def check(self, action: str, grant_id: str) -> None:
        """Refuse ``action`` under ``grant_id`` if a halt or revocation is in force.

        Raises:
            HaltedError: the action, or every action, is halted.
            GrantRevokedError: the grant was revoked.
        """
        revoked = self.revoked.get(grant_id)
        if revoked is not None:
            raise GrantRevokedError(
                f"grant {grant_id} was revoked ({revoked.reason}) by {revoked.describe()}"
            )
        halt = self.halt_for(action)
        if halt is not None:
            every = halt.target == ALL_ACTIONS
            what = "every governed action" if every else action
            lift = "--all" if every else halt.target
            raise HaltedError(
                f"{what} is halted ({halt.reason}) by {halt.describe()}; "
                f"lift it with `ecp resume {lift}`"
            )


def envelope_digest(envelope: bytes) -> str:
    """What the next statement's ``prev`` names."""
    return "sha256:" + hashlib.sha256(envelope).hexdigest()


def sign_control(
    signer: Signer,
    *,
    seq: int,
    prev: str,
    kind: ControlKind,
    target: str,
    reason: str,
    issued_at: datetime,
) -> bytes:
    """Sign one statement; returns the envelope bytes to store at ``seq``.

    Raises:
        ControlStatementError: the fields do not form a statement.
    """
    try:
        stmt = ControlStatement(
            seq=seq, prev=prev, kind=kind, target=target, reason=reason, issued_at=issued_at
        )
    except ValueError as exc:
        raise ControlStatementError(f"not a control statement: {exc}") from None
    payload = canonical_json(stmt.model_dump(mode="json"))
    return sign_envelope(CONTROL_PAYLOAD_TYPE, payload, signer).to_json()


def _read(row: ControlRow, trust: TrustStore) -> tuple[ControlStatement, str, str]:
    """Verify one row: signature by a halt key, then the statement itself."""
    envelope = Envelope.from_json(row.envelope)
    # Key validity (not_before/not_after) is judged when the statement was
    # signed, so ordinary key expiry does not undo past halts (fold keeps
    # issue times in order, so nobody backdates into a key's validity).
    # Revocation is absolute, with one exception below.
    try:
        unsigned = ControlStatement.model_validate_json(envelope.payload)
    except ValueError as exc:
        raise ControlStatementError(f"statement #{row.seq} is malformed: {exc}") from None
    try:
        verified = verify_envelope(
            envelope,
            payload_type=CONTROL_PAYLOAD_TYPE,
            trust=trust,
            role=KeyRole.HALT,
            at=unsigned.issued_at,
        )
        key_id, name = verified.key.key_id, verified.key.name
    except RevokedKeyError:
        # A grant revocation only ever takes power away, and grants expire:
        # it stays in force after its signer's key is revoked (rotating a
        # halt key must not bring a leaked grant back). Halts and resumes
        # of a revoked key lapse: a stolen key's halt --all ends with it.
        key = _revoked_halt_signer(envelope, trust) if unsigned.kind == "revoke_grant" else None
        if key is None:
            raise
        key_id, name = key.key_id, key.name
    stmt = read_signed_model(
        envelope.payload,
        ControlStatement,
        what="control statement",
        schema_version=SCHEMA_VERSION,
        schema_error=ControlStatementError,
        version_error=ControlStatementError,
    )
    return stmt, key_id, name


def _revoked_halt_signer(envelope: Envelope, trust: TrustStore) -> TrustedKey | None:
    """The revoked halt-role key whose signature verifies on ``envelope``, if any."""
    for sig in envelope.signatures:
        key = trust.get(sig.keyid)
        if (
            key is not None
            and KeyRole.HALT in key.roles
            and verify_with_key(envelope, key.public_key)
        ):
            return key
    return None


def _chain_field(payload: bytes, name: str) -> object:
    # The chain is checked on every row, signed or not: read the two fields
    # without trusting anything else in it.
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    return doc.get(name) if isinstance(doc, dict) else None


def fold(
    rows: Sequence[ControlRow], trust: TrustStore, *, at: datetime | None = None
) -> ControlState:
    """The state after ``rows`` (in ``seq`` order), checking the chain.

    A statement has no effect (it is listed in ``ignored``) when it is not
    signed by a trusted halt key, when it claims to be older than a statement
    before it, or when it claims a time more than :data:`MAX_CLOCK_SKEW` after
    ``at`` (the reader's clock): signers cannot backdate into a key's
    validity or date ahead of everyone else.

    Raises:
        ControlLogTamperedError: a row is missing, out of place, or does not
            name its predecessor's digest.
    """
    halts: dict[str, ControlEffect] = {}
    revoked: dict[str, ControlEffect] = {}
    ignored: list[tuple[int, str]] = []
    prev = ""
    newest: datetime | None = None
    for expected, row in enumerate(rows, start=1):
        if row.seq != expected:
            raise ControlLogTamperedError(
                f"control log has statement #{row.seq} where #{expected} belongs"
            )
        try:
            payload = Envelope.from_json(row.envelope).payload
        except AuthorityError as exc:
            raise ControlLogTamperedError(f"control statement #{row.seq}: {exc}") from None
        if _chain_field(payload, "seq") != row.seq or _chain_field(payload, "prev") != prev:
            raise ControlLogTamperedError(
                f"control statement #{row.seq} does not follow #{row.seq - 1} "
                "(the log was rewritten)"
            )
        prev = envelope_digest(row.envelope)
        try:
            stmt, key_id, signer = _read(row, trust)
        except AuthorityError as exc:
            ignored.append((row.seq, f"{exc.code}: {exc}"))
            continue
        if newest is not None and stmt.issued_at < newest:
            when = stmt.issued_at.isoformat()
            ignored.append((row.seq, f"issued at {when}, before an earlier statement"))
            continue
        if at is not None and stmt.issued_at > at + MAX_CLOCK_SKEW:
            ignored.append((row.seq, f"issued at {stmt.issued_at.isoformat()}, in the future"))
            continue
        newest = stmt.issued_at
        effect = ControlEffect(
            stmt.seq, stmt.kind, stmt.target, stmt.reason, stmt.issued_at, key_id, signer
        )
        if stmt.kind == "halt":
            halts[stmt.target] = effect
        elif stmt.kind == "resume":
            if stmt.target == ALL_ACTIONS:
                halts.clear()
            else:
                halts.pop(stmt.target, None)
        else:
            revoked[stmt.target] = effect
    return ControlState(
        head_seq=len(rows),
        head_digest=prev,
        halts=dict(halts),
        revoked=dict(revoked),
        ignored=tuple(ignored),
    )
