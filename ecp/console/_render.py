r"""Jinja rendering with autoescaping on: every value reaches a page escaped.

Escaped for HTML and made visible: a control character or a bidirectional
formatting character in a value read from history (an id, a reason) is
written as ``\uXXXX`` on every page, so it can neither reorder the text
around it (a U+202E once reversed the ``ecp approve`` command shown) nor
hide in a copied id. Ids are also isolated (``<bdi>``) from their neighbours.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from datetime import datetime
from typing import Final

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.responses import HTMLResponse

__all__ = ["PAGE_CONTEXT", "ident", "render", "visible", "visible_text"]

#: What every page shows besides its own content (who is signed in), set per request.
PAGE_CONTEXT: ContextVar[dict[str, object] | None] = ContextVar("ecp_page_context", default=None)

# C0 and C1 controls, DEL, the bidirectional marks, embeddings, overrides and
# isolates, zero-width and invisible format characters, line and paragraph
# separators, interlinear annotation marks, and lone surrogates.
_INVISIBLE: Final = (
    "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e"
    "\u2060-\u2069\ufeff\ufff9-\ufffb\ud800-\udfff"
)
_ODD_TEXT: Final = re.compile(f"[{_INVISIBLE}]")
_ODD_ID: Final = re.compile(f"[{_INVISIBLE}\t\n\r]")


def _escape(m: re.Match[str]) -> str:
    return f"\\u{ord(m.group()):04x}"


def visible(value: str) -> str:
    r"""``value`` with every invisible or reordering character, line breaks included, as ``\uXXXX``.

    For one-line values: ids, names, reasons in a list.
    """
    return _ODD_ID.sub(_escape, value)


def visible_text(value: str) -> str:
    r"""``value`` with invisible and reordering characters as ``\uXXXX``; line breaks kept."""
    return _ODD_TEXT.sub(_escape, value)


def ident(value: object) -> Markup:
    """An id for a page: visible escapes, HTML-escaped, isolated in ``<bdi>``."""
    return Markup("<bdi>%s</bdi>") % escape(visible(str(value)))


def _finalize(value: object) -> object:
    # Every {{ }} output passes here before autoescaping; Markup is already
    # built by a filter (tojson escapes non-ASCII, ident escapes itself).
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible_text(value)
    return value


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "—"


def _when_cell(value: datetime | None) -> Markup:
    """:func:`_when` for a table cell: it may wrap between date and time, never inside either."""
    if value is None:
        return Markup("—")
    return Markup('<span class="nw">%s</span> <span class="nw">%s</span>') % (
        value.strftime("%Y-%m-%d"),
        value.strftime("%H:%M:%S UTC"),
    )


_ENV: Final = Environment(
    loader=PackageLoader("ecp.console", "templates"),
    # Autoescape everything, not only .html: no template may emit raw input.
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
    finalize=_finalize,
)
_ENV.filters["when"] = _when
_ENV.filters["when_cell"] = _when_cell
_ENV.filters["ident"] = ident


def render(template: str, status_code: int = 200, **context: object) -> HTMLResponse:
    """Render ``template`` with ``context`` into an HTML response."""
    page = PAGE_CONTEXT.get() or {}
    return HTMLResponse(
        _ENV.get_template(template).render(**{**page, **context}), status_code=status_code
    )
