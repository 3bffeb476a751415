"""Provenance DAGs from Temporal workflow histories.

:func:`build_graph` turns one or more run histories into a ``networkx``
``DiGraph`` whose edges point from cause to effect, so the ancestors of a
run's close node are everything that could have influenced its result.

Nodes (attribute ``kind``): ``workflow_run``, ``run_close``, ``activity``
(with ``attempts``), ``timer``, ``signal``, ``signal_out``, ``update`` (with
the ``approver`` of an ECP approval and ``approver_key_id``, the key that
signed it), ``child_workflow``, ``marker``, ``artifact`` (a payload, by the
same digest grants bind arguments with) and, for governed executions,
``decision``, ``grant`` and ``ledger_entry``. Those three carry who asked:
``initiator``, ``initiator_auth`` (how the authority established it:
``key:<key id>``, ``oidc:<issuer>#<subject>`` or ``unauthenticated``; empty
where the history does not say) and ``initiator_label`` ("alice (key
ed25519:…)", see :func:`identity_label`). All of it is read from history,
unverified: the cross-check verifies.

Edges (attribute ``rel``) follow Temporal's causal links: the events a
workflow task saw cause the commands it issued (``informed``), a child
initiation and a continue-as-new start the next run (``started``), every
step delivered to workflow code may inform its close (``informed``); data
flow links producers and consumers of one payload digest (``generated``,
``used``), also across workflows; governance adds ``decided``, ``granted``,
``authorized``, ``approved`` and ``recorded``. Edges never point back in
time, so the graph is acyclic.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.enums.v1 import EventType as E
from temporalio.api.history.v1 import HistoryEvent

from ecp._wire import (
    APPROVE_UPDATE,
    GATE_MARK,
    GOVERNANCE_ACTIVITIES,
    INTERRUPTED_TYPE,
    OUTCOME_UNKNOWN_TYPE,
)
from ecp.authority._calldigest import digest_payloads
from ecp.authority._canonical import parse_json_strict
from ecp.authority._dsse import DEFAULT_MAX_ENVELOPE_BYTES, Envelope
from ecp.authority.errors import AuthorityError, CanonicalizationError
from ecp.lineage.graph._grant_header import grant_claims, grant_envelope
from ecp.lineage.graph._history import RunHistory
from ecp.lineage.graph.errors import CorruptHistoryError, LineageGraphError

__all__ = [
    "ACTIVITY_APPROVE_UPDATE",
    "GOVERNANCE_ACTIVITIES",
    "UNAUTHENTICATED",
    "NodeKind",
    "authentication_label",
    "authentication_method",
    "build_graph",
    "close_node",
    "decision_identity",
    "final_node",
    "identity_label",
    "run_node",
]

#: Activity types of ECP's governance steps (``ecp.activities._contracts``).
#: The update that carries approvals.
ACTIVITY_APPROVE_UPDATE = APPROVE_UPDATE


class NodeKind:
    """The values of the ``kind`` node attribute."""

    RUN = "workflow_run"
    CLOSE = "run_close"
    ACTIVITY = "activity"
    TIMER = "timer"
    SIGNAL = "signal"
    SIGNAL_OUT = "signal_out"
    UPDATE = "update"
    CHILD = "child_workflow"
    MARKER = "marker"
    ARTIFACT = "artifact"
    DECISION = "decision"
    GRANT = "grant"
    LEDGER = "ledger_entry"


def run_node(workflow_id: str, run_id: str) -> str:
    """The node id of a workflow run."""
    return f"run:{workflow_id}/{run_id}"


def close_node(workflow_id: str, run_id: str) -> str:
    """The node id of a run's close event (completed, failed, continued, ...)."""
    return f"close:{workflow_id}/{run_id}"


def final_node(g: nx.DiGraph, workflow_id: str) -> str:
    """The close node of the last run of ``workflow_id`` in ``g``.

    Raises:
        LineageGraphError: the workflow has no closed run in the graph.
    """
    closes = [
        (d.get("time_ns", 0), n)
        for n, d in g.nodes(data=True)
        if d.get("kind") == NodeKind.CLOSE
        and d.get("workflow_id") == workflow_id
        and not d.get("continued_as", "")
    ]
    if not closes:
        raise LineageGraphError(f"workflow {workflow_id} has no closed run in the graph")
    return str(max(closes)[1])


# --- identities -------------------------------------------------------------

#: ``initiator_auth`` of an initiator nobody established (as the authority
#: writes it: ``ecp.authority._initiator.UNAUTHENTICATED``).
UNAUTHENTICATED = "unauthenticated"


def authentication_method(auth: str) -> str:
    """``key``, ``oidc``, ``unauthenticated``, ``""`` (not recorded) or ``unknown``."""
    if not auth:
        return ""
    if auth == UNAUTHENTICATED:
        return UNAUTHENTICATED
    method, sep, rest = auth.partition(":")
    if sep and rest and method in ("key", "oidc"):
        return method
    return "unknown"


def authentication_label(auth: str) -> str:
    """How an initiator was established, in words.

    ``key ed25519:…``, ``OIDC https://issuer, subject alice``,
    ``unauthenticated``, ``authentication not recorded`` (empty), or
    ``unrecognised authentication <value>`` for anything else a history holds.
    The text is returned as is: whoever prints it escapes it for its medium.
    """
    method = authentication_method(auth)
    if method == "key":
        return "key " + auth.removeprefix("key:")
    if method == "oidc":
        # An issuer is a URL without a fragment; the subject may hold '#'.
        issuer, sep, subject = auth.removeprefix("oidc:").partition("#")
        return f"OIDC {issuer}, subject {subject}" if sep else f"OIDC {issuer}"
    if method == UNAUTHENTICATED:
        return UNAUTHENTICATED
    if not method:
        return "authentication not recorded"
    return f"unrecognised authentication {auth}"


