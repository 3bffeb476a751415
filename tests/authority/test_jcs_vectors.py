"""RFC 8785 conformance: every case of ``tests/vectors/jcs.json``."""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from ecp.authority._canonical import canonical_json, digest_json, parse_json_strict
from ecp.authority.errors import CanonicalizationError, DuplicateKeyJSONError
from tests.vectors import load_vector_file

VECTORS: dict[str, Any] = load_vector_file("jcs.json")  # type: ignore[assignment]


def _float(bits_hex: str) -> float:
    return struct.unpack(">d", int(bits_hex, 16).to_bytes(8, "big"))[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("case", VECTORS["cases"], ids=[c["name"] for c in VECTORS["cases"]])
def test_cases(case: dict[str, Any]) -> None:
    out = canonical_json(parse_json_strict(case["input"]))
    assert out == case["expected"].encode("utf-8")
    assert out.hex() == case["expected_hex"]
    # Canonical output is a fixed point.
    assert canonical_json(parse_json_strict(out)) == out


@pytest.mark.parametrize(
    "sample",
    VECTORS["es6_number_samples"],
    ids=[s["ieee_hex"] for s in VECTORS["es6_number_samples"]],
)
def test_number_samples(sample: dict[str, str]) -> None:
    assert canonical_json(_float(sample["ieee_hex"])) == sample["expected"].encode()


def _number_lines() -> Iterator[bytes]:
    """Regenerate cyberphone's es6testfile lines (testdata/numgen.go)."""
    gen = VECTORS["es6_number_file"]["generator"]

    def line(bits: int) -> bytes:
        value = _float(f"{bits:016x}")
        return b"%x," % bits + canonical_json(value) + b"\n"

    for h in gen["static_u64_hex"]:
        yield line(int(h, 16))
    for i in range(2000):
        yield line(0x0010000000000000 + i)
    block = bytes(32)
    while True:
        block = hashlib.sha256(block).digest()
        for i in range(4):
            bits = int.from_bytes(block[i * 8 : i * 8 + 8], "little")
            f = _float(f"{bits:016x}")
            if f == 0 or math.isnan(f) or math.isinf(f):
                continue
            yield line(bits)


@pytest.mark.parametrize("lines", [1000, 10000])
def test_es6_number_file_checksums(lines: int) -> None:
    want = next(
        c for c in VECTORS["es6_number_file"]["sha256_of_first_n_lines"] if c["lines"] == lines
    )
    h = hashlib.sha256()
    size = 0
    for n, text in enumerate(_number_lines(), start=1):
        h.update(text)
        size += len(text)
        if n == lines:
            break
    assert size == want["bytes"]
    assert h.hexdigest() == want["sha256"]


def test_minus_zero_and_key_order_by_utf16() -> None:
    assert canonical_json(-0.0) == b"0"
    # U+1F602 sorts by its UTF-16 surrogates (0xD83D), before U+FB33.
    assert canonical_json({"\ufb33": 1, "\U0001f602": 2}) == '{"\U0001f602":2,"\ufb33":1}'.encode()


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, 2**53 + 1, {1: "x"}, object()],
    ids=["nan", "inf", "bigint", "intkey", "object"],
)
def test_not_canonicalisable(value: object) -> None:
    with pytest.raises(CanonicalizationError):
        canonical_json(value)


def test_strict_parse_rejects_duplicates_and_constants() -> None:
    with pytest.raises(DuplicateKeyJSONError):
        parse_json_strict('{"a":1,"a":2}')
    with pytest.raises(CanonicalizationError):
        parse_json_strict("[NaN]")
    with pytest.raises(CanonicalizationError):
        parse_json_strict(b"\xff")
    assert digest_json({"b": 1, "a": 2}) == digest_json({"a": 2, "b": 1})
