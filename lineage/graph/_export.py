"""Writing a lineage graph in one of the export formats, atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

import networkx as nx

from ecp.lineage.graph._openlineage import openlineage_events, openlineage_json
from ecp.lineage.graph._prov import prov_json, prov_n
from ecp.lineage.graph._render import to_dot, to_graphml, to_mermaid, to_node_link, to_svg
from ecp.lineage.graph.errors import ExportFormatError

__all__ = ["ExportFormat", "export_graph", "render_graph"]


class ExportFormat(StrEnum):
    """The formats ``ecp lineage export --format`` knows."""

    PROV_JSON = "prov-json"
    PROV_N = "prov-n"
    OPENLINEAGE = "openlineage"
    GRAPHML = "graphml"
    JSON = "json"
    DOT = "dot"
    SVG = "svg"
    MERMAID = "mermaid"


def render_graph(g: nx.DiGraph, fmt: ExportFormat | str, *, namespace: str = "default") -> str:
    """The graph as text in ``fmt``.

    OpenLineage is newline-delimited JSON, one RunEvent per line.

    Raises:
        ExportFormatError: unknown format, or the graph cannot be expressed in it.
        RendererMissingError: SVG asked for and Graphviz ``dot`` is missing.
    """
    try:
        f = ExportFormat(fmt)
    except ValueError as exc:
        known = ", ".join(x.value for x in ExportFormat)
        raise ExportFormatError(f"unknown format {fmt!r} (known: {known})") from exc
    writers: dict[ExportFormat, Callable[[], str]] = {
        ExportFormat.PROV_JSON: lambda: prov_json(g),
        ExportFormat.PROV_N: lambda: prov_n(g),
        ExportFormat.OPENLINEAGE: lambda: openlineage_json(openlineage_events(g, namespace)),
        ExportFormat.GRAPHML: lambda: to_graphml(g),
        ExportFormat.JSON: lambda: to_node_link(g),
        ExportFormat.DOT: lambda: to_dot(g),
        ExportFormat.SVG: lambda: to_svg(g),
        ExportFormat.MERMAID: lambda: to_mermaid(g),
    }
    return writers[f]()


def export_graph(
    g: nx.DiGraph, fmt: ExportFormat | str, out: Path, *, namespace: str = "default"
) -> Path:
    """Render ``g`` in ``fmt`` and write it to ``out``; all or nothing.

    The text is rendered completely before anything is written, then written
    to a temporary file beside ``out`` and renamed over it, so a failure
    never leaves a partial file.

    Raises:
        ExportFormatError: unknown format, the graph cannot be expressed in
            it, or ``out`` cannot be written.
        RendererMissingError: SVG asked for and Graphviz ``dot`` is missing.
    """
    text = render_graph(g, fmt, namespace=namespace)
    directory = out.resolve().parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=directory)
    except OSError as exc:
        raise ExportFormatError(f"cannot write {out}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ExportFormatError(f"cannot write {out}: {exc.strerror}") from exc
    return out