def identity_label(initiator: str, auth: str) -> str:
    """``alice (key ed25519:…)``, ``alice (unauthenticated)``, ...; ``""`` if no initiator."""
    return f"{initiator} ({authentication_label(auth)})" if initiator else ""


def _auth_claim(doc: dict[str, object], key: str, default: str) -> str:
    # Absent: what the contract's default says (a grant or decision made
    # before the field existed was unauthenticated). Present but not text:
    # unreadable, so not recorded.
    return _s(doc[key]) if key in doc else default


def decision_identity(value: object) -> tuple[str, str] | None:
    """``(initiator, initiator_auth)`` of an ``ecp.evaluate`` result; ``None`` if not one.

    The initiator and its authentication are read from the decision document
    the result holds (``decision_json``, which the grant binds), the
    authentication otherwise from the result's own ``authentication``.
    Unverified, and never raises: history holds whatever an activity returned.
    """
    if not isinstance(value, dict) or not _s(value.get("decision_id")):
        return None
    initiator = ""
    auth = _auth_claim(value, "authentication", UNAUTHENTICATED)
    doc = _json_text(value.get("decision_json"))
    if isinstance(doc, dict):
        initiator = _s(doc.get("initiator"))
        auth = _auth_claim(doc, "authentication", auth)
    return initiator, auth


def _identity_attrs(initiator: str, auth: str) -> dict[str, object]:
    return {
        "initiator": initiator,
        "initiator_auth": auth,
        "initiator_label": identity_label(initiator, auth),
    }


# --- payloads ---------------------------------------------------------------


def _payload_list(p: Payloads) -> Sequence[Payload]:
    return list(p.payloads)


def _digest(payloads: Sequence[Payload]) -> str:
    try:
        return str(digest_payloads(payloads))
    except CanonicalizationError:
        # Not canonicalisable: bind the exact bytes instead.
        h = hashlib.sha256()
        for p in payloads:
            h.update(len(p.data).to_bytes(8, "big") + p.data)
        return "sha256:" + h.hexdigest()


def _json_value(p: Payload) -> object:
    """A JSON payload's value, read strictly; ``None`` if it is not one.

    History holds whatever an activity returned or a client sent, so this
    never raises: nesting too deep, huge integers, lone surrogates and
    duplicate keys are all "not a value" here, as for the verifier.
    """
    if p.metadata.get("encoding", b"") != b"json/plain":
        return None
    try:
        return parse_json_strict(p.data)
    except CanonicalizationError:
        return None
    except (ValueError, TypeError, RecursionError):  # pragma: no cover - defence in depth
        return None


def _json_text(text: object) -> object:
    """A JSON document held as text in a value, read strictly; ``None`` if not one."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return parse_json_strict(text)
    except CanonicalizationError:
        return None
    except (ValueError, TypeError, RecursionError):  # pragma: no cover - defence in depth
        return None


def _first_json(p: Payloads) -> object:
    return _json_value(p.payloads[0]) if p.payloads else None


def _is_null(payloads: Sequence[Payload]) -> bool:
    return all(
        p.metadata.get("encoding", b"") == b"binary/null"
        or (p.metadata.get("encoding", b"") == b"json/plain" and p.data.strip() == b"null")
        for p in payloads
    )


def _preview(payloads: Sequence[Payload]) -> str:
    if len(payloads) != 1:
        return f"{len(payloads)} values"
    text = payloads[0].data.decode("utf-8", "replace")
    return text if len(text) <= 60 else text[:57] + "..."


def _dsse_claims(envelope_json: str) -> dict[str, object] | None:
    """The claims of a DSSE envelope, unverified; ``None`` if unreadable.

    Read with the approval validator's own parsers (DSSE envelope, either
    base64 alphabet, strict JSON), so an envelope it could not have accepted
    names no approver here either. Never raises.
    """
    try:
        env = Envelope.from_json(envelope_json, max_bytes=DEFAULT_MAX_ENVELOPE_BYTES)
        payload = env.payload
        claims = parse_json_strict(payload)
    except AuthorityError:
        return None
    except (ValueError, TypeError, RecursionError):  # pragma: no cover - defence in depth
        return None
    if not isinstance(claims, dict):
        return None
    claims["__payload_digest"] = "sha256:" + hashlib.sha256(payload).hexdigest()
    # Who signed (claimed: the update validator checked the key is the
    # approver's; the history itself proves nothing).
    claims["__keyids"] = ", ".join(s.keyid for s in env.signatures if isinstance(s.keyid, str))
    return claims


def _s(value: object) -> str:
    return value if isinstance(value, str) else ""


def _int(value: object) -> int:
    """An integer claim, or 0: history may hold any JSON there (``true``, ``"9"``, ``[]``)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# --- the builder --------------------------------------------------------------


@dataclass(order=True)
class _Occurrence:
    time_ns: int
    seq: int
    # Uses sort before productions at the same instant: never link a value
    # to a step that could not have seen it.
    role: int  # 0 use, 1 produce
    digest: str = field(compare=False)
    node: str = field(compare=False)
    preview: str = field(compare=False)
    encoding: str = field(compare=False)


