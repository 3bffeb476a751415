"""Property tests: mutated envelopes and grants raise only the project's own errors."""

from __future__ import annotations

import base64
import contextlib
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecp.authority._approval import check_approval
from ecp.authority._canonical import canonical_json
from ecp.authority._clock import FixedClock
from ecp.authority._dsse import Envelope, sign_envelope
from ecp.authority._grant import GRANT_PAYLOAD_TYPE
from ecp.authority._intoto import parse_statement
from ecp.authority._policy import Decision
from ecp.authority._replay import InMemoryReplayGuard
from ecp.authority._verify import verify_grant
from ecp.authority.errors import AuthorityError, VerificationError
from tests.authority.support import T0, good_expected, good_grant, make_keys, signed

KEYS = make_keys()
GOOD = signed(good_grant(KEYS.authority.key_id), KEYS.authority).to_json()
GOOD_DOC = json.loads(canonical_json(good_grant(KEYS.authority.key_id).model_dump(mode="json")))
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def _verify(data: bytes) -> None:
    try:
        verify_grant(
            data,
            trust=KEYS.trust,
            expected=good_expected(),
            clock=FixedClock(T0),
            replay=InMemoryReplayGuard(),
        )
    except VerificationError:
        return
    raise AssertionError("a mutated grant verified")


@SETTINGS
@given(st.data())
def test_byte_mutations_of_a_grant_envelope(data: st.DataObject) -> None:
    raw = bytearray(GOOD)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    if bytes(raw) == GOOD:
        return
    try:
        verify_grant(
            bytes(raw),
            trust=KEYS.trust,
            expected=good_expected(),
            clock=FixedClock(T0),
            replay=InMemoryReplayGuard(),
        )
    except AuthorityError:
        return
    # A mutation that only touches JSON whitespace or the base64 alphabet may still
    # verify, but then it carries the very same signed payload.
    assert Envelope.from_json(bytes(raw)).payload == Envelope.from_json(GOOD).payload


@SETTINGS
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_verify(blob: bytes) -> None:
    _verify(blob)


@SETTINGS
@given(field=st.sampled_from(sorted(GOOD_DOC)), value=json_values)
def test_signed_grants_with_a_field_replaced(field: str, value: object) -> None:
    doc = {**GOOD_DOC, field: value}
    try:
        payload = canonical_json(doc)
    except AuthorityError:
        return
    if payload == canonical_json(GOOD_DOC):
        return
    # Signed by the real authority key: only the schema and binding checks stand in the way.
    envelope = sign_envelope(GRANT_PAYLOAD_TYPE, payload, KEYS.authority).to_json()
    try:
        verify_grant(
            envelope,
            trust=KEYS.trust,
            expected=good_expected(),
            clock=FixedClock(T0),
            replay=InMemoryReplayGuard(),
        )
    except AuthorityError:
        return
    # The real authority signed it, so it may verify, but never with another
    # call, party, policy, environment or issuer than the one expected.
    # ``initiator_auth`` is the authority's own statement of how it
    # established the initiator (bound into the decision through the request
    # digest); the gate has nothing to compare it with. ``request_id`` is the
    # authority's own record of which signed request it honoured: the gate
    # only uses it to let one grant own that request (single use).
    assert field in {
        "grant_id",
        "scope",
        "approvals",
        "issued_at",
        "not_before",
        "expires_at",
        "initiator_auth",
        "request_id",
    }


@SETTINGS
@given(
    doc=st.dictionaries(
        st.sampled_from(["payload", "payloadType", "signatures", "x"]), json_values, max_size=4
    )
)
def test_envelope_shaped_json(doc: dict[str, object]) -> None:
    try:
        text = json.dumps(doc)
    except ValueError:
        return
    try:
        Envelope.from_json(text)
    except AuthorityError:
        return


@SETTINGS
@given(st.binary(max_size=300))
def test_statement_and_decision_parsers(blob: bytes) -> None:
    for parse in (parse_statement, Decision.from_json):
        with contextlib.suppress(AuthorityError):
            parse(blob)


@SETTINGS
@given(st.binary(max_size=200))
def test_approval_parser_only_raises_own_errors(blob: bytes) -> None:
    decision = Decision.model_validate(
        {
            "decision_id": "sha256:" + "0" * 64,
            "effect": "allow_after_approval",
            "action": "payout",
            "initiator": "alice",
            "policy_digest": "sha256:" + "1" * 64,
            "request_digest": "sha256:" + "2" * 64,
            "policy_ids": ["p"],
            "reasons": ["r"],
            "approval": {"role": "finance", "count": 1, "approvers": ["carol"]},
            "scope": {"max_attempts": 1, "constraints": {}},
        }
    )
    env = {
        "payloadType": "application/vnd.ecp.approval.v1+json",
        "payload": base64.b64encode(blob).decode(),
        "signatures": [
            {"keyid": KEYS.carol.key_id, "sig": base64.b64encode(KEYS.carol.sign(blob)).decode()}
        ],
    }
    try:
        check_approval(
            json.dumps(env).encode(),
            decision=decision,
            execution="ns/wf/run",
            trust=KEYS.trust,
            at=T0,
        )
    except AuthorityError:
        return
    raise AssertionError("random bytes made a valid approval")
