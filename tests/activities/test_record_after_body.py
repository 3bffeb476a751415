"""The gate's record of a body that ran is not dropped on an error nobody classified.

``_record_after_body`` is what the gate runs after every body: the record is
the only proof of the outcome, and the body must never run again for it. So
it gives up early only on an ECP error that says retrying cannot help; an
unexpected exception (say a driver error the ledger does not map) is retried
like an outage. Written to a real ledger (SQLite).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ecp.activities._evidence_sink import LedgerEvidenceSink
from ecp.activities._gate import GateRecord, _record_after_body
from ecp.authority._canonical import digest_bytes
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._truststore import KeyRole, TrustedKey
from ecp.authority._verify import VerifiedGrant
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger.errors import EntryRefusedError, LedgerUnavailableError
from tests.authority.support import good_grant, signed
from tests.lineage.support import open_unverified


def _completed(authority: Ed25519FileSigner) -> GateRecord:
    grant = good_grant(authority.key_id)
    key = TrustedKey.create(authority.public_key, [KeyRole.AUTHORITY], name="authority")
    t = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    return GateRecord(
        activity_type="payout",
        namespace="default",
        workflow_id="wf-1",
        run_id="run-1",
        activity_id="act-1",
        attempt=1,
        outcome="completed",
        args_digest=grant.call.args_digest,
        started_at=t,
        finished_at=t,
        grant=VerifiedGrant(grant, signed(grant, authority), key),
        result_digest=digest_bytes(b"paid"),
        admitted_at=t,
    )


class _Flaky:
    """The real sink behind faults: the first ``faults`` calls raise them, in order."""

    def __init__(self, sink: LedgerEvidenceSink, faults: list[Exception]) -> None:
        self.sink = sink
        self.faults = faults
        self.calls = 0

    def record(self, record: GateRecord) -> None:
        self.calls += 1
        if self.faults:
            raise self.faults.pop(0)
        self.sink.record(record)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = open_unverified(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield led
    led.close()


def _recorded(ledger: Ledger) -> int | None:
    return ledger.find_activity("default", "wf-1", "run-1", "act-1")


async def test_an_unexpected_error_is_retried_and_the_record_lands(ledger: Ledger) -> None:
    sink = _Flaky(
        LedgerEvidenceSink(ledger, Ed25519FileSigner.generate()),
        [RuntimeError("an error no one classified"), LedgerUnavailableError("down")],
    )
    rec = _completed(Ed25519FileSigner.generate())
    assert await _record_after_body(sink, rec, delays=(0.0, 0.0, 0.0))
    assert sink.calls == 3
    assert _recorded(ledger) == 0  # before the fix: dropped at the first RuntimeError


async def test_a_final_refusal_is_not_retried(ledger: Ledger, tmp_path: Path) -> None:
    # The ledger's database refuses this very entry (a real refusal: a trigger).
    con = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    con.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON ledger_entry "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    con.close()
    sink = _Flaky(LedgerEvidenceSink(ledger, Ed25519FileSigner.generate()), [])
    rec = _completed(Ed25519FileSigner.generate())
    with pytest.raises(EntryRefusedError):
        sink.sink.record(rec)
    sink.calls = 0
    assert not await _record_after_body(sink, rec, delays=(0.0, 0.0, 0.0))
    assert sink.calls == 1  # the same values are refused again: no point waiting
    assert _recorded(ledger) is None


async def test_an_error_that_outlasts_every_attempt_gives_up_without_raising(
    ledger: Ledger,
) -> None:
    sink = _Flaky(
        LedgerEvidenceSink(ledger, Ed25519FileSigner.generate()),
        [RuntimeError(f"fault {i}") for i in range(10)],
    )
    assert not await _record_after_body(
        sink, _completed(Ed25519FileSigner.generate()), delays=(0.0, 0.0)
    )
    assert sink.calls == 3  # every attempt made, then the outcome is left unproven
    assert _recorded(ledger) is None
