"""Errors of lineage graphs: loading histories, building graphs, exporting them.

All derive from :class:`LineageGraphError`, itself a
:class:`~ecp.errors.EcpError` (a branch beside the ledger's), so the CLI reports each
in one line.
"""

from __future__ import annotations

from ecp.errors import EcpError

__all__ = [
    "ArtifactNotFoundError",
    "CorruptHistoryError",
    "ExportFormatError",
    "HistoryNamespaceError",
    "HistoryUnavailableError",
    "LineageGraphError",
    "RendererMissingError",
    "WorkflowNotFoundError",
]


class LineageGraphError(EcpError):
    """Root of the graph, history and export errors."""

    code = "lineage_graph_error"


class CorruptHistoryError(LineageGraphError):
    """History JSON is truncated, not JSON, or not a workflow history."""

    code = "history_corrupt"


class HistoryNamespaceError(LineageGraphError):
    """The history belongs to another namespace than the one asked for."""

    code = "history_namespace_mismatch"


class WorkflowNotFoundError(LineageGraphError):
    """No workflow with this id (or run id) exists in the namespace."""

    code = "workflow_not_found"


class HistoryUnavailableError(LineageGraphError):
    """The Temporal server could not be reached or refused to answer."""

    code = "history_unavailable"
    retryable = True


class ExportFormatError(LineageGraphError):
    """An unknown export format, or a graph the format cannot express."""

    code = "export_format"


class RendererMissingError(LineageGraphError):
    """Graphviz ``dot`` is not installed, so no SVG can be drawn."""

    code = "renderer_missing"


class ArtifactNotFoundError(LineageGraphError):
    """No ledger evidence names an artifact with this digest."""

    code = "artifact_not_found"
