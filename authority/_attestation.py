"""Environment attestation: a stable measurement of the worker a grant is bound to.

The measurement covers the interpreter, the platform, the versions of the
governed distributions, the SHA-256 of the governed modules' source files,
and the deployment's build id / image digest when set. It holds no time and
no host name, so two identical deployments measure the same digest and a
restart does not change it.

A worker signs its measurement with a worker key (payloadType
:data:`ATTESTATION_PAYLOAD_TYPE`); only a verified attestation yields the
claim ``attested: true`` that policies can require.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from ecp.authority._canonical import Digest, canonical_json, digest_bytes
from ecp.authority._clock import Clock, now_utc
from ecp.authority._dsse import Envelope, sign_envelope, verify_envelope
from ecp.authority._keys import Signer
from ecp.authority._signed import DIGEST_PATTERN, read_signed_model
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.authority.errors import AttestationError

__all__ = [
    "ATTESTATION_PAYLOAD_TYPE",
    "ATTESTATION_SCHEMA_VERSION",
    "BUILD_ID_ENV",
    "DEFAULT_DISTRIBUTIONS",
    "IMAGE_DIGEST_ENV",
    "EnvironmentAttestation",
    "VerifiedAttestation",
    "measure_environment",
    "sign_attestation",
    "verify_attestation",
]

ATTESTATION_PAYLOAD_TYPE: Final = "application/vnd.ecp.environment.v1+json"
ATTESTATION_SCHEMA_VERSION: Final = "ecp.environment/v1"
BUILD_ID_ENV: Final = "ECP_BUILD_ID"
IMAGE_DIGEST_ENV: Final = "ECP_IMAGE_DIGEST"
#: Distributions whose versions change what a governed activity does.
DEFAULT_DISTRIBUTIONS: Final = ("temporal-ecp", "temporalio", "cryptography", "pydantic", "cedarpy")
_ABSENT: Final = "(not installed)"

_Digest = Annotated[Digest, Field(pattern=DIGEST_PATTERN)]


class EnvironmentAttestation(BaseModel):
    """A measurement of one worker environment."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    schema_version: Literal["ecp.environment/v1"] = ATTESTATION_SCHEMA_VERSION
    python: str
    platform: str
    distributions: dict[str, str]
    modules: dict[str, _Digest]
    build_id: str | None = None
    image_digest: str | None = None

    def to_payload(self) -> bytes:
        """RFC 8785 bytes of the measurement (what is signed and digested)."""
        return canonical_json(self.model_dump(mode="json"))

    @property
    def digest(self) -> Digest:
        """``sha256:`` of the canonical measurement. Stable across runs."""
        return digest_bytes(self.to_payload())

    def claims(self) -> dict[str, JsonValue]:
        """Claims for the Cedar context. ``attested`` is false: nobody vouched yet."""
        out: dict[str, JsonValue] = {
            "attested": False,
            "digest": self.digest,
            "python": self.python,
            "platform": self.platform,
        }
        if self.build_id:
            out["build_id"] = self.build_id
        if self.image_digest:
            out["image_digest"] = self.image_digest
        return out


@dataclass(frozen=True, slots=True)
class VerifiedAttestation:
    """An attestation signed by a trusted worker key."""

    attestation: EnvironmentAttestation
    envelope: Envelope
    key: TrustedKey

    @property
    def digest(self) -> Digest:
        """The attested environment digest."""
        return self.attestation.digest

    def claims(self) -> dict[str, JsonValue]:
        """Claims for the Cedar context, with ``attested: true``."""
        return {**self.attestation.claims(), "attested": True}


def _hash_module_source(name: str) -> Digest:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        raise AttestationError(f"governed module {name!r} cannot be located: {exc}") from exc
    if spec is None or spec.origin is None or not spec.has_location:
        raise AttestationError(f"governed module {name!r} has no source file")
    origin = Path(spec.origin)
    if spec.submodule_search_locations:
        # A package: every source file under it, by relative path, so adding,
        # removing or renaming a file changes the digest too.
        root = origin.parent
        files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    else:
        root = origin.parent
        files = [origin]
    h = hashlib.sha256()
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as exc:
            raise AttestationError(f"cannot read {f}: {exc.strerror}") from exc
        rel = f.relative_to(root).as_posix().encode()
        h.update(b"%d:%b%d:%b" % (len(rel), rel, len(data), data))
    return Digest("sha256:" + h.hexdigest())


def measure_environment(
    governed_modules: Sequence[str],
    *,
    build_id: str | None = None,
    image_digest: str | None = None,
    distributions: Sequence[str] = DEFAULT_DISTRIBUTIONS,
    environ: Mapping[str, str] | None = None,
) -> EnvironmentAttestation:
    """Measure this process's environment.

    Args:
        governed_modules: importable names (modules or packages) whose source
            the governed activities run.
        build_id: deployment build id; defaults to ``$ECP_BUILD_ID``.
        image_digest: container image digest; defaults to ``$ECP_IMAGE_DIGEST``.
        distributions: distributions whose versions are recorded.
        environ: where to read the defaults (``os.environ`` if ``None``).

    Raises:
        AttestationError: a governed module cannot be found or read.
    """
    env = os.environ if environ is None else environ
    versions = {}
    for dist in sorted(set(distributions)):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = _ABSENT
    impl = sys.implementation.name
    return EnvironmentAttestation(
        python=f"{impl} {platform.python_version()}",
        platform=f"{sys.platform}-{platform.machine()}",
        distributions=versions,
        modules={m: _hash_module_source(m) for m in sorted(set(governed_modules))},
        build_id=build_id if build_id is not None else (env.get(BUILD_ID_ENV) or None),
        image_digest=(
            image_digest if image_digest is not None else (env.get(IMAGE_DIGEST_ENV) or None)
        ),
    )


def sign_attestation(attestation: EnvironmentAttestation, signer: Signer) -> Envelope:
    """Sign a measurement with a worker key."""
    return sign_envelope(ATTESTATION_PAYLOAD_TYPE, attestation.to_payload(), signer)


def verify_attestation(
    envelope: Envelope | bytes, trust: TrustStore, clock: Clock
) -> VerifiedAttestation:
    """Verify a signed measurement against the trust store (worker role).

    Raises:
        EnvelopeError (and subclasses): malformed envelope, wrong payloadType,
            bad signature.
        UnknownKeyError, RevokedKeyError, KeyExpiredError, KeyRoleError:
            the key may not sign as a worker now.
        NonCanonicalPayloadError: the payload is not JCS.
        AttestationError: the payload is not an environment measurement.
        ClockError: the clock is not time-zone aware.
    """
    env = envelope if isinstance(envelope, Envelope) else Envelope.from_json(envelope)
    verified = verify_envelope(
        env,
        payload_type=ATTESTATION_PAYLOAD_TYPE,
        trust=trust,
        role=KeyRole.WORKER,
        at=now_utc(clock),
    )
    att = read_signed_model(
        env.payload,
        EnvironmentAttestation,
        what="attestation",
        schema_version=ATTESTATION_SCHEMA_VERSION,
        schema_error=AttestationError,
        version_error=AttestationError,
    )
    return VerifiedAttestation(att, env, verified.key)