@dataclass
class _Builder:
    g: nx.DiGraph
    loaded: set[tuple[str, str]]
    occurrences: list[_Occurrence] = field(default_factory=list)
    seq: int = 0
    # (workflow id, run id, activity id) -> activity node, for ledger links
    activity_by_id: dict[tuple[str, str, str], str] = field(default_factory=dict)
    approvals: dict[str, str] = field(default_factory=dict)  # payload digest -> update node
    grant_links: list[tuple[str, str]] = field(default_factory=list)  # (grant node, decision id)
    grant_approvals: list[tuple[str, str]] = field(default_factory=list)

    def node(self, nid: str, **attrs: object) -> str:
        clean = {k: v for k, v in attrs.items() if v is not None}
        if nid in self.g:
            self.g.nodes[nid].update(clean)
        else:
            self.g.add_node(nid, **clean)
        return nid

    def edge(self, a: str, b: str, rel: str) -> None:
        if a != b and not self.g.has_edge(a, b):
            self.g.add_edge(a, b, rel=rel)

    def occur(self, e: HistoryEvent, role: int, payloads: Sequence[Payload], node: str) -> None:
        if not payloads or _is_null(payloads):
            return
        self.seq += 1
        enc = payloads[0].metadata.get("encoding", b"").decode("utf-8", "replace")
        self.occurrences.append(
            _Occurrence(
                e.event_time.ToNanoseconds(),
                self.seq,
                role,
                _digest(payloads),
                node,
                _preview(payloads),
                enc,
            )
        )

    # --- data flow across all runs ------------------------------------------

    def link_data(self) -> None:
        current: dict[str, str] = {}
        versions: dict[str, int] = {}
        for o in sorted(self.occurrences):
            hexd = o.digest.removeprefix("sha256:")
            if o.role == 1:
                n = versions.get(o.digest, 0) + 1
                versions[o.digest] = n
                nid = f"data:{hexd}" if n == 1 else f"data:{hexd}#{n}"
                self.node(
                    nid,
                    kind=NodeKind.ARTIFACT,
                    digest=o.digest,
                    label=o.preview,
                    encoding=o.encoding,
                    time_ns=o.time_ns,
                )
                if o.digest in current:
                    # The same value again: a new generation, derived from the last.
                    self.edge(current[o.digest], nid, "derived")
                current[o.digest] = nid
                self.edge(o.node, nid, "generated")
            else:
                nid = current.get(o.digest, "")
                if not nid:
                    versions[o.digest] = 1
                    nid = self.node(
                        f"data:{hexd}",
                        kind=NodeKind.ARTIFACT,
                        digest=o.digest,
                        label=o.preview,
                        encoding=o.encoding,
                        time_ns=o.time_ns,
                    )
                    current[o.digest] = nid
                self.edge(nid, o.node, "used")

    def link_governance(self) -> None:
        for grant, decision_id in self.grant_links:
            d = f"decision:{decision_id}"
            if d in self.g:
                self.edge(d, grant, "decided")
        for grant, approval_digest in self.grant_approvals:
            upd = self.approvals.get(approval_digest)
            if upd is not None:
                self.edge(upd, grant, "approved")

    # --- one run ----------------------------------------------------------------

    def run(self, h: RunHistory) -> None:
        _RunBuilder(self, h).build()


#: ``interrupted <type> (<cause>): ...`` as the gate words an interruption.
_INTERRUPTION = re.compile(r"^interrupted .*? \(([a-z0-9_.-]{1,64})\): ")
_CONTROL_STATEMENT = re.compile(r"control statement #(\d{1,9}) signed by ")


def _from_gate(failure: Any) -> bool:
    """Whether a failure carries the gate's mark as its first detail (not a body's own)."""
    payloads = failure.application_failure_info.details.payloads
    return bool(payloads) and payloads[0].data == json.dumps(GATE_MARK).encode()


def _interruption(message: str) -> dict[str, object]:
    """The cause code (and control statement number) of an interrupted body's failure."""
    out: dict[str, object] = {}
    m = _INTERRUPTION.match(message)
    if m:
        out["interrupted_by"] = m.group(1)
    c = _CONTROL_STATEMENT.search(message)
    if c:
        out["control_statement"] = int(c.group(1))
    return out


