"""OpenLineage RunEvents from a lineage graph, through ``openlineage-python``.

One job per workflow type (``<WorkflowType>``) and per activity type
(``<WorkflowType>.<activity type>``), one run per execution (workflow runs
keep their Temporal run id; activity executions get a UUIDv5 of their node
id), a START event and a COMPLETE, FAIL or ABORT event when it ended. Inputs
and outputs are the payload artifacts by digest. Governed executions carry
the custom ``ecp_governance`` run facet (schema:
``lineage/graph/schemas/GovernanceRunFacet.json``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import attr
import networkx as nx
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import RunFacet, parent_run
from openlineage.client.serde import Serde

from ecp.lineage.graph._build import UNAUTHENTICATED, NodeKind, authentication_method

__all__ = [
    "ARTIFACT_NAMESPACE",
    "GOVERNANCE_FACET_SCHEMA",
    "GOVERNANCE_FACET_SCHEMA_URL",
    "PRODUCER",
    "GovernanceRunFacet",
    "ReceiptInfo",
    "openlineage_events",
    "openlineage_json",
]

PRODUCER = "https://ecp.dev/lineage"
GOVERNANCE_FACET_SCHEMA_URL = (
    "https://ecp.dev/spec/facets/1-0-0/GovernanceRunFacet.json#/$defs/GovernanceRunFacet"
)
#: The facet's JSON schema, shipped beside this module.
GOVERNANCE_FACET_SCHEMA = Path(__file__).resolve().parent / "schemas" / "GovernanceRunFacet.json"
ARTIFACT_NAMESPACE = "ecp-artifact"
#: The longest ``initiatorAuthentication`` (a grant's ``initiator_auth`` limit).
_MAX_AUTH = 2048
_UUID_NS = uuid.UUID("5b0c2a52-43f3-4f1e-9a43-6f1f2f6f7e10")

_END_STATE = {
    "completed": RunState.COMPLETE,
    "failed": RunState.FAIL,
    "denied": RunState.FAIL,
    "interrupted": RunState.ABORT,
    # Not known to have failed, not known to have completed: OpenLineage's
    # catch-all, never COMPLETE.
    "unknown": RunState.OTHER,
    "timed_out": RunState.FAIL,
    "terminated": RunState.ABORT,
    "canceled": RunState.ABORT,
    "continued_as_new": RunState.COMPLETE,
}


@attr.define
class ReceiptInfo:
    """Where the evidence of a governed execution sits in the ledger."""

    ledgerIndex: int
    verified: bool
    treeSize: int | None = attr.field(default=None)


@attr.define
class GovernanceRunFacet(RunFacet):
    """ECP's governance run facet: decision, grant and receipt of an execution."""

    governed: bool = attr.field(default=False)
    status: str = attr.field(default="unchecked")
    decision: str = attr.field(default="")
    decisionId: str = attr.field(default="")
    policyDigest: str = attr.field(default="")
    grantId: str = attr.field(default="")
    #: Who asked, and how the authority established it (``key:<key id>``,
    #: ``oidc:<issuer>#<subject>``, ``unauthenticated``; "" if not recorded).
    initiator: str = attr.field(default="")
    initiatorAuthentication: str = attr.field(default="")
    approvers: list[str] = attr.field(factory=list)
    receipt: ReceiptInfo | None = attr.field(default=None)
    violations: list[str] = attr.field(factory=list)

    _additional_skip_redact: ClassVar[list[str]] = []

    @staticmethod
    def _get_schema() -> str:
        return GOVERNANCE_FACET_SCHEMA_URL


def _run_id(g: nx.DiGraph, n: str) -> str:
    d = g.nodes[n]
    if d.get("kind") == NodeKind.RUN:
        try:
            return str(uuid.UUID(str(d.get("run_id"))))
        except ValueError:
            pass
    return str(uuid.uuid5(_UUID_NS, n))


def _time(d: dict[str, object], key: str) -> str:
    v = d.get(key)
    return v if isinstance(v, str) and v else str(d.get("time", ""))


def _workflow_type(g: nx.DiGraph, wf: object, run: object) -> str:
    d = g.nodes.get(f"run:{wf}/{run}", {})
    return str(d.get("workflow_type") or "workflow")


def _datasets(g: nx.DiGraph, n: str) -> tuple[list[InputDataset], list[OutputDataset]]:
    ins = [
        InputDataset(ARTIFACT_NAMESPACE, str(g.nodes[p]["digest"]))
        for p in sorted(g.predecessors(n))
        if g.nodes[p].get("kind") == NodeKind.ARTIFACT
    ]
    outs = [
        OutputDataset(ARTIFACT_NAMESPACE, str(g.nodes[s]["digest"]))
        for s in sorted(g.successors(n))
        if g.nodes[s].get("kind") == NodeKind.ARTIFACT
    ]
    return ins, outs


def _facet_auth(auth: str) -> str:
    # The facet's schema allows only the forms the authority writes: anything
    # else a history holds is reported as not recorded, so the facet stays valid.
    known = authentication_method(auth) in ("key", "oidc", UNAUTHENTICATED)
    return auth if known and len(auth) <= _MAX_AUTH else ""


def _identity(*sources: dict[str, object]) -> tuple[str, str]:
    """The initiator and its authentication from the first source that names one."""
    for d in sources:
        if d.get("initiator"):
            return str(d["initiator"]), _facet_auth(str(d.get("initiator_auth") or ""))
    return "", ""


