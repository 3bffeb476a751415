"""Project spans and metrics around the governance steps, the gate and the ledger.

Temporal's ``TracingInterceptor`` (on the client) gives the client, workflow
and activity spans; this module adds ECP's own inside them:

- ``ecp.verify`` / ``ecp.authorize`` / ``ecp.prove`` around the governance
  activities, with the decision, policy digest and grant id they produced;
- ``ecp.gate`` around the gate's check of a governed activity, and
  ``ecp.execute`` around its body (reached only through the gate);
- ``ecp.ledger.append`` around every ledger append.

Attributes are ids, digests and outcomes only: never arguments, results,
keys or grant envelopes. All of it goes through the OpenTelemetry API, so
with no exporter configured it costs next to nothing.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, Status, StatusCode
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from ecp._logs import CURRENT_GRANT_ID
from ecp._wire import FAILURE_TYPE_PREFIX, GRANT_HEADER, OUTAGE_TYPE
from ecp.activities._contracts import (
    ACTIVITY_AUTHORIZE,
    ACTIVITY_EVALUATE,
    ACTIVITY_PREPARE,
    ACTIVITY_PROVE,
    DecisionResult,
    GrantResult,
    ProveResult,
)
from ecp.activities._gate import RefusingGate
from ecp.activities._governed import is_governed
from ecp.authority._dsse import Envelope
from ecp.authority._keys import Signer
from ecp.authority.errors import AuthorityError
from ecp.lineage.ledger._checkpoint import SignedCheckpoint
from ecp.lineage.ledger._ledger import AppendResult, Ledger

__all__ = [
    "ATTR_DECISION",
    "ATTR_GRANT_ID",
    "ATTR_POLICY_DIGEST",
    "ObservedLedger",
    "TelemetryInterceptor",
]

ATTR_DECISION = "ecp.decision"
ATTR_DECISION_ID = "ecp.decision_id"
ATTR_POLICY_DIGEST = "ecp.policy_digest"
ATTR_GRANT_ID = "ecp.grant_id"
ATTR_OUTCOME = "ecp.gate.outcome"
ATTR_REASON = "ecp.gate.reason"
ATTR_LEDGER_INDEX = "ecp.ledger.index"
ATTR_ACTIVITY = "ecp.activity_type"

_STEPS = {
    ACTIVITY_PREPARE: "ecp.verify.prepare",
    ACTIVITY_EVALUATE: "ecp.verify",
    ACTIVITY_AUTHORIZE: "ecp.authorize",
    ACTIVITY_PROVE: "ecp.prove",
}

_tracer = trace.get_tracer("ecp")
_meter = metrics.get_meter("ecp")

_decisions = _meter.create_counter(
    "ecp.decisions", unit="{decision}", description="policy decisions by outcome"
)
_gate_outcomes = _meter.create_counter(
    "ecp.gate.outcomes", unit="{attempt}", description="governed attempts by gate outcome"
)
_gate_denials = _meter.create_counter(
    "ecp.gate.denials", unit="{attempt}", description="gate refusals by reason"
)
_gate_latency = _meter.create_histogram(
    "ecp.gate.duration", unit="s", description="time the gate took to allow or refuse"
)
_ledger_latency = _meter.create_histogram(
    "ecp.ledger.append.duration", unit="s", description="ledger append latency"
)


@dataclass
class _LedgerState:
    """Last known ledger size and checkpoint time, read by the gauges."""

    size: int | None = None
    checkpoint_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_ledger_state = _LedgerState()


def _observe_size(options: CallbackOptions) -> Iterable[Observation]:
    size = _ledger_state.size
    return [] if size is None else [Observation(size)]


def _observe_checkpoint_age(options: CallbackOptions) -> Iterable[Observation]:
    at = _ledger_state.checkpoint_at
    return [] if at is None else [Observation(time.time() - at)]


_meter.create_observable_gauge(
    "ecp.ledger.size", [_observe_size], unit="{entry}", description="entries in the ledger"
)
_meter.create_observable_gauge(
    "ecp.ledger.checkpoint.age",
    [_observe_checkpoint_age],
    unit="s",
    description="seconds since this process last signed a checkpoint",
)


def _note_size(size: int) -> None:
    with _ledger_state.lock:
        if _ledger_state.size is None or size > _ledger_state.size:
            _ledger_state.size = size


class ObservedLedger(Ledger):
    """A ledger whose appends and checkpoints are traced and measured."""

    def append(self, envelope: Envelope | bytes | str) -> AppendResult:
        """Append, inside an ``ecp.ledger.append`` span (see :meth:`Ledger.append`)."""
        with _tracer.start_as_current_span("ecp.ledger.append") as span:
            started = time.perf_counter()
            result = super().append(envelope)
            _appended(span, started, [result])
            return result

    def append_many(self, envelopes: Sequence[Envelope | bytes | str]) -> list[AppendResult]:
        """Append several, traced and timed (see :meth:`Ledger.append_many`)."""
        with _tracer.start_as_current_span("ecp.ledger.append") as span:
            started = time.perf_counter()
            results = super().append_many(envelopes)
            _appended(span, started, results)
            return results

    def checkpoint(self, signer: Signer, origin: str | None = None) -> SignedCheckpoint:
        """Sign a checkpoint (see :meth:`Ledger.checkpoint`) and note its time."""
        cp = super().checkpoint(signer, origin)
        _note_size(cp.checkpoint.size)
        _ledger_state.checkpoint_at = time.time()
        return cp


def _appended(span: Span, started: float, results: Sequence[AppendResult]) -> None:
    _ledger_latency.record(time.perf_counter() - started)
    span.set_attribute("ecp.ledger.entries", len(results))
    if not results:
        return
    last = results[-1]
    span.set_attribute(ATTR_LEDGER_INDEX, last.index)
    span.set_attribute("ecp.ledger.created", last.created)
    _note_size(max(r.index for r in results) + 1)
    if any(r.checkpoint is not None for r in results):
        _ledger_state.checkpoint_at = time.time()


@dataclass
class _GateTiming:
    started: float
    allowed_at: float | None = None


_gate_timing: ContextVar[_GateTiming | None] = ContextVar("ecp_gate_timing", default=None)


class TelemetryInterceptor(Interceptor):
    """Wraps the gate (if any) with ECP's spans and metrics.

    Installed where the gate would be: outside it, it times the check and
    counts refusals by reason; inside it, it spans the body. On workers
    without a gate (the authority), it spans the governance steps.
    """

    def __init__(self, gate: Interceptor | None = None) -> None:
        # No gate means governed activities are refused, never run ungated.
        self._gate = gate or RefusingGate()

    @property
    def verifies_grants(self) -> bool:
        """Whether the wrapped gate verifies grants."""
        return bool(getattr(self._gate, "verifies_grants", False))

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Outer(self._gate.intercept_activity(_Body(next)))


def _grant_id_of(input: ExecuteActivityInput) -> str | None:
    # The gate verified this envelope a moment ago; read only its id.
    header = input.headers.get(GRANT_HEADER)
    if header is None:
        return None
    try:
        payload = json.loads(Envelope.from_json(header.data).payload)
    except (AuthorityError, ValueError):
        return None
    gid = payload.get("grant_id") if isinstance(payload, dict) else None
    return gid if isinstance(gid, str) else None


class _Outer(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if is_governed(input.fn):
            return await self._gated(input)
        name = _STEPS.get(activity.info().activity_type)
        if name is None:
            return await super().execute_activity(input)
        with _tracer.start_as_current_span(name) as span:
            result = await super().execute_activity(input)
            _describe_step(span, result)
            return result

    async def _gated(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        timing = _GateTiming(time.perf_counter())
        token = _gate_timing.set(timing)
        with _tracer.start_as_current_span(
            "ecp.gate", record_exception=False, set_status_on_exception=False
        ) as span:
            span.set_attribute(ATTR_ACTIVITY, info.activity_type)
            try:
                result = await super().execute_activity(input)
            except ApplicationError as exc:
                _gate_refused(span, timing, exc)
                raise
            finally:
                _gate_timing.reset(token)
            span.set_attribute(ATTR_OUTCOME, "allowed")
            return result


def _gate_refused(span: Span, timing: _GateTiming, exc: ApplicationError) -> None:
    kind = exc.type or ""
    if timing.allowed_at is not None or not kind.startswith(FAILURE_TYPE_PREFIX):
        # The body ran and failed (or an exhausted grant): not a gate refusal.
        span.set_attribute(ATTR_OUTCOME, "allowed")
        return
    outcome = "unavailable" if kind == OUTAGE_TYPE else "denied"
    reason = kind.removeprefix(FAILURE_TYPE_PREFIX)
    span.set_attribute(ATTR_OUTCOME, outcome)
    span.set_attribute(ATTR_REASON, reason)
    span.set_status(Status(StatusCode.ERROR, reason))
    _gate_latency.record(time.perf_counter() - timing.started, {"outcome": outcome})
    _gate_outcomes.add(1, {"outcome": outcome})
    _gate_denials.add(1, {"reason": reason})


class _Body(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if not is_governed(input.fn):
            return await super().execute_activity(input)
        timing = _gate_timing.get()
        if timing is not None:
            timing.allowed_at = time.perf_counter()
            _gate_latency.record(timing.allowed_at - timing.started, {"outcome": "allowed"})
            _gate_outcomes.add(1, {"outcome": "allowed"})
        grant_id = _grant_id_of(input)
        token = CURRENT_GRANT_ID.set(grant_id)
        try:
            with _tracer.start_as_current_span("ecp.execute") as span:
                span.set_attribute(ATTR_ACTIVITY, activity.info().activity_type)
                if grant_id:
                    span.set_attribute(ATTR_GRANT_ID, grant_id)
                return await super().execute_activity(input)
        finally:
            CURRENT_GRANT_ID.reset(token)


def _describe_step(span: Span, result: object) -> None:
    if isinstance(result, DecisionResult):
        span.set_attribute(ATTR_DECISION, result.effect)
        span.set_attribute(ATTR_DECISION_ID, result.decision_id)
        span.set_attribute(ATTR_POLICY_DIGEST, result.policy_digest)
        _decisions.add(1, {"outcome": result.effect})
    elif isinstance(result, GrantResult):
        span.set_attribute(ATTR_GRANT_ID, result.grant_id)
    elif isinstance(result, ProveResult):
        span.set_attribute(ATTR_LEDGER_INDEX, result.index)