class _RunBuilder:
    def __init__(self, b: _Builder, h: RunHistory) -> None:
        self.b = b
        self.h = h
        self.wf = h.workflow_id
        self.run_id = h.run_id
        self.prefix = f"{h.workflow_id}/{h.run_id}"
        self.run = run_node(h.workflow_id, h.run_id)
        self.steps: list[str] = []
        self.by_event: dict[int, str] = {}
        self.updates: dict[str, str] = {}
        self.child_keys: dict[int, tuple[str, str]] = {}  # initiated event -> child run
        self.prove_inputs: dict[str, dict[str, object]] = {}
        # workflow task bookkeeping
        self.arrived: list[str] = []
        self.current: list[str] = []
        self.batches: dict[int, list[str]] = {}
        self.used: set[int] = set()
        self.last_completed = 0

    def _id(self, kind: str, key: object) -> str:
        return f"{kind}:{self.prefix}/{key}"

    def _step(self, nid: str, e: HistoryEvent, **attrs: object) -> str:
        self.b.node(
            nid,
            workflow_id=self.wf,
            run_id=self.run_id,
            event_id=e.event_id,
            time=e.event_time.ToJsonString(),
            time_ns=e.event_time.ToNanoseconds(),
            **attrs,
        )
        self.steps.append(nid)
        return nid

    def _earlier(self, e: HistoryEvent, ref: int, kind: str) -> str:
        """The node of the earlier ``kind`` event ``e`` refers to by its id.

        Raises:
            CorruptHistoryError: there is no such earlier event (none with that
                id, a later one, or one of another kind). Temporal never writes
                such a history, so the graph is refused rather than drawn
                without the step.
        """
        nid = self.by_event.get(ref)
        if nid is None or self.b.g.nodes[nid].get("kind") != kind:
            raise CorruptHistoryError(
                f"history of {self.wf} run {self.run_id} is inconsistent: event {e.event_id} "
                f"refers to event {ref}, which is no earlier {kind} event"
            )
        return nid

    def _command(self, nid: str, wt_completed: int) -> None:
        for src in self.batches.get(wt_completed, []):
            self.b.edge(src, nid, "informed")
        self.used.add(wt_completed)

    def build(self) -> None:
        events = self.h.events
        self._run_started(events[0])
        for e in events[1:]:
            self._event(e)
        self._close_sinks()

    def _event(self, e: HistoryEvent) -> None:
        # Events that neither add a step nor deliver one to workflow code
        # (workflow task scheduled, search attributes, ...) have no handler.
        handler = _HANDLERS.get(e.event_type)
        if handler is not None:
            handler(self, e)

    def _unloaded_run(self, e: HistoryEvent, workflow_id: str, run_id: str, wf_type: str) -> str:
        """The node of a run this one started; a placeholder if its history is not read yet."""
        nid = run_node(workflow_id, run_id)
        if nid not in self.b.g:
            self.b.node(
                nid,
                kind=NodeKind.RUN,
                label=f"{wf_type} {workflow_id}",
                workflow_id=workflow_id,
                run_id=run_id,
                workflow_type=wf_type,
                loaded=False,
                time_ns=e.event_time.ToNanoseconds(),
            )
        return nid

    # --- the run itself -----------------------------------------------------------

    def _run_started(self, e: HistoryEvent) -> None:
        """The run node, linked to the run or child initiation that started it.

        Runs are read oldest first, so a predecessor or parent given with this
        run is already in the graph; one not given is simply not linked.
        """
        b = self.b
        s = e.workflow_execution_started_event_attributes
        b.node(
            self.run,
            kind=NodeKind.RUN,
            label=f"{s.workflow_type.name} {self.wf}",
            workflow_id=self.wf,
            run_id=self.run_id,
            workflow_type=s.workflow_type.name,
            task_queue=s.task_queue.name,
            namespace=self.h.namespace,
            loaded=True,
            event_id=1,
            time=e.event_time.ToJsonString(),
            time_ns=e.event_time.ToNanoseconds(),
            status="running",
        )
        b.occur(e, 0, _payload_list(s.input), self.run)
        if s.continued_execution_run_id:
            prev = close_node(self.wf, s.continued_execution_run_id)
            if prev in b.g:
                b.edge(prev, self.run, "started")
        pe = s.parent_workflow_execution
        if pe.workflow_id:
            b.g.nodes[self.run]["parent_workflow_id"] = pe.workflow_id
            parent_child = f"child:{pe.workflow_id}/{pe.run_id}/{s.parent_initiated_event_id}"
            if parent_child in b.g:
                b.edge(parent_child, self.run, "started")
        self.arrived.append(self.run)

    def _run_close(self, e: HistoryEvent) -> None:
        b, t = self.b, e.event_type
        status, attr_name = _RUN_CLOSE[t]
        attrs = getattr(e, attr_name)
        nid = close_node(self.wf, self.run_id)
        extra: dict[str, object] = {}
        if t == E.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            extra["failure"] = attrs.failure.message
        if t == E.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            extra["continued_as"] = attrs.new_execution_run_id
        b.node(
            nid,
            kind=NodeKind.CLOSE,
            label=f"{status}",
            workflow_id=self.wf,
            run_id=self.run_id,
            event_id=e.event_id,
            time=e.event_time.ToJsonString(),
            time_ns=e.event_time.ToNanoseconds(),
            status=status,
            **extra,
        )
        b.node(self.run, status=status)
        wtc = getattr(attrs, "workflow_task_completed_event_id", 0)
        if wtc:
            self._command(nid, wtc)
        if t == E.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            b.occur(e, 1, _payload_list(attrs.result), nid)
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            b.occur(e, 1, _payload_list(attrs.input), nid)
            nxt = self._unloaded_run(
                e, self.wf, attrs.new_execution_run_id, attrs.workflow_type.name
            )
            b.edge(nid, nxt, "started")

    def _close_sinks(self) -> None:
        # Everything delivered to workflow code may shape its result: steps
        # with no later step of their own inform the close.
        close = close_node(self.wf, self.run_id)
        g = self.b.g
        # No close event in this history: the run is still open, or only a
        # parent's (later) history says it closed, which makes a bare node.
        closed_ns = g.nodes[close].get("time_ns") if close in g else None
        if not isinstance(closed_ns, int):
            return
        mine = {self.run, *self.steps}
        for n in (self.run, *self.steps):
            last = not any(s in mine and s != close for s in g.successors(n))
            if n != close and last and g.nodes[n].get("time_ns", 0) <= closed_ns:
                self.b.edge(n, close, "informed")

    # --- workflow tasks -----------------------------------------------------------

    def _workflow_task_started(self, e: HistoryEvent) -> None:
        """A workflow task sees everything that arrived since the last one.

        If the last completed task issued no command, what it saw is carried
        into this one, so the next command is still linked to it.
        """
        carry = (
            [] if self.last_completed in self.used else self.batches.get(self.last_completed, [])
        )
        self.current = self.current + carry + self.arrived
        self.arrived = []

    def _workflow_task_completed(self, e: HistoryEvent) -> None:
        """Commands name the task completion they came from: remember what it saw."""
        self.batches[e.event_id] = self.current
        self.current = []
        self.last_completed = e.event_id

    # --- activities ---------------------------------------------------------------

    def _activity_scheduled(self, e: HistoryEvent) -> None:
        b = self.b
        a = e.activity_task_scheduled_event_attributes
        env = grant_envelope(a.header)
        claims = grant_claims(env) if env is not None else None
        grant_id = _s(claims.get("grant_id")) if claims else ""
        nid = self._step(
            self._id("activity", e.event_id),
            e,
            kind=NodeKind.ACTIVITY,
            label=a.activity_type.name,
            activity_type=a.activity_type.name,
            activity_id=a.activity_id,
            task_queue=a.task_queue.name,
            attempts=0,
            status="scheduled",
            governed=env is not None or a.activity_id.startswith("execute:"),
            grant_id=grant_id,
            has_grant_header=env is not None,
        )
        self.by_event[e.event_id] = nid
        b.activity_by_id[(self.wf, self.run_id, a.activity_id)] = nid
        self._command(nid, a.workflow_task_completed_event_id)
        b.occur(e, 0, _payload_list(a.input), nid)
        if a.activity_type.name == "ecp.prove":
            # Kept for _ledger_entry: the input says what the entry records.
            v = _first_json(a.input)
            if isinstance(v, dict):
                self.prove_inputs[nid] = v
        if claims is not None and grant_id:
            self._header_grant(e, nid, grant_id, claims)

    def _header_grant(
        self, e: HistoryEvent, nid: str, grant_id: str, claims: dict[str, object]
    ) -> None:
        """The grant an activity carries in its header authorizes it.

        Its decision and approvals may be in runs not read yet, so they are
        linked once all runs are (:meth:`_Builder.link_governance`).
        """
        b = self.b
        g = b.node(
            f"grant:{grant_id}",
            kind=NodeKind.GRANT,
            label=f"grant {grant_id}",
            grant_id=grant_id,
            decision_id=_s(claims.get("decision_id")),
            **_identity_attrs(
                _s(claims.get("initiator")),
                _auth_claim(claims, "initiator_auth", UNAUTHENTICATED),
            ),
            issuer=_s(claims.get("issuer")),
            expires_at=_s(claims.get("expires_at")),
            time_ns=e.event_time.ToNanoseconds(),
        )
        b.edge(g, nid, "authorized")
        arts = _grant_artifacts(claims.get("artifacts"))
        if arts:
            # JSON text: GraphML and DOT attributes hold no lists. Linked to
            # artifact nodes once the attempt's outcome is known.
            b.node(nid, grant_artifacts=json.dumps(arts, sort_keys=True))
        b.grant_links.append((g, _s(claims.get("decision_id"))))
        approvals = claims.get("approvals")
        if isinstance(approvals, list):
            b.grant_approvals.extend((g, _s(x)) for x in approvals)

    def _activity_started(self, e: HistoryEvent) -> None:
        """An attempt began: workflow code is not told, so nothing arrives."""
        a = e.activity_task_started_event_attributes
        nid = self._earlier(e, a.scheduled_event_id, NodeKind.ACTIVITY)
        attrs: dict[str, object] = {"attempts": a.attempt, "status": "started"}
        if a.last_failure.message:
            attrs["last_failure"] = a.last_failure.message
        self.b.node(nid, **attrs)

    def _activity_close(self, e: HistoryEvent) -> None:
        b, t = self.b, e.event_type
        status = _ACTIVITY_CLOSE[t]
        attrs: dict[str, object] = {"status": status}
        if t == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            ac = e.activity_task_completed_event_attributes
            sched = ac.scheduled_event_id
        elif t == E.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            af = e.activity_task_failed_event_attributes
            sched = af.scheduled_event_id
            f = af.failure
            ftype = (
                f.application_failure_info.type if f.HasField("application_failure_info") else ""
            )
            attrs.update(failure=f.message, failure_type=ftype)
            if ftype == INTERRUPTED_TYPE and _from_gate(f):
                # The body ran and the gate stopped it: name the cause and,
                # for a halt or revocation, the control statement behind it.
                attrs.update(status="interrupted", governed=True, **_interruption(f.message))
            elif ftype == OUTCOME_UNKNOWN_TYPE and _from_gate(f):
                # Every use was taken by attempts that never ended: a body may
                # have run; the gate refused this one and flagged it for review.
                attrs.update(status="unknown", governed=True)
            elif ftype.startswith("ecp."):
                attrs.update(status="denied", governed=True)
        elif t == E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
            at = e.activity_task_timed_out_event_attributes
            sched = at.scheduled_event_id
            attrs["failure"] = at.failure.message
        else:
            sched = e.activity_task_canceled_event_attributes.scheduled_event_id
        nid = self._earlier(e, sched, NodeKind.ACTIVITY)
        attrs.update(closed_time=e.event_time.ToJsonString(), time_ns=e.event_time.ToNanoseconds())
        b.node(nid, **attrs)
        self.arrived.append(nid)
        if t != E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            return
        result = e.activity_task_completed_event_attributes.result
        b.occur(e, 1, _payload_list(result), nid)
        self._governance_result(nid, e, _first_json(result))

    def _governance_result(self, nid: str, e: HistoryEvent, value: object) -> None:
        """The decision, grant or ledger entry a governance step returned, if any."""
        if not isinstance(value, dict):
            return
        atype = self.b.g.nodes[nid].get("activity_type")
        if atype == "ecp.evaluate" and _s(value.get("decision_id")):
            self._decision(nid, e, value)
        elif atype == "ecp.authorize" and _s(value.get("grant_id")):
            self._issued_grant(nid, e, value)
        elif atype == "ecp.prove" and type(value.get("index")) is int:
            self._ledger_entry(nid, e, value)

    def _decision(self, nid: str, e: HistoryEvent, value: dict[str, Any]) -> None:
        b = self.b
        reasons = value.get("reasons")
        initiator, auth = decision_identity(value) or ("", "")
        d = b.node(
            f"decision:{value['decision_id']}",
            kind=NodeKind.DECISION,
            label=f"decision {_s(value.get('effect'))}",
            decision_id=value["decision_id"],
            effect=_s(value.get("effect")),
            policy_digest=_s(value.get("policy_digest")),
            # Only text: str() of a deeply nested value can exhaust the stack.
            reasons="; ".join(r for r in reasons if isinstance(r, str))
            if isinstance(reasons, list)
            else "",
            approvals_required=_int(value.get("approvals_required")),
            **_identity_attrs(initiator, auth),
            time_ns=e.event_time.ToNanoseconds(),
            workflow_id=self.wf,
            run_id=self.run_id,
        )
        b.edge(nid, d, "decided")

    def _issued_grant(self, nid: str, e: HistoryEvent, value: dict[str, Any]) -> None:
        g = self.b.node(
            f"grant:{value['grant_id']}",
            kind=NodeKind.GRANT,
            label=f"grant {value['grant_id']}",
            grant_id=value["grant_id"],
            expires_at=_s(value.get("expires_at")),
            time_ns=e.event_time.ToNanoseconds(),
        )
        self.b.edge(nid, g, "granted")

    def _ledger_entry(self, nid: str, e: HistoryEvent, value: dict[str, Any]) -> None:
        """The entry ``ecp.prove`` appended, linked to what it records.

        What it records (activity, grant, decision, outcome) is in the prove
        step's input: its result only says where the entry landed.
        """
        b = self.b
        idx = value["index"]
        inp = self.prove_inputs.get(nid, {})
        led = b.node(
            f"ledger:{idx}",
            kind=NodeKind.LEDGER,
            label=f"ledger entry #{idx}",
            index=idx,
            tree_size=_int(value.get("tree_size")),
            outcome=_s(inp.get("outcome")),
            activity_id=_s(inp.get("activity_id")),
            grant_id=_s(inp.get("grant_id")),
            decision_id=_s(inp.get("decision_id")),
            # Not recorded ("") where the prove input does not say: its
            # contract has no other default.
            **_identity_attrs(_s(inp.get("initiator")), _s(inp.get("authentication"))),
            workflow_id=self.wf,
            run_id=self.run_id,
            time_ns=e.event_time.ToNanoseconds(),
        )
        b.edge(nid, led, "recorded")
        target = b.activity_by_id.get((self.wf, self.run_id, _s(inp.get("activity_id"))))
        if target is not None:
            b.edge(target, led, "recorded")
        if _s(inp.get("decision_id")):
            d = f"decision:{inp['decision_id']}"
            if d in b.g:
                b.edge(d, led, "recorded")

    # --- timers -------------------------------------------------------------------

    def _timer_started(self, e: HistoryEvent) -> None:
        ts = e.timer_started_event_attributes
        nid = self._step(
            self._id("timer", e.event_id),
            e,
            kind=NodeKind.TIMER,
            label=f"timer {ts.timer_id}",
            timer_id=ts.timer_id,
            duration_s=ts.start_to_fire_timeout.ToTimedelta().total_seconds(),
            status="started",
        )
        self.by_event[e.event_id] = nid
        self._command(nid, ts.workflow_task_completed_event_id)

    def _timer_fired(self, e: HistoryEvent) -> None:
        nid = self._earlier(e, e.timer_fired_event_attributes.started_event_id, NodeKind.TIMER)
        self.b.node(nid, status="fired", fired_time=e.event_time.ToJsonString())
        self.arrived.append(nid)

    def _timer_canceled(self, e: HistoryEvent) -> None:
        """The workflow canceled it itself: nothing new arrives."""
        nid = self._earlier(e, e.timer_canceled_event_attributes.started_event_id, NodeKind.TIMER)
        self.b.node(nid, status="canceled")

    # --- signals and cancel requests ----------------------------------------------

    def _signaled(self, e: HistoryEvent) -> None:
        sg = e.workflow_execution_signaled_event_attributes
        nid = self._step(
            self._id("signal", e.event_id),
            e,
            kind=NodeKind.SIGNAL,
            label=f"signal {sg.signal_name}",
            name=sg.signal_name,
            sender=sg.identity,
            from_workflow_id=sg.external_workflow_execution.workflow_id,
        )
        self.b.occur(e, 0, _payload_list(sg.input), nid)
        self.arrived.append(nid)

    def _cancel_requested(self, e: HistoryEvent) -> None:
        """A cancel request reaches workflow code like a signal, and is drawn as one."""
        nid = self._step(
            self._id("signal", e.event_id),
            e,
            kind=NodeKind.SIGNAL,
            label="cancel request",
            name="cancel",
            sender=e.workflow_execution_cancel_requested_event_attributes.identity,
        )
        self.arrived.append(nid)

    def _signal_out_initiated(self, e: HistoryEvent) -> None:
        so = e.signal_external_workflow_execution_initiated_event_attributes
        nid = self._step(
            self._id("signal-out", e.event_id),
            e,
            kind=NodeKind.SIGNAL_OUT,
            label=f"send {so.signal_name}",
            name=so.signal_name,
            to_workflow_id=so.workflow_execution.workflow_id,
        )
        self.by_event[e.event_id] = nid
        self._command(nid, so.workflow_task_completed_event_id)
        self.b.occur(e, 1, _payload_list(so.input), nid)

    def _signal_out_resolved(self, e: HistoryEvent) -> None:
        """Delivered or failed, the workflow learns how its signal went."""
        if e.event_type == E.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_SIGNALED:
            ref = e.external_workflow_execution_signaled_event_attributes.initiated_event_id
        else:
            ref = e.signal_external_workflow_execution_failed_event_attributes.initiated_event_id
        nid = self.by_event.get(ref, "")
        if nid:
            self.arrived.append(nid)

    # --- updates ------------------------------------------------------------------

    def _update_accepted(self, e: HistoryEvent) -> None:
        b = self.b
        ua = e.workflow_execution_update_accepted_event_attributes
        req = ua.accepted_request
        name = req.input.name
        attrs: dict[str, object] = {
            "name": name,
            "sender": req.meta.identity,
            "update_id": req.meta.update_id,
            "status": "accepted",
        }
        claims = None
        if name == ACTIVITY_APPROVE_UPDATE:
            v = _first_json(req.input.args)
            claims = _dsse_claims(v) if isinstance(v, str) else None
            if claims is not None:
                attrs.update(
                    approver=_s(claims.get("approver")),
                    approver_key_id=_s(claims.get("__keyids")),
                    approval_id=_s(claims.get("approval_id")),
                    decision_id=_s(claims.get("decision_id")),
                )
        label = (
            f"approval by {attrs.get('approver')}" if attrs.get("approver") else f"update {name}"
        )
        nid = self._step(
            self._id("update", req.meta.update_id or e.event_id),
            e,
            kind=NodeKind.UPDATE,
            label=label,
            **attrs,
        )
        self.updates[req.meta.update_id] = nid
        if claims is not None:
            b.approvals[_s(claims.get("__payload_digest"))] = nid
        b.occur(e, 0, _payload_list(req.input.args), nid)
        # Accepted while the last workflow task ran: its commands may depend on it.
        self.batches.setdefault(self.last_completed, []).append(nid)

    def _update_completed(self, e: HistoryEvent) -> None:
        """The workflow's own answer: it adds a result, but tells the workflow nothing new."""
        uc = e.workflow_execution_update_completed_event_attributes
        nid = self.updates.get(uc.meta.update_id, "")
        if nid:
            ok = uc.outcome.HasField("success")
            self.b.node(nid, status="completed" if ok else "failed")
            if ok:
                self.b.occur(e, 1, _payload_list(uc.outcome.success), nid)

    # --- child workflows ----------------------------------------------------------

    def _child_initiated(self, e: HistoryEvent) -> None:
        c = e.start_child_workflow_execution_initiated_event_attributes
        nid = self._step(
            self._id("child", e.event_id),
            e,
            kind=NodeKind.CHILD,
            label=f"child {c.workflow_type.name}",
            child_workflow_id=c.workflow_id,
            workflow_type=c.workflow_type.name,
            status="initiated",
        )
        self.by_event[e.event_id] = nid
        self._command(nid, c.workflow_task_completed_event_id)
        self.b.occur(e, 0, _payload_list(c.input), nid)

    def _child_started(self, e: HistoryEvent) -> None:
        cs = e.child_workflow_execution_started_event_attributes
        nid = self._earlier(e, cs.initiated_event_id, NodeKind.CHILD)
        ex = cs.workflow_execution
        self.b.node(nid, child_run_id=ex.run_id, status="started")
        child_run = self._unloaded_run(e, ex.workflow_id, ex.run_id, cs.workflow_type.name)
        self.b.edge(nid, child_run, "started")
        self.child_keys[cs.initiated_event_id] = (ex.workflow_id, ex.run_id)
        self.arrived.append(nid)

    def _child_start_failed(self, e: HistoryEvent) -> None:
        cf = e.start_child_workflow_execution_failed_event_attributes
        nid = self._earlier(e, cf.initiated_event_id, NodeKind.CHILD)
        self.b.node(nid, status="start_failed")
        self.arrived.append(nid)

    def _child_close(self, e: HistoryEvent) -> None:
        t = e.event_type
        attrs = getattr(e, _CHILD_CLOSE[t][1])
        init = attrs.initiated_event_id
        nid = self._earlier(e, init, NodeKind.CHILD)
        self.b.node(nid, status=_CHILD_CLOSE[t][0])
        key = self.child_keys.get(init)
        if key is not None and key in self.b.loaded:
            # The child's own close (filled in when its history is read) is
            # what the parent learns of: its result, its failure.
            self.arrived.append(
                self.b.node(
                    close_node(*key), kind=NodeKind.CLOSE, workflow_id=key[0], run_id=key[1]
                )
            )
        else:
            self.arrived.append(nid)

    # --- markers ------------------------------------------------------------------

    def _marker(self, e: HistoryEvent) -> None:
        m = e.marker_recorded_event_attributes
        nid = self._step(
            self._id("marker", e.event_id),
            e,
            kind=NodeKind.MARKER,
            label=f"marker {m.marker_name}",
            name=m.marker_name,
        )
        self._command(nid, m.workflow_task_completed_event_id)