def _governance(g: nx.DiGraph, n: str) -> GovernanceRunFacet | None:
    d = g.nodes[n]
    grants = [p for p in g.predecessors(n) if g.nodes[p].get("kind") == NodeKind.GRANT]
    ledgers = [s for s in g.successors(n) if g.nodes[s].get("kind") == NodeKind.LEDGER]
    if not d.get("governed") and not grants:
        return None
    grant = g.nodes[grants[0]] if grants else {}
    decision: dict[str, object] = {}
    approvers: list[str] = []
    if grants:
        for p in g.predecessors(grants[0]):
            pd = g.nodes[p]
            if pd.get("kind") == NodeKind.DECISION:
                decision = dict(pd)
            if pd.get("kind") == NodeKind.UPDATE and pd.get("approver"):
                approvers.append(str(pd["approver"]))
    receipt = None
    if ledgers:
        ld = g.nodes[ledgers[0]]
        receipt = ReceiptInfo(
            int(ld["index"]),
            d.get("governance") == "ok",
            int(ld["tree_size"]) if ld.get("tree_size") else None,
        )
    detail = d.get("governance_violations")
    # The grant binds the initiator; without one (a denial), the decision or
    # the ledger entry says who asked.
    initiator, auth = _identity(dict(grant), decision, *(dict(g.nodes[s]) for s in sorted(ledgers)))
    return GovernanceRunFacet(
        governed=True,
        status=str(d.get("governance") or "unchecked"),
        decision=str(decision.get("effect") or ""),
        decisionId=str(decision.get("decision_id") or grant.get("decision_id") or ""),
        policyDigest=str(decision.get("policy_digest") or ""),
        grantId=str(d.get("grant_id") or grant.get("grant_id") or ""),
        initiator=initiator,
        initiatorAuthentication=auth,
        approvers=sorted(approvers),
        receipt=receipt,
        violations=[s for s in str(detail).split("\n") if s] if detail else [],
    )


def openlineage_events(g: nx.DiGraph, namespace: str = "default") -> list[RunEvent]:
    """START and end RunEvents for every workflow run and activity execution.

    Args:
        g: A lineage graph.
        namespace: The Temporal namespace (the jobs' namespace is
            ``temporal://<namespace>``).
    """
    job_ns = f"temporal://{namespace}"
    events: list[tuple[str, int, RunEvent]] = []
    for n in sorted(g.nodes):
        d = g.nodes[n]
        kind = d.get("kind")
        if kind not in (NodeKind.RUN, NodeKind.ACTIVITY) or not d.get("time"):
            continue
        wf_type = _workflow_type(g, d.get("workflow_id"), d.get("run_id"))
        facets: dict[str, RunFacet] = {}
        if kind == NodeKind.RUN:
            job = Job(job_ns, wf_type)
            parent = next(
                (p for p in g.predecessors(n) if g.nodes[p].get("kind") == NodeKind.CHILD), None
            )
            status = str(d.get("status", ""))
            end_time = _time(
                dict(g.nodes.get(f"close:{d.get('workflow_id')}/{d.get('run_id')}", {})), "time"
            )
            if parent is not None:
                pd = g.nodes[parent]
                facets["parent"] = _parent(
                    job_ns,
                    _workflow_type(g, pd.get("workflow_id"), pd.get("run_id")),
                    str(pd.get("run_id")),
                )
        else:
            job = Job(job_ns, f"{wf_type}.{d.get('activity_type')}")
            status = str(d.get("status", ""))
            end_time = _time(d, "closed_time")
            facets["parent"] = _parent(job_ns, wf_type, str(d.get("run_id")))
            gov = _governance(g, n)
            if gov is not None:
                facets["ecp_governance"] = gov
        run = Run(_run_id(g, n), facets)
        ins, outs = _datasets(g, n)
        events.append(
            (
                str(d["time"]),
                0,
                RunEvent(
                    eventTime=str(d["time"]),
                    producer=PRODUCER,
                    run=run,
                    job=job,
                    eventType=RunState.START,
                    inputs=ins,
                    outputs=[],
                ),
            )
        )
        end = _END_STATE.get(status)
        if end is not None:
            events.append(
                (
                    end_time,
                    1,
                    RunEvent(
                        eventTime=end_time,
                        producer=PRODUCER,
                        run=run,
                        job=job,
                        eventType=end,
                        inputs=ins,
                        outputs=outs,
                    ),
                )
            )
    events.sort(key=lambda e: (e[0], e[1]))
    return [e for _, _, e in events]


def _parent(job_ns: str, job_name: str, run_id: str) -> parent_run.ParentRunFacet:
    return parent_run.ParentRunFacet(
        run=parent_run.Run(
            runId=str(uuid.UUID(run_id)) if _is_uuid(run_id) else str(uuid.uuid5(_UUID_NS, run_id))
        ),
        job=parent_run.Job(namespace=job_ns, name=job_name),
    )


def _is_uuid(s: str) -> bool:
    try:
        uuid.UUID(s)
    except ValueError:
        return False
    return True


def openlineage_json(events: Sequence[RunEvent]) -> str:
    """The events as newline-delimited JSON (one RunEvent per line)."""
    return "".join(json.dumps(json.loads(Serde.to_json(e)), sort_keys=True) + "\n" for e in events)
