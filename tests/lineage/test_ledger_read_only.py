"""A read-only PostgreSQL (a hot standby, a database set read-only) is an outage of the ledger.

PostgreSQL refuses writes there with SQLSTATE 25006, which psycopg raises as
an ``InternalError``: the ledger says so as ``LedgerUnavailableError`` (one
line, retryable), on the SQLAlchemy path (opening, creating the schema) and
on the bare-driver path (an append), instead of letting the driver's error
escape. Each case runs in a database of its own on the real server, set
``default_transaction_read_only`` (the server itself is not touched).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from ecp._startup import heals
from ecp.authority._keys import Ed25519FileSigner
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger.errors import LedgerUnavailableError
from tests.lineage.conftest import PG_ADMIN
from tests.lineage.support import make_envelope, open_unverified


@pytest.fixture
def read_only_db() -> Iterator[tuple[str, str]]:
    """A fresh database, and the DSN that makes it read-only once called for."""
    name = f"ecp_ro_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _make_read_only(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
                sql.Identifier(name)
            )
        )


def test_opening_a_read_only_database_is_unavailable(read_only_db: tuple[str, str]) -> None:
    url, name = read_only_db
    _make_read_only(name)
    with pytest.raises(LedgerUnavailableError) as info:
        Ledger.open(url)
    assert "read-only transaction" in str(info.value), info.value
    assert len(str(info.value).splitlines()) == 1
    # A standby being promoted accepts writes soon: a starting worker waits.
    assert heals(info.value)


def test_an_append_to_a_read_only_database_is_unavailable(
    read_only_db: tuple[str, str], worker: Ed25519FileSigner
) -> None:
    url, name = read_only_db
    with open_unverified(url) as ledger:
        ledger.append(make_envelope(0, worker))
    _make_read_only(name)  # new sessions only: open the ledger again
    with open_unverified(url) as ledger:
        with pytest.raises(LedgerUnavailableError) as info:
            ledger.append(make_envelope(1, worker))
        assert "read-only transaction" in str(info.value), info.value
        assert ledger.head().size == 1
