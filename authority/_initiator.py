"""Authenticated initiators: who asked, and how that was established.

A governed request names its initiator (the policy's principal). The name is
worth nothing by itself: whoever may start a workflow could write any name.
The request therefore carries a *proof*, verified by the authority before the
policy sees the name:

- a **signed request**: a DSSE envelope (:data:`REQUEST_PAYLOAD_TYPE`) over
  the RFC 8785 bytes of a :class:`SignedRequest`, signed by a key of role
  ``initiator`` whose trust-store name is the initiator. It binds the
  namespace and workflow id it starts, the action, the digest of the
  arguments, the purpose and a validity window, so it cannot be replayed onto
  another request or workflow (and the single-use store stops a second body
  under the same workflow id);
- an **OpenID Connect ID token** (``oidc:<JWT>``), verified against the
  configured issuer and its JWKS; the configured claim names the principal.
  An ID token is a bearer credential: it binds nobody's request, only who its
  holder is, until it expires.

Without a proof the initiator is *unauthenticated*: accepted only where the
settings allow it, and marked so in the decision, the grant and the evidence.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from temporalio.converter import PayloadConverter

from ecp.authority._calldigest import digest_values
from ecp.authority._canonical import Digest, canonical_json
from ecp.authority._clock import Clock, now_utc
from ecp.authority._dsse import Envelope, sign_envelope, verify_envelope
from ecp.authority._keys import Signer
from ecp.authority._oidc import OidcIssuer, verify_id_token
from ecp.authority._signed import DIGEST_PATTERN, read_signed_model
from ecp.authority._truststore import KeyRole, TrustStore
from ecp.authority.errors import (
    AuthorityError,
    InitiatorImpersonationError,
    InitiatorProofError,
    InitiatorUnauthenticatedError,
)

__all__ = [
    "ANY_CALL",
    "OIDC_PREFIX",
    "REQUEST_PAYLOAD_TYPE",
    "REQUEST_SCHEMA_VERSION",
    "UNAUTHENTICATED",
    "InitiatorIdentity",
    "SessionBinding",
    "SignedRequest",
    "sign_request",
    "sign_session",
    "verify_initiator",
    "workflow_input_digest",
]

REQUEST_PAYLOAD_TYPE: Final = "application/vnd.ecp.request.v1+json"
REQUEST_SCHEMA_VERSION: Final = "ecp.request/v1"
#: A proof that starts with this is an OpenID Connect ID token.
OIDC_PREFIX: Final = "oidc:"
#: How an identity nobody proved is marked.
UNAUTHENTICATED: Final = "unauthenticated"
#: ``action`` of a *session*: a signed request that covers every governed call
#: inside one workflow (its ``purpose`` is the workflow type, its
#: ``args_digest`` the digest of the workflow's input).
ANY_CALL: Final = "*"
_MAX_PROOF_BYTES: Final = 32 * 1024

_WIRE = ConfigDict(frozen=True, extra="forbid", strict=True)


class SignedRequest(BaseModel):
    """The signed content of a request: who asks for what, on which workflow."""

    model_config = _WIRE

    schema_version: Literal["ecp.request/v1"] = REQUEST_SCHEMA_VERSION
    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    initiator: Annotated[str, Field(min_length=1, max_length=256)]
    namespace: Annotated[str, Field(min_length=1, max_length=255)]
    workflow_id: Annotated[str, Field(min_length=1, max_length=1000)]
    action: Annotated[str, Field(min_length=1, max_length=1000)]
    args_digest: Annotated[Digest, Field(pattern=DIGEST_PATTERN)]
    purpose: Annotated[str, Field(max_length=4096)] = ""
    issued_at: AwareDatetime
    expires_at: AwareDatetime


@dataclass(frozen=True, slots=True)
class SessionBinding:
    """The workflow a session must be for: its type and the digest of its input."""

    workflow_type: str
    input_digest: str


@dataclass(frozen=True, slots=True)
class InitiatorIdentity:
    """An initiator, and how it was established.

    Attributes:
        name: The policy principal.
        auth: ``key:<key id>``, ``oidc:<issuer>#<subject>`` or ``unauthenticated``.
    """

    name: str
    auth: str
    #: The signed request's id ("" for sessions, tokens and unauthenticated).
    request_id: str = ""

    @property
    def method(self) -> str:
        """``key``, ``oidc`` or ``unauthenticated``."""
        return self.auth.split(":", 1)[0]


def sign_request(
    signer: Signer,
    *,
    initiator: str,
    namespace: str,
    workflow_id: str,
    action: str,
    args_digest: Digest,
    purpose: str,
    clock: Clock,
    ttl: timedelta = timedelta(hours=2),
) -> str:
    """Sign a request as its initiator: the proof to put in ``GovernedRequest.initiator_proof``.

    Raises:
        InitiatorProofError: a field does not fit the schema.
    """
    now = now_utc(clock).replace(microsecond=0)
    try:
        body = SignedRequest(
            request_id=str(uuid.uuid4()),
            initiator=initiator,
            namespace=namespace,
            workflow_id=workflow_id,
            action=action,
            args_digest=args_digest,
            purpose=purpose,
            issued_at=now,
            expires_at=now + ttl,
        )
    except ValidationError as exc:
        raise InitiatorProofError(f"request cannot be signed: {exc.errors()[0]['msg']}") from None
    payload = canonical_json(body.model_dump(mode="json"))
    return sign_envelope(REQUEST_PAYLOAD_TYPE, payload, signer).to_json().decode()


def sign_session(
    signer: Signer,
    *,
    initiator: str,
    namespace: str,
    workflow_id: str,
    workflow_type: str,
    input_digest: Digest,
    clock: Clock,
    ttl: timedelta = timedelta(hours=2),
) -> str:
    """Sign a session: ``initiator`` asks for the governed calls of one workflow execution.

    Travels in the workflow's memo (see ``ecp.workflows.initiator_memo``);
    every ``execute_governed`` call inside that workflow inherits it. It binds
    the namespace, the workflow id, the workflow type, the digest of the
    workflow's input (:func:`workflow_input_digest`) and a validity window,
    not the calls: the workflow's code chooses those from that input, and the
    policy decides each. Anyone who starts the same workflow id with other
    input, or another workflow type, cannot use it.

    Raises:
        InitiatorProofError: a field does not fit the schema.
    """
    return sign_request(
        signer,
        initiator=initiator,
        namespace=namespace,
        workflow_id=workflow_id,
        action=ANY_CALL,
        args_digest=input_digest,
        purpose=workflow_type,
        clock=clock,
        ttl=ttl,
    )


def workflow_input_digest(values: Sequence[object], converter: PayloadConverter) -> Digest:
    """Digest of a workflow's input (what a session binds), as the argument digest.

    The client (over the arguments it starts the workflow with) and the
    workflow (over the arguments it was started with) compute the same.

    Raises:
        CanonicalizationError: a value has no canonical JSON form.
    """
    return digest_values(list(values), converter)


def verify_initiator(
    proof: str,
    *,
    claimed: str,
    trust: TrustStore,
    namespace: str,
    workflow_id: str,
    action: str,
    args_digest: Digest,
    purpose: str,
    at: datetime,
    oidc: Sequence[OidcIssuer] = (),
    allow_unauthenticated: bool = False,
    session: SessionBinding | None = None,
) -> InitiatorIdentity:
    """Establish who asked, before the policy sees the name.

    ``namespace`` and ``workflow_id`` are the execution as Temporal reports
    it to the caller; ``at`` is when the identity must hold (the authority
    checks it at evaluate *and* at authorize, so a proof must outlive the
    approvals it waits for). ``session`` is the calling workflow's type and
    input digest, when the call is made inside a workflow
    (``execute_governed``); only then is a session proof accepted.

    Raises:
        InitiatorUnauthenticatedError: no proof, and unauthenticated
            initiators are not allowed here.
        InitiatorProofError: the proof does not verify, is expired, or is for
            another request or workflow.
        InitiatorImpersonationError: the proof is valid but names someone else.
    """
    if not proof:
        if allow_unauthenticated:
            return InitiatorIdentity(claimed, UNAUTHENTICATED, "")
        raise InitiatorUnauthenticatedError(
            f"the request names initiator {claimed!r} without proof; sign it with the "
            "initiator's key (ecp submit --key) or send an OpenID Connect ID token"
        )
    if len(proof.encode("utf-8", "replace")) > _MAX_PROOF_BYTES:
        raise InitiatorProofError(f"initiator proof is larger than {_MAX_PROOF_BYTES} bytes")
    if proof.startswith(OIDC_PREFIX):
        return _by_token(proof.removeprefix(OIDC_PREFIX), claimed, oidc, at)
    return _by_signature(
        proof, claimed, trust, namespace, workflow_id, action, args_digest, purpose, at, session
    )


def _by_token(
    token: str, claimed: str, issuers: Sequence[OidcIssuer], at: datetime
) -> InitiatorIdentity:
    if not issuers:
        raise InitiatorProofError(
            "an ID token was sent, and no OpenID Connect issuer is configured"
        )
    errors: list[str] = []
    for issuer in issuers:
        try:
            who = verify_id_token(token, issuer, now=at)
        except AuthorityError as exc:
            errors.append(f"{exc.code}: {exc}")
            continue
        if who.principal != claimed:
            raise InitiatorImpersonationError(
                f"the ID token is {who.principal!r}'s (issuer {who.issuer}), "
                f"the request names {claimed!r}"
            )
        return InitiatorIdentity(claimed, f"oidc:{who.issuer}#{who.subject}", "")
    raise InitiatorProofError(f"ID token did not verify: {'; '.join(errors)}")


def _by_signature(
    proof: str,
    claimed: str,
    trust: TrustStore,
    namespace: str,
    workflow_id: str,
    action: str,
    args_digest: Digest,
    purpose: str,
    at: datetime,
    session: SessionBinding | None,
) -> InitiatorIdentity:
    try:
        envelope = Envelope.from_json(proof)
        verified = verify_envelope(
            envelope,
            payload_type=REQUEST_PAYLOAD_TYPE,
            trust=trust,
            role=KeyRole.INITIATOR,
            at=at,
        )
        body = read_signed_model(
            envelope.payload,
            SignedRequest,
            what="signed request",
            schema_version=REQUEST_SCHEMA_VERSION,
            schema_error=InitiatorProofError,
            version_error=InitiatorProofError,
        )
    except InitiatorProofError:
        raise
    except AuthorityError as exc:
        raise InitiatorProofError(f"signed request does not verify: {exc.code}: {exc}") from None
    if verified.key.name != body.initiator:
        raise InitiatorProofError(
            f"the request is signed by {verified.key.name!r}'s key but names {body.initiator!r}"
        )
    if body.initiator != claimed:
        raise InitiatorImpersonationError(
            f"the proof is {body.initiator!r}'s, the request names {claimed!r}"
        )
    if body.action == ANY_CALL:
        # A session covers the calls of one workflow: the one of this type
        # started with exactly this input (what the workflow will do is its
        # code's, applied to that input). Only a workflow running governed
        # calls itself presents a session; GovernedExecution never does.
        if session is None:
            raise InitiatorProofError(
                "a session proof covers governed calls made inside its workflow only"
            )
        bound: tuple[tuple[str, str, str], ...] = (
            ("namespace", body.namespace, namespace),
            ("workflow id", body.workflow_id, workflow_id),
            ("workflow type", body.purpose, session.workflow_type),
            ("workflow input", body.args_digest, session.input_digest),
        )
    else:
        bound = (
            ("namespace", body.namespace, namespace),
            ("workflow id", body.workflow_id, workflow_id),
            ("action", body.action, action),
            ("arguments", body.args_digest, args_digest),
            ("purpose", body.purpose, purpose),
        )
    for what, signed, actual in bound:
        if signed != actual:
            raise InitiatorProofError(
                f"the signed request is for {what} {signed!r}, this request has {actual!r}"
            )
    if not body.issued_at <= at + timedelta(seconds=30) or at >= body.expires_at:
        raise InitiatorProofError(
            f"the signed request is valid from {body.issued_at} to {body.expires_at}, not at {at}"
        )
    # A signed request is for one request: the grant carries its id, and the
    # single-use store lets one body run per id (whatever activity id a
    # caller picks). A session's calls are told apart by their activity ids.
    request_id = "" if body.action == ANY_CALL else body.request_id
    return InitiatorIdentity(claimed, f"key:{verified.key.key_id}", request_id)
