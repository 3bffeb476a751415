"""File reading shared by the authority commands: one clear line per problem."""

from __future__ import annotations

from pathlib import Path

from ecp.authority._canonical import parse_json_strict
from ecp.authority.errors import AuthorityError
from ecp.cli._common import CliError

__all__ = ["read_bytes", "read_json_object"]


def read_bytes(path: Path, what: str) -> bytes:
    """Read a file the user named.

    Raises:
        CliError: missing, a directory, or unreadable.
    """
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise CliError(f"{path}: {what} not found") from exc
    except IsADirectoryError as exc:
        raise CliError(f"{path}: {what} is a directory, expected a file") from exc
    except OSError as exc:
        raise CliError(f"{path}: cannot read {what}: {exc.strerror}") from exc


def read_json_object(path: Path, what: str) -> dict[str, object]:
    """Read a JSON object strictly (duplicate keys are an error).

    Raises:
        CliError: unreadable, not JSON, or not an object.
    """
    try:
        doc = parse_json_strict(read_bytes(path, what))
    except AuthorityError as exc:
        raise CliError(f"{path}: {what} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CliError(f"{path}: {what} must be a JSON object")
    return doc
