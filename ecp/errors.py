"""The one error family of ECP.

Every error ECP raises derives from :class:`EcpError`, which carries a stable
``code`` (named in evidence, CLI output and Temporal failure types) and a
``retryable`` flag (a denial is final; an unreachable dependency may come
back). The branches live with the package that raises them:
:class:`~ecp.authority.errors.AuthorityError`,
:class:`~ecp.lineage.ledger.errors.LineageError` (the ledger),
:class:`~ecp.lineage.graph.errors.LineageGraphError`,
:class:`~ecp.console.errors.ConsoleError`, and the composition root's own
(settings, connection, dev server, CLI).

This module imports neither Temporal nor a database driver; the conversion to
a Temporal ``ApplicationError`` lives in :mod:`ecp._failure`.
"""

from __future__ import annotations

__all__ = ["EcpError"]


class EcpError(Exception):
    """Root of every error ECP raises; its message is one line a person can act on."""

    #: Stable machine-readable reason; the Temporal failure type is ``ecp.<code>``.
    code: str = "ecp_error"
    #: Whether retrying the same operation later could succeed.
    retryable: bool = False
