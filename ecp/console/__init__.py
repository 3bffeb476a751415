"""The ECP web console: governance list, proof viewer, lineage, health and charts.

``create_app(settings)`` builds the ASGI app; ``ecp console`` serves it.
"""

from __future__ import annotations

from ecp.console.app import create_app
from ecp.console.errors import (
    BadFilterError,
    ConsoleError,
    ExecutionNotFoundError,
    LedgerNotReadyError,
    TemporalQueryError,
)

__all__ = [
    "BadFilterError",
    "ConsoleError",
    "ExecutionNotFoundError",
    "LedgerNotReadyError",
    "TemporalQueryError",
    "create_app",
]
