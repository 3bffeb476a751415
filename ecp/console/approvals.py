"""Approvals signed in the approver's browser, relayed to the workflow by the console.

The approver's browser imports their Ed25519 key into WebCrypto as a
non-extractable key, signs the approval the execution page prepared
(``static/approve.js``) and posts only the signature. The console assembles
the DSSE envelope and delivers it with the ``ecp.approve`` update, exactly
as ``ecp approve`` does: the workflow's update validator verifies it against
the approver keys the authority listed with the decision (a wrong key, a
replay or an approver outside the role is rejected there and never reaches
history), and the authority re-verifies it, revocation included, before it
signs a grant. The console never sees the key, and cannot approve alone.

With a passkey, the browser asks the approver's authenticator for a WebAuthn
assertion whose challenge is the SHA-256 of that same message
(``static/passkey.js``) and posts the assertion; the console wraps it, with
the approval payload, in an ``ecp.passkey-approval/v1`` document and relays
that the same way. The console checks nothing it could be trusted for: the
validator and the authority verify the assertion.
"""

from __future__ import annotations

import base64
import binascii
from datetime import timedelta
from typing import Final

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError

from ecp._wire import APPROVE_UPDATE, DECISION_QUERY
from ecp.activities._contracts import DecisionResult
from ecp.authority._approval import APPROVAL_PAYLOAD_TYPE, passkey_approval_json
from ecp.authority._dsse import Envelope, EnvelopeSignature, pae
from ecp.authority._keys import key_id_for, public_key_from_b64, verify_ed25519
from ecp.authority._webauthn import PasskeyAssertion, b64url_decode
from ecp.authority.errors import AuthorityError
from ecp.console.errors import ConsoleError, TemporalQueryError
from ecp.console.governance import unverified_reason
from ecp.workflows._models import ApprovalAck

__all__ = ["ApprovalRefusedError", "relay_approval", "relay_passkey_approval"]

_MAX_PAYLOAD: Final = 16 * 1024
_TIMEOUT: Final = timedelta(seconds=10)


class ApprovalRefusedError(ConsoleError):
    """The approval was not relayed, or the workflow's validator refused it."""

    status = 400
    code = "approval_refused"


def _b64(text: str, what: str, limit: int) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise ApprovalRefusedError(f"The {what} is not base64.") from exc
    if not raw or len(raw) > limit:
        raise ApprovalRefusedError(f"The {what} has the wrong size.")
    return raw


async def relay_approval(
    client: Client,
    workflow_id: str,
    *,
    payload_b64: str,
    signature_b64: str,
    queues: frozenset[str],
) -> ApprovalAck:
    """Deliver an approval signed in a browser to the workflow's ``ecp.approve`` update.

    Raises:
        ApprovalRefusedError: the form is malformed, the workflow is not one
            of ECP's, or its validator refused the approval.
        TemporalQueryError: Temporal could not be asked.
    """
    payload = _b64(payload_b64, "approval", _MAX_PAYLOAD)
    signature = _b64(signature_b64, "signature", 64)
    handle = client.get_workflow_handle(workflow_id)
    decision = await _waiting_decision(handle, queues)
    message = pae(APPROVAL_PAYLOAD_TYPE, payload)
    # Name the key that made the signature (any of the listed approvers');
    # with none, the first listed: the validator then refuses it.
    key_id = ""
    for approver in decision.approvers:
        try:
            key = public_key_from_b64(approver.public_key)
        except AuthorityError:
            continue
        key_id = key_id or key_id_for(key)
        if verify_ed25519(key, signature, message):
            key_id = key_id_for(key)
            break
    envelope = Envelope(
        APPROVAL_PAYLOAD_TYPE, payload, (EnvelopeSignature(key_id or "unknown", signature),)
    )
    return await _deliver(handle, envelope.to_json().decode())


async def relay_passkey_approval(
    client: Client,
    workflow_id: str,
    *,
    payload_b64: str,
    assertion: dict[str, str],
    queues: frozenset[str],
) -> ApprovalAck:
    """Deliver a passkey approval (a WebAuthn assertion over the prepared approval).

    ``assertion`` holds the base64url fields of the browser's
    ``AuthenticatorAssertionResponse``: ``credential_id``,
    ``authenticator_data``, ``client_data_json``, ``signature`` and
    optionally ``user_handle``.

    Raises:
        ApprovalRefusedError: the form is malformed, the workflow is not one
            of ECP's, or its validator refused the approval.
        TemporalQueryError: Temporal could not be asked.
    """
    payload = _b64(payload_b64, "approval", _MAX_PAYLOAD)
    try:
        user_handle = assertion.get("user_handle", "")
        parsed = PasskeyAssertion(
            credential_id=b64url_decode(assertion.get("credential_id", ""), "credential id"),
            authenticator_data=b64url_decode(
                assertion.get("authenticator_data", ""), "authenticator data"
            ),
            client_data_json=b64url_decode(assertion.get("client_data_json", ""), "client data"),
            signature=b64url_decode(assertion.get("signature", ""), "signature"),
            user_handle=b64url_decode(user_handle, "user handle") if user_handle else None,
        )
    except ValueError as exc:
        raise ApprovalRefusedError(f"The passkey assertion is malformed: {exc}.") from exc
    handle = client.get_workflow_handle(workflow_id)
    await _waiting_decision(handle, queues)
    return await _deliver(handle, passkey_approval_json(payload, parsed))


async def _waiting_decision(
    handle: WorkflowHandle[object, object], queues: frozenset[str]
) -> DecisionResult:
    """The decision of a running ECP execution, which its approvals are for."""
    try:
        desc = await handle.describe()
        reason = unverified_reason(desc.task_queue, queues)
        if reason:
            raise ApprovalRefusedError(f"Not relayed. {reason}")
        if desc.status is not WorkflowExecutionStatus.RUNNING:
            raise ApprovalRefusedError(
                "Not relayed: the execution has closed; it waits for no approval."
            )
        decision = await handle.query(
            DECISION_QUERY, result_type=DecisionResult, rpc_timeout=_TIMEOUT
        )
    except RPCError as exc:
        raise TemporalQueryError(f"Temporal could not be asked: {exc.message}.") from exc
    if not isinstance(decision, DecisionResult):
        raise ApprovalRefusedError("The execution is not waiting for approvals.")
    return decision


async def _deliver(handle: WorkflowHandle[object, object], approval: str) -> ApprovalAck:
    """Run the ``ecp.approve`` update; its validator decides."""
    try:
        ack: ApprovalAck = await handle.execute_update(
            APPROVE_UPDATE,
            approval,
            result_type=ApprovalAck,
            rpc_timeout=_TIMEOUT,
        )
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        why = str(cause) if cause is not None else str(exc)
        raise ApprovalRefusedError(f"The workflow refused the approval: {why}.") from exc
    except RPCError as exc:
        raise TemporalQueryError(f"Temporal could not deliver it: {exc.message}.") from exc
    return ack
