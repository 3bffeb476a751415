"""The authority error family.

Every failure raised by ``authority`` derives from :class:`AuthorityError`.
Each subclass carries a stable ``code`` so callers (the gate, the CLI, evidence
records) can name the reason without parsing messages. Verification failures
derive from :class:`VerificationError`: anything the verifier cannot establish
is a denial, never a ``False``.
"""

from __future__ import annotations

from ecp.errors import EcpError

__all__ = [
    "ActivityMismatchError",
    "ActivityTypeMismatchError",
    "ApprovalError",
    "ApprovalExpiredError",
    "ApprovalInsufficientError",
    "ApprovalMismatchError",
    "ApprovalNotYetValidError",
    "ApprovalSchemaError",
    "ApproverNotAuthorizedError",
    "ArgumentsMismatchError",
    "AttemptInProgressError",
    "AttestationError",
    "AuthorityError",
    "BindingMismatchError",
    "CanonicalizationError",
    "ClockError",
    "ControlLogTamperedError",
    "ControlStateUnavailableError",
    "ControlStatementError",
    "DecisionMismatchError",
    "DuplicateKeyEnvelopeError",
    "DuplicateKeyJSONError",
    "EnvelopeError",
    "EnvelopeTooLargeError",
    "EnvironmentMismatchError",
    "ExecutionInterruptedError",
    "GrantAttemptsExhaustedError",
    "GrantExpiredError",
    "GrantNotYetValidError",
    "GrantRefusedError",
    "GrantReplayedError",
    "GrantRevokedError",
    "GrantSchemaError",
    "HaltedError",
    "InfrastructureError",
    "InitiatorError",
    "InitiatorImpersonationError",
    "InitiatorMismatchError",
    "InitiatorProofError",
    "InitiatorUnauthenticatedError",
    "KeyExpiredError",
    "KeyFileError",
    "KeyRoleError",
    "LeaseLapsedError",
    "MalformedBase64Error",
    "MalformedEnvelopeError",
    "MalformedSignatureError",
    "NamespaceMismatchError",
    "NonCanonicalPayloadError",
    "OutcomeUnknownError",
    "PasskeyAssertionError",
    "PayloadTypeError",
    "PolicyBundleError",
    "PolicyDigestMismatchError",
    "PolicyError",
    "PolicyEvaluationError",
    "ReplayStoreUnavailableError",
    "RequestReplayedError",
    "RevokedKeyError",
    "RunMismatchError",
    "SignatureInvalidError",
    "StatementError",
    "TrustStoreError",
    "UnknownKeyError",
    "UnknownSchemaVersionError",
    "UnstorableIdError",
    "VerificationError",
    "WorkflowMismatchError",
]


class AuthorityError(EcpError):
    """Root of every error raised by ``ecp.authority``."""

    code = "authority_error"


# --- encoding ---------------------------------------------------------------


class CanonicalizationError(AuthorityError):
    """A value cannot be expressed as RFC 8785 canonical JSON."""

    code = "canonicalization_failed"


class DuplicateKeyJSONError(CanonicalizationError):
    """A JSON document names the same object key twice."""

    code = "duplicate_json_key"


# --- verification (denials) -------------------------------------------------


class VerificationError(AuthorityError):
    """Something could not be established; treat as a denial."""

    code = "verification_failed"


class EnvelopeError(VerificationError):
    """A DSSE envelope is malformed or does not verify."""

    code = "envelope_invalid"


class MalformedEnvelopeError(EnvelopeError):
    """The envelope is not a well-formed DSSE JSON document."""

    code = "envelope_malformed"


class MalformedBase64Error(MalformedEnvelopeError):
    """A base64 field of the envelope does not decode."""

    code = "envelope_bad_base64"


class EnvelopeTooLargeError(MalformedEnvelopeError):
    """The envelope exceeds the size limit for its kind."""

    code = "envelope_too_large"


class DuplicateKeyEnvelopeError(MalformedEnvelopeError):
    """The envelope JSON names the same object key twice.

    Parsers disagree on which duplicate wins, so such a document could mean
    different things to different verifiers; it is refused outright.
    """

    code = "envelope_duplicate_key"


class PayloadTypeError(EnvelopeError):
    """The envelope's payloadType is not the one expected."""

    code = "payload_type_mismatch"


class MalformedSignatureError(EnvelopeError):
    """A signature has the wrong length or shape for its algorithm."""

    code = "signature_malformed"


class SignatureInvalidError(EnvelopeError):
    """No signature by an acceptable key verifies over the PAE bytes."""

    code = "signature_invalid"


