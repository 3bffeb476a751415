"""The executor's own governance step: attest its environment and normalise the call it would run.

The executor holds a worker key (to sign attestations and evidence) and the
trust store's public keys; never an authority key.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from temporalio import activity
from temporalio.exceptions import ApplicationError

from ecp._wire import ACTIVITY_ATTEST, failure_type
from ecp.activities._contracts import ACTIVITY_PREPARE, AttestResult, PrepareInput, PrepareResult
from ecp.authority._attestation import EnvironmentAttestation, sign_attestation
from ecp.authority._keys import Signer

__all__ = ["ExecutorActivities"]

UNKNOWN_ACTION = failure_type("unknown_action")
MALFORMED_ARGUMENTS = failure_type("malformed_arguments")


def _positional(fn: Callable[..., object]) -> list[inspect.Parameter]:
    return [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def _param_types(fn: Callable[..., object]) -> list[type]:
    hints = typing.get_type_hints(fn)
    return [hints.get(p.name, object) for p in _positional(fn)]


@dataclass
class ExecutorActivities:
    """Signs this worker's environment measurement once and prepares calls."""

    signer: Signer
    attestation: EnvironmentAttestation
    governed: Sequence[Callable[..., object]] = ()
    _envelope: str = field(init=False, default="")
    _types: dict[str, list[type]] = field(init=False, default_factory=dict)
    _names: dict[str, list[str]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        # Measured and signed once at start: the environment does not change
        # while the process runs, and signing per request would only cost time.
        self._envelope = sign_attestation(self.attestation, self.signer).to_json().decode()
        for fn in self.governed:
            defn = getattr(fn, "__temporal_activity_definition", None)
            name = getattr(defn, "name", None) or getattr(fn, "__name__", "")
            self._types[str(name)] = _param_types(fn)
            # The authority never imports the activity: it learns the names
            # from prepare, to show several arguments to the policy by name.
            self._names[str(name)] = [p.name for p in _positional(fn)]

    @property
    def digest(self) -> str:
        """The attestation digest the gate checks grants against."""
        return self.attestation.digest

    def activities(self) -> list[Callable[..., object]]:
        """The activity callables to register on the executor queue."""
        return [self.prepare, self.attest]

    @activity.defn(name=ACTIVITY_ATTEST)
    async def attest(self) -> AttestResult:
        """This worker's signed environment attestation (what a scope binds)."""
        return AttestResult(self._envelope, self.attestation.digest)

    @activity.defn(name=ACTIVITY_PREPARE)
    async def prepare(self, inp: PrepareInput) -> PrepareResult:
        """Attest this worker and normalise the call the way the gate will see it."""
        types = self._types.get(inp.action)
        if types is None:
            raise ApplicationError(
                f"unknown action {inp.action!r}: no governed activity of that name here",
                type=UNKNOWN_ACTION,
                non_retryable=True,
            )
        if len(inp.args) != len(types):
            raise ApplicationError(
                f"{inp.action} takes {len(types)} argument(s), got {len(inp.args)}",
                type=MALFORMED_ARGUMENTS,
                non_retryable=True,
            )
        conv = activity.payload_converter()
        try:
            typed = conv.from_payloads(conv.to_payloads(inp.args), types)
            normalised = conv.from_payloads(conv.to_payloads(typed))
        except (TypeError, ValueError, RuntimeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ApplicationError(
                f"arguments do not fit {inp.action}: {first}",
                type=MALFORMED_ARGUMENTS,
                non_retryable=True,
            ) from None
        for i, (given, kept) in enumerate(zip(inp.args, normalised, strict=True)):
            if isinstance(given, dict) and isinstance(kept, dict) and set(given) - set(kept):
                unknown = ", ".join(sorted(set(given) - set(kept)))
                raise ApplicationError(
                    f"argument {i} of {inp.action} has unknown field(s): {unknown}",
                    type=MALFORMED_ARGUMENTS,
                    non_retryable=True,
                )
        return PrepareResult(
            self._envelope,
            self.attestation.digest,
            list(normalised),
            param_names=list(self._names[inp.action]),
        )
