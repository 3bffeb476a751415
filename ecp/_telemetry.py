"""OpenTelemetry setup: tracer and meter providers for the configured exporter.

``none`` installs nothing, so the API's no-op providers make every span and
instrument free; ``console`` prints to stdout (for trying things out);
``otlp`` sends OTLP/HTTP to a collector (``ECP_OTEL_ENDPOINT``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from ecp._settings import OtelExporter, Role, Settings
from ecp.errors import EcpError

__all__ = ["Telemetry", "TelemetryError", "setup_telemetry"]

_OTLP_MODULE = "opentelemetry.exporter.otlp.proto.http"
_METRIC_INTERVAL_MS = 10_000


class TelemetryError(EcpError):
    """The configured exporter cannot be set up."""

    code = "telemetry_invalid"


@dataclass
class Telemetry:
    """The providers this process installed (none when exporting nothing)."""

    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None

    def shutdown(self) -> None:
        """Flush and stop the exporters."""
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def _exporters(settings: Settings) -> tuple[SpanExporter, MetricExporter]:
    if settings.otel_exporter is OtelExporter.CONSOLE:
        return ConsoleSpanExporter(), ConsoleMetricExporter()
    if importlib.util.find_spec(_OTLP_MODULE) is None:
        raise TelemetryError(
            "ECP_OTEL_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http installed"
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    base = settings.otel_endpoint
    return (
        OTLPSpanExporter(endpoint=f"{base}/v1/traces"),
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics"),
    )


def setup_telemetry(settings: Settings, role: Role | None = None) -> Telemetry:
    """Install global tracer and meter providers for ``settings.otel_exporter``.

    Call once per process, before connecting to Temporal.

    Raises:
        TelemetryError: the OTLP exporter package is not installed.
    """
    if settings.otel_exporter is OtelExporter.NONE:
        return Telemetry()
    span_exporter, metric_exporter = _exporters(settings)
    resource = Resource.create(
        {
            "service.name": settings.otel_service_name,
            "service.namespace": "ecp",
            "ecp.role": (role or settings.role).value,
            "temporal.namespace": settings.namespace,
        }
    )
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    readers: list[MetricReader] = [
        PeriodicExportingMetricReader(metric_exporter, export_interval_millis=_METRIC_INTERVAL_MS)
    ]
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    return Telemetry(tracer_provider, meter_provider)
