"""The authority's activities: decide (verify step) and sign grants (authorize).

They run only on workers of the authority task queue, the one place the
authority's signing key is loaded. Each re-derives what it can instead of
trusting the workflow: ``authorize`` re-evaluates the request and checks the
decision id, re-verifies approvals against the full trust store, and digests
the arguments itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from pydantic import JsonValue, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from ecp._failure import to_application_error
from ecp._wire import ACTIVITY_AUTHORIZE_SCOPE, EXECUTE_ACTIVITY_ID_PREFIX, failure_type
from ecp.activities._contracts import (
    ACTIVITY_AUTHORIZE,
    ACTIVITY_EVALUATE,
    ApproverKey,
    ApproverPasskey,
    AuthorizeInput,
    DecisionResult,
    EvaluateInput,
    GrantResult,
    ScopeInput,
    ScopeResult,
)
from ecp.authority._approval import execution_ref, verify_approvals
from ecp.authority._artifact import ArtifactRef, bind_artifacts, parse_artifacts, policy_view
from ecp.authority._artifact_attestation import verify_artifact_attestation
from ecp.authority._attestation import verify_attestation
from ecp.authority._calldigest import digest_values
from ecp.authority._canonical import Digest
from ecp.authority._clock import Clock, now_utc
from ecp.authority._dsse import Envelope
from ecp.authority._grant import CallBinding, Grant, issue_grant
from ecp.authority._initiator import InitiatorIdentity, SessionBinding, verify_initiator
from ecp.authority._keys import Signer, public_key_to_b64
from ecp.authority._oidc import OidcIssuer
from ecp.authority._policy import Decision, Effect, PolicyBundle, PolicyRequest
from ecp.authority._scope import ArgConstraint, issue_scope
from ecp.authority._truststore import KeyRole, TrustStore
from ecp.authority._webauthn import b64url_encode
from ecp.authority.errors import AuthorityError, GrantRefusedError

__all__ = ["AuthorityActivities", "policy_arguments"]


def _drop_nulls(value: object) -> object:
    """``value`` without the ``null`` attributes of its objects, at any depth.

    Cedar has no null: an ``Optional`` field left at ``None`` is an absent
    attribute to the policy (declared ``name?: Type``), not an error.
    """
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def policy_arguments(args: list[object], param_names: Sequence[str] = ()) -> dict[str, object]:
    """The ``context.arguments`` a policy sees for positional ``args``.

    One JSON object argument (the common case: a request dataclass) is
    passed as is. Several arguments, or one that is not an object, are one
    object keyed by the governed activity's parameter names
    (``param_names``, from prepare). Only when the names are unknown (a
    history recorded before prepare reported them, or a call without
    arguments) is it ``{"args": [...]}``. ``null`` attributes are left out.
    """
    shown: dict[str, object]
    if len(args) == 1 and isinstance(args[0], dict):
        shown = args[0]
    elif args and len(param_names) == len(args):
        shown = dict(zip(param_names, args, strict=True))
    else:
        shown = {"args": list(args)}
    return {k: _drop_nulls(v) for k, v in shown.items() if v is not None}


def _refuse(exc: AuthorityError) -> ApplicationError:
    # Denials are final; an unreadable trust store may come back.
    return to_application_error(exc)


#: ``execute:<action>`` (GovernedExecution) or ``execute:<action>:<n>`` (calls
#: inside a workflow): the only activity ids a grant is issued for.
_EXECUTE_ID = re.compile(rf"{re.escape(EXECUTE_ACTIVITY_ID_PREFIX)}[^\s:][^:]*(:[0-9]{{1,9}})?")


@dataclass(frozen=True, slots=True)
class _Ask:
    """Who asks for what, as the request (evaluate or authorize input) says."""

    action: str
    initiator: str
    purpose: str
    proof: str
    request_args: list[object]
    param_names: list[str]
    workflow_input_digest: str
    artifacts: list[object] = dataclasses.field(default_factory=list)

    @classmethod
    def of(cls, inp: EvaluateInput | AuthorizeInput) -> _Ask:
        return cls(
            inp.action,
            inp.initiator,
            inp.purpose,
            inp.initiator_proof,
            inp.request_args,
            inp.param_names,
            inp.workflow_input_digest,
            list(inp.artifacts),
        )


@dataclass
class AuthorityActivities:
    """Holds the authority's signing key and what it decides with."""

    bundle: PolicyBundle
    signer: Signer
    trust: Callable[[], TrustStore]
    clock: Clock
    grant_ttl: timedelta = timedelta(minutes=5)
    #: Accept requests whose initiator carries no proof (marked so).
    allow_unauthenticated: bool = False
    #: OpenID Connect issuers whose ID tokens establish initiators.
    oidc: tuple[OidcIssuer, ...] = ()

    def activities(self) -> list[Callable[..., object]]:
        """The activity callables to register on the authority queue."""
        return [self.evaluate, self.authorize, self.authorize_scope]

    @activity.defn(name=ACTIVITY_AUTHORIZE_SCOPE)
    async def authorize_scope(self, inp: ScopeInput) -> ScopeResult:
        """Sign a scope for the calling workflow: who asks, verified, and the bounds.

        Each call under the scope is still decided by the policy at the gate;
        the scope only narrows it (and saves the per-call round trips).
        """
        try:
            envelope = await asyncio.to_thread(self._authorize_scope, inp, activity.info())
        except AuthorityError as exc:
            raise _refuse(exc) from None
        scope = json.loads(envelope.payload)
        return ScopeResult(
            envelope.to_json().decode(), scope["scope_id"], scope["expires_at"], inp.max_uses
        )

    def _authorize_scope(self, inp: ScopeInput, caller: activity.Info) -> Envelope:
        trust = self.trust()
        ask = _Ask(
            action=",".join(inp.actions),
            initiator=inp.initiator,
            purpose=inp.purpose,
            proof=inp.initiator_proof,
            request_args=[],
            param_names=[],
            workflow_input_digest=inp.workflow_input_digest,
        )
        identity = self._identity(ask, caller, trust)
        _, env_digest = self._environment(inp.attestation, trust)
        if not env_digest:
            raise GrantRefusedError("no verified executor attestation to bind the scope to")
        try:
            constraints = {
                action: {
                    f: ArgConstraint.model_validate(c, strict=False) for f, c in fields.items()
                }
                for action, fields in inp.constraints.items()
            }
        except ValidationError as exc:
            raise GrantRefusedError(f"scope constraints: {exc.errors()[0]['msg']}") from None
        # Attestations are verified now; the scope carries what the policy
        # sees of the artifacts, and the gate decides each call on it.
        refs, views = self._artifacts(list(inp.artifacts), trust)
        return issue_scope(
            actions=inp.actions,
            constraints=constraints,
            max_uses=inp.max_uses,
            namespace=caller.workflow_namespace or caller.namespace,
            workflow_id=caller.workflow_id or "",
            run_id=caller.workflow_run_id or "",
            initiator=inp.initiator,
            initiator_auth=identity.auth,
            purpose=inp.purpose,
            policy_digest=self.bundle.digest,
            environment_digest=Digest(env_digest),
            signer=self.signer,
            clock=self.clock,
            ttl=timedelta(seconds=inp.lifetime_seconds),
            artifacts=refs,
            artifact_views=cast(dict[str, JsonValue], views),
        )

    def _request(
        self,
        action: str,
        args: list[object],
        param_names: list[str],
        initiator: str,
        purpose: str,
        environment: dict[str, object],
        authentication: str,
        artifacts: dict[str, object] | None = None,
    ) -> PolicyRequest:
        return PolicyRequest.model_validate(
            {
                "action": action,
                "initiator": initiator,
                "arguments": policy_arguments(args, param_names),
                "purpose": purpose,
                "environment": environment,
                "authentication": authentication,
                "artifacts": artifacts or {},
            },
            strict=False,
        )

    def _artifacts(
        self, raw: list[object], trust: TrustStore
    ) -> tuple[tuple[ArtifactRef, ...], dict[str, object]]:
        """The request's artifacts, validated, and what the policy sees of them.

        Every attestation presented must verify for its artifact (signed by a
        trusted ``attester`` key, about this very digest), or the request is
        refused: evaluate and authorize both check, at their own time.
        """
        refs = parse_artifacts(raw)
        presented: dict[str, list[object]] = {}
        for item in raw:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                got = item.get("attestations", [])
                presented[item["name"]] = got if isinstance(got, list) else [got]
        at = now_utc(self.clock)
        views: dict[str, object] = {}
        for ref in refs:
            claims = []
            for envelope in presented.get(ref.name, []):
                if not isinstance(envelope, str):
                    envelope = json.dumps(envelope)
                claims.append(verify_artifact_attestation(envelope, ref, trust, at).claims())
            views[ref.name] = policy_view(ref, claims)
        return refs, views

    def _identity(self, ask: _Ask, caller: activity.Info, trust: TrustStore) -> InitiatorIdentity:
        """Who asked, verified before the policy sees the name (see ``_initiator``).

        Checked now, at evaluate and again at authorize: a proof that expired
        (or whose key was revoked) while approvals were pending no longer
        counts. A session is accepted only for calls a workflow makes itself,
        bound to that workflow's type (as Temporal reports it) and input.
        """
        session = (
            SessionBinding(caller.workflow_type or "", ask.workflow_input_digest)
            if ask.workflow_input_digest
            else None
        )
        return verify_initiator(
            ask.proof,
            claimed=ask.initiator,
            trust=trust,
            namespace=caller.workflow_namespace or caller.namespace,
            workflow_id=caller.workflow_id or "",
            action=ask.action,
            # A signed request covers the artifacts too (when there are any).
            args_digest=bind_artifacts(
                digest_values(ask.request_args, activity.payload_converter()),
                parse_artifacts(ask.artifacts),
            ),
            purpose=ask.purpose,
            at=now_utc(self.clock),
            oidc=self.oidc,
            allow_unauthenticated=self.allow_unauthenticated,
            session=session,
        )

    def _environment(self, attestation: str, trust: TrustStore) -> tuple[dict[str, object], str]:
        """Claims and digest of the executor's attestation ({} and "" if none verifies)."""
        if not attestation:
            return {}, ""
        # An attestation that does not verify is not an error of the request:
        # the policy just sees an unattested environment.
        try:
            verified = verify_attestation(attestation.encode(), trust, self.clock)
        except AuthorityError as exc:
            activity.logger.warning("executor attestation did not verify: %s", exc)
            return {}, ""
        return dict(verified.claims()), verified.digest

    def _decide(
        self,
        ask: _Ask,
        args: list[object],
        attestation: str,
        trust: TrustStore,
        caller: activity.Info,
    ) -> tuple[Decision, str, InitiatorIdentity, tuple[ArtifactRef, ...]]:
        identity = self._identity(ask, caller, trust)
        environment, env_digest = self._environment(attestation, trust)
        refs, views = self._artifacts(ask.artifacts, trust)
        request = self._request(
            ask.action,
            args,
            ask.param_names,
            ask.initiator,
            ask.purpose,
            environment,
            identity.auth,
            views,
        )
        return self.bundle.evaluate(request), env_digest, identity, refs

    @activity.defn(name=ACTIVITY_EVALUATE)
    async def evaluate(self, inp: EvaluateInput) -> DecisionResult:
        """Evaluate the request against the policy bundle."""
        try:
            trust = self.trust()
            decision, _, _, _ = await asyncio.to_thread(
                self._decide,
                _Ask.of(inp),
                inp.args,
                inp.attestation,
                trust,
                activity.info(),
            )
        except AuthorityError as exc:
            # The message says why; a chained DB trace can exceed Temporal's
            # failure size limit.
            raise _refuse(exc) from None
        approvers: list[ApproverKey] = []
        passkeys: list[ApproverPasskey] = []
        if decision.approval is not None:
            eligible = set(decision.approval.approvers)
            approvers = [
                ApproverKey(k.key_id, k.name, public_key_to_b64(k.public_key))
                for k in trust.by_role(KeyRole.APPROVER)
                if k.name in eligible and k.revoked_at is None
            ]
            passkeys = [
                ApproverPasskey(
                    p.key_id,
                    p.name,
                    b64url_encode(p.credential_id),
                    b64url_encode(p.public_key),
                    p.rp_id,
                    list(p.origins),
                )
                for p in trust.passkeys()
                if p.name in eligible and p.revoked_at is None
            ]
        return DecisionResult(
            decision_json=decision.to_json().decode(),
            decision_id=decision.decision_id,
            effect=decision.effect.value,
            policy_digest=decision.policy_digest,
            request_digest=decision.request_digest,
            reasons=list(decision.reasons),
            determining_policies=list(decision.policy_ids),
            approvals_required=decision.approval.count if decision.approval else 0,
            approval_role=decision.approval.role if decision.approval else "",
            approvers=approvers,
            approver_passkeys=passkeys,
            max_attempts=decision.scope.max_attempts if decision.scope else 1,
            authentication=decision.authentication,
        )

    def _authorize(
        self, inp: AuthorizeInput, args_digest: Digest, caller: activity.Info
    ) -> tuple[Grant, bytes]:
        trust = self.trust()
        # The grant binds the execution that asked, as Temporal reports it,
        # never ids a workflow claims in its input.
        namespace, workflow_id = caller.namespace, caller.workflow_id or ""
        run_id = caller.workflow_run_id or ""
        # The decision arrived through history: decide again from the request
        # and the bundle in force, and sign only if both agree byte for byte.
        if not _EXECUTE_ID.fullmatch(inp.activity_id) or not inp.activity_id.startswith(
            f"{EXECUTE_ACTIVITY_ID_PREFIX}{inp.action}"
        ):
            raise ApplicationError(
                f"{inp.activity_id[:100]!r} is not an execute step's activity id for "
                f"{inp.action[:100]!r} (execute:<action>[:<n>])",
                type=failure_type("not_governed"),
                non_retryable=True,
            )
        decision, env_digest, identity, artifacts = self._decide(
            _Ask.of(inp), inp.args, inp.attestation, trust, caller
        )
        if decision.to_json() != inp.decision_json.encode():
            raise ApplicationError(
                "the decision presented is not the one the policy in force gives for this request",
                type=failure_type("decision_mismatch"),
                non_retryable=True,
            )
        if not env_digest:
            raise ApplicationError(
                "no verified executor attestation to bind the grant to",
                type=failure_type("attestation_invalid"),
                non_retryable=True,
            )
        approvals = (
            verify_approvals(
                [a.encode() for a in inp.approvals],
                decision,
                trust,
                self.clock,
                execution=execution_ref(namespace, workflow_id, run_id),
            )
            if decision.effect is Effect.ALLOW_AFTER_APPROVAL
            else ()
        )
        call = CallBinding(
            activity_type=inp.action,
            args_digest=args_digest,
            namespace=namespace,
            workflow_id=workflow_id,
            run_id=run_id,
            activity_id=inp.activity_id,
        )
        envelope = issue_grant(
            decision,
            call,
            initiator=inp.initiator,
            request_id=identity.request_id,
            environment_digest=Digest(env_digest),
            signer=self.signer,
            clock=self.clock,
            ttl=self.grant_ttl,
            approvals=approvals,
            artifacts=artifacts,
        )
        return Grant.model_validate_json(envelope.payload), envelope.to_json()

    @activity.defn(name=ACTIVITY_AUTHORIZE)
    async def authorize(self, inp: AuthorizeInput) -> GrantResult:
        """Sign a grant bound to the execute call."""
        try:
            args_digest = digest_values(inp.args, activity.payload_converter())
            grant, envelope = await asyncio.to_thread(
                self._authorize, inp, args_digest, activity.info()
            )
        except AuthorityError as exc:
            raise _refuse(exc) from None
        return GrantResult(
            envelope=envelope.decode(),
            grant_id=grant.grant_id,
            expires_at=grant.expires_at.isoformat(),
            max_attempts=grant.scope.max_attempts,
            execute_timeout_seconds=grant.scope.execute_timeout_seconds,
            heartbeat_seconds=grant.scope.heartbeat_seconds,
        )
