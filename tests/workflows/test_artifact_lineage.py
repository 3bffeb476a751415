"""A model trained by one workflow and deployed by another: one lineage graph, by digest."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from ecp.authority._artifact import artifacts_json, describe_file
from ecp.cli.lineage import artifact_lineage
from ecp.lineage.graph._artifacts import artifact_node, check_artifacts
from ecp.lineage.graph._export import ExportFormat, render_graph
from ecp.lineage.graph.errors import RendererMissingError
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import GovernedRequest, GovernedResult
from tests.workflows.artifact_support import evidence_of
from tests.workflows.conftest import Stack
from tests.workflows.test_ops_cli import _ecp, _env


async def _run(stack: Stack, req: GovernedRequest, prefix: str) -> tuple[str, GovernedResult]:
    wf = f"{prefix}-{uuid.uuid4().hex[:8]}"
    handle = await stack.client.start_workflow(
        GovernedExecution.run, req, id=wf, task_queue=stack.queues.executor
    )
    return wf, await handle.result()


async def test_trained_then_deployed_model_is_one_graph(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "fraud.bin"
    train_wf, trained = await _run(
        stack,
        GovernedRequest(
            action="train_model",
            args=[{"model_name": "fraud", "output_path": str(out)}],
            initiator="alice",
            queues=stack.queues,
        ),
        "train",
    )
    assert trained.outcome == "completed", trained.reason
    gen = evidence_of(stack, trained).artifacts
    assert gen is not None
    (model,) = gen
    assert model.role == "generated"
    digest = describe_file("model", out).digest
    assert model.digest == digest

    deploy_wf, deployed = await _run(
        stack,
        GovernedRequest(
            action="deploy_model",
            args=[{"model_name": "fraud", "environment": "staging"}],
            initiator="bob",
            queues=stack.queues,
            artifacts=artifacts_json([describe_file("model", out)]),
        ),
        "deploy",
    )
    assert deployed.outcome == "completed", deployed.reason
    assert deployed.result["read_digest"] == digest

    settings = stack.settings.model_copy(
        update={"temporal_address": stack.client.service_client.config.target_host}
    )
    lin = await asyncio.to_thread(artifact_lineage, settings, digest)
    assert lin.workflows == tuple(sorted([train_wf, deploy_wf]))
    assert lin.problems == ()
    g = lin.graph
    node = artifact_node(digest)
    (producer,) = [u for u, _ in g.in_edges(node) if g.edges[u, node]["rel"] == "generated"]
    (consumer,) = [v for _, v in g.out_edges(node) if g.edges[node, v]["rel"] == "used"]
    assert g.nodes[producer]["workflow_id"] == train_wf
    assert g.nodes[producer]["activity_type"] == "train_model"
    assert g.nodes[consumer]["workflow_id"] == deploy_wf
    assert g.nodes[consumer]["activity_type"] == "deploy_model"
    # Both executions cross-checked against the ledger.
    assert g.nodes[producer]["governance"] == "ok"
    assert g.nodes[consumer]["governance"] == "ok"

    prov = json.loads(render_graph(g, ExportFormat.PROV_JSON))
    generated = [r for r in prov["wasGeneratedBy"].values() if digest[7:] in r["prov:entity"]]
    used = [r for r in prov["used"].values() if digest[7:] in r["prov:entity"]]
    assert len(generated) == 1
    assert len(used) == 1
    for fmt in ExportFormat:
        try:
            text = render_graph(g, fmt)
        except RendererMissingError:
            continue  # SVG without Graphviz installed
        assert digest[7:19] in text, fmt

    # Without the ledger's word, the deployment's artifact is unproven.
    assert check_artifacts(g, []) == [
        f"{deploy_wf}/execute:deploy_model: the grant names artifacts, the ledger records none used"
    ]

    code, text, err = await _ecp(_env(stack), "lineage", "show", "--artifact", digest)
    assert code == 0, err
    assert train_wf in text
    assert deploy_wf in text
    assert "generated model (file)" in text
    assert "used model (file)" in text


async def test_an_unknown_artifact_is_a_one_line_error(stack: Stack) -> None:
    code, _, err = await _ecp(_env(stack), "lineage", "show", "--artifact", "sha256:" + "0" * 64)
    assert code != 0
    assert "no ledger evidence names artifact" in err
