"""Witness benchmark: what cosigning adds to checkpoint latency, with 0, 1 and 3 witnesses.

Run: ``python bench/bench_witness.py [--quick]``. Not a test. Each round
appends a few entries to a SQLite ledger and times ``Ledger.checkpoint``,
which with witnesses signs, commits, then asks every witness (in parallel,
over HTTP on localhost, each its own process with its own SQLite
state, fsync on) and stores
their cosignatures. The baseline is the same loop with no witness, in the
same process; ratios are against it. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecp.authority._keys import Ed25519FileSigner
from ecp.lineage.ledger._ledger import DEFAULT_ORIGIN
from ecp.lineage.ledger._note import NoteVerifier
from ecp.lineage.witness._client import WitnessClient
from ecp.lineage.witness._state import WitnessState
from tests.lineage.support import make_envelope, open_unverified

PER_ROUND = 4


def _witnesses(
    tmp: Path, n: int, log_vkey: str
) -> tuple[list[subprocess.Popen[str]], list[WitnessClient]]:
    """``n`` witnesses, each its own process (``ecp witness serve``), as deployed."""
    procs, clients = [], []
    root = str(Path(__file__).resolve().parents[1])
    for i in range(n):
        state = WitnessState.init(tmp / f"w{n}-{i}", f"w{i}.bench/witness")
        state.add_log(log_vkey)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ecp",
                "witness",
                "serve",
                "--state",
                str(state.directory),
                "--port",
                "0",
            ],
            stderr=subprocess.PIPE,
            text=True,
            cwd=root,
            env={**os.environ, "PYTHONPATH": root},
        )
        procs.append(proc)
        assert proc.stderr is not None
        url = next(ln.split()[-1] for ln in proc.stderr if ln.startswith("listening on "))
        # Keep reading its log so the pipe never fills.
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        clients.append(WitnessClient(url, state.verifier))
    return procs, clients


def bench(
    tmp: Path, n_witnesses: int, rounds: int, worker: Ed25519FileSigner, log: Ed25519FileSigner
) -> list[float]:
    vkey = NoteVerifier.for_key(DEFAULT_ORIGIN, log.public_key).vkey()
    servers, clients = _witnesses(tmp, n_witnesses, vkey)
    ledger = open_unverified(f"sqlite:///{tmp / f'log-{n_witnesses}.db'}", witnesses=clients)
    times = []
    try:
        envs = [make_envelope(i, worker) for i in range((rounds + 1) * PER_ROUND)]
        for r in range(rounds + 1):
            ledger.append_many(envs[r * PER_ROUND : (r + 1) * PER_ROUND])
            t = time.perf_counter()
            cp = ledger.checkpoint(log)
            d = time.perf_counter() - t
            assert cp.witnessed is (True if n_witnesses else None), cp
            if r:  # the first round warms connections and pools
                times.append(d)
    finally:
        ledger.close()
        for p in servers:
            p.terminate()
            p.wait()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    args = ap.parse_args()
    rounds = 30 if args.quick else 150
    worker, log = Ed25519FileSigner.generate(), Ed25519FileSigner.generate()
    summary: dict[str, object] = {}
    print(
        f"# witness benchmark ({'quick' if args.quick else 'full'}), "
        f"{os.cpu_count()} cores, {rounds} checkpoints each"
    )
    with tempfile.TemporaryDirectory(prefix="ecp-bench-witness-") as d:
        tmp = Path(d)
        base = None
        for n in (0, 1, 3):
            times = bench(tmp, n, rounds, worker, log)
            med = statistics.median(times) * 1000
            p95 = sorted(times)[int(len(times) * 0.95) - 1] * 1000
            base = base or med
            print(
                f"witnesses={n}  checkpoint median {med:7.2f} ms  p95 {p95:7.2f} ms  "
                f"x{med / base:5.2f} vs none"
            )
            summary[f"checkpoint_{n}_witnesses_median_ms"] = round(med, 3)
            summary[f"checkpoint_{n}_witnesses_p95_ms"] = round(p95, 3)
            summary[f"checkpoint_{n}_witnesses_ratio"] = round(med / base, 2)
    print(
        json.dumps(
            {"benchmark": "witness", "quick": args.quick, "rounds": rounds, **summary},
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
