"""Where the standards' conformance vectors live (``tests/vectors`` in the repo).

Shared by every test package. A missing vectors directory is a failure, not a
skip: the conformance tests are part of what the suite must show. The files
and their attribution are described in ``tests/vectors/README.md``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["load_vector_file", "vectors_dir"]

_ENV = "ECP_VECTORS_DIR"
_DEFAULT = Path(__file__).resolve().parent / "vectors"


def vectors_dir() -> Path:
    """``$ECP_VECTORS_DIR`` or ``<repo>/tests/vectors``; fails loudly if absent."""
    override = os.environ.get(_ENV)
    path = (Path(override) if override else _DEFAULT).resolve()
    if not (path / "MANIFEST.json").is_file():
        raise FileNotFoundError(
            f"conformance vectors not found at {path} (set ${_ENV} to their directory)"
        )
    return path


def load_vector_file(name: str) -> object:
    """Parse one JSON vector file, e.g. ``load_vector_file("dsse.json")``."""
    return json.loads((vectors_dir() / name).read_text(encoding="utf-8"))
