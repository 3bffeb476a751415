"""RFC 8785 (JCS) canonical JSON, strict JSON parsing and SHA-256 digests.

Everything the project signs or digests goes through :func:`canonical_json`, so
two parties that hold equal JSON values always produce equal bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
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
    "is_canonical_json",
    "parse_json_strict",
    "printable",
]

#: A lowercase hex SHA-256 digest prefixed with its algorithm, ``sha256:<hex>``.
Digest = NewType("Digest", str)

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]


def canonical_json(value: object) -> bytes:
    """Serialise ``value`` as RFC 8785 canonical JSON bytes.

    A value made only of the plain JSON types (exactly ``dict``, ``list``,
    ``str``, ``bool``, ``None`` and ``int`` within ±(2**53 - 1), no key
    outside the Basic Multilingual Plane) is written by :func:`json.dumps`,
    which writes it exactly as RFC 8785 does (see :func:`_plain`) an order
    of magnitude faster than the general encoder: grants, decisions,
    evidence and argument digests are such values, and canonicalising them
    was a tenth of the workers' CPU per governed action. Anything else (a
    float, a subclass, a tuple, a value the fast path cannot write) goes
    through the general encoder, which also gives every error.

    Raises:
        CanonicalizationError: ``value`` holds something JSON cannot express
            exactly (NaN, infinities, integers beyond ±2**53, non-string keys,
            unsupported types).
    """
    if _plain_exact(value):
        try:
            fast = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
            return fast.encode("utf-8")
        except (ValueError, RecursionError):
            # A lone surrogate (UnicodeEncodeError) or nesting json.dumps
            # cannot follow: the general encoder refuses it, in its words.
            pass
    return _general(value)


def _general(value: object) -> bytes:
    """RFC 8785 by the general encoder (``rfc8785``); see :func:`canonical_json`."""
    try:
        # rfc8785 types its input narrowly; it raises on anything else, which
        # is exactly the check wanted here. A lone surrogate surfaces as a
        # UnicodeEncodeError (a ValueError), an overflowing number as an
        # ArithmeticError.
        return rfc8785.dumps(value)  # type: ignore[arg-type]
    except (rfc8785.CanonicalizationError, TypeError, ValueError, ArithmeticError) as exc:
        raise CanonicalizationError(f"cannot canonicalise value: {printable(str(exc))}") from exc
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


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        # 1e400 is valid JSON grammar but no IEEE double (RFC 7493 2.2).
        raise CanonicalizationError(f"JSON number {text[:40]} overflows a double")
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")
# Where a lone surrogate can come from in text that is itself surrogate-free.
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_surrogate(value: object) -> bool:
    # Iterative: a document may nest right up to the recursion limit.
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if _SURROGATE.search(v):
                return True
        elif isinstance(v, dict):
            stack.extend(v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def printable(text: str) -> str:
    """``text`` with lone surrogates escaped, so a message holding it can be printed."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def parse_json_strict(data: bytes | str) -> object:
    r"""Parse JSON, rejecting what has no single meaning or no canonical form.

    Refused: duplicate keys, NaN/Infinity and numbers that overflow a double,
    invalid UTF-8, lone surrogates (raw or ``\u`` escaped; RFC 7493 I-JSON
    forbids them and RFC 8785 cannot encode them), integers beyond Python's
    conversion limit, and nesting deeper than the interpreter can follow.

    Raises:
        DuplicateKeyJSONError: an object repeats a key.
        CanonicalizationError: anything else that is not strict JSON.
    """
    if isinstance(data, str):
        text = data
        if _SURROGATE.search(text):
            raise CanonicalizationError("JSON text contains a lone surrogate")
    elif isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CanonicalizationError(f"JSON is not valid UTF-8: {exc.reason}") from exc
    else:
        raise CanonicalizationError(f"JSON must be bytes or text, not {type(data).__name__}")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except json.JSONDecodeError as exc:
        raise CanonicalizationError(f"invalid JSON: {exc.msg} at line {exc.lineno}") from exc
    except ValueError as exc:
        # e.g. an integer literal beyond Python's 4300-digit conversion limit.
        raise CanonicalizationError(f"invalid JSON: {str(exc).splitlines()[0]}") from exc
    except RecursionError as exc:
        raise CanonicalizationError("JSON nesting too deep") from exc
    if _ESCAPED_SURROGATE.search(text) and _has_surrogate(value):
        raise CanonicalizationError("JSON holds a lone surrogate (an unpaired \\ud800-\\udfff)")
    return value


