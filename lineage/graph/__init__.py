"""Provenance graphs from workflow histories: build, export, render."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ecp._lazy import lazy_exports

if TYPE_CHECKING:
    from ecp.lineage.graph._build import NodeKind as NodeKind
    from ecp.lineage.graph._build import build_graph as build_graph
    from ecp.lineage.graph._export import ExportFormat as ExportFormat
    from ecp.lineage.graph._export import export_graph as export_graph
    from ecp.lineage.graph._export import render_graph as render_graph
    from ecp.lineage.graph._history import RunHistory as RunHistory
    from ecp.lineage.graph._history import fetch_histories as fetch_histories
    from ecp.lineage.graph._history import load_history_file as load_history_file
    from ecp.lineage.graph._history import load_history_json as load_history_json
    from ecp.lineage.graph.errors import LineageGraphError as LineageGraphError

__all__ = [
    "ExportFormat",
    "LineageGraphError",
    "NodeKind",
    "RunHistory",
    "build_graph",
    "export_graph",
    "fetch_histories",
    "load_history_file",
    "load_history_json",
    "render_graph",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ExportFormat": "ecp.lineage.graph._export",
        "LineageGraphError": "ecp.lineage.graph.errors",
        "NodeKind": "ecp.lineage.graph._build",
        "RunHistory": "ecp.lineage.graph._history",
        "build_graph": "ecp.lineage.graph._build",
        "export_graph": "ecp.lineage.graph._export",
        "fetch_histories": "ecp.lineage.graph._history",
        "load_history_file": "ecp.lineage.graph._history",
        "load_history_json": "ecp.lineage.graph._history",
        "render_graph": "ecp.lineage.graph._export",
    },
)
