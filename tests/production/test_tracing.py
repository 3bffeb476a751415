"""One governed execution yields one connected trace with every step.

Temporal's TracingInterceptor (client, workflow, activity spans) plus ECP's
own spans; the SDK's in-memory exporter collects them in this process.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.testing import WorkflowEnvironment

from ecp._keyring import init_keyring
from ecp._logs import CURRENT_GRANT_ID, JsonFormatter
from ecp._runtime import build_plugin, run_workers
from ecp._settings import Role, Settings
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import GovernedRequest, TaskQueues

ARGS = {"amount": 250, "currency": "EUR", "recipient": "acme-tracing-canary"}


@dataclass
class Otel:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader


_OTEL: Otel | None = None


@pytest.fixture(scope="session")
def otel() -> Otel:
    # Global providers can be set once per process.
    global _OTEL
    if _OTEL is None:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        _OTEL = Otel(exporter, reader)
    return _OTEL


@pytest.fixture
async def traced_client(temporal_env: WorkflowEnvironment, otel: Otel) -> Client:
    return await Client.connect(
        temporal_env.client.service_client.config.target_host,
        namespace=temporal_env.client.namespace,
        interceptors=[TracingInterceptor()],
    )


@pytest.fixture
async def traced_stack(traced_client: Client, tmp_path: Path) -> AsyncIterator[Settings]:
    init_keyring(tmp_path / "keys")
    q = uuid.uuid4().hex[:8]
    settings = Settings(
        home=tmp_path,
        authority_queue=f"auth-{q}",
        executor_queue=f"exec-{q}",
        database_url=f"sqlite:///{tmp_path / 'ecp.db'}",
        # Requests here carry no initiator proof: accepted, marked unauthenticated.
        allow_unauthenticated=True,
    )
    plugin, ledger = build_plugin(settings, role=Role.ALL)
    async with run_workers(traced_client, settings, plugin, role=Role.ALL):
        yield settings
    ledger.close()


def _attr_values(span: ReadableSpan) -> list[str]:
    return [str(v) for v in (span.attributes or {}).values()]


async def test_one_connected_trace_with_every_step(
    traced_client: Client, traced_stack: Settings, otel: Otel
) -> None:
    s = traced_stack
    otel.spans.clear()
    wf_id = f"trace-{uuid.uuid4().hex[:8]}"
    result = await traced_client.execute_workflow(
        GovernedExecution.run,
        GovernedRequest(
            "payout",
            [ARGS],
            "alice",
            "trace test",
            queues=TaskQueues(s.authority_queue, s.executor_queue),
        ),
        id=wf_id,
        task_queue=s.executor_queue,
    )
    assert result.outcome == "completed", result.reason
    spans = [sp for sp in otel.spans.get_finished_spans() if sp.context is not None]
    start = next(sp for sp in spans if sp.name == "StartWorkflow:GovernedExecution")
    assert start.context is not None
    trace_id = start.context.trace_id
    ours = [sp for sp in spans if sp.context is not None and sp.context.trace_id == trace_id]
    names = {sp.name for sp in ours}
    for expected in (
        "StartWorkflow:GovernedExecution",
        "RunWorkflow:GovernedExecution",
        "RunActivity:ecp.prepare",
        "RunActivity:ecp.evaluate",
        "RunActivity:ecp.authorize",
        "RunActivity:payout",
        "RunActivity:ecp.prove",
        "ecp.verify",
        "ecp.authorize",
        "ecp.gate",
        "ecp.execute",
        "ecp.ledger.append",
        "ecp.prove",
    ):
        assert expected in names, f"{expected} missing from {sorted(names)}"

    # Connected: every span but the client's root has its parent in the trace.
    ids = {sp.context.span_id for sp in ours if sp.context is not None}
    for sp in ours:
        if sp is not start:
            assert sp.parent is not None, sp.name
            assert sp.parent.span_id in ids, sp.name

    def one(name: str) -> ReadableSpan:
        return next(sp for sp in ours if sp.name == name)

    def parent_name(sp: ReadableSpan) -> str:
        assert sp.parent is not None
        return next(p.name for p in ours if p.context and p.context.span_id == sp.parent.span_id)

    verify = one("ecp.verify")
    assert verify.attributes is not None
    assert verify.attributes["ecp.decision"] == "allow"
    assert verify.attributes["ecp.policy_digest"] == result.policy_digest
    assert one("ecp.authorize").attributes == {"ecp.grant_id": result.grant_id} | dict(
        one("ecp.authorize").attributes or {}
    )
    gate = one("ecp.gate")
    assert gate.attributes is not None
    assert gate.attributes["ecp.gate.outcome"] == "allowed"
    execute = one("ecp.execute")
    assert execute.attributes is not None
    assert execute.attributes["ecp.grant_id"] == result.grant_id
    # gate → body nesting, both under the activity span, ledger append under the gate.
    assert parent_name(gate) == "RunActivity:payout"
    assert parent_name(execute) == "ecp.gate"
    appends = [sp for sp in ours if sp.name == "ecp.ledger.append"]
    assert {parent_name(sp) for sp in appends} >= {"ecp.gate"}

    # No argument values, results, keys or envelopes in any attribute.
    for sp in ours:
        for value in _attr_values(sp):
            assert "acme-tracing-canary" not in value, sp.name
            assert "payloadType" not in value, sp.name

    data = otel.metrics.get_metrics_data()
    assert data is not None
    found = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    for name in (
        "ecp.decisions",
        "ecp.gate.outcomes",
        "ecp.gate.duration",
        "ecp.ledger.append.duration",
        "ecp.ledger.size",
    ):
        assert name in found, f"metric {name} missing from {sorted(found)}"
    decisions = {
        dict(p.attributes or {}).get("outcome") for p in found["ecp.decisions"].data.data_points
    }
    assert "allow" in decisions


def test_json_log_line_carries_grant_id() -> None:
    record = logging.LogRecord("ecp.gate", logging.WARNING, __file__, 1, "refused %s", ("x",), None)
    token = CURRENT_GRANT_ID.set("g-123")
    try:
        line = JsonFormatter().format(record)
    finally:
        CURRENT_GRANT_ID.reset(token)
    doc = json.loads(line)
    assert doc["grant_id"] == "g-123"
    assert doc["message"] == "refused x"
    assert doc["level"] == "WARNING"
