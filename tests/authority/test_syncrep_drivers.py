"""A store on a PostgreSQL driver that cannot tell an unconfirmed commit says so, once.

Only psycopg 3 hands notices to a callback; with psycopg2 or pg8000 the
"committed locally" warning of a cancelled synchronous-standby wait is never
seen, so such a commit reads as durable. Refusing those drivers would break
deployments that worked before, so each store warns once per engine.

Neither driver is installed here: the engine is SQLAlchemy's real pg8000
dialect over the psycopg module (never connected; the store is lazy), which
is all the check reads.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine

from ecp.authority._control_log import SqlControlLog
from ecp.authority._replay import SqlReplayGuard


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "ecp.syncrep" and r.levelno == logging.WARNING
    ]


def test_an_unwatched_driver_is_named_once_per_engine_and_store(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = create_engine("postgresql+pg8000://ecp@127.0.0.1:1/ecp", module=psycopg)
    try:
        with caplog.at_level(logging.WARNING, logger="ecp.syncrep"):
            SqlReplayGuard(engine)
            SqlReplayGuard(engine)  # the same engine: not again
            SqlControlLog(engine)
        got = _warnings(caplog)
        assert len(got) == 2, got
        assert got[0].startswith("single-use store: PostgreSQL driver pg8000 ")
        assert got[1].startswith("halt list: PostgreSQL driver pg8000 ")
        assert "cannot be detected" in got[0]
        assert "postgresql+psycopg://" in got[0]
        assert all("\n" not in m for m in got)
    finally:
        engine.dispose()


def test_psycopg_and_sqlite_are_not_warned_about(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with caplog.at_level(logging.WARNING, logger="ecp.syncrep"):
        for url in ("postgresql+psycopg://ecp@127.0.0.1:1/ecp", f"sqlite:///{tmp_path / 'e.db'}"):
            SqlReplayGuard(url).dispose()
            SqlControlLog(url).dispose()
    assert _warnings(caplog) == []
