"""Jinja rendering with autoescaping on: every value reaches a page escaped."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse

__all__ = ["render"]


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "—"


_ENV: Final = Environment(
    loader=PackageLoader("ecp.console", "templates"),
    # Autoescape everything, not only .html: no template may emit raw input.
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["when"] = _when


def render(template: str, status_code: int = 200, **context: object) -> HTMLResponse:
    """Render ``template`` with ``context`` into an HTML response."""
    return HTMLResponse(_ENV.get_template(template).render(**context), status_code=status_code)
