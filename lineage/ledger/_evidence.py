"""Evidence: what the ledger records after every governed execution or denial.

An evidence entry is a DSSE envelope (payloadType
``application/vnd.in-toto+json``) of an in-toto Statement v1, signed by the
recording worker's key:

- ``subject``: the digests of what was executed and produced, named
  ``arguments``, ``result`` (absent when nothing was produced) and ``grant``
  (absent for denials issued before a grant existed);
- ``predicateType``: :data:`EVIDENCE_PREDICATE_TYPE`;
- ``predicate``: :class:`EvidencePredicate` (decision, policy, grant,
  initiator, activity identity, outcome, timestamps).

Identity and idempotency: the statement payload must be RFC 8785 canonical
JSON, so one statement value has exactly one byte form, and the
**evidence id** is ``sha256:<hex>`` of those payload bytes. The ledger keeps
one entry per evidence id: recording the same statement again (an activity
retry) returns the existing entry, whoever signed it the second time. The
statement holds no clock reads of its own: timestamps are inputs, so a retry
that rebuilds the statement from the same inputs gets the same id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final, Literal, NewType

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ecp.authority._canonical import (
    Digest,
    canonical_json,
    digest_bytes,
    is_canonical_json,
    parse_json_strict,
    printable,
)
from ecp.authority._dsse import Envelope, sign_envelope, verify_envelope
from ecp.authority._intoto import (
    INTOTO_PAYLOAD_TYPE,
    STATEMENT_TYPE_V1,
    ResourceDescriptor,
    Statement,
    statement_from_document,
)
from ecp.authority._keys import Signer
from ecp.authority._truststore import KeyRole, TrustStore
from ecp.authority.errors import (
    AuthorityError,
    CanonicalizationError,
    StatementError,
    VerificationError,
)
from ecp.lineage.ledger.errors import (
    EvidenceSignatureError,
    MalformedEvidenceError,
    NonCanonicalEvidenceError,
)

__all__ = [
    "EVIDENCE_PREDICATE_TYPE",
    "IDENTITY_MAX_CHARS",
    "INTOTO_PAYLOAD_TYPE",
    "ActivityIdentity",
    "ArtifactEvidence",
    "Evidence",
    "EvidenceId",
    "EvidencePredicate",
    "Outcome",
    "OutcomeStatus",
    "build_statement",
    "evidence_id_of",
    "evidence_roles",
    "format_time",
    "parse_evidence",
    "sign_evidence",
    "verify_evidence_signature",
]

EVIDENCE_PREDICATE_TYPE: Final = "https://ecp.dev/evidence/v1"
#: ``sha256:<hex>`` of the canonical statement payload: the idempotency key.
EvidenceId = NewType("EvidenceId", str)

_SUBJECT_NAMES: Final = ("arguments", "result", "grant")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# ASCII digits only: \d would also match, say, Arabic-Indic digits.
_RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", re.ASCII)
_CODE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
# C0 controls (below " "): one regex search instead of a generator over every character.
_CONTROL = re.compile(r"[\x00-\x1f]")
_MAX_REASON = 500


class OutcomeStatus(StrEnum):
    """How the governed execution ended."""

    COMPLETED = "completed"
    FAILED = "failed"
    DENIED = "denied"
    #: The body started and the gate stopped it (halt, revocation, lifetime).
    INTERRUPTED = "interrupted"
    #: Every use of the grant was taken by attempts whose worker died after
    #: the body was let in: it may have run, nobody saw it end. Recorded by
    #: the gate when it refuses the next attempt; a person must check.
    UNKNOWN = "unknown"


class _Wire(BaseModel):
    # Evidence is signed: reject anything unexpected rather than drop it.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


def _nonempty(value: str, what: str) -> str:
    if not value or value != value.strip() or _CONTROL.search(value):
        raise ValueError(f"{what} must be a non-empty single-line string without padding")
    return value


#: Longest id each identity field records (the ledger's columns; Temporal's
#: own default limit for ids is 1,000).
IDENTITY_MAX_CHARS: Final = {
    "namespace": 255,
    "workflow_id": 1000,
    "run_id": 255,
    "activity_id": 1000,
    "activity_type": 1000,
}


class ActivityIdentity(_Wire):
    """Which activity execution the evidence is about.

    Ids are recorded exactly as Temporal reports them: Temporal accepts ids
    with spaces, tabs, newlines and any Unicode, and evidence that refused
    them would let such an id suppress the record of a body that ran. Only
    what cannot be stored is refused (empty, too long); the gate refuses to
    run a body whose execution has such an id.
    """

    namespace: str
    workflow_id: str = Field(alias="workflowId")
    run_id: str = Field(alias="runId")
    activity_id: str = Field(alias="activityId")
    attempt: int = Field(ge=1)
    activity_type: str = Field(alias="activityType")

    @field_validator("namespace", "workflow_id", "run_id", "activity_id", "activity_type")
    @classmethod
    def _text(cls, v: str, info: ValidationInfo) -> str:
        limit = IDENTITY_MAX_CHARS[str(info.field_name)]
        if not v or len(v) > limit:
            raise ValueError(f"{info.field_name} must have 1 to {limit} characters")
        if "\x00" in v:
            # PostgreSQL's text columns cannot hold NUL; the gate refuses such ids.
            raise ValueError(f"{info.field_name} must not contain NUL")
        return v


class Outcome(_Wire):
    """Completed, failed, denied, interrupted or unknown; all but completed say why."""

    # Lax for this one field only: JSON carries the enum as its string value.
    status: OutcomeStatus = Field(strict=False)
    reason_code: str | None = Field(default=None, alias="reasonCode")
    reason: str | None = None

    @field_validator("reason_code")
    @classmethod
    def _code(cls, v: str | None) -> str | None:
        if v is not None and not _CODE.fullmatch(v):
            raise ValueError("reasonCode must be a short lowercase code like 'grant_expired'")
        return v

    @field_validator("reason")
    @classmethod
    def _reason(cls, v: str | None) -> str | None:
        if v is not None:
            _nonempty(v, "reason")
            if len(v) > _MAX_REASON:
                raise ValueError(f"reason must be at most {_MAX_REASON} characters")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Outcome:
        # Failures and denials must say why; a success has nothing to explain.
        if self.status is OutcomeStatus.COMPLETED:
            if self.reason_code is not None or self.reason is not None:
                raise ValueError("a completed outcome carries no reason")
        elif self.reason_code is None or self.reason is None:
            raise ValueError(f"a {self.status.value} outcome needs reasonCode and reason")
        return self


class ArtifactEvidence(_Wire):
    """An artifact the execution used, produced, or was refused over.

    ``role`` ``used``: the gate verified ``digest`` from the bytes it handed
    the body; ``generated``: the body declared it as an output and the gate
    digested it after the body; ``refused``: the approved ``digest`` and what
    the gate ``found`` instead (a digest, or what the path turned out to be).
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    role: Literal["used", "generated", "refused"]
    kind: Literal["file", "directory", "url", "oci"]
    uri: str = Field(min_length=1, max_length=2048)
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    size: int | None = Field(default=None, ge=0)
    media_type: str | None = Field(default=None, alias="mediaType", max_length=256)
    found: str | None = Field(default=None, max_length=500)