_ACTIVITY_CLOSE = {
    E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "completed",
    E.EVENT_TYPE_ACTIVITY_TASK_FAILED: "failed",
    E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "timed_out",
    E.EVENT_TYPE_ACTIVITY_TASK_CANCELED: "canceled",
}
_CHILD_CLOSE = {
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED: (
        "completed",
        "child_workflow_execution_completed_event_attributes",
    ),
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED: (
        "failed",
        "child_workflow_execution_failed_event_attributes",
    ),
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED: (
        "canceled",
        "child_workflow_execution_canceled_event_attributes",
    ),
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT: (
        "timed_out",
        "child_workflow_execution_timed_out_event_attributes",
    ),
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED: (
        "terminated",
        "child_workflow_execution_terminated_event_attributes",
    ),
}
_RUN_CLOSE = {
    E.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED: (
        "completed",
        "workflow_execution_completed_event_attributes",
    ),
    E.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED: (
        "failed",
        "workflow_execution_failed_event_attributes",
    ),
    E.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT: (
        "timed_out",
        "workflow_execution_timed_out_event_attributes",
    ),
    E.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED: (
        "canceled",
        "workflow_execution_canceled_event_attributes",
    ),
    E.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED: (
        "terminated",
        "workflow_execution_terminated_event_attributes",
    ),
    E.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW: (
        "continued_as_new",
        "workflow_execution_continued_as_new_event_attributes",
    ),
}

