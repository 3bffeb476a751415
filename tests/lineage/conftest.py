"""Fixtures: keys, a fresh PostgreSQL database per session, ledger URLs per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from ecp.authority._keys import Ed25519FileSigner

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
_TABLES = (
    "ledger_entry",
    "ledger_node",
    "ledger_head",
    "ledger_checkpoint",
    "ledger_witnessing",
)


@pytest.fixture(scope="session")
def worker() -> Ed25519FileSigner:
    return Ed25519FileSigner.generate()


@pytest.fixture(scope="session")
def log_signer() -> Ed25519FileSigner:
    return Ed25519FileSigner.generate()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A uniquely named database for this session; dropped afterwards."""
    name = f"ecp_lineage_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL at 127.0.0.1:5432 (user postgres, db test) is not reachable: {exc}. "
            "Start it (scripts/services.sh) — the ledger tests need the real server.",
            pytrace=False,
        )
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The session database with no ledger tables: a fresh log for this test."""
    dsn = pg_database.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as con:
        for t in _TABLES:
            con.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(t)))
    return pg_database


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'ledger' / 'ecp.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest) -> str:
    """Each ledger test runs on both back ends."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))
