"""Cedar policy bundles and deterministic decisions.

A bundle is a directory with ``policies.cedar``, a schema
(``schema.cedarschema`` or ``schema.cedarschema.json``) and ``entities.json``.
Its content digest is recorded in every decision, so a decision always names
the exact rules it was made under.

Mapping onto Cedar: the principal is ``User::"<initiator>"``, the action is
``Action::"<activity type>"``, the resource is ``Activity::"<activity type>"``
and the context is ``{arguments, purpose, environment}`` (plus
``authentication`` where the schema declares it, and ``artifacts`` when the
request names any). The schema is
passed to every evaluation, so a request whose arguments do not have the
declared types is denied before any policy runs.

Governance annotations on policies:

* ``@id("...")`` names the policy in decisions (falls back to Cedar's id).
* ``@reason("...")`` explains it.
* ``@approval_role("finance")`` and ``@approvals_required("1")`` on a permit
  turn an allow into ``allow_after_approval``.
* ``@max_attempts("3")``, ``@execute_timeout("60")`` (seconds one execute
  attempt may run) and ``@constraints("{...json...}")`` on a permit become the
  grant's scope.
* ``@heartbeat("10")`` on a permit marks the action long-running: its body
  must heartbeat at least every 10 s, and the gate re-checks the grant (halts,
  revocations, its lifetime) at each heartbeat. A permit whose
  ``@execute_timeout`` exceeds :data:`LONG_RUNNING_SECONDS` must set it.

Deny by default, forbid overrides permit (Cedar's semantics). Any evaluation
error is a denial: an erroring ``forbid`` might have applied.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final, Literal, NewType, Protocol

import cedarpy
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from ecp.authority._canonical import Digest, canonical_json, digest_json, parse_json_strict
from ecp.authority.errors import AuthorityError, PolicyBundleError, PolicyEvaluationError

__all__ = [
    "DECISION_SCHEMA_VERSION",
    "DEFAULT_MAX_ATTEMPTS",
    "ENTITIES_FILE",
    "POLICIES_FILE",
    "PRINCIPAL_TYPE",
    "RESOURCE_TYPE",
    "ROLE_TYPE",
    "SCHEMA_FILE",
    "SCHEMA_JSON_FILE",
    "ApprovalRequirement",
    "Decision",
    "DecisionId",
    "DecisionScope",
    "Effect",
    "PolicyBundle",
    "PolicyRequest",
]

POLICIES_FILE: Final = "policies.cedar"
SCHEMA_FILE: Final = "schema.cedarschema"
SCHEMA_JSON_FILE: Final = "schema.cedarschema.json"
ENTITIES_FILE: Final = "entities.json"
DECISION_SCHEMA_VERSION: Final = "ecp.decision/v1"
PRINCIPAL_TYPE: Final = "User"
ROLE_TYPE: Final = "Group"
RESOURCE_TYPE: Final = "Activity"
#: A permit without ``@max_attempts`` grants one attempt: retries must be asked for.
DEFAULT_MAX_ATTEMPTS: Final = 1
#: The most attempts a grant can carry.
MAX_ATTEMPTS_LIMIT: Final = 1000
#: How long one execute attempt may run without ``@execute_timeout`` (seconds).
DEFAULT_EXECUTE_TIMEOUT: Final = 300
#: The longest ``@execute_timeout`` a permit may set (one day).
MAX_EXECUTE_TIMEOUT: Final = 86400
#: A permit allowing longer than this must set ``@heartbeat`` (long-running).
LONG_RUNNING_SECONDS: Final = DEFAULT_EXECUTE_TIMEOUT
#: The longest silence ``@heartbeat`` may allow.
MAX_HEARTBEAT_SECONDS: Final = 3600

#: ``sha256:<hex>`` over the policy digest and the request digest.
DecisionId = NewType("DecisionId", str)


class Effect(StrEnum):
    """What a decision allows."""

    ALLOW = "allow"
    DENY = "deny"
    ALLOW_AFTER_APPROVAL = "allow_after_approval"


# Not strict: decisions also travel through Temporal converters as plain JSON
# (lists for tuples, strings for enums). Nothing here is a signed payload.
_FROZEN = ConfigDict(frozen=True, extra="forbid")


class PolicyRequest(BaseModel):
    """The exact request a decision is made on."""

    model_config = _FROZEN

    action: str = Field(min_length=1)
    initiator: str
    arguments: dict[str, JsonValue]
    purpose: str = ""
    environment: dict[str, JsonValue] = Field(default_factory=dict)
    #: How the initiator was established (``key:<key id>``,
    #: ``oidc:<issuer>#<subject>`` or ``unauthenticated``), verified by the
    #: authority before evaluation. Part of the request digest, so the
    #: decision (and the grant) bind it.
    authentication: str = "unauthenticated"
    #: The artifacts the call will use, by name, as the policy sees them
    #: (``ecp.authority._artifact.policy_view``). Part of the request digest
    #: when present, so the decision binds their digests.
    artifacts: dict[str, JsonValue] = Field(default_factory=dict)

    def digest(self) -> Digest:
        """Digest of the request's canonical JSON.

        A request without artifacts digests as it did before they existed, so
        decisions recorded then keep their ids.

        Raises:
            CanonicalizationError: the arguments hold values JCS cannot express.
        """
        return digest_json(
            self.model_dump(mode="json", exclude=None if self.artifacts else {"artifacts"})
        )


class ApprovalRequirement(BaseModel):
    """``count`` distinct members of ``role`` must approve; ``approvers`` lists them."""

    model_config = _FROZEN

    role: str
    count: int = Field(ge=1)
    approvers: tuple[str, ...]


class DecisionScope(BaseModel):
    """What the permitting policies allow a grant to cover."""

    model_config = _FROZEN

    max_attempts: int = Field(ge=1)
    constraints: dict[str, JsonValue] = Field(default_factory=dict)
    #: Start-to-close bound of one execute attempt: the workflow schedules the
    #: body with it, and the gate holds the grant's lease for as long.
    execute_timeout_seconds: int = Field(DEFAULT_EXECUTE_TIMEOUT, ge=1, le=MAX_EXECUTE_TIMEOUT)
    #: For long-running actions (``@heartbeat``): the body must heartbeat at
    #: least this often, and the gate re-checks its grant at each heartbeat.
    #: Left out of the JSON when unset, so other decisions keep their ids.
    heartbeat_seconds: int | None = Field(
        None, ge=1, le=MAX_HEARTBEAT_SECONDS, exclude_if=lambda v: v is None
    )


class Decision(BaseModel):
    """A policy decision. Contains no time, so it is reproducible bit for bit."""

    model_config = _FROZEN

    schema_version: Literal["ecp.decision/v1"] = DECISION_SCHEMA_VERSION
    decision_id: DecisionId
    effect: Effect
    action: str
    initiator: str
    policy_digest: Digest
    request_digest: Digest
    policy_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    approval: ApprovalRequirement | None = None
    scope: DecisionScope | None = None
    #: How the initiator was established (see :class:`PolicyRequest`).
    authentication: str = "unauthenticated"

    @property
    def permits(self) -> bool:
        """Whether the decision allows the action, with or without approval."""
        return self.effect is not Effect.DENY

    def to_json(self) -> bytes:
        """Canonical (RFC 8785) JSON bytes of the decision."""
        return canonical_json(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, data: bytes | str) -> Decision:
        """Parse a decision produced by :meth:`to_json`.

        Raises:
            PolicyEvaluationError: not a decision document.
        """
        try:
            parse_json_strict(data)
            return cls.model_validate_json(data, strict=True)
        except (AuthorityError, ValidationError) as exc:
            raise PolicyEvaluationError(f"not a decision document: {exc}") from exc


@dataclass(frozen=True, slots=True)
class _PolicyMeta:
    """Governance annotations of one policy, parsed at load time."""

    name: str
    effect: str
    reason: str
    approval_role: str | None
    approvals_required: int
    max_attempts: int
    constraints: Mapping[str, JsonValue]
    execute_timeout: int
    heartbeat: int | None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PolicyBundleError(f"{path}: missing from the policy bundle") from exc
    except UnicodeDecodeError as exc:
        raise PolicyBundleError(f"{path}: not UTF-8 text") from exc
    except OSError as exc:
        raise PolicyBundleError(f"{path}: cannot read: {exc.strerror}") from exc


def _positive_int(value: str, what: str, limit: int = 1_000_000) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise PolicyBundleError(f"{what} must be a positive integer, got {value[:40]!r}")
    n = int(value, 10)
    if not 1 <= n <= limit:
        raise PolicyBundleError(f"{what} must be an integer from 1 to {limit}, got {n}")
    return n


def _parse_meta(cedar_id: str, doc: Mapping[str, object], file: Path) -> _PolicyMeta:
    raw = doc.get("annotations") or {}
    ann = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    name = ann.get("id") or cedar_id
    where = f"{file}: policy {name!r}"
    role = ann.get("approval_role")
    required = ann.get("approvals_required")
    if required is not None and role is None:
        raise PolicyBundleError(f"{where}: @approvals_required without @approval_role")
    constraints: dict[str, JsonValue] = {}
    if "constraints" in ann:
        try:
            parsed = parse_json_strict(ann["constraints"])
        except AuthorityError as exc:
            raise PolicyBundleError(f"{where}: @constraints is not JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise PolicyBundleError(f"{where}: @constraints must be a JSON object")
        constraints = parsed
    effect = str(doc.get("effect", ""))
    if effect == "forbid" and (
        role or "max_attempts" in ann or "execute_timeout" in ann or constraints
    ):
        raise PolicyBundleError(f"{where}: scope and approval annotations belong on permits")
    execute_timeout = (
        _positive_int(ann["execute_timeout"], f"{where}: @execute_timeout", MAX_EXECUTE_TIMEOUT)
        if "execute_timeout" in ann
        else DEFAULT_EXECUTE_TIMEOUT
    )
    heartbeat = (
        _positive_int(ann["heartbeat"], f"{where}: @heartbeat", MAX_HEARTBEAT_SECONDS)
        if "heartbeat" in ann
        else None
    )
    if effect != "forbid" and heartbeat is None and execute_timeout > LONG_RUNNING_SECONDS:
        # Nothing long escapes the check: a body allowed to run for longer
        # must heartbeat, so that halts and revocations reach it.
        raise PolicyBundleError(
            f"{where}: @execute_timeout above {LONG_RUNNING_SECONDS} s makes the action "
            'long-running; add @heartbeat("N") (the body must heartbeat every N seconds)'
        )
    return _PolicyMeta(
        name=name,
        effect=effect,
        reason=ann.get("reason", ""),
        approval_role=role,
        approvals_required=(
            _positive_int(required, f"{where}: @approvals_required") if required else 1
        ),
        max_attempts=(
            _positive_int(ann["max_attempts"], f"{where}: @max_attempts", MAX_ATTEMPTS_LIMIT)
            if "max_attempts" in ann
            else DEFAULT_MAX_ATTEMPTS
        ),
        constraints=constraints,
        execute_timeout=execute_timeout,
        heartbeat=heartbeat,
    )


def _uid(doc: object) -> tuple[str, str] | None:
    if not isinstance(doc, dict):
        return None
    kind, ident = doc.get("type"), doc.get("id")
    if isinstance(kind, str) and isinstance(ident, str):
        return (kind, ident)
    if "__entity" in doc:
        return _uid(doc["__entity"])
    return None


class PolicyBundle:
    """A loaded, parsed policy bundle. Immutable after :meth:`load`."""

    __slots__ = (
        "_context_has_authentication",
        "_entities",
        "_entities_doc",
        "_meta",
        "_parents",
        "_policies",
        "_policies_text",
        "_schema",
        "_schema_text",
        "digest",
        "path",
    )

    def __init__(
        self,
        path: Path,
        *,
        policies_text: str,
        schema_text: str,
        schema_format: str,
        entities_doc: list[object],
    ) -> None:
        """Parse a bundle from its parts; usually called through :meth:`load`.

        Raises:
            PolicyBundleError: a part does not parse, two policies share an
                ``@id``, or an annotation has a bad value. The message names
                the file.
        """
        # Whether the schema's contexts declare ``authentication`` (see evaluate).
        self._context_has_authentication = re.search(r"\bauthentication\b", schema_text) is not None
        self.path = path
        pol_file = path / POLICIES_FILE
        schema_file = path / (SCHEMA_FILE if schema_format == "cedar" else SCHEMA_JSON_FILE)
        ent_file = path / ENTITIES_FILE
        self._policies_text = policies_text
        self._schema_text = schema_text
        self._entities_doc = entities_doc
        # Cedar's own parsers raise ValueError with a readable message.
        try:
            est = json.loads(cedarpy.policies_to_json_str(policies_text))
            self._policies = cedarpy.PolicySet.from_str(policies_text)
        except ValueError as exc:
            raise PolicyBundleError(f"{pol_file}: {exc}") from exc
        try:
            self._schema = (
                cedarpy.Schema.from_str(schema_text)
                if schema_format == "cedar"
                else cedarpy.Schema.from_json_str(schema_text)
            )
        except ValueError as exc:
            raise PolicyBundleError(f"{schema_file}: {exc}") from exc
        try:
            self._entities = cedarpy.Entities.from_json_str(json.dumps(entities_doc))
        except ValueError as exc:
            raise PolicyBundleError(f"{ent_file}: {exc}") from exc

        if est.get("templates"):
            raise PolicyBundleError(f"{pol_file}: policy templates are not supported")
        meta: dict[str, _PolicyMeta] = {}
        names: set[str] = set()
        for cedar_id, doc in sorted(est.get("staticPolicies", {}).items()):
            m = _parse_meta(cedar_id, doc, pol_file)
            if m.name in names:
                raise PolicyBundleError(f"{pol_file}: two policies share @id {m.name!r}")
            names.add(m.name)
            meta[cedar_id] = m
        self._meta = meta

        parents: dict[tuple[str, str], set[tuple[str, str]]] = {}
        for i, ent in enumerate(entities_doc):
            if not isinstance(ent, dict) or (uid := _uid(ent.get("uid"))) is None:
                raise PolicyBundleError(f"{ent_file}: entity {i} has no {{type, id}} uid")
            raw_parents = ent.get("parents", [])
            ps = {
                p
                for p in map(_uid, raw_parents if isinstance(raw_parents, list) else [])
                if p is not None
            }
            parents.setdefault(uid, set()).update(ps)
        self._parents = parents

        self.digest: Digest = digest_json(
            {
                "policies": policies_text,
                "schema": schema_text,
                "schema_format": schema_format,
                "entities": entities_doc,
            }
        )

    @classmethod
    def load(cls, path: Path) -> PolicyBundle:
        """Load and parse a bundle directory.

        Raises:
            PolicyBundleError: the directory or a file is missing or
                unreadable, a file does not parse, two policies share an
                ``@id``, or an annotation has a bad value. The message names
                the file.
        """
        if not path.is_dir():
            raise PolicyBundleError(f"{path}: not a policy bundle directory")
        policies_text = _read_text(path / POLICIES_FILE)
        if (path / SCHEMA_FILE).exists():
            schema_text, schema_format = _read_text(path / SCHEMA_FILE), "cedar"
        else:
            schema_text, schema_format = _read_text(path / SCHEMA_JSON_FILE), "json"
        ent_file = path / ENTITIES_FILE
        try:
            entities_doc = parse_json_strict(_read_text(ent_file))
        except PolicyBundleError:
            raise
        except AuthorityError as exc:
            raise PolicyBundleError(f"{ent_file}: {exc}") from exc
        if not isinstance(entities_doc, list):
            raise PolicyBundleError(f"{ent_file}: must be a JSON list of entities")
        return cls(
            path,
            policies_text=policies_text,
            schema_text=schema_text,
            schema_format=schema_format,
            entities_doc=entities_doc,
        )

    # --- inspection -----------------------------------------------------------

    @property
    def policy_ids(self) -> tuple[str, ...]:
        """The ``@id`` of every policy, sorted."""
        return tuple(sorted(m.name for m in self._meta.values()))

    def members(self, role: str) -> frozenset[str]:
        """Ids of the ``User`` entities that are (transitively) in ``Group::role``."""
        target = (ROLE_TYPE, role)
        out: set[str] = set()
        for uid in self._parents:
            if uid[0] != PRINCIPAL_TYPE:
                continue
            seen: set[tuple[str, str]] = set()
            todo = list(self._parents.get(uid, ()))
            while todo:
                p = todo.pop()
                if p in seen:
                    continue
                seen.add(p)
                todo.extend(self._parents.get(p, ()))
            if target in seen:
                out.add(uid[1])
        return frozenset(out)

    def validate(self) -> None:
        """Check the policies against the schema and the approval roles against the entities.

        Raises:
            PolicyBundleError: a policy does not type-check against the schema
                (message names ``policies.cedar``, the policy ``@id`` and the
                problem), or an approval role has fewer members than required.
        """
        result = cedarpy.validate_policies(self._policies_text, self._schema)
        if not result.validation_passed:
            problems = []
            for err in result.errors:
                m = self._meta.get(err.policy_id)
                who = f"policy {m.name!r}" if m else (err.policy_id or "schema")
                problems.append(f"{who}: {err.error}")
            raise PolicyBundleError(
                f"{self.path / POLICIES_FILE}: does not validate against the schema: "
                + "; ".join(problems)
            )
        for m in self._meta.values():
            if m.approval_role is not None:
                have = len(self.members(m.approval_role))
                if have < m.approvals_required:
                    raise PolicyBundleError(
                        f"{self.path / ENTITIES_FILE}: role {m.approval_role!r} has {have} "
                        f"members, policy {m.name!r} needs {m.approvals_required} approvals"
                    )

    # --- evaluation -----------------------------------------------------------

    def evaluate(self, request: PolicyRequest) -> Decision:
        """Decide ``request``. Same request and bundle always give the same bytes.

        Unknown actions, unknown initiators, ill-typed arguments and engine
        errors are denials with a reason, not exceptions.

        Raises:
            CanonicalizationError: the request holds values JCS cannot express
                (so it has no digest to decide on).
        """
        request_digest = request.digest()
        decision_id = DecisionId(
            digest_json({"policy_digest": self.digest, "request_digest": request_digest})
        )

        def decide(
            effect: Effect,
            policy_ids: tuple[str, ...],
            reasons: tuple[str, ...],
            approval: ApprovalRequirement | None = None,
            scope: DecisionScope | None = None,
        ) -> Decision:
            return Decision(
                decision_id=decision_id,
                effect=effect,
                action=request.action,
                initiator=request.initiator,
                policy_digest=self.digest,
                request_digest=request_digest,
                policy_ids=policy_ids,
                reasons=reasons,
                approval=approval,
                scope=scope,
                authentication=request.authentication,
            )

        if not request.initiator:
            return decide(Effect.DENY, (), ("request names no initiator",))
        context: dict[str, object] = {
            "arguments": request.arguments,
            "purpose": request.purpose,
            "environment": request.environment,
        }
        if self._context_has_authentication:
            # ``key``, ``oidc`` or ``unauthenticated``: policies can refuse
            # initiators nobody proved. Only where the schema declares it, so
            # bundles written before it existed keep validating.
            context["authentication"] = request.authentication.split(":", 1)[0]
        if request.artifacts:
            # Only when the request names some: an action whose schema does
            # not declare ``artifacts`` then fails validation, a denial.
            context["artifacts"] = request.artifacts
        cedar_request = {
            "principal": {"type": PRINCIPAL_TYPE, "id": request.initiator},
            "action": {"type": "Action", "id": request.action},
            "resource": {"type": RESOURCE_TYPE, "id": request.action},
            "context": context,
        }
        try:
            result = cedarpy.is_authorized(
                cedar_request, self._policies, self._entities, self._schema
            )
        except (ValueError, TypeError, OverflowError) as exc:
            return decide(Effect.DENY, (), (f"policy engine rejected the request: {exc}",))

        errors = tuple(str(e) for e in result.diagnostics.errors)
        matched = sorted(
            (self._meta[r] for r in result.diagnostics.reasons if r in self._meta),
            key=lambda m: m.name,
        )
        ids = tuple(m.name for m in matched)
        if errors:
            # Fail closed: a policy that errored might have been a forbid.
            return decide(Effect.DENY, ids, tuple(f"policy evaluation error: {e}" for e in errors))
        if result.decision != cedarpy.Decision.Allow:
            if matched:
                return decide(
                    Effect.DENY,
                    ids,
                    tuple(m.reason or f"forbidden by policy {m.name!r}" for m in matched),
                )
            why = f"no policy permits {request.action!r} for {request.initiator!r}"
            if (PRINCIPAL_TYPE, request.initiator) not in self._parents:
                why += f" (initiator {request.initiator!r} is unknown to the policy bundle)"
            return decide(Effect.DENY, (), (why + "; denied by default",))
        return self._allow(decide, matched, ids)

    def _allow(
        self,
        decide: _Decide,
        matched: list[_PolicyMeta],
        ids: tuple[str, ...],
    ) -> Decision:
        reasons = tuple(m.reason or f"permitted by policy {m.name!r}" for m in matched)
        constraints: dict[str, JsonValue] = {}
        for m in matched:
            for k, v in m.constraints.items():
                if k in constraints and canonical_json(constraints[k]) != canonical_json(v):
                    return decide(
                        Effect.DENY,
                        ids,
                        (f"permitting policies disagree on constraint {k!r}",),
                    )
                constraints[k] = v
        scope = DecisionScope(
            max_attempts=min((m.max_attempts for m in matched), default=DEFAULT_MAX_ATTEMPTS),
            constraints=constraints,
            # The strictest permit wins here too.
            execute_timeout_seconds=min(
                (m.execute_timeout for m in matched), default=DEFAULT_EXECUTE_TIMEOUT
            ),
            heartbeat_seconds=min(
                (m.heartbeat for m in matched if m.heartbeat is not None), default=None
            ),
        )
        # The strictest permit wins: if any satisfied permit asks for an
        # approval, a plain permit that also matched does not waive it.
        roles = sorted({m.approval_role for m in matched if m.approval_role is not None})
        if not roles:
            return decide(Effect.ALLOW, ids, reasons, None, scope)
        if len(roles) > 1:
            return decide(
                Effect.DENY,
                ids,
                (f"permitting policies require approvals from different roles {roles}",),
            )
        role = roles[0]
        count = max(m.approvals_required for m in matched if m.approval_role == role)
        approval = ApprovalRequirement(
            role=role, count=count, approvers=tuple(sorted(self.members(role)))
        )
        return decide(Effect.ALLOW_AFTER_APPROVAL, ids, reasons, approval, scope)


class _Decide(Protocol):
    """Type of the local ``decide`` closure in :meth:`PolicyBundle.evaluate`."""

    def __call__(
        self,
        effect: Effect,
        policy_ids: tuple[str, ...],
        reasons: tuple[str, ...],
        approval: ApprovalRequirement | None = None,
        scope: DecisionScope | None = None,
    ) -> Decision: ...