class EvidencePredicate(_Wire):
    """The ``predicate`` of an evidence statement (``https://ecp.dev/evidence/v1``)."""

    # Absent only for a denial at the gate of a call that carried no
    # verifiable grant: then nobody established who asked or under what policy.
    decision_id: str | None = Field(default=None, alias="decisionId")
    policy_digest: str | None = Field(default=None, alias="policyDigest")
    grant_id: str | None = Field(default=None, alias="grantId")
    initiator: str | None = None
    #: How the initiator was established: ``key:<key id>``,
    #: ``oidc:<issuer>#<subject>`` or ``unauthenticated`` (absent where nobody
    #: established who asked, as for ``initiator``).
    initiator_auth: str | None = Field(default=None, alias="initiatorAuth", max_length=2048)
    activity: ActivityIdentity
    outcome: Outcome
    started_at: str = Field(alias="startedAt")
    finished_at: str = Field(alias="finishedAt")
    #: Absent when the execution named no artifacts and declared no outputs.
    artifacts: list[ArtifactEvidence] | None = Field(default=None, max_length=64)
    #: When the gate admitted the body, all its checks done (its latency is
    #: ``admittedAt - startedAt``). Absent where no body was admitted (a
    #: denial) and in evidence recorded before the field existed.
    admitted_at: str | None = Field(default=None, alias="admittedAt")

    @field_validator("decision_id", "initiator", "grant_id")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        return None if v is None else _nonempty(v, "decisionId, grantId and initiator")

    @field_validator("policy_digest")
    @classmethod
    def _digest(cls, v: str | None) -> str | None:
        if v is not None and not _DIGEST.fullmatch(v):
            raise ValueError("policyDigest must be sha256:<64 lowercase hex>")
        return v

    @field_validator("started_at", "finished_at", "admitted_at")
    @classmethod
    def _time(cls, v: str | None) -> str | None:
        if v is not None and not _RFC3339_UTC.fullmatch(v):
            raise ValueError("timestamps must be RFC 3339 UTC, e.g. 2025-01-02T03:04:05.000000Z")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> EvidencePredicate:
        # Completed executions ran under a grant; time does not run backwards.
        ran = (OutcomeStatus.COMPLETED, OutcomeStatus.INTERRUPTED, OutcomeStatus.UNKNOWN)
        if self.outcome.status in ran and self.grant_id is None:
            raise ValueError(f"a {self.outcome.status.value} execution must name its grantId")
        unknown = [
            name
            for name, v in (
                ("decisionId", self.decision_id),
                ("policyDigest", self.policy_digest),
                ("initiator", self.initiator),
            )
            if v is None
        ]
        if unknown and (self.outcome.status is not OutcomeStatus.DENIED or self.grant_id):
            raise ValueError(f"{', '.join(unknown)} may be absent only for an ungranted denial")
        if _parse_time(self.finished_at) < _parse_time(self.started_at):
            raise ValueError("finishedAt is before startedAt")
        if self.admitted_at is not None:
            if self.outcome.status is OutcomeStatus.DENIED:
                raise ValueError("a denied execution was never admitted (no admittedAt)")
            at = _parse_time(self.admitted_at)
            if not _parse_time(self.started_at) <= at <= _parse_time(self.finished_at):
                raise ValueError("admittedAt is outside startedAt..finishedAt")
        return self


