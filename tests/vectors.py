"""Where the standards' conformance vectors live (``shared/vectors`` beside the repo).

Shared by every test package. A missing vectors directory is a failure, not a
skip: the conformance tests are part of what the suite must show.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["load_vector_file", "vectors_dir"]

_ENV = "ECP_VECTORS_DIR"


def vectors_dir() -> Path:
    """``$ECP_VECTORS_DIR`` or ``<repo>/../shared/vectors``; fails loudly if absent."""
    override = os.environ.get(_ENV)
    path = (
        Path(override)
        if override
        else Path(__file__).resolve().parents[1] / ".." / "shared" / "vectors"
    )
    path = path.resolve()
    if not (path / "MANIFEST.json").is_file():
        raise FileNotFoundError(
            f"conformance vectors not found at {path} (set ${_ENV} to their directory)"
        )
    return path


def load_vector_file(name: str) -> object:
    """Parse one JSON vector file, e.g. ``load_vector_file("dsse.json")``."""
    return json.loads((vectors_dir() / name).read_text(encoding="utf-8"))
