"""Structured logging: one JSON object per line, with the ids ops search by.

Every record carries, when known, the Temporal workflow, run and activity
ids, the grant id the gate accepted, and the current trace and span ids, so
a log line leads to the trace in Jaeger and to the run in the Temporal UI.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

from opentelemetry import trace
from temporalio import activity

from ecp._settings import LogFormat, Settings

__all__ = ["CURRENT_GRANT_ID", "JsonFormatter", "configure_logging"]

#: The grant id of the governed activity running in this context; set by the
#: telemetry interceptor once the gate has verified the grant.
CURRENT_GRANT_ID: ContextVar[str | None] = ContextVar("ecp_grant_id", default=None)

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (never the activity's arguments)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(_temporal_ids(record))
        grant_id = CURRENT_GRANT_ID.get()
        if grant_id:
            doc["grant_id"] = grant_id
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            doc["trace_id"] = format(ctx.trace_id, "032x")
            doc["span_id"] = format(ctx.span_id, "016x")
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(doc, default=str)


def _temporal_ids(record: logging.LogRecord) -> dict[str, object]:
    # Temporal's own activity/workflow loggers attach these as extras; plain
    # loggers used inside an activity (the gate's) get them from the context.
    for key in ("temporal_activity", "temporal_workflow"):
        extra = getattr(record, key, None)
        if isinstance(extra, dict):
            return {
                k: v
                for k, v in extra.items()
                if k
                in (
                    "workflow_id",
                    "run_id",
                    "workflow_run_id",
                    "activity_id",
                    "activity_type",
                    "workflow_type",
                    "namespace",
                    "attempt",
                )
            }
    if activity.in_activity():
        info = activity.info()
        return {
            "workflow_id": info.workflow_id,
            "run_id": info.workflow_run_id,
            "activity_id": info.activity_id,
            "activity_type": info.activity_type,
            "attempt": info.attempt,
        }
    return {}


def configure_logging(settings: Settings) -> None:
    """Send log records to stderr in the configured format and level."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format is LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
