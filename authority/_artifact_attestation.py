"""Attestations about artifacts: DSSE-signed in-toto statements (SLSA provenance or any predicate).

A request may carry, per artifact, DSSE envelopes (payloadType
``application/vnd.in-toto+json``) of in-toto Statements. One counts only if
an ``attester``-role key of the trust store signed it, valid now, and one of
its subjects carries the artifact's own SHA-256 (a directory's tree digest,
an image's manifest digest). The policy then sees its predicate type, who
signed it, and for SLSA provenance the builder id and source repository
(:func:`ecp.authority._artifact.policy_view`).

An attestation that does not verify is a refusal of the request
(``artifact_attestation_invalid``), not an attestation the policy silently
does not see: whoever presents one claims something about the artifact, and
a false claim is worth stopping on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from pydantic import JsonValue

from ecp.authority._artifact import ArtifactError, ArtifactRef
from ecp.authority._dsse import Envelope, verify_envelope
from ecp.authority._intoto import INTOTO_PAYLOAD_TYPE, parse_statement
from ecp.authority._truststore import KeyRole, TrustStore
from ecp.authority.errors import AuthorityError

__all__ = [
    "ARTIFACT_ATTESTATION_MAX_BYTES",
    "ArtifactAttestationError",
    "VerifiedArtifactAttestation",
    "verify_artifact_attestation",
]

#: A provenance statement is a few KiB; far larger ones are refused unparsed.
ARTIFACT_ATTESTATION_MAX_BYTES = 64 * 1024


class ArtifactAttestationError(ArtifactError):
    """An attestation presented for an artifact does not verify for it."""

    code = "artifact_attestation_invalid"


@dataclass(frozen=True, slots=True)
class VerifiedArtifactAttestation:
    """An attestation that verified for one artifact."""

    predicate_type: str
    signer: str
    key_id: str
    builder_id: str
    source_repository: str

    def claims(self) -> dict[str, str]:
        """The claims the policy view reads."""
        return {
            "predicate_type": self.predicate_type,
            "signer": self.signer,
            "key_id": self.key_id,
            "builder_id": self.builder_id,
            "source_repository": self.source_repository,
        }


def _at(doc: object, *path: str) -> str:
    for p in path:
        if not isinstance(doc, Mapping):
            return ""
        doc = doc.get(p)
    return doc if isinstance(doc, str) else ""


def _provenance_fields(predicate: Mapping[str, JsonValue]) -> tuple[str, str]:
    """Builder id and source repository, SLSA v1 first, then v0.2."""
    builder = _at(predicate, "runDetails", "builder", "id") or _at(predicate, "builder", "id")
    source = (
        _at(predicate, "buildDefinition", "externalParameters", "repository")
        or _at(predicate, "buildDefinition", "externalParameters", "source")
        or _at(predicate, "buildDefinition", "externalParameters", "workflow", "repository")
        or _at(predicate, "invocation", "configSource", "uri")
    )
    return builder, source


def verify_artifact_attestation(
    envelope_json: str, artifact: ArtifactRef, trust: TrustStore, at: datetime
) -> VerifiedArtifactAttestation:
    """Verify one attestation for ``artifact``.

    Raises:
        ArtifactAttestationError: not a DSSE in-toto envelope, not signed by
            a trusted ``attester`` key valid at ``at``, or no subject with the
            artifact's SHA-256.
    """
    name = artifact.name
    try:
        envelope = Envelope.from_json(
            envelope_json.encode("utf-8"), max_bytes=ARTIFACT_ATTESTATION_MAX_BYTES
        )
        verified = verify_envelope(
            envelope, payload_type=INTOTO_PAYLOAD_TYPE, trust=trust, role=KeyRole.ATTESTER, at=at
        )
        statement = parse_statement(verified.payload)
    except AuthorityError as exc:
        raise ArtifactAttestationError(
            f"attestation for artifact {name!r} does not verify: {exc}"
        ) from None
    want = artifact.digest.removeprefix("sha256:")
    if not any(s.digest.get("sha256") == want for s in statement.subject):
        found = ", ".join(
            "sha256:" + s.digest["sha256"] for s in statement.subject if "sha256" in s.digest
        )
        raise ArtifactAttestationError(
            f"attestation for artifact {name!r} is about {found or 'no sha256 subject'}, "
            f"not {artifact.digest}"
        )
    builder, source = _provenance_fields(statement.predicate)
    return VerifiedArtifactAttestation(
        predicate_type=statement.predicate_type,
        signer=verified.key.name,
        key_id=verified.key.key_id,
        builder_id=builder,
        source_repository=source,
    )
