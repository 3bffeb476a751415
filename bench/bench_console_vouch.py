"""Benchmark: the console's ledger cross-check of a list page, batched and per row.

    python bench/bench_console_vouch.py [RUNS] [DATABASE_URL]

Fills a ledger (SQLite in a temporary directory unless the URL of a
database of your own is given: the bench appends to its ledger and leaves
the entries there) with RUNS governed runs,
two worker-signed entries each (a failed attempt, then the completed one),
then checks a page of 50 runs' claims the way the console does (one batched
query: ``vouch_for`` over the page) and the way one query per row would
(``vouch_for`` once per claim): the per-row run is the baseline the ratio is
against. "Cold" runs forget the entries the console has already checked
(each check is remembered for a minute); "warm" ones do not. Also times the
charts' check of up to 5,000 runs. Prints one line per measurement and one
JSON object last.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecp._keyring import KeyFiles, init_keyring
from ecp.activities._evidence import predicate_for
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._truststore import TrustStore
from ecp.console.vouch import _CHECKED, Claim, vouch_for
from ecp.lineage.ledger._evidence import OutcomeStatus, build_statement, sign_evidence
from ecp.lineage.ledger._ledger import ACCEPT_UNVERIFIED, Ledger

NS = "bench"
AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ARGS = "sha256:" + "cd" * 32
POLICY = "sha256:" + "ab" * 32
PAGE = 50


def _entry(signer: Ed25519FileSigner, wf: str, status: OutcomeStatus, attempt: int) -> bytes:
    p = predicate_for(
        namespace=NS,
        workflow_id=wf,
        run_id="r",
        activity_id="execute:payout",
        attempt=attempt,
        activity_type="payout",
        status=status,
        reason_code="" if status is OutcomeStatus.COMPLETED else "Boom",
        reason="" if status is OutcomeStatus.COMPLETED else "boom",
        decision_id="d",
        policy_digest=POLICY,
        grant_id=f"g-{wf}",
        initiator="alice",
        started_at=AT,
        finished_at=AT,
        admitted_at=AT,
    )
    return sign_evidence(build_statement(p, arguments=ARGS), signer).to_json()


def _claim(wf: str) -> Claim:
    return Claim(wf, "r", False, "payout", "allow", "completed", f"g-{wf}", "alice", POLICY)


def _best(fn: object, repeat: int = 5, *, cold: bool = True) -> float:
    """Best of ``repeat`` runs; ``cold`` forgets the checked entries before each."""
    best = float("inf")
    for _ in range(repeat):
        if cold:
            _CHECKED._done.clear()
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        init_keyring(home / "keys")
        keys = KeyFiles(home / "keys")
        trust = TrustStore.load(keys.trust_store)
        worker = Ed25519FileSigner.from_file(keys.worker)
        url = sys.argv[2] if len(sys.argv) > 2 else f"sqlite:///{home / 'ecp.db'}"
        tag = uuid.uuid4().hex[:8]
        ids = [f"bench-{tag}-{i:06d}" for i in range(runs)]
        with Ledger.open(url, trust=ACCEPT_UNVERIFIED) as ledger:
            t0 = time.perf_counter()
            batch: list[bytes] = []
            for wf in ids:
                batch.append(_entry(worker, wf, OutcomeStatus.FAILED, 1))
                batch.append(_entry(worker, wf, OutcomeStatus.COMPLETED, 2))
                if len(batch) >= 1000:
                    ledger.append_many(batch)
                    batch = []
            if batch:
                ledger.append_many(batch)
            fill = time.perf_counter() - t0
            page = [_claim(wf) for wf in ids[-PAGE:]]

            def batched() -> None:
                words = vouch_for(ledger, trust, NS, page, at=AT)
                assert all(w.verified for w in words.values())

            def per_row() -> None:
                for c in page:
                    assert vouch_for(ledger, trust, NS, [c], at=AT)[(c.workflow_id, "r")].verified

            charts = [_claim(wf) for wf in ids[-5000:]]

            def chart_check() -> None:
                words = vouch_for(ledger, trust, NS, charts, at=AT, max_entries=20000)
                assert all(w.verified for w in words.values())

            t_batched, t_row = _best(batched), _best(per_row)
            t_warm = _best(batched, cold=False)
            t_charts = _best(chart_check, repeat=2)
            t_charts_warm = _best(chart_check, repeat=2, cold=False)
        db = url.split(":")[0]
        print(f"ledger: {2 * runs} entries for {runs} runs, filled in {fill:.1f} s ({db})")
        print(f"page of {PAGE}, one batched query: {t_batched * 1000:.1f} ms")
        print(f"page of {PAGE}, one query per row (baseline): {t_row * 1000:.1f} ms")
        print(f"ratio batched / per row: {t_batched / t_row:.3f}")
        print(f"page of {PAGE}, batched, entries already checked: {t_warm * 1000:.1f} ms")
        print(f"charts, {len(charts)} runs: {t_charts * 1000:.0f} ms cold, ", end="")
        print(f"{t_charts_warm * 1000:.0f} ms with entries already checked")
        print(
            json.dumps(
                {
                    "runs": runs,
                    "entries": 2 * runs,
                    "database": db,
                    "page_batched_ms": round(t_batched * 1000, 2),
                    "page_per_row_ms": round(t_row * 1000, 2),
                    "ratio_batched_to_per_row": round(t_batched / t_row, 4),
                    "page_batched_warm_ms": round(t_warm * 1000, 2),
                    "ratio_warm_to_cold": round(t_warm / t_batched, 4),
                    "charts_runs": len(charts),
                    "charts_cold_ms": round(t_charts * 1000, 1),
                    "charts_warm_ms": round(t_charts_warm * 1000, 1),
                }
            )
        )


if __name__ == "__main__":
    main()
