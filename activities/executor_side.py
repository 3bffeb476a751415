"""The executor's own governance activity: attesting its environment.

The executor holds a worker key (to sign attestations and evidence) and the
trust store's public keys; never an authority key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from temporalio import activity

from activities.contracts import ACTIVITY_ATTEST, AttestationResult
from authority.attestation import EnvironmentAttestation, sign_attestation
from authority.keys import Signer

__all__ = ["ExecutorActivities"]


@dataclass
class ExecutorActivities:
    """Signs this worker's environment measurement once, serves it per request."""

    signer: Signer
    attestation: EnvironmentAttestation
    _envelope: str = field(init=False, default="")

    def __post_init__(self) -> None:
        # Measured once at start: the environment does not change while the
        # process runs, and signing per request would only cost time.
        self._envelope = sign_attestation(self.attestation, self.signer).to_json().decode()

    @property
    def digest(self) -> str:
        """The attestation digest the gate checks grants against."""
        return self.attestation.digest

    def activities(self) -> list[Callable[..., object]]:
        """The activity callables to register on the executor queue."""
        return [self.attest]

    @activity.defn(name=ACTIVITY_ATTEST)
    async def attest(self) -> AttestationResult:
        """Return this worker's signed environment attestation."""
        return AttestationResult(envelope=self._envelope, digest=self.attestation.digest)
