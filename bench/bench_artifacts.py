"""Artifact benchmark: digesting a 1 GiB artifact, ECP against ``sha256sum`` in the same run.

Run: ``python bench/bench_artifacts.py [--size-mib N] [--rounds R]``. Not a test.

Writes one file of ``--size-mib`` MiB (default 1024) into a fresh temporary
directory, then times, best of ``--rounds`` (default 3) each:

* ``sha256sum FILE`` (the baseline, GNU coreutils, in a subprocess);
* ``file_digest``: ECP's streamed digest of a file (what ``describe_file``
  and a declared output cost);
* ``stage_artifacts``: the gate's check as a body gets it: open without
  following links, stream into a private copy while hashing, compare
  (hash plus one extra write of the artifact).

The file is in the page cache for every run (it was just written), so all
three measure hashing and copying, not the disk. The directory, the file and
the gate's copy are removed at the end, also on error. The last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecp.activities._artifact_check import stage_artifacts
from ecp.authority._artifact import describe_file, file_digest


def _best(rounds: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _write(path: Path, size: int) -> None:
    block = os.urandom(1024 * 1024)
    with path.open("wb") as fh:
        for _ in range(size // len(block)):
            fh.write(block)
        fh.write(block[: size % len(block)])


def main() -> None:
    """Run the benchmark and print its lines."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024
    root = Path(tempfile.mkdtemp(prefix="ecp-bench-artifacts-"))
    try:
        path = root / "model.bin"
        _write(path, size)
        ref = describe_file("model", path)

        def coreutils() -> None:
            out = subprocess.run(
                ["sha256sum", str(path)], check=True, capture_output=True, text=True
            ).stdout
            assert "sha256:" + out.split()[0] == ref.digest

        def digest() -> None:
            assert file_digest(path)[0] == ref.digest

        def stage() -> None:
            staged = stage_artifacts([ref], under=str(root))
            staged.close()

        base = _best(args.rounds, coreutils)
        ecp_digest = _best(args.rounds, digest)
        ecp_stage = _best(args.rounds, stage)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    mib = size / 2**20
    print(f"artifact of {mib:.0f} MiB, best of {args.rounds}:")
    print(f"  sha256sum (baseline)       {base:7.3f} s  {mib / base:8.1f} MiB/s")
    print(
        f"  ECP file_digest            {ecp_digest:7.3f} s  {mib / ecp_digest:8.1f} MiB/s"
        f"  x{ecp_digest / base:.2f} of sha256sum"
    )
    print(
        f"  ECP gate check (copy+hash) {ecp_stage:7.3f} s  {mib / ecp_stage:8.1f} MiB/s"
        f"  x{ecp_stage / base:.2f} of sha256sum"
    )
    print(
        json.dumps(
            {
                "bench": "artifacts",
                "size_bytes": size,
                "rounds": args.rounds,
                "sha256sum_s": round(base, 4),
                "ecp_digest_s": round(ecp_digest, 4),
                "ecp_gate_check_s": round(ecp_stage, 4),
                "digest_ratio_vs_sha256sum": round(ecp_digest / base, 3),
                "gate_check_ratio_vs_sha256sum": round(ecp_stage / base, 3),
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
