"""Artifact validation before execution, attacked on a real dev server.

Each attack changes what a model deployment would use after the policy
decided on (and an ML lead approved) its digest, or presents an artifact in a
form that cannot be checked. In every case the body never runs and the
denial, naming the artifact, is in the ledger.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from pathlib import Path

from temporalio.converter import default as default_converter

from ecp._keyring import add_initiator
from ecp._runtime import build_plugin, run_workers
from ecp._settings import Role
from ecp.authority._artifact import (
    artifacts_json,
    bind_artifacts,
    describe_directory,
    describe_file,
)
from ecp.authority._calldigest import digest_values
from ecp.authority._clock import system_clock
from ecp.authority._initiator import sign_request
from ecp.authority._keys import Ed25519FileSigner
from ecp.lineage.ledger._evidence import EvidencePredicate, parse_evidence
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import GovernedRequest
from ecp.workflows._start import start_governed
from tests.loopback import serve_directory
from tests.workflows.artifact_support import (
    add_attester,
    approve_and_wait,
    deployments,
    evidence_of,
    provenance,
    start_deploy,
    write,
)
from tests.workflows.artifact_workflows import ScopedDeployments
from tests.workflows.conftest import Stack
from tests.workflows.test_ops_cli import _ecp, _env

MODEL = b"weights-v1:" + bytes(range(256)) * 4096  # ~1 MiB


def _model_request(stack: Stack, path: Path) -> list[dict[str, object]]:
    """The model artifact for ``path`` with a trusted SLSA provenance attached."""
    (ref,) = artifacts_json([describe_file("model", path)])
    signer = add_attester(stack)
    return [{**ref, "attestations": [provenance(signer, str(ref["digest"]))]}]


def _refused(pred: EvidencePredicate, code: str) -> None:
    assert pred.outcome.status.value == "denied"
    assert pred.outcome.reason_code == code, pred.outcome


async def test_approved_model_is_deployed_from_the_verified_bytes(
    stack: Stack, tmp_path: Path
) -> None:
    path = write(tmp_path / "model.bin", MODEL)
    artifacts = _model_request(stack, path)
    before = len(deployments())
    handle = await start_deploy(stack, artifacts)
    result = await approve_and_wait(stack, handle)
    assert result.outcome == "completed", result.reason
    digest = artifacts[0]["digest"]
    # The body read exactly the approved bytes, from the gate's copy.
    assert result.result["read_digest"] == digest
    assert len(deployments()) == before + 1
    pred = evidence_of(stack, result)
    assert pred.artifacts is not None
    assert [(a.name, a.role, a.digest) for a in pred.artifacts] == [("model", "used", digest)]


async def test_file_replaced_after_approval_is_refused(stack: Stack, tmp_path: Path) -> None:
    path = write(tmp_path / "model.bin", MODEL)
    artifacts = _model_request(stack, path)
    before = len(deployments())
    handle = await start_deploy(stack, artifacts)
    # Same size, other bytes: only the digest can tell.
    evil = tmp_path / "evil.bin"
    write(evil, MODEL[:-1] + b"X")
    os.replace(evil, path)
    result = await approve_and_wait(stack, handle)
    assert result.outcome == "denied"
    assert len(deployments()) == before
    pred = evidence_of(stack, result)
    _refused(pred, "artifact_mismatch")
    assert pred.grant_id  # refused at the gate, under a verified grant
    assert pred.artifacts is not None
    (refused,) = pred.artifacts
    assert refused.role == "refused"
    assert refused.digest == artifacts[0]["digest"]
    found = describe_file("x", path).digest
    assert refused.found == found
    assert str(artifacts[0]["digest"]) in (pred.outcome.reason or "")
    assert found in (pred.outcome.reason or "")


async def test_symlink_swapped_in_after_approval_is_refused(stack: Stack, tmp_path: Path) -> None:
    path = write(tmp_path / "model.bin", MODEL)
    artifacts = _model_request(stack, path)
    before = len(deployments())
    handle = await start_deploy(stack, artifacts)
    # The link even points at identical bytes: a link is never followed, so
    # what it points at cannot change between the check and the use.
    twin = write(tmp_path / "twin.bin", MODEL)
    os.unlink(path)
    os.symlink(twin, path)
    result = await approve_and_wait(stack, handle)
    assert result.outcome == "denied"
    assert len(deployments()) == before
    pred = evidence_of(stack, result)
    _refused(pred, "artifact_mismatch")
    assert "symbolic link" in (pred.outcome.reason or "")


async def test_truncated_file_is_refused(stack: Stack, tmp_path: Path) -> None:
    path = write(tmp_path / "model.bin", MODEL)
    artifacts = _model_request(stack, path)
    before = len(deployments())
    handle = await start_deploy(stack, artifacts)
    os.truncate(path, len(MODEL) // 2)
    result = await approve_and_wait(stack, handle)
    assert result.outcome == "denied"
    assert len(deployments()) == before
    pred = evidence_of(stack, result)
    _refused(pred, "artifact_mismatch")
    assert f"({len(MODEL) // 2} bytes)" in (pred.outcome.reason or "")


async def test_file_growing_while_read_is_refused(stack: Stack, tmp_path: Path) -> None:
    path = write(tmp_path / "model.bin", MODEL)
    artifacts = _model_request(stack, path)
    before = len(deployments())
    handle = await start_deploy(stack, artifacts)
    stop = threading.Event()

    def grow() -> None:
        # Keeps appending until the run is over: the gate must not read forever.
        with path.open("ab") as fh:
            while not stop.is_set():
                fh.write(b"more" * 4096)
                fh.flush()

    writer = threading.Thread(target=grow)
    writer.start()
    try:
        result = await approve_and_wait(stack, handle)
    finally:
        stop.set()
        writer.join()
    assert result.outcome == "denied"
    assert len(deployments()) == before
    pred = evidence_of(stack, result)
    _refused(pred, "artifact_mismatch")
    assert f"more than the approved {len(MODEL)} bytes" in (pred.outcome.reason or "")


async def test_image_by_tag_is_refused(stack: Stack, tmp_path: Path) -> None:
    path = write(tmp_path / "model.bin", MODEL)
    artifacts = _model_request(stack, path)
    image = {
        "name": "image",
        "kind": "oci",
        "uri": "registry.example.com/ml/serving:latest",
        "digest": "sha256:" + "ab" * 32,
    }
    before = len(deployments())
    handle = await start_deploy(stack, [*artifacts, image], wait_for_approval=False)
    result = await handle.result()
    assert result.outcome == "denied"
    assert "by tag" in result.reason
    assert len(deployments()) == before
    _refused(evidence_of(stack, result), "artifact_refused")


async def test_image_from_another_registry_is_denied_by_policy(
    stack: Stack, tmp_path: Path
) -> None:
    path = write(tmp_path / "model.bin", MODEL)
    artifacts = _model_request(stack, path)
    digest = "sha256:" + "cd" * 32
    image = {
        "name": "image",
        "kind": "oci",
        "uri": f"docker.io/evil/serving@{digest}",
        "digest": digest,
    }
    before = len(deployments())
    handle = await start_deploy(stack, [*artifacts, image], wait_for_approval=False)
    result = await handle.result()
    assert result.outcome == "denied"
    assert "registry.example.com/ml/" in result.reason
    assert len(deployments()) == before
    _refused(evidence_of(stack, result), "policy_denied")


async def test_attestation_by_untrusted_key_is_refused(stack: Stack, tmp_path: Path) -> None:
    path = write(tmp_path / "model.bin", MODEL)
    (ref,) = artifacts_json([describe_file("model", path)])
    stranger = Ed25519FileSigner.generate()  # not in the trust store
    artifacts = [{**ref, "attestations": [provenance(stranger, str(ref["digest"]))]}]
    before = len(deployments())
    handle = await start_deploy(stack, artifacts, wait_for_approval=False)
    result = await handle.result()
    assert result.outcome == "denied"
    assert len(deployments()) == before
    pred = evidence_of(stack, result)
    _refused(pred, "artifact_attestation_invalid")
    assert "is not in the trust store" in (pred.outcome.reason or "")


async def test_attestation_for_another_digest_is_refused(stack: Stack, tmp_path: Path) -> None:
    path = write(tmp_path / "model.bin", MODEL)
    (ref,) = artifacts_json([describe_file("model", path)])
    signer = add_attester(stack)
    other = "sha256:" + "ee" * 32
    artifacts = [{**ref, "attestations": [provenance(signer, other)]}]
    before = len(deployments())
    handle = await start_deploy(stack, artifacts, wait_for_approval=False)
    result = await handle.result()
    assert result.outcome == "denied"
    assert len(deployments()) == before
    pred = evidence_of(stack, result)
    _refused(pred, "artifact_attestation_invalid")
    assert other in (pred.outcome.reason or "")


async def test_production_model_without_provenance_is_denied(stack: Stack, tmp_path: Path) -> None:
    path = write(tmp_path / "model.bin", MODEL)
    artifacts = artifacts_json([describe_file("model", path)])
    before = len(deployments())
    handle = await start_deploy(stack, artifacts, wait_for_approval=False)
    result = await handle.result()
    assert result.outcome == "denied"
    assert "SLSA provenance" in result.reason
    assert len(deployments()) == before
    _refused(evidence_of(stack, result), "policy_denied")


async def test_directory_with_a_file_added_is_refused(stack: Stack, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    (model_dir / "layers").mkdir(parents=True)
    write(model_dir / "config.json", b'{"layers": 2}')
    write(model_dir / "layers" / "0.bin", MODEL)
    (ref,) = artifacts_json([describe_directory("model", model_dir)])
    signer = add_attester(stack)
    artifacts = [{**ref, "attestations": [provenance(signer, str(ref["digest"]))]}]
    before = len(deployments())
    handle = await start_deploy(stack, artifacts)
    write(model_dir / "layers" / "backdoor.bin", b"\x00")
    result = await approve_and_wait(stack, handle)
    assert result.outcome == "denied"
    assert len(deployments()) == before
    pred = evidence_of(stack, result)
    _refused(pred, "artifact_mismatch")
    assert pred.artifacts is not None
    (refused,) = pred.artifacts
    assert refused.found == describe_directory("x", model_dir).digest
    assert refused.digest == ref["digest"]


async def test_a_signed_request_covers_its_artifacts(stack: Stack, tmp_path: Path) -> None:
    alice = Ed25519FileSigner.from_file(add_initiator(stack.keys, "alice"))
    args = [{"model_name": "fraud", "environment": "staging"}]
    signed_for = describe_file("model", write(tmp_path / "a.bin", MODEL))
    swapped = describe_file("model", write(tmp_path / "b.bin", MODEL[::-1]))
    wf = f"signed-{uuid.uuid4().hex[:8]}"
    proof = sign_request(
        alice,
        initiator="alice",
        namespace=stack.client.namespace,
        workflow_id=wf,
        action="deploy_model",
        args_digest=bind_artifacts(
            digest_values(args, default_converter().payload_converter), [signed_for]
        ),
        purpose="",
        clock=system_clock,
    )
    before = len(deployments())
    # Someone starts alice's signed request with other artifacts: refused.
    handle = await stack.client.start_workflow(
        GovernedExecution.run,
        GovernedRequest(
            "deploy_model",
            args,
            "alice",
            queues=stack.queues,
            initiator_proof=proof,
            artifacts=artifacts_json([swapped]),
        ),
        id=wf,
        task_queue=stack.queues.executor,
    )
    result = await handle.result()
    assert result.outcome == "denied"
    assert "initiator_proof_invalid" in evidence_of(stack, result).outcome.reason_code
    assert len(deployments()) == before
    # start_governed signs the artifacts along: the same request, as signed, runs.
    req = GovernedRequest(
        "deploy_model", args, "alice", queues=stack.queues, artifacts=artifacts_json([signed_for])
    )
    handle = await start_governed(
        stack.client, req, workflow_id=f"signed-{uuid.uuid4().hex[:8]}", signer=alice
    )
    ok = await handle.result()
    assert ok.outcome == "completed", ok.reason
    assert evidence_of(stack, ok).initiator_auth == f"key:{alice.key_id}"


async def test_ecp_submit_names_artifacts_by_path(stack: Stack, tmp_path: Path) -> None:
    path = write(tmp_path / "model.bin", MODEL)
    args = '{"model_name": "fraud", "environment": "staging"}'
    code, out, err = await _ecp(
        _env(stack),
        "submit",
        "deploy_model",
        "--args",
        args,
        "--initiator",
        "alice",
        "--artifact",
        f"model={path}",
        "--wait",
    )
    assert code == 0, err
    result = json.loads(out[out.index("{") :])
    assert result["outcome"] == "completed"
    assert result["result"]["read_digest"] == describe_file("model", path).digest
    code, _, err = await _ecp(
        _env(stack),
        "submit",
        "deploy_model",
        "--args",
        args,
        "--initiator",
        "alice",
        "--artifact",
        f"model={path}",
        "--artifact",
        "image=oci:registry.example.com/ml/serving:latest",
    )
    assert code != 0
    assert "by tag" in err


async def test_a_scope_binds_its_artifacts_for_every_call(stack: Stack, tmp_path: Path) -> None:
    path = write(tmp_path / "model.bin", MODEL)
    artifacts = artifacts_json([describe_file("model", path)])
    plugin, _ = build_plugin(stack.settings, role=Role.EXECUTOR, ledger=stack.ledger)
    queue = f"scoped-{uuid.uuid4().hex[:8]}"
    settings = stack.settings.model_copy(update={"executor_queue": queue})
    wf = f"scoped-deploy-{uuid.uuid4().hex[:8]}"
    async with run_workers(
        stack.client, settings, plugin, role=Role.EXECUTOR, extra_workflows=[ScopedDeployments]
    ):
        handle = await stack.client.start_workflow(
            ScopedDeployments.run, artifacts, id=wf, task_queue=queue, memo={}
        )
        results: list[object] = []
        while not results:
            results = await handle.query(ScopedDeployments.results)
            await asyncio.sleep(0.05)
        # Between two calls under the same scope, the model changes on disk.
        write(path, MODEL[::-1])
        await handle.signal(ScopedDeployments.go)
        first, second = await handle.result()
    assert isinstance(first, dict)
    assert first["read_digest"] == artifacts[0]["digest"]
    assert second == "ecp.artifact_mismatch"
    assert [e[1] for e in deployments()].count(wf) == 1
    mine = [
        parse_evidence(stack.ledger.entry(i).envelope).predicate
        for i in range(stack.ledger.head().size)
    ]
    mine = [p for p in mine if p.activity.workflow_id == wf]
    assert [p.outcome.reason_code for p in mine] == [None, "artifact_mismatch"]


async def test_url_content_changed_in_the_store_is_refused(stack: Stack, tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    write(bucket / "fraud.bin", MODEL)
    with serve_directory(bucket) as base:
        local = describe_file("model", bucket / "fraud.bin")
        model = {
            "name": "model",
            "kind": "url",
            "uri": f"{base}/fraud.bin",
            "digest": local.digest,
            "size": local.size,
        }
        before = len(deployments())
        handle = await start_deploy(stack, [model], environment="staging", wait_for_approval=False)
        result = await handle.result()
        assert result.outcome == "completed", result.reason
        assert result.result["read_digest"] == local.digest
        assert len(deployments()) == before + 1
        # The object is overwritten in the store: the same request is refused.
        write(bucket / "fraud.bin", MODEL.replace(b"weights-v1", b"weights-v2"))
        handle = await start_deploy(stack, [model], environment="staging", wait_for_approval=False)
        result = await handle.result()
    assert result.outcome == "denied"
    assert len(deployments()) == before + 1
    pred = evidence_of(stack, result)
    _refused(pred, "artifact_mismatch")
    assert pred.artifacts is not None
    assert pred.artifacts[0].kind == "url"
