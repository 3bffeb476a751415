"""The fast canonical-form check agrees with the RFC 8785 encoder on every JSON value."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from ecp.authority._canonical import canonical_json, is_canonical_json, parse_json_strict
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
        return canonical_json(value)
    except CanonicalizationError:
        return None


def _same_judgement(data: bytes) -> None:
    """``is_canonical_json`` judges as comparing with ``canonical_json`` does (or raises)."""
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
