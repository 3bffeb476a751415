"""ECP errors as Temporal failures: the one place ``ecp.<code>`` types are built."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from ecp._wire import failure_type
from ecp.errors import EcpError

__all__ = ["to_application_error"]


def to_application_error(
    exc: EcpError, message: str | None = None, *details: object
) -> ApplicationError:
    """The Temporal ``ApplicationError`` for an ECP error.

    Its type is ``ecp.<code>``, and it is non-retryable unless the error is.
    Raise it ``from None``: a chained database traceback can exceed Temporal's
    failure size limit and hide the reason.

    Args:
        exc: The ECP error.
        message: The failure message; by default ``"<ErrorClass>: <exc>"``.
        *details: Failure details (the gate passes its mark first).
    """
    return ApplicationError(
        message if message is not None else f"{type(exc).__name__}: {exc}",
        *details,
        type=failure_type(exc.code),
        non_retryable=not exc.retryable,
    )
