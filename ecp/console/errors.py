"""The console's error family: each one becomes a one-sentence page, never a trace."""

from __future__ import annotations

from ecp.errors import EcpError

__all__ = [
    "BadFilterError",
    "ConsoleError",
    "ExecutionNotFoundError",
    "LedgerNotReadyError",
    "ProofNotFoundError",
    "SignInConfigError",
    "TemporalQueryError",
]


class ConsoleError(EcpError):
    """Root of the console's errors; the message is shown to the reader as is.

    Attributes:
        status: the HTTP status the page is served with.
    """

    status = 500
    code = "console_error"


class BadFilterError(ConsoleError):
    """A list filter or page token is not acceptable."""

    status = 400
    code = "bad_filter"


class ExecutionNotFoundError(ConsoleError):
    """No workflow with the requested id exists in the namespace."""

    status = 404
    code = "execution_not_found"


class TemporalQueryError(ConsoleError):
    """Temporal answered a query with an error (or not at all)."""

    status = 503
    code = "temporal_query_failed"


class LedgerNotReadyError(ConsoleError):
    """The ledger cannot serve what was asked (unreachable, no entry, no checkpoint)."""

    status = 503
    code = "ledger_not_ready"


class ProofNotFoundError(ConsoleError):
    """The ledger holds no checkpoint (or entry) the request names."""

    status = 404
    code = "proof_not_found"


class SignInConfigError(ConsoleError):
    """Sign-in is half configured: the console refuses to start rather than serve everyone."""

    status = 500
    code = "sign_in_misconfigured"
