"""Outcome unknown: every use taken by attempts that never ended.

An attempt that took a use and whose end the gate never saw belongs to a
worker that died while the body may have been running. Once every use is
taken, the next attempt is refused as ``outcome_unknown`` (never run again,
flagged for a person); with every attempt ended it is plain exhaustion.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.converter import default as default_converter

from ecp.authority._calldigest import digest_values
from ecp.authority._canonical import canonical_json
from ecp.authority._clock import FixedClock
from ecp.authority._dsse import sign_envelope
from ecp.authority._grant import GRANT_PAYLOAD_TYPE, GrantScope
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._replay import InMemoryReplayGuard, ReplayGuard, SqlReplayGuard, request_key
from ecp.authority._verify import VerifiedGrant, verify_grant
from ecp.authority.errors import (
    GrantAttemptsExhaustedError,
    GrantExpiredError,
    OutcomeUnknownError,
    UnknownKeyError,
)
from tests.authority.support import T0, Keys, good_expected, good_grant
from tests.authority.test_replay import pg_url  # noqa: F401 - the session fixture

ARGS = {"amount": 250, "currency": "EUR", "recipient": "acme"}


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def guard(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReplayGuard]:
    if request.param == "memory":
        yield InMemoryReplayGuard()
        return
    url = (
        f"sqlite:///{tmp_path / 'replay.db'}"
        if request.param == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    g = SqlReplayGuard(url)
    try:
        yield g
    finally:
        g.dispose()


def _req() -> str:
    return request_key("default", f"wf-{uuid.uuid4()}", "change", "execute:change")


# Leases already expired, so a later attempt may take over at once (as it
# does once Temporal's start-to-close timeout of a dead attempt passed).
PAST = datetime.now(UTC) - timedelta(seconds=1)
SOON = datetime.now(UTC) + timedelta(minutes=5)


def test_one_use_taken_by_a_dead_attempt_is_unknown(guard: ReplayGuard) -> None:
    req, gid = _req(), str(uuid.uuid4())
    guard.admit([req], gid, 1, PAST, 1)  # attempt 1's worker dies: no end
    with pytest.raises(OutcomeUnknownError) as info:
        guard.admit([req], gid, 2, SOON, 1)
    assert info.value.attempts == (1,)
    assert info.value.code == "outcome_unknown"
    assert not info.value.retryable
    msg = str(info.value)
    assert "\n" not in msg
    assert "the body of attempt 1 may have run; check the side effect before re-running" in msg
    # Refused again, the same way, and nothing was recorded for attempt 2.
    with pytest.raises(OutcomeUnknownError):
        guard.admit([req], gid, 3, SOON, 1)


def test_ended_attempts_exhaust_plainly(guard: ReplayGuard) -> None:
    req, gid = _req(), str(uuid.uuid4())
    for attempt in (1, 2):
        guard.admit([req], gid, attempt, PAST, 2)
        guard.end(gid, attempt)  # the body raised; the gate saw it end
    with pytest.raises(GrantAttemptsExhaustedError) as info:
        guard.admit([req], gid, 3, SOON, 2)
    assert type(info.value) is GrantAttemptsExhaustedError


def test_an_attempt_after_a_completion_is_unknown_naming_it(guard: ReplayGuard) -> None:
    # Attempt 1 completed (the gate closed the grant, then ended it), and yet
    # attempt 2 came: Temporal never received the completion. The body ran;
    # what the caller got is lost; it is not run again.
    req, gid = _req(), str(uuid.uuid4())
    guard.admit([req], gid, 1, PAST, 3)
    guard.close(gid, 3)
    guard.end(gid, 1, completed=True)
    with pytest.raises(OutcomeUnknownError) as info:
        guard.admit([req], gid, 2, SOON, 3)
    assert (info.value.attempts, info.value.completed) == ((), (1,))
    msg = str(info.value)
    assert "attempt 1 completed but its completion never reached Temporal" in msg
    assert "check the side effect before re-running" in msg


def test_only_the_attempts_that_never_ended_are_named(guard: ReplayGuard) -> None:
    req, gid = _req(), str(uuid.uuid4())
    guard.admit([req], gid, 1, PAST, 2)
    guard.end(gid, 1)  # failed, and the gate saw it
    guard.admit([req], gid, 2, PAST, 2)  # killed inside the body
    with pytest.raises(OutcomeUnknownError) as info:
        guard.admit([req], gid, 3, SOON, 2)
    assert info.value.attempts == (2,)
    assert "attempt 2 may have run" in str(info.value)


def test_uses_left_run_again_at_least_once(guard: ReplayGuard) -> None:
    # Two uses: a dead attempt leaves one, and the retry is admitted (the body
    # runs again: at-least-once, only where the policy gave several uses).
    req, gid = _req(), str(uuid.uuid4())
    guard.admit([req], gid, 1, PAST, 2)
    guard.admit([req], gid, 2, SOON, 2)


# --- through the verifier: only a verified grant carries the unknown -------


def _envelope(signer: Ed25519FileSigner, keys: Keys) -> bytes:
    digest = digest_values([ARGS], default_converter().payload_converter)
    g = good_grant(
        keys.authority.key_id,
        call=good_grant(keys.authority.key_id).call.model_copy(update={"args_digest": digest}),
        scope=GrantScope(max_attempts=1, execute_timeout_seconds=60),
    )
    doc = g.model_dump(mode="json")
    return sign_envelope(GRANT_PAYLOAD_TYPE, canonical_json(doc), signer).to_json()


def test_the_verifier_attaches_the_grant_it_verified(keys: Keys) -> None:
    replay = InMemoryReplayGuard(clock=FixedClock(T0 + timedelta(minutes=2)))
    expected = good_expected(
        args_digest=digest_values([ARGS], default_converter().payload_converter)
    )
    envelope = _envelope(keys.authority, keys)
    first = verify_grant(
        envelope, trust=keys.trust, expected=expected, clock=FixedClock(T0), replay=replay
    )
    # Attempt 1 never ends; its 60 s lease has expired two minutes later.
    again = FixedClock(T0 + timedelta(minutes=2))
    with pytest.raises(OutcomeUnknownError) as info:
        verify_grant(
            envelope,
            trust=keys.trust,
            expected=replace(expected, attempt=2),
            clock=again,
            replay=replay,
        )
    verified = info.value.verified
    assert isinstance(verified, VerifiedGrant)
    assert verified.grant.grant_id == first.grant.grant_id
    # The same grant signed by a key nobody trusts, for the same grant id:
    # refused before single use, so it can never produce an unknown record.
    forged = _envelope(Ed25519FileSigner.generate(), keys)
    with pytest.raises(UnknownKeyError) as refused:
        verify_grant(
            forged,
            trust=keys.trust,
            expected=replace(expected, attempt=3),
            clock=again,
            replay=replay,
        )
    assert not isinstance(refused.value, OutcomeUnknownError)


def test_an_expired_grant_under_which_a_body_may_have_run_is_unknown(keys: Keys) -> None:
    # Attempt 1 is killed inside the body; the retry comes after the grant's
    # expiry (T0 + 10 min). A denial would say "never ran": it is unknown.
    replay = InMemoryReplayGuard(clock=FixedClock(T0 + timedelta(minutes=11)))
    expected = good_expected(
        args_digest=digest_values([ARGS], default_converter().payload_converter)
    )
    envelope = _envelope(keys.authority, keys)
    verify_grant(envelope, trust=keys.trust, expected=expected, clock=FixedClock(T0), replay=replay)
    late = FixedClock(T0 + timedelta(minutes=11))
    with pytest.raises(OutcomeUnknownError) as info:
        verify_grant(
            envelope,
            trust=keys.trust,
            expected=replace(expected, attempt=2),
            clock=late,
            replay=replay,
        )
    assert info.value.attempts == (1,)
    assert isinstance(info.value.verified, VerifiedGrant)
    assert "expired and attempt(s) 1 never ended: the body of attempt 1 may have run" in str(
        info.value
    )
    # Once attempt 1 is seen to end (its body raised), expiry is a plain denial.
    replay.end(info.value.verified.grant.grant_id, 1)
    with pytest.raises(GrantExpiredError):
        verify_grant(
            envelope,
            trust=keys.trust,
            expected=replace(expected, attempt=3),
            clock=late,
            replay=replay,
        )
    # A forged grant claiming the same id is refused before any of this.
    with pytest.raises(UnknownKeyError):
        verify_grant(
            _envelope(Ed25519FileSigner.generate(), keys),
            trust=keys.trust,
            expected=replace(expected, attempt=4),
            clock=late,
            replay=replay,
        )


def test_an_expired_grant_never_used_is_a_denial(keys: Keys) -> None:
    expected = good_expected(
        args_digest=digest_values([ARGS], default_converter().payload_converter)
    )
    with pytest.raises(GrantExpiredError) as info:
        verify_grant(
            _envelope(keys.authority, keys),
            trust=keys.trust,
            expected=expected,
            clock=FixedClock(T0 + timedelta(minutes=11)),
            replay=InMemoryReplayGuard(),
        )
    assert not isinstance(info.value, OutcomeUnknownError)


def test_the_sql_store_names_unfinished_attempts(guard: ReplayGuard) -> None:
    req, gid = _req(), str(uuid.uuid4())
    assert guard.unfinished(gid) == ((), ())
    guard.admit([req], gid, 1, PAST, 3)
    guard.end(gid, 1)  # failed
    guard.admit([req], gid, 2, PAST, 3)  # killed
    assert guard.unfinished(gid) == ((2,), ())
    guard.admit([req], gid, 3, PAST, 3)
    guard.end(gid, 3, completed=True)
    assert guard.unfinished(gid) == ((2,), (3,))
