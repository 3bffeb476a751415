"""The fast canonical-form check and the fast encoder agree with the RFC 8785 encoder."""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import IntEnum, StrEnum

from hypothesis import given, settings
from hypothesis import strategies as st

from ecp.authority._canonical import (
    _general,
    _plain_exact,
    canonical_json,
    is_canonical_json,
    parse_json_strict,
)
from ecp.authority.errors import CanonicalizationError

# Keys and strings mix ASCII, controls, BMP characters on both sides of the
# surrogate block (where UTF-16 and code-point order differ) and astral ones.
_chars = st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from(
    ["a", "\n", "\x01", "\x7f", "\u2028", "\ue000", "\uffff", "\U0001f600", '"', "\\"]
)
_text = st.text(_chars, max_size=6)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)


def _canonical_or_none(value: object) -> bytes | None:
    try:
        return _general(value)
    except CanonicalizationError:
        return None


def _same_judgement(data: bytes) -> None:
    """``is_canonical_json`` judges as comparing with the rfc8785 encoder does (or raises).

    Against ``_general``, not ``canonical_json``: for plain values both the
    check and ``canonical_json`` now come from ``json.dumps``, and comparing
    the two would test nothing.
    """
    try:
        parsed = parse_json_strict(data)
    except CanonicalizationError:
        return
    want = _canonical_or_none(parsed)
    if want is None:
        try:
            is_canonical_json(data, parsed)
        except CanonicalizationError:
            return
        raise AssertionError("a value with no canonical form was judged")
    assert is_canonical_json(data, parsed) == (want == data)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_agrees_with_rfc8785_on_its_own_output(value: object) -> None:
    want = _canonical_or_none(value)
    if want is not None:
        _same_judgement(want)


@settings(max_examples=400, deadline=None)
@given(_json, st.booleans(), st.booleans())
def test_agrees_with_rfc8785_on_other_encodings(value: object, ascii_: bool, spaced: bool) -> None:
    # Other serialisations of the same value: escaped non-ASCII, whitespace,
    # code-point key order. Each is canonical exactly when it equals RFC 8785's.
    _same_judgement(
        json.dumps(
            value,
            ensure_ascii=ascii_,
            separators=(", ", ": ") if spaced else (",", ":"),
            sort_keys=True,
        ).encode()
    )


def test_astral_keys_sort_by_utf16() -> None:
    # U+E000 sorts after U+1F600 in UTF-16 (surrogates are 0xD8xx) but before
    # it by code point: json.dumps's order is not canonical here.
    value = {"\ue000": 1, "\U0001f600": 2}
    canonical = canonical_json(value)
    by_code_point = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    assert canonical != by_code_point.encode()
    assert is_canonical_json(canonical, parse_json_strict(canonical))
    assert not is_canonical_json(by_code_point.encode(), value)


def test_floats_and_large_integers_take_the_general_encoder() -> None:
    assert is_canonical_json(b"[1e+21]", [1e21])
    assert not is_canonical_json(b"[1e21]", [1e21])
    try:
        is_canonical_json(b"[9007199254740993]", [9007199254740993])
    except CanonicalizationError:
        pass
    else:
        raise AssertionError("an integer beyond 2**53 has no canonical form")


# --- canonical_json's own fast path: the same bytes, or the same refusal ----

#: Strings that may hold lone surrogates (which neither encoder can write).
_any_text = st.text(st.characters(codec=None) | _chars, max_size=6)
_any_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | _any_text,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(_any_text, inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.integers(-3, 3), inner, max_size=2)
    ),
    max_leaves=12,
)


def _outcome(encode: Callable[[object], bytes], value: object) -> bytes | str:
    try:
        return encode(value)
    except CanonicalizationError as exc:
        return f"refused: {exc}"


def _same_as_general(value: object) -> None:
    assert _outcome(canonical_json, value) == _outcome(_general, value)


@settings(max_examples=1500, deadline=None)
@given(_any_json)
def test_canonical_json_writes_what_the_general_encoder_writes(value: object) -> None:
    _same_as_general(value)


class _Colour(IntEnum):
    RED = 1


class _Name(StrEnum):
    ALICE = "alice"


def test_canonical_json_edge_values_match_the_general_encoder() -> None:
    shared = ["x"]
    cycle: list[object] = []
    cycle.append(cycle)
    deep: object = 1
    for _ in range(5000):
        deep = [deep]
    for value in [
        {"\ue000": 1, "\U0001f600": 2},  # astral keys: UTF-16 order
        {"a": "\ud800"},  # a lone surrogate in a value
        {"\udfff": 1},  # in a key
        [2**53 - 1, -(2**53 - 1)],
        [2**53],
        {"c": '\x00\x1f\x7f\u2028\u2029"\\/\b\f\n\r\t'},
        [True, False, None, 0, -0, 1.0, -0.0],
        {"b": 1, "a": {"d": [], "c": {}}},
        [_Colour.RED, _Name.ALICE],
        {_Name.ALICE: 1},
        (1, 2),
        [shared, shared],
        cycle,
        deep,
        {1: "x"},
        b"bytes",
    ]:
        _same_as_general(value)


def test_plain_values_take_the_fast_path() -> None:
    # What is signed and digested (grants, evidence, digests) is plain, and
    # is written by json.dumps (the point of the fast path).
    grantish = {"scope": {"max_attempts": 1}, "ids": ["a", "b"], "n": None, "ok": True}
    assert _plain_exact(grantish)
    assert not _plain_exact({"x": 1.5})
    assert not _plain_exact([_Colour.RED])
    assert not _plain_exact((1,))