#: A handler of one event type; every event not listed here is ignored.
_Handler = Callable[[_RunBuilder, HistoryEvent], None]
_HANDLERS: dict[E.ValueType, _Handler] = {
    E.EVENT_TYPE_WORKFLOW_TASK_STARTED: _RunBuilder._workflow_task_started,
    E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED: _RunBuilder._workflow_task_completed,
    E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: _RunBuilder._activity_scheduled,
    E.EVENT_TYPE_ACTIVITY_TASK_STARTED: _RunBuilder._activity_started,
    **dict.fromkeys(_ACTIVITY_CLOSE, _RunBuilder._activity_close),
    E.EVENT_TYPE_TIMER_STARTED: _RunBuilder._timer_started,
    E.EVENT_TYPE_TIMER_FIRED: _RunBuilder._timer_fired,
    E.EVENT_TYPE_TIMER_CANCELED: _RunBuilder._timer_canceled,
    E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED: _RunBuilder._signaled,
    E.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED: _RunBuilder._cancel_requested,
    E.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED: _RunBuilder._signal_out_initiated,
    E.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_SIGNALED: _RunBuilder._signal_out_resolved,
    E.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED: _RunBuilder._signal_out_resolved,
    E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED: _RunBuilder._update_accepted,
    E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED: _RunBuilder._update_completed,
    E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED: _RunBuilder._child_initiated,
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED: _RunBuilder._child_started,
    E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_FAILED: _RunBuilder._child_start_failed,
    **dict.fromkeys(_CHILD_CLOSE, _RunBuilder._child_close),
    E.EVENT_TYPE_MARKER_RECORDED: _RunBuilder._marker,
    **dict.fromkeys(_RUN_CLOSE, _RunBuilder._run_close),
}


