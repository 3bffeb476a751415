"""Before execution: keys, trust, policy, grants, approvals, attestation, verification."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ecp._lazy import lazy_exports

if TYPE_CHECKING:
    from ecp.authority._approval import Approval as Approval
    from ecp.authority._approval import VerifiedApproval as VerifiedApproval
    from ecp.authority._approval import sign_approval as sign_approval
    from ecp.authority._approval import verify_approvals as verify_approvals
    from ecp.authority._artifact import ArtifactRef as ArtifactRef
    from ecp.authority._artifact import describe_directory as describe_directory
    from ecp.authority._artifact import describe_file as describe_file
    from ecp.authority._artifact import describe_image as describe_image
    from ecp.authority._attestation import EnvironmentAttestation as EnvironmentAttestation
    from ecp.authority._attestation import VerifiedAttestation as VerifiedAttestation
    from ecp.authority._attestation import measure_environment as measure_environment
    from ecp.authority._attestation import sign_attestation as sign_attestation
    from ecp.authority._attestation import verify_attestation as verify_attestation
    from ecp.authority._calldigest import digest_values as digest_values
    from ecp.authority._canonical import canonical_json as canonical_json
    from ecp.authority._clock import Clock as Clock
    from ecp.authority._clock import FixedClock as FixedClock
    from ecp.authority._clock import system_clock as system_clock
    from ecp.authority._control import ControlState as ControlState
    from ecp.authority._control_log import InMemoryControlLog as InMemoryControlLog
    from ecp.authority._control_log import SqlControlLog as SqlControlLog
    from ecp.authority._control_log import issue_control as issue_control
    from ecp.authority._dsse import Envelope as Envelope
    from ecp.authority._dsse import sign_envelope as sign_envelope
    from ecp.authority._dsse import verify_envelope as verify_envelope
    from ecp.authority._grant import CallBinding as CallBinding
    from ecp.authority._grant import Grant as Grant
    from ecp.authority._grant import GrantScope as GrantScope
    from ecp.authority._grant import issue_grant as issue_grant
    from ecp.authority._keys import Ed25519FileSigner as Ed25519FileSigner
    from ecp.authority._keys import KeyId as KeyId
    from ecp.authority._keys import Signer as Signer
    from ecp.authority._keys import generate_private_key as generate_private_key
    from ecp.authority._keys import key_id_for as key_id_for
    from ecp.authority._keys import load_private_key as load_private_key
    from ecp.authority._keys import load_public_key as load_public_key
    from ecp.authority._keys import write_private_key as write_private_key
    from ecp.authority._keys import write_public_key as write_public_key
    from ecp.authority._policy import Decision as Decision
    from ecp.authority._policy import Effect as Effect
    from ecp.authority._policy import PolicyBundle as PolicyBundle
    from ecp.authority._policy import PolicyRequest as PolicyRequest
    from ecp.authority._replay import InMemoryReplayGuard as InMemoryReplayGuard
    from ecp.authority._replay import ReplayGuard as ReplayGuard
    from ecp.authority._replay import SqlReplayGuard as SqlReplayGuard
    from ecp.authority._truststore import KeyRole as KeyRole
    from ecp.authority._truststore import TrustedKey as TrustedKey
    from ecp.authority._truststore import TrustStore as TrustStore
    from ecp.authority._verify import ExpectedCall as ExpectedCall
    from ecp.authority._verify import VerifiedGrant as VerifiedGrant
    from ecp.authority._verify import verify_grant as verify_grant
    from ecp.authority.errors import AuthorityError as AuthorityError
    from ecp.authority.errors import VerificationError as VerificationError

__all__ = [
    "Approval",
    "ArtifactRef",
    "AuthorityError",
    "CallBinding",
    "Clock",
    "ControlState",
    "Decision",
    "Ed25519FileSigner",
    "Effect",
    "Envelope",
    "EnvironmentAttestation",
    "ExpectedCall",
    "FixedClock",
    "Grant",
    "GrantScope",
    "InMemoryControlLog",
    "InMemoryReplayGuard",
    "KeyId",
    "KeyRole",
    "PolicyBundle",
    "PolicyRequest",
    "ReplayGuard",
    "Signer",
    "SqlControlLog",
    "SqlReplayGuard",
    "TrustStore",
    "TrustedKey",
    "VerificationError",
    "VerifiedApproval",
    "VerifiedAttestation",
    "VerifiedGrant",
    "canonical_json",
    "describe_directory",
    "describe_file",
    "describe_image",
    "digest_values",
    "generate_private_key",
    "issue_control",
    "issue_grant",
    "key_id_for",
    "load_private_key",
    "load_public_key",
    "measure_environment",
    "sign_approval",
    "sign_attestation",
    "sign_envelope",
    "system_clock",
    "verify_approvals",
    "verify_attestation",
    "verify_envelope",
    "verify_grant",
    "write_private_key",
    "write_public_key",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ArtifactRef": "ecp.authority._artifact",
        "describe_directory": "ecp.authority._artifact",
        "describe_file": "ecp.authority._artifact",
        "describe_image": "ecp.authority._artifact",
        "Approval": "ecp.authority._approval",
        "AuthorityError": "ecp.authority.errors",
        "CallBinding": "ecp.authority._grant",
        "Clock": "ecp.authority._clock",
        "ControlState": "ecp.authority._control",
        "Decision": "ecp.authority._policy",
        "Ed25519FileSigner": "ecp.authority._keys",
        "Effect": "ecp.authority._policy",
        "Envelope": "ecp.authority._dsse",
        "EnvironmentAttestation": "ecp.authority._attestation",
        "ExpectedCall": "ecp.authority._verify",
        "FixedClock": "ecp.authority._clock",
        "Grant": "ecp.authority._grant",
        "GrantScope": "ecp.authority._grant",
        "InMemoryControlLog": "ecp.authority._control_log",
        "InMemoryReplayGuard": "ecp.authority._replay",
        "KeyId": "ecp.authority._keys",
        "KeyRole": "ecp.authority._truststore",
        "PolicyBundle": "ecp.authority._policy",
        "PolicyRequest": "ecp.authority._policy",
        "ReplayGuard": "ecp.authority._replay",
        "Signer": "ecp.authority._keys",
        "SqlControlLog": "ecp.authority._control_log",
        "SqlReplayGuard": "ecp.authority._replay",
        "TrustStore": "ecp.authority._truststore",
        "TrustedKey": "ecp.authority._truststore",
        "VerificationError": "ecp.authority.errors",
        "VerifiedApproval": "ecp.authority._approval",
        "VerifiedAttestation": "ecp.authority._attestation",
        "VerifiedGrant": "ecp.authority._verify",
        "canonical_json": "ecp.authority._canonical",
        "digest_values": "ecp.authority._calldigest",
        "generate_private_key": "ecp.authority._keys",
        "issue_control": "ecp.authority._control_log",
        "issue_grant": "ecp.authority._grant",
        "key_id_for": "ecp.authority._keys",
        "load_private_key": "ecp.authority._keys",
        "load_public_key": "ecp.authority._keys",
        "measure_environment": "ecp.authority._attestation",
        "sign_approval": "ecp.authority._approval",
        "sign_attestation": "ecp.authority._attestation",
        "sign_envelope": "ecp.authority._dsse",
        "system_clock": "ecp.authority._clock",
        "verify_approvals": "ecp.authority._approval",
        "verify_attestation": "ecp.authority._attestation",
        "verify_envelope": "ecp.authority._dsse",
        "verify_grant": "ecp.authority._verify",
        "write_private_key": "ecp.authority._keys",
        "write_public_key": "ecp.authority._keys",
    },
)
