"""With Temporal and the ledger unreachable, each page says so in one sentence; the
proof viewer, which needs neither, keeps working."""

from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient

from ecp._keyring import init_keyring
from ecp._settings import Settings
from ecp.console import create_app
from tests.console.conftest import free_port


def _settings(tmp_path: Path) -> Settings:
    init_keyring(tmp_path / "keys")
    return Settings(
        home=tmp_path,
        temporal_address=f"127.0.0.1:{free_port()}",  # nothing listens there
        database_url=f"sqlite:///{tmp_path / 'missing' / 'ecp.db'}",
    )


def test_unreachable_temporal_and_ledger(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with TestClient(create_app(settings), raise_server_exceptions=False) as http:
        resp = http.get("/governance")
        assert resp.status_code == 503
        assert (
            f"Temporal at {settings.temporal_address} cannot be reached; "
            "the health and proof pages still work." in resp.text
        )
        assert "Traceback" not in resp.text

        health = http.get("/api/health")
        assert health.status_code == 503
        items = {i["name"]: i for i in health.json()["items"]}
        assert items["temporal"]["status"] == "red"
        assert "cannot reach Temporal" in items["temporal"]["reason"]
        assert items["ledger"]["status"] == "red"
        assert "\n" not in items["ledger"]["reason"]
        assert items["trust store"]["status"] == "green"
        assert items["policy"]["status"] == "green"

        page = http.get("/health")
        assert page.status_code == 200
        assert "✗ red" in page.text

        assert http.get("/proofs").status_code == 200
        missing = http.get("/proofs?index=0")
        assert missing.status_code == 503
        assert missing.text.count("The ledger cannot be opened") == 1


def test_console_cli_is_registered_by_function() -> None:
    import typer
    from typer.testing import CliRunner

    from ecp.cli.console import default_temporal_ui, register

    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps typer from collapsing the group
        pass

    result = CliRunner().invoke(app, ["console", "--help"])
    assert result.exit_code == 0
    assert "--port" in result.output
    assert (
        default_temporal_ui(Settings(temporal_address="127.0.0.1:7233")) == "http://127.0.0.1:8233"
    )
    assert default_temporal_ui(Settings(temporal_address="temporal.example:7233")) is None
