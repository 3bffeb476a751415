"""Database URLs as they may be shown: in logs, errors and ``ecp config show``."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

__all__ = ["display_url", "error_line"]

_MASK = "***"


def display_url(url: str | URL) -> str:
    """``url`` with every secret masked: the password, and query keys naming one.

    SQLAlchemy's ``hide_password`` masks only ``user:password@``; libpq also
    takes ``?password=`` and ``?sslpassword=`` (the client key's passphrase),
    which would otherwise be printed in every retry line and error.
    """
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except ArgumentError:
        # Not a URL SQLAlchemy can read: show nothing of it but its scheme.
        return f"{str(url).partition(':')[0]}:{_MASK}"
    query = {
        key: (_MASK if "password" in key.lower() else value) for key, value in parsed.query.items()
    }
    shown = parsed.set(query=query).render_as_string(hide_password=True)
    # The query is URL-encoded: show the mask as the password's is shown.
    return shown.replace("=%2A%2A%2A", f"={_MASK}")


def error_line(exc: BaseException) -> str:
    """The driver's error behind ``exc`` (SQLAlchemy keeps it on ``.orig``), in one line."""
    orig = getattr(exc, "orig", None)
    err = orig if isinstance(orig, BaseException) else exc
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
