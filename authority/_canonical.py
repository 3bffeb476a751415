"""RFC 8785 (JCS) canonical JSON, strict JSON parsing and SHA-256 digests.

Everything the project signs or digests goes through :func:`canonical_json`, so
two parties that hold equal JSON values always produce equal bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import NewType

import rfc8785

from ecp.authority.errors import CanonicalizationError, DuplicateKeyJSONError

__all__ = [
    "Digest",
    "JSONValue",
    "canonical_json",
    "digest_bytes",
    "digest_json",
    "parse_json_strict",
]

#: A lowercase hex SHA-256 digest prefixed with its algorithm, ``sha256:<hex>``.
Digest = NewType("Digest", str)

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]


def canonical_json(value: object) -> bytes:
    """Serialise ``value`` as RFC 8785 canonical JSON bytes.

    Raises:
        CanonicalizationError: ``value`` holds something JSON cannot express
            exactly (NaN, infinities, integers beyond ±2**53, non-string keys,
            unsupported types).
    """
    try:
        # rfc8785 types its input narrowly; it raises on anything else, which
        # is exactly the check wanted here.
        return rfc8785.dumps(value)  # type: ignore[arg-type]
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise CanonicalizationError(f"cannot canonicalise value: {exc}") from exc
    except RecursionError as exc:
        raise CanonicalizationError("value nested too deeply to canonicalise") from exc


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, val in pairs:
        if key in out:
            raise DuplicateKeyJSONError(f"duplicate JSON object key {key!r}")
        out[key] = val
    return out


def _reject_constant(name: str) -> object:
    raise CanonicalizationError(f"JSON constant {name} is not allowed")


def parse_json_strict(data: bytes | str) -> object:
    """Parse JSON, rejecting duplicate keys, NaN/Infinity and invalid UTF-8.

    Raises:
        DuplicateKeyJSONError: an object repeats a key.
        CanonicalizationError: the bytes are not valid UTF-8 JSON.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CanonicalizationError(f"JSON is not valid UTF-8: {exc.reason}") from exc
    else:
        text = data
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        raise CanonicalizationError(f"invalid JSON: {exc.msg} at line {exc.lineno}") from exc
    except ValueError as exc:
        # e.g. an integer literal beyond Python's 4300-digit conversion limit.
        raise CanonicalizationError(f"invalid JSON: {str(exc).splitlines()[0]}") from exc
    except RecursionError as exc:
        raise CanonicalizationError("JSON nesting too deep") from exc


def digest_bytes(data: bytes) -> Digest:
    """Return ``sha256:<hex>`` of ``data``."""
    return Digest("sha256:" + hashlib.sha256(data).hexdigest())


def digest_json(value: Mapping[str, object] | list[object] | object) -> Digest:
    """Return the digest of ``value``'s canonical JSON.

    Raises:
        CanonicalizationError: see :func:`canonical_json`.
    """
    return digest_bytes(canonical_json(value))
