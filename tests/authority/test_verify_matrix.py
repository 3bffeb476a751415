"""Fail-closed matrix: every bad grant is refused with its own specific error class."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import pytest
from temporalio.converter import default as default_converter

from ecp.authority._calldigest import digest_values
from ecp.authority._canonical import canonical_json, digest_bytes
from ecp.authority._clock import FixedClock
from ecp.authority._dsse import Envelope, EnvelopeSignature, pae, sign_envelope
from ecp.authority._grant import GRANT_MAX_BYTES, GRANT_PAYLOAD_TYPE
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._replay import InMemoryReplayGuard
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.authority._verify import ExpectedCall, VerifiedGrant, verify_grant
from ecp.authority.errors import (
    ActivityMismatchError,
    ActivityTypeMismatchError,
    ArgumentsMismatchError,
    AttemptInProgressError,
    AuthorityError,
    ClockError,
    DecisionMismatchError,
    DuplicateKeyEnvelopeError,
    EnvelopeTooLargeError,
    EnvironmentMismatchError,
    GrantAttemptsExhaustedError,
    GrantExpiredError,
    GrantNotYetValidError,
    GrantReplayedError,
    GrantSchemaError,
    InitiatorMismatchError,
    KeyExpiredError,
    KeyRoleError,
    MalformedBase64Error,
    MalformedEnvelopeError,
    MalformedSignatureError,
    NamespaceMismatchError,
    NonCanonicalPayloadError,
    PayloadTypeError,
    PolicyDigestMismatchError,
    RevokedKeyError,
    RunMismatchError,
    SignatureInvalidError,
    UnknownKeyError,
    UnknownSchemaVersionError,
    WorkflowMismatchError,
)
from tests.authority.support import T0, Keys, good_expected, good_grant, signed

ARGS = {"amount": 250, "currency": "EUR", "recipient": "acme"}


def _args_digest(args: dict[str, object]) -> str:
    return digest_values([args], default_converter().payload_converter)


@dataclass
class Case:
    envelope: bytes
    trust: TrustStore
    expected: ExpectedCall = field(
        default_factory=lambda: good_expected(args_digest=_args_digest(ARGS))
    )
    replay: InMemoryReplayGuard = field(default_factory=InMemoryReplayGuard)
    clock: Callable[[], datetime] = field(default_factory=lambda: FixedClock(T0))


def _grant_doc(keys: Keys, **changes: object) -> dict[str, object]:
    g = good_grant(
        keys.authority.key_id,
        call=good_grant(keys.authority.key_id).call.model_copy(
            update={"args_digest": _args_digest(ARGS)}
        ),
    )
    doc: dict[str, object] = g.model_dump(mode="json")
    doc.update(changes)
    return doc


def _sign_doc(
    doc: object, signer: Ed25519FileSigner, payload_type: str = GRANT_PAYLOAD_TYPE
) -> bytes:
    return sign_envelope(payload_type, canonical_json(doc), signer).to_json()


def _good(keys: Keys) -> bytes:
    return _sign_doc(_grant_doc(keys), keys.authority)


def _with_sig(envelope: bytes, sig: bytes) -> bytes:
    env = Envelope.from_json(envelope)
    return Envelope(
        env.payload_type, env.payload, (EnvelopeSignature(env.signatures[0].keyid, sig),)
    ).to_json()


def _trust_with(keys: Keys, entry: TrustedKey) -> TrustStore:
    return keys.trust.with_key(entry)


def _reserialised(keys: Keys) -> bytes:
    doc = json.loads(_good(keys))
    payload = base64.b64decode(doc["payload"])
    doc["payload"] = base64.b64encode(json.dumps(json.loads(payload), indent=2).encode()).decode()
    return json.dumps(doc).encode()


def _signed_raw_payload(keys: Keys, payload: bytes) -> bytes:
    return sign_envelope(GRANT_PAYLOAD_TYPE, payload, keys.authority).to_json()


def _used_once(keys: Keys) -> Case:
    case = Case(_good(keys), keys.trust)
    verify_grant(
        case.envelope,
        trust=case.trust,
        expected=case.expected,
        clock=case.clock,
        replay=case.replay,
    )
    return case


def _all_uses_taken(keys: Keys) -> Case:
    """Attempts 1 and 2 ran the body; the grant allows 2 uses, so attempt 3 is refused."""
    case = Case(_good(keys), keys.trust, _expect(attempt=3))
    for attempt in (1, 2):
        used = verify_grant(
            case.envelope,
            trust=case.trust,
            expected=_expect(attempt=attempt),
            clock=case.clock,
            replay=case.replay,
        )
        case.replay.end(used.grant.grant_id, attempt)  # the body finished
    return case


def _expect(**changes: object) -> ExpectedCall:
    return replace(good_expected(args_digest=_args_digest(ARGS)), **changes)  # type: ignore[arg-type]


MATRIX: list[tuple[str, Callable[[Keys], Case], type[AuthorityError]]] = [
    (
        "forged-signature",
        lambda k: Case(_with_sig(_good(k), bytes(range(64))), k.trust),
        SignatureInvalidError,
    ),
    (
        "unknown-key",
        lambda k: Case(_sign_doc(_grant_doc(k), Ed25519FileSigner.generate()), k.trust),
        UnknownKeyError,
    ),
    (
        "revoked-key",
        lambda k: Case(_good(k), k.trust.revoked(k.authority.key_id, T0 - timedelta(days=1))),
        RevokedKeyError,
    ),
    (
        "key-outside-validity",
        lambda k: Case(
            _good(k),
            _trust_with(
                k,
                TrustedKey.create(
                    k.authority.public_key,
                    [KeyRole.AUTHORITY],
                    name="authority",
                    not_before=T0 - timedelta(days=30),
                    not_after=T0 - timedelta(days=1),
                ),
            ),
        ),
        KeyExpiredError,
    ),
    (
        "key-not-yet-valid",
        lambda k: Case(
            _good(k),
            _trust_with(
                k,
                TrustedKey.create(
                    k.authority.public_key, [KeyRole.AUTHORITY], not_before=T0 + timedelta(days=1)
                ),
            ),
        ),
        KeyExpiredError,
    ),
    (
        "key-without-authority-role",
        lambda k: Case(_sign_doc(_grant_doc(k, issuer=k.carol.key_id), k.carol), k.trust),
        KeyRoleError,
    ),
    (
        "truncated-signature",
        lambda k: Case(
            _with_sig(_good(k), Envelope.from_json(_good(k)).signatures[0].sig[:40]), k.trust
        ),
        MalformedSignatureError,
    ),
    (
        "wrong-payload-type",
        lambda k: Case(_sign_doc(_grant_doc(k), k.authority, "application/json"), k.trust),
        PayloadTypeError,
    ),
    (
        "payload-reserialised-after-signing",
        lambda k: Case(_reserialised(k), k.trust),
        SignatureInvalidError,
    ),
    (
        "signed-non-canonical-payload",
        lambda k: Case(
            _signed_raw_payload(k, json.dumps(_grant_doc(k), indent=1).encode()), k.trust
        ),
        NonCanonicalPayloadError,
    ),
    (
        "signed-payload-duplicate-keys",
        lambda k: Case(
            _signed_raw_payload(k, canonical_json(_grant_doc(k))[:-1] + b',"initiator":"mallory"}'),
            k.trust,
        ),
        NonCanonicalPayloadError,
    ),
    (
        "unknown-schema-version",
        lambda k: Case(
            _sign_doc(_grant_doc(k, schema_version="ecp.grant/v2"), k.authority), k.trust
        ),
        UnknownSchemaVersionError,
    ),
    (
        "extra-field",
        lambda k: Case(_sign_doc(_grant_doc(k, admin=True), k.authority), k.trust),
        GrantSchemaError,
    ),
    (
        "missing-field",
        lambda k: Case(
            _sign_doc({a: b for a, b in _grant_doc(k).items() if a != "expires_at"}, k.authority),
            k.trust,
        ),
        GrantSchemaError,
    ),
    (
        "mistyped-field",
        lambda k: Case(
            _sign_doc(_grant_doc(k, scope={"max_attempts": "2", "constraints": {}}), k.authority),
            k.trust,
        ),
        GrantSchemaError,
    ),
    (
        "issuer-is-not-signer",
        lambda k: Case(_sign_doc(_grant_doc(k, issuer=k.log.key_id), k.authority), k.trust),
        GrantSchemaError,
    ),
    (
        "expired",
        lambda k: Case(
            _sign_doc(_grant_doc(k, expires_at="2030-01-01T12:00:00Z"), k.authority), k.trust
        ),
        GrantExpiredError,
    ),
    (
        "not-yet-valid",
        lambda k: Case(
            # Beyond the 30 s clock-skew leeway on not-before.
            _sign_doc(_grant_doc(k, not_before="2030-01-01T12:00:31Z"), k.authority),
            k.trust,
        ),
        GrantNotYetValidError,
    ),
    (
        "activity-type-swapped",
        lambda k: Case(_good(k), k.trust, _expect(activity_type="change_infrastructure")),
        ActivityTypeMismatchError,
    ),
    (
        "args-changed-by-one-byte",
        lambda k: Case(
            _good(k), k.trust, _expect(args_digest=_args_digest({**ARGS, "recipient": "acmf"}))
        ),
        ArgumentsMismatchError,
    ),
    (
        "other-namespace",
        lambda k: Case(_good(k), k.trust, _expect(namespace="prod")),
        NamespaceMismatchError,
    ),
    (
        "other-workflow-id",
        lambda k: Case(_good(k), k.trust, _expect(workflow_id="wf-2")),
        WorkflowMismatchError,
    ),
    ("other-run-id", lambda k: Case(_good(k), k.trust, _expect(run_id="run-2")), RunMismatchError),
    (
        "other-activity-id",
        lambda k: Case(_good(k), k.trust, _expect(activity_id="act-2")),
        ActivityMismatchError,
    ),
    (
        "other-initiator",
        lambda k: Case(_good(k), k.trust, _expect(initiator="mallory")),
        InitiatorMismatchError,
    ),
    (
        "other-policy-digest",
        lambda k: Case(_good(k), k.trust, _expect(policy_digest=digest_bytes(b"other"))),
        PolicyDigestMismatchError,
    ),
    (
        "policy-not-accepted",
        lambda k: Case(
            _good(k), k.trust, _expect(accepted_policy_digests=frozenset({digest_bytes(b"other")}))
        ),
        PolicyDigestMismatchError,
    ),
    (
        "other-decision-id",
        lambda k: Case(_good(k), k.trust, _expect(decision_id=digest_bytes(b"other"))),
        DecisionMismatchError,
    ),
    (
        "other-environment-digest",
        lambda k: Case(_good(k), k.trust, _expect(environment_digest=digest_bytes(b"other"))),
        EnvironmentMismatchError,
    ),
    ("grant-used-twice", _used_once, GrantReplayedError),
    ("attempts-exhausted", _all_uses_taken, GrantAttemptsExhaustedError),
    (
        "oversized-envelope",
        lambda k: Case(b'{"payload":"' + b"A" * GRANT_MAX_BYTES + b'"}', k.trust),
        EnvelopeTooLargeError,
    ),
    (
        "malformed-base64",
        lambda k: Case(_good(k).replace(b'"payload":"', b'"payload":"!!', 1), k.trust),
        MalformedBase64Error,
    ),
    (
        "duplicate-json-keys",
        lambda k: Case(_good(k)[:-1] + b',"payloadType":"application/json"}', k.trust),
        DuplicateKeyEnvelopeError,
    ),
    ("not-json", lambda k: Case(b"\x00grant", k.trust), MalformedEnvelopeError),
    (
        "no-signatures",
        lambda k: Case(json.dumps({**json.loads(_good(k)), "signatures": []}).encode(), k.trust),
        MalformedEnvelopeError,
    ),
    (
        "naive-clock",
        lambda k: Case(_good(k), k.trust, clock=lambda: T0.replace(tzinfo=None)),
        ClockError,
    ),
]


def test_matrix_is_large_and_distinct() -> None:
    assert len(MATRIX) >= 20
    assert len({name for name, _, _ in MATRIX}) == len(MATRIX)
    assert len({cls for _, _, cls in MATRIX}) >= 25


@pytest.mark.parametrize(("name", "build", "error"), MATRIX, ids=[m[0] for m in MATRIX])
def test_bad_grant_is_refused(
    keys: Keys, name: str, build: Callable[[Keys], Case], error: type[AuthorityError]
) -> None:
    case = build(keys)
    with pytest.raises(error) as info:
        verify_grant(
            case.envelope,
            trust=case.trust,
            expected=case.expected,
            clock=case.clock,
            replay=case.replay,
        )
    # Exactly that class, not merely a parent: each denial names its own reason.
    assert type(info.value) is error, f"{name}: got {type(info.value).__name__}"
    assert info.value.code


def test_good_grant_verifies_and_binds_attempts(keys: Keys) -> None:
    envelope = _good(keys)
    replay = InMemoryReplayGuard()
    clock = FixedClock(T0)
    first = verify_grant(envelope, trust=keys.trust, expected=_expect(), clock=clock, replay=replay)
    assert isinstance(first, VerifiedGrant)
    assert first.key.key_id == keys.authority.key_id
    assert first.grant.scope.max_attempts == 2
    assert first.envelope.payload == Envelope.from_json(envelope).payload
    # While attempt 1 may still run, attempt 2 waits (retryably).
    with pytest.raises(AttemptInProgressError):
        verify_grant(
            envelope, trust=keys.trust, expected=_expect(attempt=2), clock=clock, replay=replay
        )
    replay.end(first.grant.grant_id, 1)  # attempt 1's body finished (failed)
    # A Temporal retry carries the same header with the next attempt number.
    verify_grant(
        envelope, trust=keys.trust, expected=_expect(attempt=2), clock=clock, replay=replay
    )
    with pytest.raises(GrantReplayedError):
        verify_grant(
            envelope, trust=keys.trust, expected=_expect(attempt=2), clock=clock, replay=replay
        )


def test_refusal_does_not_burn_the_grant(keys: Keys) -> None:
    envelope = _good(keys)
    replay = InMemoryReplayGuard()
    clock = FixedClock(T0)
    with pytest.raises(EnvironmentMismatchError):
        verify_grant(
            envelope,
            trust=keys.trust,
            expected=_expect(environment_digest=digest_bytes(b"x")),
            clock=clock,
            replay=replay,
        )
    verify_grant(envelope, trust=keys.trust, expected=_expect(), clock=clock, replay=replay)


def test_optional_expectations_are_optional(keys: Keys) -> None:
    loose = _expect(initiator=None, policy_digest=None, decision_id=None)
    verify_grant(
        _good(keys),
        trust=keys.trust,
        expected=loose,
        clock=FixedClock(T0),
        replay=InMemoryReplayGuard(),
    )


def test_standard_helper_envelope_shape(keys: Keys) -> None:
    # The pae used by the signer is the DSSE one: a grant verifies by hand too.
    env = signed(good_grant(keys.authority.key_id), keys.authority)
    keys.authority.public_key.verify(env.signatures[0].sig, pae(env.payload_type, env.payload))


def test_not_before_tolerates_small_clock_skew(keys: Keys) -> None:
    # The authority's clock may run a little ahead of this worker's.
    case = Case(
        _sign_doc(_grant_doc(keys, not_before="2030-01-01T12:00:20Z"), keys.authority), keys.trust
    )
    verified = verify_grant(
        case.envelope,
        trust=case.trust,
        expected=case.expected,
        clock=case.clock,
        replay=case.replay,
    )
    assert verified.grant.not_before.second == 20