def digest_bytes(data: bytes) -> Digest:
    """Return ``sha256:<hex>`` of ``data``."""
    return Digest("sha256:" + hashlib.sha256(data).hexdigest())


def digest_json(value: Mapping[str, object] | list[object] | object) -> Digest:
    """Return the digest of ``value``'s canonical JSON.

    Raises:
        CanonicalizationError: see :func:`canonical_json`.
    """
    return digest_bytes(canonical_json(value))


# The largest integer magnitude RFC 8785 encodes (an IEEE double holds it exactly).
_MAX_SAFE_INT = 2**53 - 1


def _plain(value: object) -> bool:
    r"""Whether :func:`json.dumps` writes ``value`` exactly as RFC 8785 does.

    True for objects, arrays, strings, booleans, null and integers within
    ±(2**53 - 1), with no object key outside the Basic Multilingual Plane:
    then RFC 8785 is sorted keys (UTF-16 order equals code-point order
    inside the BMP), no whitespace, UTF-8 and JSON's minimal escapes
    (``\b \f \n \r \t``, other controls as lowercase ``\u00xx``), which
    :func:`json.dumps` produces. Floats have ES6 number formatting, so any
    float is not plain.
    """
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str) or v is None or isinstance(v, bool):
            continue
        if isinstance(v, int):
            if -_MAX_SAFE_INT <= v <= _MAX_SAFE_INT:
                continue
            return False
        if isinstance(v, dict):
            for k in v:
                if not isinstance(k, str) or (not k.isascii() and max(k) > "\uffff"):
                    return False
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        else:
            return False
    return True


def _plain_exact(value: object) -> bool:
    """:func:`_plain`, for any Python value: exact JSON types only, no container twice.

    Subclasses (``IntEnum``, ``StrEnum``, ...) and tuples are not plain here:
    :func:`json.dumps` and the general encoder might write them differently.
    A container met twice (shared, or a cycle, which :func:`json.dumps`
    would refuse in words of its own) also leaves the value to the general
    encoder.
    """
    stack = [value]
    seen: set[int] = set()
    while stack:
        v = stack.pop()
        if type(v) is str or type(v) is bool or v is None:
            continue
        if type(v) is int:
            if -_MAX_SAFE_INT <= v <= _MAX_SAFE_INT:
                continue
            return False
        if type(v) is dict:
            if id(v) in seen:
                return False
            seen.add(id(v))
            for k in v:
                if type(k) is not str or (not k.isascii() and max(k) > "\uffff"):
                    return False
            stack.extend(v.values())
        elif type(v) is list:
            if id(v) in seen:
                return False
            seen.add(id(v))
            stack.extend(v)
        else:
            return False
    return True


def is_canonical_json(data: bytes, value: object) -> bool:
    """Whether ``data`` is exactly the RFC 8785 form of ``value``.

    ``value`` is what :func:`parse_json_strict` read from ``data``. Plain
    values (see :func:`_plain`) are compared against :func:`json.dumps`,
    which is an order of magnitude faster than the general encoder; the
    rest go through :func:`canonical_json`.

    Raises:
        CanonicalizationError: ``value`` has no canonical form (see
            :func:`canonical_json`).
    """
    if _plain(value):
        fast = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        return fast.encode("utf-8") == data
    return canonical_json(value) == data
