"""Helpers for the authority tests: constants, good grants and calls, key sets."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import ecp
from ecp.authority._canonical import digest_bytes
from ecp.authority._dsse import Envelope, sign_envelope
from ecp.authority._grant import GRANT_PAYLOAD_TYPE, CallBinding, Grant, GrantId, GrantScope
from ecp.authority._keys import Ed25519FileSigner, KeyId
from ecp.authority._policy import DecisionId
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.authority._verify import ExpectedCall

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
EXAMPLE_BUNDLE = Path(ecp.__file__).resolve().parent / "examples" / "policy"
ENV_DIGEST = digest_bytes(b"worker environment")
POLICY_DIGEST = digest_bytes(b"policy bundle")
DECISION_ID = DecisionId(digest_bytes(b"decision"))
ARGS_DIGEST = digest_bytes(b'[["json",{"amount":250}]]')


@dataclass
class Keys:
    authority: Ed25519FileSigner
    carol: Ed25519FileSigner
    dave: Ed25519FileSigner
    mallory: Ed25519FileSigner
    log: Ed25519FileSigner
    worker: Ed25519FileSigner
    trust: TrustStore


def make_keys() -> Keys:
    k = Keys(*(Ed25519FileSigner.generate() for _ in range(6)), trust=TrustStore())
    k.trust = TrustStore(
        [
            TrustedKey.create(k.authority.public_key, [KeyRole.AUTHORITY], name="authority"),
            TrustedKey.create(k.carol.public_key, [KeyRole.APPROVER], name="carol"),
            TrustedKey.create(k.dave.public_key, [KeyRole.APPROVER], name="dave"),
            TrustedKey.create(k.mallory.public_key, [KeyRole.APPROVER], name="mallory"),
            TrustedKey.create(k.log.public_key, [KeyRole.LOG], name="log"),
            TrustedKey.create(k.worker.public_key, [KeyRole.WORKER], name="worker"),
        ]
    )
    return k


def good_call() -> CallBinding:
    return CallBinding(
        activity_type="payout",
        args_digest=ARGS_DIGEST,
        namespace="default",
        workflow_id="wf-1",
        run_id="run-1",
        activity_id="act-1",
    )


def good_grant(issuer: KeyId, **changes: object) -> Grant:
    g = Grant(
        grant_id=GrantId("7f1c7a43-1d1f-4a58-9b7e-0d3c2a9b6e10"),
        call=good_call(),
        initiator="alice",
        policy_digest=POLICY_DIGEST,
        decision_id=DECISION_ID,
        environment_digest=ENV_DIGEST,
        scope=GrantScope(max_attempts=2, constraints={"max_amount": 1000}),
        issued_at=T0 - timedelta(minutes=1),
        not_before=T0 - timedelta(minutes=1),
        expires_at=T0 + timedelta(minutes=10),
        issuer=issuer,
    )
    return g.model_copy(update=changes)


def good_expected(**changes: object) -> ExpectedCall:
    e = ExpectedCall(
        activity_type="payout",
        args_digest=ARGS_DIGEST,
        namespace="default",
        workflow_id="wf-1",
        run_id="run-1",
        activity_id="act-1",
        environment_digest=ENV_DIGEST,
        attempt=1,
        initiator="alice",
        policy_digest=POLICY_DIGEST,
        decision_id=DECISION_ID,
    )
    return replace(e, **changes)  # type: ignore[arg-type]


def signed(grant: Grant, signer: Ed25519FileSigner) -> Envelope:
    return sign_envelope(GRANT_PAYLOAD_TYPE, grant.to_payload(), signer)
