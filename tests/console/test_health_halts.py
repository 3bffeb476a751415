"""The health page shows the halts in force, as the gates read them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text
from starlette.testclient import TestClient

from ecp._keyring import KeyFiles, init_keyring
from ecp._settings import Settings
from ecp.authority._control_log import SqlControlLog, issue_control
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._truststore import TrustStore
from ecp.console import create_app
from tests.console.conftest import free_port


def _halts(http: TestClient) -> dict[str, object]:
    items = {i["name"]: i for i in http.get("/api/health").json()["items"]}
    return items["halts"]  # type: ignore[no-any-return]


def test_health_shows_halts_in_force_and_a_tampered_log(tmp_path: Path) -> None:
    init_keyring(tmp_path / "keys")
    db = f"sqlite:///{tmp_path / 'ecp.db'}"
    settings = Settings(home=tmp_path, temporal_address=f"127.0.0.1:{free_port()}", database_url=db)
    with TestClient(create_app(settings), raise_server_exceptions=False) as http:
        item = _halts(http)
        assert item["status"] == "green"
        assert item["reason"] == "No halts in force."
    log = SqlControlLog(db)
    halt_key = Ed25519FileSigner.from_file(KeyFiles(settings.keys).halt)
    trust = TrustStore.load(settings.trust)
    for target in ("payout", "*"):
        issue_control(log, halt_key, trust, kind="halt", target=target, reason="incident 4711")
    log.dispose()
    with TestClient(create_app(settings), raise_server_exceptions=False) as http:
        item = _halts(http)
        assert item["status"] == "amber"
        assert "every action: incident 4711 (#2)" in str(item["reason"])
        assert "payout: incident 4711 (#1)" in str(item["reason"])
        page = http.get("/health").text
        assert 'data-item="halts"' in page
    # The database operator drops the first halt: the chain breaks, and it shows red.
    engine = create_engine(db)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM ecp_control_log WHERE seq = 1"))
    engine.dispose()
    with TestClient(create_app(settings), raise_server_exceptions=False) as http:
        item = _halts(http)
        assert item["status"] == "red"
        assert "cannot be read" in str(item["reason"])
