"""The argument digest: one function the authority and the gate both use.

Temporal hands the gate decoded argument *values*, while the authority sees
the values the workflow submitted (often plain dicts where the activity takes
a dataclass or a pydantic model). Digesting raw payload bytes would make the
two disagree on key order and whitespace, so the digest is taken over the
JSON *value* of each encoded payload, canonicalised with RFC 8785.

RFC 8785 cannot express integers beyond ±2**53 exactly; Temporal's JSON
converter can. Such integers are written as their exact decimal digits (a
JSON number, so they cannot collide with any string).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Sequence

from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadConverter

from ecp.authority._canonical import Digest, canonical_json, digest_bytes
from ecp.authority.errors import CanonicalizationError

__all__ = ["canonical_json_exact", "digest_payloads", "digest_values"]

_SAFE_INT = 2**53 - 1


def canonical_json_exact(value: object) -> bytes:
    """RFC 8785 canonical JSON, extended to write big integers exactly.

    Raises:
        CanonicalizationError: the value is not JSON-expressible.
    """
    big: dict[str, int] = {}
    # A per-call random token cannot be guessed by whoever chose the value,
    # so no string in the input can be mistaken for a placeholder.
    token = "\x00ecp-bigint-" + secrets.token_hex(16) + "-"

    def swap(v: object) -> object:
        if isinstance(v, bool) or v is None or isinstance(v, str | float):
            return v
        if isinstance(v, int):
            if -_SAFE_INT <= v <= _SAFE_INT:
                return v
            placeholder = f"{token}{len(big)}"
            big[placeholder] = v
            return placeholder
        if isinstance(v, list):
            return [swap(x) for x in v]
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        raise CanonicalizationError(f"unsupported JSON value of type {type(v).__name__}")

    try:
        swapped = swap(value)
    except RecursionError as exc:
        raise CanonicalizationError("value nested too deeply to canonicalise") from exc
    out = canonical_json(swapped)
    for placeholder, number in big.items():
        quoted = canonical_json(placeholder)
        out = out.replace(quoted, str(number).encode("ascii"), 1)
    return out


def _payload_item(p: Payload) -> object:
    encoding = p.metadata.get("encoding", b"").decode("utf-8", "replace")
    if encoding == "binary/null":
        return ["json", None]
    if encoding == "json/plain":
        try:
            value = json.loads(p.data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise CanonicalizationError(f"argument payload is not valid JSON: {exc}") from exc
        return ["json", json.loads(canonical_json_exact(value))]
    # Anything else (binary/plain, protobuf) is bound by its exact bytes.
    return [encoding, base64.b64encode(p.data).decode("ascii")]


def digest_payloads(payloads: Sequence[Payload]) -> Digest:
    """Digest encoded argument payloads.

    Raises:
        CanonicalizationError: a JSON payload cannot be canonicalised.
    """
    items = [_payload_item(p) for p in payloads]
    return digest_bytes(canonical_json_exact(items))


def digest_values(values: Sequence[object], converter: PayloadConverter) -> Digest:
    """Encode ``values`` with ``converter`` and digest the payloads.

    Raises:
        CanonicalizationError: a value cannot be encoded or canonicalised.
    """
    try:
        payloads = converter.to_payloads(values)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CanonicalizationError(f"arguments cannot be encoded: {exc}") from exc
    return digest_payloads(payloads)
