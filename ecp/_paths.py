"""Where ECP keeps local state when nothing else is configured."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_DIR_ENV", "data_dir", "default_database_url"]

#: Environment variable overriding the local data directory.
DATA_DIR_ENV = "ECP_HOME"


def data_dir() -> Path:
    """The local data directory: ``$ECP_HOME``, else ``./.ecp``."""
    return Path(os.environ.get(DATA_DIR_ENV) or Path.cwd() / ".ecp")


def default_database_url() -> str:
    """``$ECP_DATABASE_URL``, else a SQLite file in the data directory."""
    url = os.environ.get("ECP_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{data_dir() / 'ecp.db'}"
