"""Artifact test helpers: attester keys, provenance, deployments paused for approval."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path

from temporalio.client import WorkflowHandle

from ecp._approve import approve
from ecp._keyring import DEMO_APPROVER
from ecp.activities import examples
from ecp.authority._canonical import canonical_json
from ecp.authority._dsse import sign_envelope
from ecp.authority._intoto import INTOTO_PAYLOAD_TYPE, STATEMENT_TYPE_V1
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.lineage.ledger._evidence import EvidencePredicate, parse_evidence
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import GovernedRequest, GovernedResult
from tests.workflows.conftest import Stack

TRUSTED_BUILDER = "https://ci.example.com/builders/ml-trainer"
SOURCE_REPO = "https://git.example.com/ml/fraud-model"
SLSA_V1 = "https://slsa.dev/provenance/v1"


def add_attester(stack: Stack, name: str = "ml-ci") -> Ed25519FileSigner:
    """A new key with the ``attester`` role in the stack's trust store."""
    signer = Ed25519FileSigner.generate()
    store = TrustStore.load(stack.keys.trust_store)
    TrustStore([*store, TrustedKey.create(signer.public_key, {KeyRole.ATTESTER}, name=name)]).save(
        stack.keys.trust_store
    )
    return signer


def provenance(signer: Ed25519FileSigner, digest: str, *, builder: str = TRUSTED_BUILDER) -> str:
    """A DSSE-signed SLSA v1 provenance statement about ``digest`` (envelope JSON)."""
    statement = {
        "_type": STATEMENT_TYPE_V1,
        "subject": [{"name": "model.bin", "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicateType": SLSA_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": "https://ci.example.com/ml-train/v1",
                "externalParameters": {"repository": SOURCE_REPO},
            },
            "runDetails": {"builder": {"id": builder}},
        },
    }
    return sign_envelope(INTOTO_PAYLOAD_TYPE, canonical_json(statement), signer).to_json().decode()


def deployments() -> list[tuple[str, str, dict[str, object]]]:
    """The deploy_model bodies that ran in this process."""
    return [e for e in examples.EXECUTIONS if e[0] == "deploy_model"]


async def start_deploy(
    stack: Stack,
    artifacts: Sequence[dict[str, object]],
    *,
    environment: str = "production",
    wait_for_approval: bool = True,
) -> WorkflowHandle[GovernedExecution, GovernedResult]:
    """Start a model deployment; for production, return once it waits for approval."""
    handle = await stack.client.start_workflow(
        GovernedExecution.run,
        GovernedRequest(
            action="deploy_model",
            args=[{"model_name": "fraud", "environment": environment}],
            initiator="alice",
            purpose="release fraud model",
            queues=stack.queues,
            artifacts=list(artifacts),
        ),
        id=f"deploy-{uuid.uuid4().hex[:8]}",
        task_queue=stack.queues.executor,
    )
    if not wait_for_approval:
        return handle
    status: dict[str, object] = {}
    while status.get("step") not in ("approve", "done"):
        status = await handle.query("ecp.status", result_type=dict)
        await asyncio.sleep(0.05)
    assert status["step"] == "approve", status
    return handle


async def approve_and_wait(
    stack: Stack, handle: WorkflowHandle[GovernedExecution, GovernedResult]
) -> GovernedResult:
    """Approve as the demo ML lead, then wait for the result."""
    await approve(
        stack.client,
        handle.id,
        signer=Ed25519FileSigner.from_file(stack.keys.approver),
        approver=DEMO_APPROVER,
    )
    return await handle.result()


def evidence_of(stack: Stack, result: GovernedResult) -> EvidencePredicate:
    """The ledger entry the result's receipt points at."""
    return parse_evidence(stack.ledger.entry(result.ledger_index).envelope).predicate


def write(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` and return it."""
    path.write_bytes(data)
    return path
