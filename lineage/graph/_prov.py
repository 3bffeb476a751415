"""W3C PROV (PROV-JSON and PROV-N) from a lineage graph, through ``prov``.

Steps (runs, activity executions, timers, signals, updates, child starts,
closes) become ``prov:Activity``; artifacts, decisions, grants and ledger
entries become ``prov:Entity``; task queues (the worker pools), the grant
authority, initiators and approvers become ``prov:Agent``. Graph edges map to
``wasInformedBy`` (step → step), ``used``, ``wasGeneratedBy``,
``wasDerivedFrom`` (entity → entity) and ``wasInfluencedBy`` (the rest);
grants are attributed to their issuing key, approvals to their approver.

An initiator is one agent per name *and* way it was established
(``ecp:authentication``: ``key:<key id>``, ``oidc:<issuer>#<subject>``,
``unauthenticated``; absent where the history does not say), so "alice,
proven by her key" and an unauthenticated "alice" stay apart; decisions,
grants and ledger entries that name it were influenced by it. An approver is
one agent per name and signing key (``ecp:keyId``). Both are as the history
claims, unverified.
"""

from __future__ import annotations

import io
import re
from datetime import datetime

import networkx as nx
from prov.identifier import Namespace, QualifiedName
from prov.model import ProvDocument

from ecp.lineage.graph._build import NodeKind, authentication_method, identity_label

__all__ = ["ECP_NAMESPACE", "prov_json", "prov_n", "to_prov"]

#: The namespace of every identifier and attribute in the export.
ECP_NAMESPACE = "https://ecp.dev/lineage#"

_ENTITY_KINDS = frozenset({NodeKind.ARTIFACT, NodeKind.DECISION, NodeKind.GRANT, NodeKind.LEDGER})
#: Entities that record who asked: influenced by the initiator.
_NAMES_INITIATOR = frozenset({NodeKind.DECISION, NodeKind.GRANT, NodeKind.LEDGER})
_SKIP_ATTRS = frozenset({"kind", "label", "time", "time_ns", "closed_time", "fired_time"})
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class _Names:
    def __init__(self) -> None:
        self._by_node: dict[str, str] = {}
        self._taken: set[str] = set()

    def __call__(self, node: str) -> str:
        name = self._by_node.get(node)
        if name is None:
            base = _SAFE.sub("_", node)
            name, i = base, 1
            while name in self._taken:
                i += 1
                name = f"{base}_{i}"
            self._taken.add(name)
            self._by_node[node] = name
        return "ecp:" + name


_Value = str | int | QualifiedName


def _attributes(ns: Namespace, data: dict[str, object]) -> dict[str, _Value]:
    attrs: dict[str, _Value] = {"prov:type": ns[str(data.get("kind", "node"))]}
    label = data.get("label")
    if isinstance(label, str) and label:
        attrs["prov:label"] = label
    for k, v in sorted(data.items()):
        if k in _SKIP_ATTRS or v == "" or v is None:
            continue
        # Strings and integers survive a PROV-JSON round trip unchanged;
        # floats and booleans are written as strings.
        attrs[f"ecp:{k}"] = (
            v if isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)) else str(v)
        )
    return attrs


def to_prov(g: nx.DiGraph) -> ProvDocument:
    """The PROV document of a lineage graph. Deterministic for a given graph."""
    doc = ProvDocument()
    ns = doc.add_namespace("ecp", ECP_NAMESPACE)
    name = _Names()
    elements: dict[str, str] = {}
    agents: dict[str, str] = {}

    counter = iter(range(1, 1 << 62))

    def rel() -> str:
        # Named relations: blank-node ids would differ on every serialisation.
        return f"ecp:r{next(counter)}"

    def agent(key: str, label: str, kind: str, **extra: str) -> str:
        if key not in agents:
            agents[key] = name(f"agent:{key}")
            attrs: dict[str, _Value] = {"prov:type": ns[kind], "prov:label": label}
            attrs.update({f"ecp:{k}": v for k, v in sorted(extra.items()) if v})
            doc.agent(agents[key], attrs)
        return agents[key]

    def initiator(data: dict[str, object]) -> str:
        who, auth = str(data["initiator"]), str(data.get("initiator_auth") or "")
        return agent(
            # The name's length keeps (name, authentication) pairs apart
            # whatever either holds.
            f"initiator/{len(who)}:{who}/{auth}",
            identity_label(who, auth),
            "initiator",
            name=who,
            authentication=auth,
            authenticationMethod=authentication_method(auth),
        )

    def approver(data: dict[str, object]) -> str:
        who, key_id = str(data["approver"]), str(data.get("approver_key_id") or "")
        return agent(
            f"approver/{len(who)}:{who}/{key_id}",
            f"{who} (key {key_id})" if key_id else who,
            "approver",
            name=who,
            keyId=key_id,
        )

    for n in sorted(g.nodes):
        data = dict(g.nodes[n])
        kind = data.get("kind")
        attrs = _attributes(ns, data)
        elements[n] = name(n)
        if kind in _ENTITY_KINDS:
            doc.entity(elements[n], attrs)
        else:
            start = _time(data.get("time"))
            end = _time(data.get("closed_time") or data.get("fired_time")) or start
            doc.activity(elements[n], start, end, attrs)
    for n in sorted(g.nodes):
        data = g.nodes[n]
        kind = data.get("kind")
        if kind == NodeKind.ACTIVITY and data.get("task_queue"):
            q = str(data["task_queue"])
            doc.association(
                elements[n], agent(f"queue/{q}", f"workers of {q}", "worker_pool"), identifier=rel()
            )
        if kind == NodeKind.GRANT and data.get("issuer"):
            iss = str(data["issuer"])
            doc.attribution(
                elements[n],
                agent(f"key/{iss}", f"authority key {iss}", "authority"),
                identifier=rel(),
            )
        if kind in _NAMES_INITIATOR and data.get("initiator"):
            doc.influence(elements[n], initiator(dict(data)), identifier=rel())
        if kind == NodeKind.UPDATE and data.get("approver"):
            a = approver(dict(data))
            doc.association(elements[n], a, identifier=rel())
            for src in sorted(g.predecessors(n)):
                if g.nodes[src].get("kind") == NodeKind.ARTIFACT:
                    doc.attribution(elements[src], a, identifier=rel())
    for u, v in sorted(g.edges):
        ku, kv = g.nodes[u].get("kind"), g.nodes[v].get("kind")
        eu, ev = ku in _ENTITY_KINDS, kv in _ENTITY_KINDS
        if not eu and not ev:
            doc.wasInformedBy(elements[v], elements[u], identifier=rel())
        elif eu and not ev:
            doc.used(elements[v], elements[u], identifier=rel())
        elif not eu and ev:
            if g.edges[u, v].get("rel") in ("generated", "decided", "granted") or (
                ku == NodeKind.ACTIVITY and g.nodes[u].get("activity_type") == "ecp.prove"
            ):
                doc.wasGeneratedBy(elements[v], elements[u], identifier=rel())
            else:
                doc.influence(elements[v], elements[u], identifier=rel())
        else:
            doc.wasDerivedFrom(elements[v], elements[u], identifier=rel())
    return doc


def prov_json(g: nx.DiGraph) -> str:
    """PROV-JSON text of the graph."""
    out = io.StringIO()
    to_prov(g).serialize(out, format="json", indent=2)
    return out.getvalue()


def prov_n(g: nx.DiGraph) -> str:
    """PROV-N text of the graph."""
    return str(to_prov(g).get_provn())
