"""Calls under a standing halt: what confirming each refusal costs the others.

A gate refuses a call as halted only once a read of the control log begun
after the call came still shows the halt (``ControlWatch.confirm``). This
bench reproduces the red team's load: a control log whose reads take 50 ms,
a 6-thread pool (as ``asyncio.to_thread`` gives a worker), 200 calls of
which 180 are to the halted action, all submitted at once. It reports the
reads made, the wall time, and how long the 20 calls to an action that is
not halted waited, next to a baseline run first in the same process: the
same calls with no halt standing (each answered from the cached view).

    python bench/bench_halt_confirm.py [--read-ms 50] [--threads 6] [--calls 200]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ecp.activities._control_watch import ControlWatch
from ecp.authority._clock import system_clock
from ecp.authority._control import ControlRow
from ecp.authority._control_log import InMemoryControlLog, issue_control
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.authority.errors import AuthorityError


class _SlowLog:
    """An in-memory control log whose every read takes ``seconds`` (a slow database)."""

    def __init__(self, seconds: float) -> None:
        self.inner = InMemoryControlLog()
        self.seconds = seconds
        self.reads = 0

    def rows(self) -> list[ControlRow]:
        self.reads += 1
        time.sleep(self.seconds)
        return self.inner.rows()

    def append(self, row: ControlRow) -> None:
        self.inner.append(row)


def _run(args: argparse.Namespace, *, halted: bool) -> dict[str, Any]:
    """The calls against a log that halts ``payout`` (or, the baseline, halts nothing)."""
    key = Ed25519FileSigner.generate()
    trust = TrustStore([TrustedKey.create(key.public_key, {KeyRole.HALT}, name="operator")])
    log = _SlowLog(args.read_ms / 1000)
    if halted:
        issue_control(log.inner, key, trust, kind="halt", target="payout", reason="bench")
    watch = ControlWatch(log, lambda: trust, system_clock)
    with contextlib.suppress(AuthorityError):
        watch.check("payout", "g")  # the log's state is verified and cached
    log.reads = 0
    start = time.monotonic()

    def call(action: str) -> tuple[str, float]:
        try:
            watch.check(action, "g")
            outcome = "passed"
        except AuthorityError as exc:
            outcome = exc.code
        return outcome, time.monotonic() - start

    # Every tenth call is to an action that is not halted.
    actions = ["refund" if i % 10 == 0 else "payout" for i in range(args.calls)]
    with ThreadPoolExecutor(args.threads) as pool:
        results = list(zip(actions, pool.map(call, actions), strict=True))
    total = time.monotonic() - start
    free = [waited for action, (_, waited) in results if action == "refund"]
    return {
        "reads": log.reads,
        "total_s": round(total, 3),
        "not_halted_max_wait_s": round(max(free), 3),
        "outcomes": sorted({f"{action}:{outcome}" for action, (outcome, _) in results}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--read-ms", type=float, default=50, help="ms per log read (50)")
    parser.add_argument("--threads", type=int, default=6, help="pool threads (6)")
    parser.add_argument("--calls", type=int, default=200, help="calls, a tenth not halted (200)")
    args = parser.parse_args()
    # Baseline first, in the same process: the same calls with no halt
    # standing, every one answered from the cached view.
    base = _run(args, halted=False)
    halted = _run(args, halted=True)
    print(f"no halt:  {base}")
    print(f"halted:   {halted}")
    print(
        json.dumps(
            {
                "benchmark": "halt_confirm",
                **halted,
                "baseline_total_s": base["total_s"],
                "baseline_not_halted_max_wait_s": base["not_halted_max_wait_s"],
                "not_halted_wait_over_baseline": round(
                    halted["not_halted_max_wait_s"] / max(base["not_halted_max_wait_s"], 1e-6), 1
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