def _parse_time(value: str) -> datetime:
    # Python parses at most microseconds: nanosecond digits beyond are dropped.
    base, _, frac = value[:-1].partition(".")
    return datetime.fromisoformat(f"{base}.{(frac + '000000')[:6]}+00:00")


def format_time(value: datetime) -> str:
    """Deterministic RFC 3339 UTC form used in evidence (microseconds, ``Z``).

    Raises:
        ValueError: ``value`` is naive (no time zone).
    """
    if value.tzinfo is None:
        raise ValueError("evidence timestamps must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hex(digest: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise MalformedEvidenceError(f"subject digest {digest!r} is not sha256:<64 lowercase hex>")
    return digest.removeprefix("sha256:")


def build_statement(
    predicate: EvidencePredicate,
    *,
    arguments: Digest | str,
    result: Digest | str | None = None,
    grant: Digest | str | None = None,
) -> Statement:
    """Build the in-toto Statement for ``predicate`` and the subject digests.

    Raises:
        MalformedEvidenceError: a digest is not ``sha256:<hex>``.
    """
    subjects = [ResourceDescriptor(name="arguments", digest={"sha256": _hex(arguments)})]
    if result is not None:
        subjects.append(ResourceDescriptor(name="result", digest={"sha256": _hex(result)}))
    if grant is not None:
        subjects.append(ResourceDescriptor(name="grant", digest={"sha256": _hex(grant)}))
    return Statement(
        type=STATEMENT_TYPE_V1,
        subject=tuple(subjects),
        predicate_type=EVIDENCE_PREDICATE_TYPE,
        predicate=predicate.model_dump(mode="json", by_alias=True, exclude_none=True),
    )


def sign_evidence(statement: Statement, signer: Signer) -> Envelope:
    """Canonicalise ``statement`` and sign it into a DSSE envelope.

    Raises:
        CanonicalizationError: the statement holds a value JSON cannot express.
    """
    return sign_envelope(INTOTO_PAYLOAD_TYPE, canonical_json(statement.to_dict()), signer)


def evidence_id_of(payload: bytes) -> EvidenceId:
    """The evidence id of a statement payload."""
    return EvidenceId(digest_bytes(payload))


@dataclass(frozen=True, slots=True)
class Evidence:
    """A parsed, schema-valid evidence envelope (signature not yet checked)."""

    envelope: Envelope
    statement: Statement
    predicate: EvidencePredicate
    evidence_id: EvidenceId

    @property
    def subjects(self) -> Mapping[str, Digest]:
        """Subject name → ``sha256:<hex>``."""
        return {s.name: Digest("sha256:" + s.digest["sha256"]) for s in self.statement.subject}


def parse_evidence(envelope: Envelope | bytes | str) -> Evidence:
    """Parse an evidence envelope and validate its statement strictly.

    Raises:
        MalformedEvidenceError: not a DSSE envelope, wrong payloadType, not an
            in-toto Statement v1, wrong predicateType, unknown/duplicate/missing
            subjects, or a predicate that does not match the schema.
        NonCanonicalEvidenceError: the payload is not RFC 8785 canonical JSON.
    """
    if not isinstance(envelope, Envelope):
        try:
            envelope = Envelope.from_json(envelope)
        except AuthorityError as exc:
            raise MalformedEvidenceError(f"not a DSSE envelope: {exc}") from exc
    if envelope.payload_type != INTOTO_PAYLOAD_TYPE:
        raise MalformedEvidenceError(
            f"payloadType {envelope.payload_type[:100]!r} is not {INTOTO_PAYLOAD_TYPE!r}"
        )
    try:
        # Parsed once: the same document is checked for canonical form below.
        try:
            doc = parse_json_strict(envelope.payload)
        except CanonicalizationError as exc:
            raise StatementError(f"statement is not valid JSON: {exc}") from exc
        statement = statement_from_document(doc)
    except StatementError as exc:
        raise MalformedEvidenceError(f"not an in-toto Statement: {exc}") from exc
    if statement.type != STATEMENT_TYPE_V1:
        raise MalformedEvidenceError(f"statement _type must be {STATEMENT_TYPE_V1}")
    if statement.predicate_type != EVIDENCE_PREDICATE_TYPE:
        raise MalformedEvidenceError(
            f"predicateType {statement.predicate_type[:100]!r} is not {EVIDENCE_PREDICATE_TYPE!r}"
        )
    names = [s.name for s in statement.subject]
    if len(set(names)) != len(names) or not set(names) <= set(_SUBJECT_NAMES):
        raise MalformedEvidenceError(f"subjects must be distinct, among {_SUBJECT_NAMES}")
    if "arguments" not in names:
        raise MalformedEvidenceError("evidence must name the arguments digest")
    for s in statement.subject:
        if set(s.digest) != {"sha256"}:
            raise MalformedEvidenceError(
                f"subject {s.name[:64]!r} must carry exactly a sha256 digest"
            )
    try:
        predicate = EvidencePredicate.model_validate(statement.predicate)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])[:200] or "predicate"
        raise MalformedEvidenceError(f"predicate {printable(where)}: {first['msg']}") from exc
    try:
        canonical = is_canonical_json(envelope.payload, doc)
    except AuthorityError as exc:
        # e.g. an integer beyond 2**53 in the predicate: valid JSON, no JCS form.
        raise NonCanonicalEvidenceError(f"statement payload has no canonical form: {exc}") from exc
    if not canonical:
        raise NonCanonicalEvidenceError("statement payload is not RFC 8785 canonical JSON")
    return Evidence(envelope, statement, predicate, evidence_id_of(envelope.payload))


