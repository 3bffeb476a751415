"""What every ``ecp`` command shares: one-line errors and the --debug switch."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

from ecp.errors import EcpError

__all__ = ["DEBUG", "CliError", "fail", "one_line_errors"]

P = ParamSpec("P")
R = TypeVar("R")

#: Set by the root callback's ``--debug``; shows tracebacks instead of one line.
DEBUG = {"on": False}


class CliError(EcpError):
    """A user-facing problem the CLI reports in one line."""

    code = "cli_usage"


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` to stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _family_roots() -> tuple[type[BaseException], ...]:
    # Imported lazily so a broken optional package never breaks `ecp --help`.
    # Every ECP error (authority, ledger, graph, console, runtime) is an EcpError.
    roots: list[type[BaseException]] = [EcpError]
    from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
    from temporalio.service import RPCError

    roots += [RPCError, WorkflowUpdateFailedError, WorkflowFailureError]
    return tuple(roots)


def _describe(exc: BaseException) -> str:
    """One line for a project error or a Temporal refusal."""
    text = f"{type(exc).__name__}: {exc}"
    # Temporal wraps the reason (e.g. the update validator's) in a cause.
    cause = getattr(exc, "cause", None)
    if cause is not None:
        text += f": {getattr(cause, 'message', None) or cause}"
    return text.splitlines()[0]


def one_line_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn the project's own errors into one stderr line and exit code 1.

    Only the project's error roots are caught: anything else is a bug and
    keeps its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except _family_roots() as exc:
            if DEBUG["on"]:
                raise
            typer.echo(f"error: {_describe(exc)}", err=True)
            sys.exit(1)

    return wrapper
