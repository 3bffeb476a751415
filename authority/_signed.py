"""Shared reading of signed JSON payloads: canonical form, schema version, strict model."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from ecp.authority._canonical import canonical_json, parse_json_strict
from ecp.authority.errors import (
    AuthorityError,
    CanonicalizationError,
    DuplicateKeyJSONError,
    NonCanonicalPayloadError,
)

__all__ = ["DIGEST_PATTERN", "read_signed_model"]

M = TypeVar("M", bound=BaseModel)

DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"


def read_signed_model(
    payload: bytes,
    model: type[M],
    *,
    what: str,
    schema_version: str,
    schema_error: type[AuthorityError],
    version_error: type[AuthorityError],
) -> M:
    """Parse the exact signed ``payload`` bytes as ``model``.

    The payload must be RFC 8785 canonical: the issuer writes JCS, so any
    other byte form means someone else produced it (and two parsers could
    read it differently).

    Raises:
        NonCanonicalPayloadError: duplicate keys, or bytes that are not JCS.
        version_error: ``schema_version`` is missing or another version.
        schema_error: not JSON, or a missing, extra or mistyped field.
    """
    try:
        doc = parse_json_strict(payload)
    except DuplicateKeyJSONError as exc:
        raise NonCanonicalPayloadError(f"{what} payload repeats a key: {exc}") from exc
    except CanonicalizationError as exc:
        raise schema_error(f"{what} payload is not JSON: {exc}") from exc
    try:
        canonical = canonical_json(doc)
    except CanonicalizationError as exc:
        raise NonCanonicalPayloadError(f"{what} payload cannot be canonical: {exc}") from exc
    if canonical != payload:
        raise NonCanonicalPayloadError(f"{what} payload is not RFC 8785 canonical JSON")
    if not isinstance(doc, dict):
        raise schema_error(f"{what} payload must be a JSON object")
    if doc.get("schema_version") != schema_version:
        raise version_error(
            f"{what} schema_version {doc.get('schema_version')!r} is not {schema_version!r}"
        )
    try:
        return model.model_validate_json(payload, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise schema_error(f"{what} field {where}: {first['msg']}") from exc
