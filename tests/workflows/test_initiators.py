"""Authenticated initiators, from the position of whoever may start workflows.

eve has a plain Temporal client and no initiator key; carol holds her own.
Neither can obtain a grant as alice; alice's signed request (or her OpenID
Connect ID token) can. The ledger names a verified identity, or says
"unauthenticated" where a deployment explicitly accepts that.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from temporalio.client import Client
from temporalio.converter import default as default_converter
from temporalio.testing import WorkflowEnvironment

from ecp._keyring import KeyFiles, init_keyring
from ecp._runtime import build_plugin, run_workers
from ecp._settings import Role, Settings
from ecp.activities import examples
from ecp.authority._calldigest import digest_values
from ecp.authority._clock import system_clock
from ecp.authority._initiator import OIDC_PREFIX, sign_request
from ecp.authority._keys import Ed25519FileSigner
from ecp.lineage.ledger._evidence import EvidencePredicate, parse_evidence
from ecp.lineage.ledger._ledger import Ledger
from ecp.workflows._models import GovernedRequest, GovernedResult, TaskQueues
from ecp.workflows._start import start_governed

SMALL = [{"amount": 120, "currency": "EUR", "recipient": "acme"}]
ISSUER = "https://id.example.test"
AUDIENCE = "ecp-tests"


@dataclass
class Deployment:
    client: Client
    settings: Settings
    ledger: Ledger
    keys: KeyFiles
    queues: TaskQueues
    idp_key: rsa.RSAPrivateKey

    async def submit(
        self,
        initiator: str,
        *,
        signer: Ed25519FileSigner | None = None,
        proof: str = "",
        args: list[object] = SMALL,
        wf_id: str | None = None,
    ) -> tuple[str, GovernedResult]:
        wf = wf_id or f"who-{uuid.uuid4().hex[:8]}"
        req = GovernedRequest(
            "payout", args, initiator, "invoice", queues=self.queues, initiator_proof=proof
        )
        handle = await start_governed(self.client, req, workflow_id=wf, signer=signer)
        return wf, await handle.result()

    def evidence(self, wf_id: str) -> list[EvidencePredicate]:
        out = []
        for i in range(self.ledger.head().size):
            p = parse_evidence(self.ledger.entry(i).envelope).predicate
            if p.activity.workflow_id == wf_id:
                out.append(p)
        return out

    def token(self, sub: str, **claims: object) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300}
        body.update(claims)
        return jwt.encode(body, self.idp_key, algorithm="RS256", headers={"kid": "idp-1"})


def _jwks(key: rsa.RSAPrivateKey, path: Path) -> Path:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="idp-1", use="sig", alg="RS256")
    path.write_text(json.dumps({"keys": [jwk]}))
    return path


async def _deploy(
    temporal_env: WorkflowEnvironment, tmp_path: Path, *, allow: bool, policy: Path | None = None
) -> AsyncIterator[Deployment]:
    keys = init_keyring(tmp_path / "keys", initiators=("alice", "carol"))
    idp_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    q = uuid.uuid4().hex[:8]
    settings = Settings(
        home=tmp_path,
        authority_queue=f"a-{q}",
        executor_queue=f"e-{q}",
        database_url=f"sqlite:///{tmp_path / 'ecp.db'}",
        allow_unauthenticated=allow,
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        oidc_jwks_file=_jwks(idp_key, tmp_path / "jwks.json"),
        policy_bundle=policy,
    )
    plugin, ledger = build_plugin(settings, role=Role.ALL)
    client = temporal_env.client
    try:
        async with run_workers(client, settings, plugin, role=Role.ALL):
            yield Deployment(
                client,
                settings,
                ledger,
                keys,
                TaskQueues(settings.authority_queue, settings.executor_queue),
                idp_key,
            )
    finally:
        ledger.close()


@pytest.fixture
async def strict(temporal_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Deployment]:
    async for d in _deploy(temporal_env, tmp_path, allow=False):
        yield d


def _ran(wf_id: str) -> bool:
    return any(e[1] == wf_id for e in examples.EXECUTIONS)


async def test_a_plain_client_cannot_ask_as_alice(strict: Deployment) -> None:
    wf, r = await strict.submit("alice")
    assert (r.decision, r.outcome) == ("deny", "denied")
    assert "without proof" in r.reason
    assert not _ran(wf)
    (ev,) = strict.evidence(wf)
    # Recorded, and marked: nobody established who asked.
    assert ev.outcome.status.value == "denied"
    assert ev.initiator_auth == "unauthenticated"


async def test_eve_cannot_sign_as_alice_with_a_key_of_her_own(strict: Deployment) -> None:
    eve = Ed25519FileSigner.generate()  # not in the trust store
    wf, r = await strict.submit("alice", signer=eve)
    assert r.outcome == "denied"
    assert "initiator_proof_invalid" in r.reason or "does not verify" in r.reason
    assert not _ran(wf)


async def test_carol_cannot_ask_as_alice_with_her_own_key(strict: Deployment) -> None:
    carol = Ed25519FileSigner.from_file(strict.keys.initiator("carol"))
    wf, r = await strict.submit("alice", signer=carol)
    assert r.outcome == "denied"
    assert "signed by 'carol'" in r.reason
    assert not _ran(wf)


async def test_a_signed_request_cannot_be_replayed_onto_another_workflow(
    strict: Deployment,
) -> None:
    alice = Ed25519FileSigner.from_file(strict.keys.initiator("alice"))
    proof = sign_request(
        alice,
        initiator="alice",
        namespace=strict.client.namespace,
        workflow_id="the-one-alice-signed",
        action="payout",
        args_digest=digest_values(SMALL, default_converter().payload_converter),
        purpose="invoice",
        clock=system_clock,
    )
    wf, r = await strict.submit("alice", proof=proof)
    assert r.outcome == "denied"
    assert "workflow id 'the-one-alice-signed'" in r.reason
    assert not _ran(wf)
    # Nor onto other arguments under the right workflow id.
    wf, r = await strict.submit(
        "alice", proof=proof, wf_id="the-one-alice-signed", args=[{**SMALL[0], "amount": 999}]
    )
    assert r.outcome == "denied"
    assert "arguments" in r.reason


async def test_alice_signed_is_alice_verified_in_grant_and_evidence(strict: Deployment) -> None:
    alice = Ed25519FileSigner.from_file(strict.keys.initiator("alice"))
    wf, r = await strict.submit("alice", signer=alice)
    assert r.outcome == "completed", r.reason
    assert _ran(wf)
    (ev,) = strict.evidence(wf)
    assert ev.initiator == "alice"
    assert ev.initiator_auth == f"key:{alice.key_id}"


async def test_an_id_token_establishes_its_subject_and_nobody_else(strict: Deployment) -> None:
    wf, r = await strict.submit("alice", proof=OIDC_PREFIX + strict.token("alice"))
    assert r.outcome == "completed", r.reason
    (ev,) = strict.evidence(wf)
    assert ev.initiator_auth == f"oidc:{ISSUER}#alice"
    # carol's valid token does not make her alice.
    wf, r = await strict.submit("alice", proof=OIDC_PREFIX + strict.token("carol"))
    assert r.outcome == "denied"
    assert "carol" in r.reason
    assert not _ran(wf)
    # Expired, wrong audience, wrong issuer: refused.
    for bad in (
        strict.token("alice", exp=int(time.time()) - 600, iat=int(time.time()) - 900),
        strict.token("alice", aud="someone-else"),
        strict.token("alice", iss="https://evil.example"),
    ):
        wf, r = await strict.submit("alice", proof=OIDC_PREFIX + bad)
        assert r.outcome == "denied", bad
        assert not _ran(wf)


async def test_carol_cannot_approve_a_request_she_made(strict: Deployment) -> None:
    # As alice she cannot ask at all (above); as herself the policy does not
    # let finance pay out, so there is never a request of hers to approve.
    carol = Ed25519FileSigner.from_file(strict.keys.initiator("carol"))
    big = [{"amount": 5000, "currency": "EUR", "recipient": "carol"}]
    wf, r = await strict.submit("carol", signer=carol, args=big)
    assert (r.decision, r.outcome) == ("deny", "denied")
    assert not _ran(wf)


@pytest.fixture
def refusing_bundle(tmp_path: Path) -> Path:
    """The example bundle, whose schema declares authentication, plus a refusal of it."""
    dst = tmp_path / "policy"
    shutil.copytree(Settings().policy, dst)
    with (dst / "policies.cedar").open("a", encoding="utf-8") as fh:
        fh.write(
            '\n@id("proven-initiators-only")\n@reason("initiators must prove who they are")\n'
            "forbid (principal, action, resource)\n"
            'when { context.authentication == "unauthenticated" };\n'
        )
    return dst


async def test_a_policy_can_refuse_unauthenticated_initiators(
    temporal_env: WorkflowEnvironment, tmp_path: Path, refusing_bundle: Path
) -> None:
    async for d in _deploy(temporal_env, tmp_path, allow=True, policy=refusing_bundle):
        wf, r = await d.submit("alice")
        assert r.outcome == "denied"
        assert "initiators must prove who they are" in r.reason
        assert not _ran(wf)
        alice = Ed25519FileSigner.from_file(d.keys.initiator("alice"))
        wf, r = await d.submit("alice", signer=alice)
        assert r.outcome == "completed", r.reason


async def test_a_proof_that_expires_while_approvals_wait_no_longer_counts(
    strict: Deployment,
) -> None:
    """authorize checks the proof again, at its own time: an expired one is refused."""
    from datetime import timedelta

    from ecp._approve import approve as deliver_approval
    from ecp._keyring import DEMO_APPROVER

    alice = Ed25519FileSigner.from_file(strict.keys.initiator("alice"))
    big = [{"amount": 5000, "currency": "EUR", "recipient": "acme"}]
    wf = f"slow-{uuid.uuid4().hex[:8]}"
    req = GovernedRequest(
        "payout", big, "alice", "invoice", queues=strict.queues, initiator_proof=""
    )
    handle = await start_governed(
        strict.client, req, workflow_id=wf, signer=alice, ttl=timedelta(seconds=3)
    )
    for _ in range(100):
        status = await handle.query("ecp.status", result_type=dict)
        if status.get("step") == "approve":
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(3.5)  # the signed request expires while approvals wait
    await deliver_approval(
        strict.client,
        wf,
        signer=Ed25519FileSigner.from_file(strict.keys.approver),
        approver=DEMO_APPROVER,
    )
    r = await handle.result()
    assert r.outcome == "denied", r
    assert "valid from" in r.reason
    assert not _ran(wf)
