"""Starting a ``GovernedExecution`` from a client, with what ops see in the UI."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import timedelta

from temporalio.client import Client, WorkflowHandle

from ecp.authority._artifact import bind_artifacts, parse_artifacts
from ecp.authority._calldigest import digest_values
from ecp.authority._clock import system_clock
from ecp.authority._initiator import sign_request, sign_session, workflow_input_digest
from ecp.authority._keys import Signer
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._in_workflow import INITIATOR_MEMO
from ecp.workflows._models import GovernedRequest, GovernedResult

__all__ = ["initiator_memo", "start_governed"]


def initiator_memo(
    signer: Signer,
    *,
    initiator: str,
    client: Client,
    workflow_id: str,
    workflow_type: str,
    args: Sequence[object] = (),
    ttl: timedelta = timedelta(hours=2),
) -> dict[str, object]:
    """The memo that lets a workflow's governed calls act for ``initiator``.

    Pass it with exactly the workflow type, id and arguments it is signed
    for: ``client.start_workflow("RefundOrder", args=args, id=workflow_id,
    memo=initiator_memo(key, initiator="alice", client=client,
    workflow_id=workflow_id, workflow_type="RefundOrder", args=args))``.
    ``execute_governed`` inside that workflow presents it; a workflow of
    another type, or with other input, cannot.

    Raises:
        InitiatorProofError: the session cannot be signed.
        CanonicalizationError: an argument has no canonical JSON form.
    """
    proof = sign_session(
        signer,
        initiator=initiator,
        namespace=client.namespace,
        workflow_id=workflow_id,
        workflow_type=workflow_type,
        input_digest=workflow_input_digest(args, client.data_converter.payload_converter),
        clock=system_clock,
        ttl=ttl,
    )
    return {INITIATOR_MEMO: {"initiator": initiator, "proof": proof}}


async def start_governed(
    client: Client,
    req: GovernedRequest,
    *,
    workflow_id: str,
    signer: Signer | None = None,
    ttl: timedelta = timedelta(minutes=10),
) -> WorkflowHandle[GovernedExecution, GovernedResult]:
    """Start ``req`` on the executor queue with a UI summary and details.

    Static summary and details can only be set at start, so every starter
    should come through here (the workflow itself keeps the current details
    up to date as the steps progress).

    Args:
        client: The Temporal client.
        req: The request.
        workflow_id: The workflow id (the signed request binds it).
        signer: The initiator's key (role ``initiator`` in the trust store,
            named like ``req.initiator``): signs the request as its proof.
        ttl: How long the signed request is valid for the authority.

    Raises:
        InitiatorProofError: the request cannot be signed.
        ArtifactRefusedError: an artifact of a request to sign cannot be
            checked (an image by tag, a relative path, ...).
    """
    if signer is not None:
        req = dataclasses.replace(
            req,
            initiator_proof=sign_request(
                signer,
                initiator=req.initiator,
                namespace=client.namespace,
                workflow_id=workflow_id,
                action=req.action,
                args_digest=bind_artifacts(
                    digest_values(req.args, client.data_converter.payload_converter),
                    parse_artifacts(req.artifacts),
                ),
                purpose=req.purpose,
                clock=system_clock,
                ttl=ttl,
            ),
        )
    return await client.start_workflow(
        GovernedExecution.run,
        req,
        id=workflow_id,
        task_queue=req.queues.executor,
        static_summary=f"ECP: {req.action} by {req.initiator}",
        static_details=(
            f"Governed **{req.action}** requested by `{req.initiator}`"
            + (f": {req.purpose}" if req.purpose else "")
            + "\n\nSteps: verify → authorize → execute → prove."
        ),
    )