class NonCanonicalPayloadError(EnvelopeError):
    """The signed payload is not in RFC 8785 canonical form."""

    code = "payload_not_canonical"


# --- keys and trust ---------------------------------------------------------


class UnknownKeyError(VerificationError):
    """The signing key id is not in the trust store."""

    code = "key_unknown"


class RevokedKeyError(VerificationError):
    """The signing key has been revoked."""

    code = "key_revoked"


class KeyExpiredError(VerificationError):
    """The signing key is outside its validity period."""

    code = "key_outside_validity"


class KeyRoleError(VerificationError):
    """The signing key does not hold the role the artifact needs."""

    code = "key_wrong_role"


class KeyFileError(AuthorityError):
    """A key file is missing, unreadable or not a key of the expected kind."""

    code = "key_file_invalid"


class TrustStoreError(AuthorityError):
    """The trust store cannot be read or is malformed.

    Retryable: a trust store that is briefly unreadable (a volume being
    re-mounted) may come back; the gate still refuses to run meanwhile.
    """

    code = "trust_store_unavailable"
    retryable = True


# --- grants -----------------------------------------------------------------


class GrantSchemaError(VerificationError):
    """The grant payload does not match the grant schema exactly."""

    code = "grant_schema_invalid"


class UnknownSchemaVersionError(GrantSchemaError):
    """The grant names a schema version this verifier does not know."""

    code = "grant_schema_unknown"


class UnstorableIdError(GrantSchemaError):
    """A grant or request id holds a character no single-use store keeps (NUL)."""

    code = "id_unstorable"


class GrantExpiredError(VerificationError):
    """The grant's validity window has ended."""

    code = "grant_expired"


class GrantNotYetValidError(VerificationError):
    """The grant's validity window has not started."""

    code = "grant_not_yet_valid"


class BindingMismatchError(VerificationError):
    """The grant is bound to a different call than the one attempted."""

    code = "binding_mismatch"


class ActivityTypeMismatchError(BindingMismatchError):
    """The grant names another activity type."""

    code = "binding_activity_type"


class ArgumentsMismatchError(BindingMismatchError):
    """The digest of the actual arguments differs from the granted one."""

    code = "binding_arguments"


class NamespaceMismatchError(BindingMismatchError):
    """The grant is bound to another namespace."""

    code = "binding_namespace"


class WorkflowMismatchError(BindingMismatchError):
    """The grant is bound to another workflow id."""

    code = "binding_workflow_id"


class RunMismatchError(BindingMismatchError):
    """The grant is bound to another run id."""

    code = "binding_run_id"


class ActivityMismatchError(BindingMismatchError):
    """The grant is bound to another activity id."""

    code = "binding_activity_id"


class InitiatorMismatchError(BindingMismatchError):
    """The grant is bound to another initiator."""

    code = "binding_initiator"


class PolicyDigestMismatchError(BindingMismatchError):
    """The grant was issued under another policy bundle."""

    code = "binding_policy_digest"


class DecisionMismatchError(BindingMismatchError):
    """The grant names another decision id than expected."""

    code = "binding_decision_id"


class EnvironmentMismatchError(BindingMismatchError):
    """This worker's environment attestation is not the granted one."""

    code = "binding_environment"


class GrantReplayedError(VerificationError):
    """The grant id has already been used."""

    code = "grant_replayed"


class RequestReplayedError(GrantReplayedError):
    """Another grant already ran this request (a reset or re-submission asked again)."""

    code = "request_replayed"


class AttemptInProgressError(VerificationError):
    """Another attempt of the grant may still be running: this one waits (retryable)."""

    code = "attempt_in_progress"
    retryable = True


class LeaseLapsedError(VerificationError):
    """The attempt's lease ended before its body could start: not run, retried."""

    code = "lease_lapsed"
    retryable = True


class InitiatorError(VerificationError):
    """Who asked could not be established."""

    code = "initiator_invalid"


class InitiatorUnauthenticatedError(InitiatorError):
    """The request carries no proof of its initiator, and this deployment requires one."""

    code = "initiator_unauthenticated"


class InitiatorProofError(InitiatorError):
    """The initiator's proof does not verify, or is for another request."""

    code = "initiator_proof_invalid"


class InitiatorImpersonationError(InitiatorError):
    """The proof establishes someone other than the initiator the request names."""

    code = "initiator_not_proven"


class GrantAttemptsExhaustedError(GrantReplayedError):
    """The attempt number exceeds the grant's ``max_attempts`` scope."""

    code = "grant_attempts_exhausted"


