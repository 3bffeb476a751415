"""How ECP's own stores (single use, the halt list) connect to their database."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url

from ecp._syncrep import WARNINGS_OPTION

__all__ = ["libpq_options", "speaks_libpq", "store_engine"]

#: libpq's own bounds on a silent network (psycopg and psycopg2 speak libpq):
#: a half-open connection (a peer that vanished without a reset) fails within
#: about ten seconds instead of blocking whoever waits on it for good.
_LIBPQ_ARGS: Mapping[str, object] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": 10_000,  # ms: unacknowledged data fails the connection too
}


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    # WAL lets readers proceed while one writer inserts; busy_timeout makes
    # concurrent writers from other processes wait instead of failing.
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def store_engine(
    url_or_engine: str | Engine, *, postgres_args: Mapping[str, object] | None = None
) -> Engine:
    """An engine for ``url_or_engine`` (an engine is returned as it is).

    Args:
        url_or_engine: e.g. ``sqlite:///path/ecp.db`` or
            ``postgresql+psycopg://user@host/db``.
        postgres_args: extra libpq connection arguments (timeouts, keepalives),
            over the defaults (a connect timeout, TCP keepalives and
            ``tcp_user_timeout``); only for drivers that speak libpq.
    """
    if not isinstance(url_or_engine, str):
        return url_or_engine
    if url_or_engine.startswith("sqlite"):
        engine = create_engine(url_or_engine, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # Other drivers (pg8000, asyncpg) take no libpq arguments.
    args: dict[str, object] = {}
    if speaks_libpq(url_or_engine):
        args = {**_LIBPQ_ARGS, **(postgres_args or {})}
        args["options"] = libpq_options(url_or_engine, str(args.get("options") or ""))
    return create_engine(url_or_engine, pool_pre_ping=True, connect_args=args)


def libpq_options(url: str, own: str = "") -> str:
    """The libpq ``options`` of a store's connection: the URL's, then ``own``, then warnings.

    The URL's own ``options`` are kept (a connection argument would replace
    them), the store's come after them (so they win), and last
    :data:`~ecp._syncrep.WARNINGS_OPTION`: a role or database with
    ``client_min_messages = error`` would hide the warning that tells a
    commit the synchronous standby never confirmed (see :mod:`ecp._syncrep`).
    """
    given = make_url(url).query.get("options")
    parts = [given] if isinstance(given, str) else list(given or ())
    return " ".join(p for p in (*parts, own, WARNINGS_OPTION) if p)


def speaks_libpq(url: str) -> bool:
    """Whether ``url``'s driver connects through libpq (and takes its arguments)."""
    return make_url(url).get_driver_name() in ("psycopg", "psycopg2")