def _grant_artifacts(value: object) -> list[dict[str, object]]:
    """The artifacts a grant header names, as far as they read (unverified)."""
    if not isinstance(value, list):
        return []
    out: list[dict[str, object]] = []
    for a in value[:64]:
        if isinstance(a, dict) and isinstance(a.get("digest"), str):
            out.append(
                {
                    k: a[k]
                    for k in ("name", "kind", "uri", "digest", "size")
                    if isinstance(a.get(k), str | int) and not isinstance(a.get(k), bool)
                }
            )
    return out


def _order(h: RunHistory) -> int:
    # Histories loaded or fetched are checked; a RunHistory built in memory may not be.
    if not h.events or h.events[0].event_type != E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
        raise CorruptHistoryError(
            f"history of {h.workflow_id} does not begin with WorkflowExecutionStarted"
        )
    return h.events[0].event_time.ToNanoseconds()


def build_graph(histories: Iterable[RunHistory]) -> nx.DiGraph:
    """Build the provenance DAG of one or more run histories.

    Runs are linked where their histories say so (parent/child,
    continue-as-new) and where one run's payload is another's input.

    Never fails on what a history's payloads, headers or ids hold (unreadable
    values are just not read); only on a history that contradicts itself.

    Raises:
        CorruptHistoryError: an event refers to an earlier event the history
            does not have (or one of another kind), or a history does not begin
            with its run's start.
        LineageGraphError: no histories, the same run twice, or (a bug) a cycle.
    """
    runs = sorted(histories, key=_order)
    if not runs:
        raise LineageGraphError("no histories to build a graph from")
    keys = [(h.workflow_id, h.run_id) for h in runs]
    if len(set(keys)) != len(keys):
        raise LineageGraphError("the same run was given twice")
    b = _Builder(nx.DiGraph(), set(keys))
    for h in runs:
        b.run(h)
    b.link_data()
    b.link_governance()
    from ecp.lineage.graph._artifacts import link_grant_artifacts  # it imports this module

    link_grant_artifacts(b.g)
    if not nx.is_directed_acyclic_graph(b.g):
        raise LineageGraphError("internal error: the lineage graph has a cycle")
    return b.g
