"""Calls under a standing halt: what confirming each refusal costs the others.

A gate refuses a call as halted only once a read of the control log begun
after the call came still shows the halt (``ControlWatch.confirm``). This
bench reproduces the red team's load: a control log whose reads take 50 ms,
a 6-thread pool (as ``asyncio.to_thread`` gives a worker), 200 calls of
which 180 are to the halted action, all submitted at once. It reports the
reads made, the wall time, and how long the 20 calls to an action that is
not halted waited.

    python bench/bench_halt_confirm.py [--read-ms 50] [--threads 6] [--calls 200]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--read-ms", type=float, default=50)
    parser.add_argument("--threads", type=int, default=6)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    key = Ed25519FileSigner.generate()
    trust = TrustStore([TrustedKey.create(key.public_key, {KeyRole.HALT}, name="operator")])
    log = _SlowLog(args.read_ms / 1000)
    issue_control(log.inner, key, trust, kind="halt", target="payout", reason="bench")
    watch = ControlWatch(log, lambda: trust, system_clock)
    with contextlib.suppress(AuthorityError):
        watch.check("payout", "g")  # the halt is verified and cached
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
    outcomes = sorted({f"{action}:{outcome}" for action, (outcome, _) in results})
    print(
        json.dumps(
            {
                "reads": log.reads,
                "total_s": round(total, 2),
                "not_halted_max_wait_s": round(max(free), 2),
                "outcomes": outcomes,
            }
        )
    )


if __name__ == "__main__":
    main()
