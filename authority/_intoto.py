"""in-toto Statement v1: the envelope payload for evidence and other attestations.

A small, strict reader following ``in-toto/attestation`` ``spec/v1``: the
Go reference bindings' validation rules (type URI, at least one subject, each
subject a ResourceDescriptor with a digest, non-empty predicateType, a
predicate object). ``Statement/v0.1`` is accepted as the bindings accept it.
"""

from __future__ import annotations

import re
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from ecp.authority._canonical import parse_json_strict, printable
from ecp.authority.errors import CanonicalizationError, StatementError

__all__ = [
    "INTOTO_PAYLOAD_TYPE",
    "STATEMENT_TYPE_V1",
    "ResourceDescriptor",
    "Statement",
    "parse_statement",
    "statement_from_document",
]

#: DSSE payloadType of in-toto attestations.
INTOTO_PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
STATEMENT_TYPE_V1: Final = "https://in-toto.io/Statement/v1"
# The Go bindings still accept the pre-1.0 URI for compatibility.
_ACCEPTED_TYPES: Final = frozenset({STATEMENT_TYPE_V1, "https://in-toto.io/Statement/v0.1"})

# Lengths (hex chars) of the algorithms digest_set.md names; other algorithm
# names are allowed by the spec and are only required to be strings.
_HEX_LENGTHS: Final = {
    "sha256": 64,
    "sha224": 56,
    "sha384": 96,
    "sha512": 128,
    "sha512_224": 56,
    "sha512_256": 64,
    "sha3_224": 56,
    "sha3_256": 64,
    "sha3_384": 96,
    "sha3_512": 128,
    "sha1": 40,
    "md5": 32,
    "gitCommit": 40,
    "gitTree": 40,
    "gitBlob": 40,
}
_HEX = re.compile(r"[0-9a-f]*")


class ResourceDescriptor(BaseModel):
    """One artifact: by name, URI, digest set and/or inline content.

    Unknown fields are ignored, as the spec asks of consumers.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    name: str = ""
    uri: str = ""
    digest: dict[str, str] = Field(default_factory=dict)
    content: str = ""
    download_location: str = Field(default="", alias="downloadLocation")
    media_type: str = Field(default="", alias="mediaType")
    annotations: dict[str, JsonValue] = Field(default_factory=dict)


class Statement(BaseModel):
    """An in-toto Statement: subjects (by digest) plus a typed predicate."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    type: str = Field(alias="_type")
    subject: tuple[ResourceDescriptor, ...]
    predicate_type: str = Field(alias="predicateType")
    predicate: dict[str, JsonValue]

    def to_dict(self) -> dict[str, JsonValue]:
        """JSON form with the spec's field names (ready for canonical_json)."""
        out: dict[str, JsonValue] = self.model_dump(
            mode="json", by_alias=True, exclude_defaults=True
        )
        # exclude_defaults would drop an empty predicate, which must stay.
        out["predicate"] = self.predicate
        return out


def _check_descriptor(rd: ResourceDescriptor, index: int) -> None:
    if not (rd.uri or rd.digest or rd.content):
        raise StatementError(f"subject {index}: needs at least one of uri, digest, content")
    for alg, value in rd.digest.items():
        want = _HEX_LENGTHS.get(alg)
        if want is not None and (len(value) != want or not _HEX.fullmatch(value)):
            raise StatementError(f"subject {index}: digest {alg} is not {want} lowercase hex")
    if not rd.digest:
        raise StatementError(f"subject {index}: a Statement subject must carry a digest")


def parse_statement(data: bytes | str) -> Statement:
    """Parse and validate an in-toto Statement.

    Raises:
        StatementError: not JSON (or duplicate keys), wrong ``_type``, no
            subject, a subject without a digest or with a malformed one,
            empty ``predicateType``, missing ``predicate``.
    """
    try:
        doc = parse_json_strict(data)
    except CanonicalizationError as exc:
        raise StatementError(f"statement is not valid JSON: {exc}") from exc
    return statement_from_document(doc)


def statement_from_document(doc: object) -> Statement:
    """Validate an in-toto Statement already read by ``parse_json_strict``.

    For callers that need the parsed document too (a canonical-form check),
    so the payload is parsed once.

    Raises:
        StatementError: as for :func:`parse_statement`, but for the JSON syntax.
    """
    if not isinstance(doc, dict):
        raise StatementError("statement must be a JSON object")
    stmt_type = doc.get("_type")
    # Any JSON value may sit here: a list or an object is unhashable, so test
    # the type before looking it up.
    if not isinstance(stmt_type, str) or stmt_type not in _ACCEPTED_TYPES:
        shown = repr(stmt_type) if isinstance(stmt_type, str) else type(stmt_type).__name__
        raise StatementError(f"unsupported statement _type {shown[:100]}")
    try:
        stmt = Statement.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])[:200]
        raise StatementError(f"statement field {printable(where)}: {first['msg']}") from exc
    if not stmt.subject:
        raise StatementError("statement needs at least one subject")
    for i, rd in enumerate(stmt.subject):
        _check_descriptor(rd, i)
    if not stmt.predicate_type:
        raise StatementError("statement predicateType must not be empty")
    return stmt
