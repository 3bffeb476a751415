"""Bounded fuzzing of every authority parser of untrusted input.

Each parser may raise only the project's typed errors (the
:class:`~ecp.authority.errors.AuthorityError` family), never a bare
``ValueError``, ``TypeError``, ``RecursionError``, ``UnicodeEncodeError``...
Inputs are arbitrary bytes and text, and structure-aware mutations of a valid
document: one field replaced by a random JSON value or a raw fragment (deep
nesting, huge integers, lone surrogates, control characters, duplicate keys),
a field dropped or added, then optionally a byte-level edit.

The strategies at the top are shared with ``tests/lineage/test_fuzz_parsers.py``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ecp.authority._approval import (
    APPROVAL_PAYLOAD_TYPE,
    check_approval,
    sign_approval,
    verify_approvals,
)
from ecp.authority._canonical import canonical_json, parse_json_strict
from ecp.authority._clock import FixedClock
from ecp.authority._dsse import Envelope, sign_envelope, verify_envelope
from ecp.authority._grant import GRANT_PAYLOAD_TYPE
from ecp.authority._intoto import parse_statement
from ecp.authority._keys import Signer
from ecp.authority._policy import Decision, PolicyBundle, PolicyRequest
from ecp.authority._replay import InMemoryReplayGuard
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.authority._verify import verify_grant
from ecp.authority.errors import (
    ApprovalSchemaError,
    AuthorityError,
    CanonicalizationError,
    MalformedEnvelopeError,
    StatementError,
    TrustStoreError,
)
from tests.authority.support import EXAMPLE_BUNDLE, T0, good_expected, good_grant, make_keys, signed

__all__ = [
    "FUZZ",
    "RAW_FRAGMENTS",
    "any_input",
    "expect_only",
    "fragments",
    "json_values",
    "mutated_json",
    "mutated_text",
    "nasty_text",
    "signed_mutation",
    "to_bytes",
]

#: Examples per test: enough to hit every mutation kind, small enough that
#: each file runs in a few seconds on two slow cores.
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- shared strategies ----------------------------------------------------------

#: Every code point, lone surrogates and control characters included.
_ANY_CHAR = st.characters(exclude_categories=())
_SPECIAL = (
    "\ud800",
    "\udfff",
    "\udc00\ud800",
    "\x00",
    "\x1f",
    "\x7f",
    "\n",
    "\r\n",
    "\u2028",
    "\ufeff",
    "\u2014 ",
    "+",
    " ",
    "",
    "=",
    "-_",
    "9" * 5000,
    "[" * 5000,
)

nasty_text = st.one_of(
    st.text(_ANY_CHAR, max_size=16),
    st.sampled_from(_SPECIAL),
    st.builds(str.__add__, st.text(max_size=6), st.sampled_from(_SPECIAL)),
)

_ints = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from(
        [0, -1, 1, 2**53, 2**53 + 1, -(2**53) - 1, 2**63, 2**64, 10**4299, -(10**4299)]
    ),
)

#: Random JSON values (as Python objects) with awkward leaves.
json_values = st.recursive(
    st.none() | st.booleans() | _ints | st.floats() | nasty_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=10,
)

#: JSON-ish text fragments Python's own encoder would never write.
RAW_FRAGMENTS = (
    "[" * 5000,
    "[" * 5000 + "]" * 5000,
    '{"a":' * 3000 + "1" + "}" * 3000,
    "9" * 5000,
    "-" + "9" * 4301,
    "1" * 4300,
    "1e400",
    "-1e400",
    "1" + "0" * 400 + ".5",
    "NaN",
    "Infinity",
    "-Infinity",
    '"\\ud800"',
    '"\\udfff\\ud800"',
    '"a\\ud83d"',
    '"\ud800"',
    '"\x00"',
    '"\\u0000"',
    '"\\u2028"',
    '{"a":1,"a":2}',
    "",
    "nul",
    "[1,]",
    "\ufeff1",
    "01",
    '"' + "A" * 70000 + '"',
)


def _dumps(value: object, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)


fragments = st.one_of(
    st.builds(_dumps, json_values, st.booleans()),
    st.sampled_from(RAW_FRAGMENTS),
)


def to_bytes(text: str) -> bytes:
    """Encode even text holding lone surrogates (they become invalid UTF-8)."""
    return text.encode("utf-8", "surrogatepass")


@st.composite
def _byte_edit(draw: st.DrawFn, data: bytes) -> bytes:
    if not data:
        return draw(st.binary(max_size=8))
    i = draw(st.integers(0, len(data) - 1))
    op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate"]))
    if op == "flip":
        return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
    if op == "insert":
        return data[:i] + draw(st.binary(min_size=1, max_size=8)) + data[i:]
    if op == "delete":
        return data[:i] + data[i + draw(st.integers(1, 16)) :]
    if op == "truncate":
        return data[:i]
    return data[:i] + data[i:] * 2


@st.composite
def finish(draw: st.DrawFn, text: str) -> str | bytes:
    """Hand ``text`` over as text, as (possibly invalid) UTF-8, or byte-edited."""
    how = draw(st.sampled_from(["text", "bytes", "bytes", "edited"]))
    if how == "text":
        return text
    data = to_bytes(text)
    return draw(_byte_edit(data)) if how == "edited" else data


any_input = st.one_of(
    st.binary(max_size=200),
    st.text(_ANY_CHAR, max_size=200),
    st.sampled_from(RAW_FRAGMENTS),
    fragments,
)

_SENTINEL = "\x00ecp-fuzz-sentinel\x00"


def _paths(doc: object, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


def _same_kind(value: object) -> st.SearchStrategy[object]:
    # A value of the same JSON type: keeps the document's shape, so the
    # change reaches the checks behind the schema.
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return _ints
    if isinstance(value, float):
        return st.floats()
    if isinstance(value, str):
        return st.one_of(nasty_text, st.just(value[:-1]), st.just(value + value[-1:]))
    if isinstance(value, list):
        return st.lists(json_values, max_size=3)
    return st.dictionaries(nasty_text, json_values, max_size=3)


@st.composite
def mutated_text(draw: st.DrawFn, base: object) -> str:
    """JSON text of ``base`` with one structure-aware change."""
    doc = copy.deepcopy(base)
    path = draw(st.sampled_from(list(_paths(doc))))
    op = draw(st.sampled_from(["same", "same", "replace", "replace", "delete", "add"]))
    parent: Any = doc
    for step in path[:-1]:
        parent = parent[step]
    if not path:
        doc = _SENTINEL
    elif op == "same":
        parent[path[-1]] = draw(_same_kind(parent[path[-1]]))
    elif op == "delete":
        del parent[path[-1]]
    elif op == "add" and isinstance(parent[path[-1]], dict):
        parent[path[-1]][draw(nasty_text)] = _SENTINEL
    elif op == "add" and isinstance(parent[path[-1]], list):
        parent[path[-1]].append(_SENTINEL)
    else:
        parent[path[-1]] = _SENTINEL
    text = json.dumps(doc, separators=(",", ":"), sort_keys=draw(st.booleans()))
    return text.replace(json.dumps(_SENTINEL), draw(fragments), 1)


def mutated_json(base: object) -> st.SearchStrategy[str | bytes]:
    """A mutated ``base`` as text or bytes, sometimes byte-edited too."""
    return mutated_text(base).flatmap(finish)


def _canonical_or_raw(text: str, canonical: bool) -> bytes:
    # The signer writes JCS; a payload that JCS cannot express goes out raw.
    if canonical:
        try:
            return canonical_json(json.loads(text))
        except Exception:
            pass
    return to_bytes(text)


def signed_mutation(
    base: dict[str, object], payload_type: str, signer: Signer
) -> st.SearchStrategy[bytes]:
    """An envelope, *validly signed* by ``signer``, over a mutated ``base``.

    The signature verifies, so the mutation reaches the schema and the checks
    after it.
    """
    return st.builds(
        lambda text, canonical: sign_envelope(
            payload_type, _canonical_or_raw(text, canonical), signer
        ).to_json(),
        mutated_text(base),
        st.booleans(),
    )


def expect_only(
    families: tuple[type[BaseException], ...], fn: Callable[..., object], *args: Any, **kw: Any
) -> object:
    """Call ``fn``; any exception outside ``families`` propagates and fails the test.

    A typed error must also carry a code and a message that can be printed
    (a lone surrogate in it would crash the CLI that reports it).
    """
    name = getattr(fn, "__name__", "call")
    try:
        out = fn(*args, **kw)
    except families as exc:
        caught: BaseException = exc
    else:
        event(f"{name}: accepted")
        return out
    event(f"{name}: {type(caught).__name__}")
    code = getattr(caught, "code", None)
    assert isinstance(code, str), f"{type(caught).__name__} has no code"
    assert code
    str(caught).encode("utf-8")
    return caught


# --- fixtures of valid documents ------------------------------------------------

KEYS = make_keys()
GRANT_ENVELOPE = signed(good_grant(KEYS.authority.key_id), KEYS.authority)
GRANT_ENVELOPE_DOC = json.loads(GRANT_ENVELOPE.to_json())
GRANT_DOC = json.loads(GRANT_ENVELOPE.payload)
EXEC = "default/wf-approve/run-1"
STATEMENT_DOC: dict[str, object] = {
    "_type": "https://in-toto.io/Statement/v1",
    "subject": [{"name": "arguments", "digest": {"sha256": "ab" * 32}}],
    "predicateType": "https://ecp.dev/evidence/v1",
    "predicate": {"k": [1, "v", None]},
}


@cache
def _decision() -> Decision:
    bundle = PolicyBundle.load(EXAMPLE_BUNDLE)
    return bundle.evaluate(
        PolicyRequest(
            action="payout",
            initiator="alice",
            arguments={"amount": 250_000, "currency": "EUR", "recipient": "acme"},
            purpose="contract",
        )
    )


@cache
def _approval() -> Envelope:
    return sign_approval(
        _decision(),
        execution=EXEC,
        approver="carol",
        signer=KEYS.carol,
        clock=FixedClock(T0),
        ttl=timedelta(minutes=15),
    )


def _store_doc() -> dict[str, object]:
    store = KEYS.trust.with_key(
        TrustedKey.create(
            KEYS.mallory.public_key,
            [KeyRole.APPROVER, KeyRole.WORKER],
            name="windowed",
            not_before=T0 - timedelta(days=1),
            not_after=T0 + timedelta(days=1),
        )
    ).revoked(KEYS.dave.key_id, T0)
    doc: dict[str, object] = json.loads(store.to_json())
    return doc


STORE_DOC = _store_doc()


def _verify_grant(data: bytes) -> object:
    return verify_grant(
        data,
        trust=KEYS.trust,
        expected=good_expected(),
        clock=FixedClock(T0),
        replay=InMemoryReplayGuard(),
    )


# --- the attacks, reproduced ----------------------------------------------------


@pytest.mark.parametrize("bad_type", [[], ["https://in-toto.io/Statement/v1"], {}, {"a": 1}])
def test_statement_type_that_is_unhashable_is_a_statement_error(bad_type: object) -> None:
    # Was: TypeError: unhashable type: 'list'.
    doc = {**STATEMENT_DOC, "_type": bad_type}
    with pytest.raises(StatementError):
        parse_statement(json.dumps(doc))


def test_grant_header_of_5000_brackets_is_a_malformed_envelope() -> None:
    with pytest.raises(MalformedEnvelopeError):
        Envelope.from_json(b"[" * 5000)
    with pytest.raises(MalformedEnvelopeError):
        _verify_grant(b"[" * 5000)
    with pytest.raises(CanonicalizationError):
        parse_json_strict("[" * 5000)


def test_lone_surrogate_in_an_approval_is_typed() -> None:
    # Was: UnicodeEncodeError from ``Envelope.from_json`` (the update
    # validator receives the approval as text).
    text = _approval().to_json().decode()
    for bad in (
        text.replace('"payloadType"', '"x\ud800":"","payloadType"'),
        text.replace('"keyid":"', '"keyid":"\ud800'),
        text[:-1] + "\ud800}",
    ):
        with pytest.raises(MalformedEnvelopeError):
            check_approval(bad, decision=_decision(), execution=EXEC, trust=KEYS.trust, at=T0)
    # An escaped lone surrogate in the signed payload: refused, typed.
    doc = {**json.loads(_approval().payload), "comment": "\ud800"}
    env = sign_envelope(APPROVAL_PAYLOAD_TYPE, json.dumps(doc).encode(), KEYS.carol)
    with pytest.raises(AuthorityError):
        check_approval(env.to_json(), decision=_decision(), execution=EXEC, trust=KEYS.trust, at=T0)
    # An escaped lone surrogate in the key id: the message must stay printable.
    env_doc = _approval().to_dict()
    env_doc["signatures"] = [{"keyid": "\ud800", "sig": "AA=="}]
    with pytest.raises(MalformedEnvelopeError) as info:
        check_approval(
            json.dumps(env_doc).encode(),
            decision=_decision(),
            execution=EXEC,
            trust=KEYS.trust,
            at=T0,
        )
    str(info.value).encode("utf-8")


@pytest.mark.parametrize(
    "field", ["comment", "approver", "execution"], ids=["comment", "approver", "execution"]
)
def test_signing_an_approval_with_a_surrogate_is_typed(field: str) -> None:
    # Was: pydantic ValidationError from the Approval constructor.
    args: dict[str, Any] = {"execution": EXEC, "approver": "carol", "comment": "", field: "\ud800"}
    with pytest.raises(ApprovalSchemaError):
        sign_approval(
            _decision(),
            signer=KEYS.carol,
            clock=FixedClock(T0),
            ttl=timedelta(minutes=5),
            **args,
        )


@pytest.mark.parametrize(
    "text",
    ['"\\ud800"', '{"\\udfff":1}', '["a\\ud83d"]', '"\ud800"', "1e400", "[-1e400]"],
    ids=["escaped", "escaped-key", "half-pair", "raw", "overflow", "negative-overflow"],
)
def test_strict_parse_refuses_what_no_canonical_form_has(text: str) -> None:
    with pytest.raises(CanonicalizationError):
        parse_json_strict(text)


def test_strict_parse_keeps_escaped_pairs_and_escaped_backslashes() -> None:
    assert parse_json_strict('"\\ud83d\\ude02"') == "\U0001f602"
    assert parse_json_strict('"\\\\ud800"') == "\\ud800"


def test_canonical_json_of_surrogates_is_a_canonicalization_error() -> None:
    for value in ("\ud800", {"\ud800": 1}, ["\udfff"]):
        with pytest.raises(CanonicalizationError):
            canonical_json(value)


def test_truststore_with_a_non_string_name_is_refused() -> None:
    doc = copy.deepcopy(STORE_DOC)
    doc["keys"][0]["name"] = ["x"]  # type: ignore[index]
    with pytest.raises(TrustStoreError):
        TrustStore.from_json(json.dumps(doc).encode(), "fuzz")


# --- fuzzing, one parser per test -----------------------------------------------


@FUZZ
@given(data=st.one_of(any_input, mutated_json(STATEMENT_DOC)))
def test_fuzz_canonical_parse(data: str | bytes) -> None:
    value = expect_only((CanonicalizationError,), parse_json_strict, data)
    if not isinstance(value, CanonicalizationError):
        expect_only((CanonicalizationError,), canonical_json, value)


@FUZZ
@given(value=json_values)
def test_fuzz_canonical_encode(value: object) -> None:
    out = expect_only((CanonicalizationError,), canonical_json, value)
    if isinstance(out, bytes):
        # Whatever encodes parses back strictly. Re-encoding gives the same
        # bytes, except that an integral double >= 2**53 comes back as a
        # Python int, which RFC 8785 then refuses (typed, like any refusal).
        back = parse_json_strict(out)
        again = expect_only((CanonicalizationError,), canonical_json, back)
        assert again == out or isinstance(again, CanonicalizationError)


def test_canonical_encode_of_deep_python_values() -> None:
    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(CanonicalizationError):
        canonical_json(deep)


@FUZZ
@given(data=st.one_of(any_input, mutated_json(GRANT_ENVELOPE_DOC)))
def test_fuzz_dsse_envelope(data: str | bytes) -> None:
    env = expect_only((MalformedEnvelopeError,), Envelope.from_json, data)
    if isinstance(env, Envelope):
        expect_only(
            (AuthorityError,),
            verify_envelope,
            env,
            payload_type=[GRANT_PAYLOAD_TYPE, env.payload_type],
            trust=KEYS.trust,
            role=KeyRole.AUTHORITY,
            at=T0,
        )
        assert Envelope.from_json(env.to_json(), max_bytes=1 << 20) == env


@FUZZ
@given(
    data=st.one_of(
        any_input,
        mutated_json(GRANT_ENVELOPE_DOC),
        signed_mutation(GRANT_DOC, GRANT_PAYLOAD_TYPE, KEYS.authority),
    )
)
def test_fuzz_grant_header(data: str | bytes) -> None:
    raw = data if isinstance(data, bytes) else to_bytes(data)
    expect_only((AuthorityError,), _verify_grant, raw)


@FUZZ
@given(
    data=st.one_of(
        any_input,
        mutated_json(json.loads(_approval().to_json())),
        signed_mutation(json.loads(_approval().payload), APPROVAL_PAYLOAD_TYPE, KEYS.carol),
    )
)
def test_fuzz_approval(data: str | bytes) -> None:
    expect_only(
        (AuthorityError,),
        check_approval,
        data,
        decision=_decision(),
        execution=EXEC,
        trust=KEYS.trust,
        at=T0,
    )
    if isinstance(data, bytes):
        expect_only(
            (AuthorityError,),
            verify_approvals,
            [data],
            _decision(),
            KEYS.trust,
            FixedClock(T0),
            execution=EXEC,
        )


@FUZZ
@given(comment=nasty_text, approver=nasty_text, execution=nasty_text)
def test_fuzz_sign_approval(comment: str, approver: str, execution: str) -> None:
    env = expect_only(
        (AuthorityError,),
        sign_approval,
        _decision(),
        execution=execution,
        approver=approver,
        signer=KEYS.carol,
        clock=FixedClock(T0),
        ttl=timedelta(minutes=5),
        comment=comment,
    )
    if isinstance(env, Envelope):
        expect_only(
            (AuthorityError,),
            check_approval,
            env,
            decision=_decision(),
            execution=execution,
            trust=KEYS.trust,
            at=T0,
        )


@FUZZ
@given(
    data=st.one_of(
        any_input,
        mutated_json(STATEMENT_DOC),
        mutated_json({**STATEMENT_DOC, "_type": "https://in-toto.io/Statement/v0.1"}),
    )
)
def test_fuzz_intoto_statement(data: str | bytes) -> None:
    stmt = expect_only((StatementError,), parse_statement, data)
    if not isinstance(stmt, StatementError):
        stmt.to_dict()  # type: ignore[union-attr]


@FUZZ
@given(data=st.one_of(any_input, mutated_json(STORE_DOC)))
def test_fuzz_truststore(data: str | bytes) -> None:
    raw = data if isinstance(data, bytes) else to_bytes(data)
    store = expect_only((TrustStoreError,), TrustStore.from_json, raw, "fuzz")
    if isinstance(store, TrustStore):
        for key in store:
            for role in KeyRole:
                expect_only((AuthorityError,), store.require, key.key_id, role=role, at=T0)
        again = TrustStore.from_json(store.to_json(), "round trip")
        assert [k.to_dict() for k in again] == [k.to_dict() for k in store]
    # Text input parses the same way as its bytes.
    if isinstance(data, str):
        expect_only((TrustStoreError,), TrustStore.from_json, data, "fuzz")  # type: ignore[arg-type]