def evidence_roles(evidence: Evidence) -> tuple[KeyRole, ...]:
    """The key roles whose signature this kind of evidence needs.

    An outcome (completed, failed) is the gate's own record: only an executor
    (worker) key may sign it. A denial may also come from the authority
    side's recorder key (denials before any gate saw the call); the recorder
    can never vouch for an outcome.
    """
    if evidence.predicate.outcome.status is OutcomeStatus.DENIED:
        return (KeyRole.WORKER, KeyRole.RECORDER)
    return (KeyRole.WORKER,)


def verify_evidence_signature(evidence: Evidence, trust: TrustStore, at: datetime) -> None:
    """Check that a trusted key of a role allowed for this evidence signed it.

    Raises:
        EvidenceSignatureError: no signature by a key of an allowed role
            (see :func:`evidence_roles`) valid at ``at`` verifies (unknown,
            revoked or wrong-role key, bad signature).
    """
    failures: list[str] = []
    for role in evidence_roles(evidence):
        try:
            verify_envelope(
                evidence.envelope,
                payload_type=INTOTO_PAYLOAD_TYPE,
                trust=trust,
                role=role,
                at=at,
            )
            return
        except VerificationError as exc:
            failures.append(str(exc))
    what = evidence.predicate.outcome.status.value
    raise EvidenceSignatureError(f"{what} evidence signature: {'; '.join(failures)}")