class OutcomeUnknownError(GrantAttemptsExhaustedError):
    """Every use of the grant is taken, and the workflow cannot know how the body ended.

    Either an attempt that took a use never ended (its worker died after the
    gate let its body start: the body may have run, nobody recorded how it
    ended), or one completed and Temporal never received that completion
    (the worker died after the body returned, or the server dropped the
    report): the body ran, its result is lost. At-most-once forbids running
    it again, and reporting it as completed or failed would be a guess about
    what the caller got: a person must check the side effect.

    Attributes:
        attempts: The Temporal attempt numbers that began and never ended.
        completed: The attempts whose body completed (their report was lost).
        verified: Set by the verifier to the ``VerifiedGrant`` it established
            (typed ``object`` to keep this module free of the verifier); the
            gate records an ``unknown`` outcome only when it is one.
    """

    code = "outcome_unknown"

    def __init__(
        self, message: str, attempts: tuple[int, ...] = (), completed: tuple[int, ...] = ()
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.completed = completed
        self.verified: object | None = None


class GrantRefusedError(AuthorityError):
    """The authority refuses to issue a grant (the decision does not allow it)."""

    code = "grant_refused"


class ClockError(VerificationError):
    """The injected clock returned a time without a time zone."""

    code = "clock_invalid"


# --- approvals --------------------------------------------------------------


class ApprovalError(VerificationError):
    """An approval does not verify or does not satisfy the policy."""

    code = "approval_invalid"


class ApprovalMismatchError(ApprovalError):
    """The approval is bound to another request or decision."""

    code = "approval_mismatch"


class ApprovalExpiredError(ApprovalError):
    """The approval has expired."""

    code = "approval_expired"


class ApprovalInsufficientError(ApprovalError):
    """Fewer distinct valid approvals than the policy's threshold."""

    code = "approval_insufficient"


class ApprovalNotYetValidError(ApprovalError):
    """The approval's validity window has not started."""

    code = "approval_not_yet_valid"


class ApprovalSchemaError(ApprovalError):
    """The approval payload does not match the approval schema exactly."""

    code = "approval_schema_invalid"


class ApproverNotAuthorizedError(ApprovalError):
    """The approver is not who the key says, or not in the policy's approval role."""

    code = "approver_not_authorized"


class PasskeyAssertionError(ApprovalError):
    """A passkey approval's WebAuthn assertion does not verify.

    Wrong credential, challenge, origin or relying party, no user
    verification, or a bad signature.
    """

    code = "approval_passkey_invalid"


# --- attestation ------------------------------------------------------------


class AttestationError(VerificationError):
    """An environment attestation is malformed or does not verify."""

    code = "attestation_invalid"


# --- in-toto statements -----------------------------------------------------


class StatementError(VerificationError):
    """A document is not a valid in-toto Statement (v1, or legacy v0.1)."""

    code = "statement_invalid"


# --- policy -----------------------------------------------------------------


class PolicyError(AuthorityError):
    """Root of policy problems."""

    code = "policy_error"


class PolicyBundleError(PolicyError):
    """A policy bundle cannot be loaded or does not validate."""

    code = "policy_bundle_invalid"


class PolicyEvaluationError(PolicyError):
    """The policy engine could not evaluate a request."""

    code = "policy_evaluation_failed"


# --- infrastructure ---------------------------------------------------------


class InfrastructureError(AuthorityError):
    """A governance dependency could not answer. Retryable, never a pass."""

    code = "infrastructure_unavailable"
    retryable = True


class ReplayStoreUnavailableError(InfrastructureError):
    """The single-use store cannot be reached."""

    code = "replay_store_unavailable"


class ControlStateUnavailableError(InfrastructureError):
    """The gate cannot learn the current halts and revocations within its bound."""

    code = "control_state_unavailable"


class ControlLogTamperedError(InfrastructureError):
    """The control log lost, reordered or rewrote a statement this process had seen.

    Retryable (an operator must repair the log), and never a pass: until the
    log verifies again no governed body starts.
    """

    code = "control_log_tampered"


# --- the kill switch and revocation -----------------------------------------


class HaltedError(VerificationError):
    """The action (or every action) is halted by a signed halt statement."""

    code = "halted"


class GrantRevokedError(VerificationError):
    """The grant was revoked by a signed revocation statement."""

    code = "grant_revoked"


class ControlStatementError(VerificationError):
    """A halt, resume or revocation statement is malformed or not signed by a halt key."""

    code = "control_statement_invalid"


class ExecutionInterruptedError(VerificationError):
    """A running governed body was stopped: its grant no longer holds."""

    code = "interrupted"
