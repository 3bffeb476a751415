"""Every code example in the README is a file under examples/ that the suite runs.

A README block that starts with ``# examples/<path>`` must be that file,
byte for byte, so what users copy is what ``test_wheel_app`` runs.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_readme_examples_are_the_files_the_tests_run() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n# (examples/[^\n]+)\n(.*?)```", readme, re.S)
    assert blocks, "the README shows no example files"
    for path, body in blocks:
        assert (REPO / path).read_text(encoding="utf-8") == body, path
