"""Errors of the composition root (settings, dev server, worker bootstrap)."""

from __future__ import annotations

__all__ = ["EcpError"]


class EcpError(Exception):
    """A user-facing problem of the ``ecp`` runtime, reported in one line."""
