"""Settings: environment, settings file, validation in one line, TLS, ``config show``."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ecp._connect import tls_config
from ecp._settings import OtelExporter, Role, Settings, SettingsError, load_settings
from ecp.cli import config as config_cli


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("ECP_"):
            monkeypatch.delenv(key)


def test_toml_file_under_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "ecp.toml"
    f.write_text('namespace = "from-file"\nrole = "executor"\notel_exporter = "console"\n')
    monkeypatch.setenv("ECP_CONFIG_FILE", str(f))
    monkeypatch.setenv("ECP_NAMESPACE", "from-env")
    s = load_settings()
    assert (s.namespace, s.role, s.otel_exporter) == (
        "from-env",
        Role.EXECUTOR,
        OtelExporter.CONSOLE,
    )


def test_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "ecp.env"
    f.write_text("# deployment\nECP_ROLE=authority\nECP_API_KEY=k-123\n")
    monkeypatch.setenv("ECP_CONFIG_FILE", str(f))
    s = load_settings()
    assert s.role is Role.AUTHORITY
    assert s.api_key is not None
    assert s.api_key.get_secret_value() == "k-123"
    assert "k-123" not in repr(s)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ECP_OTEL_EXPORTER": "zipkin"}, "ECP_OTEL_EXPORTER"),
        ({"ECP_TEMPORAL_ADDRESS": "nohostport"}, "ECP_TEMPORAL_ADDRESS"),
        ({"ECP_DATABASE_URL": "not a url"}, "ECP_DATABASE_URL"),
        ({"ECP_DATABASE_URL": "mysql://h/db"}, "ECP_DATABASE_URL"),
        ({"ECP_TLS_CERT": "/no/such/cert.pem"}, "ECP_TLS_CERT"),
        ({"ECP_LOG_LEVEL": "loud"}, "ECP_LOG_LEVEL"),
        ({"ECP_GRANT_TTL_SECONDS": "-1"}, "ECP_GRANT_TTL_SECONDS"),
        ({"ECP_MAX_CONCURRENT_ACTIVITIES": "0"}, "ECP_MAX_CONCURRENT_ACTIVITIES"),
        ({"ECP_MAX_CONCURRENT_ACTIVITIES": "many"}, "ECP_MAX_CONCURRENT_ACTIVITIES"),
        ({"ECP_STARTUP_WAIT_SECONDS": "-1"}, "ECP_STARTUP_WAIT_SECONDS"),
        ({"ECP_STARTUP_WAIT_SECONDS": "3601"}, "ECP_STARTUP_WAIT_SECONDS"),
        ({"ECP_STARTUP_WAIT_SECONDS": "a while"}, "ECP_STARTUP_WAIT_SECONDS"),
        ({"ECP_DATABASE_URL": "sqlite:///:memory:"}, "ECP_DATABASE_URL"),
        ({"ECP_DATABASE_URL": "sqlite://"}, "ECP_DATABASE_URL"),
        ({"ECP_CONFIG_FILE": "/no/such/ecp.toml"}, "ECP_CONFIG_FILE"),
    ],
)
def test_invalid_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith(f"invalid setting {named}:")
    assert "\n" not in str(info.value)


def test_unknown_key_in_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "ecp.toml"
    f.write_text('namspace = "typo"\n')
    monkeypatch.setenv("ECP_CONFIG_FILE", str(f))
    with pytest.raises(SettingsError, match="unknown key namspace"):
        load_settings()


def test_cert_and_key_go_together(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    monkeypatch.setenv("ECP_TLS_CERT", str(cert))
    with pytest.raises(SettingsError, match="ECP_TLS_KEY"):
        load_settings()


def test_tls_config(tmp_path: Path) -> None:
    assert tls_config(Settings()) is False
    assert tls_config(Settings(api_key="k")) is True
    cert, key, ca = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    for p in (cert, key, ca):
        p.write_bytes(p.name.encode())
    cfg = tls_config(Settings(tls_cert=cert, tls_key=key, tls_ca=ca, tls_server_name="t.example"))
    assert not isinstance(cfg, bool)
    assert (cfg.client_cert, cfg.client_private_key, cfg.server_root_ca_cert) == (
        b"c.pem",
        b"k.pem",
        b"ca.pem",
    )
    assert cfg.domain == "t.example"


def test_config_show_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECP_API_KEY", "super-secret-key")
    monkeypatch.setenv("ECP_DATABASE_URL", "postgresql+psycopg://ecp:pg-password@db:5432/ecp")
    app = typer.Typer()
    app.add_typer(config_cli.app, name="config")
    out = CliRunner().invoke(app, ["config", "show"])
    assert out.exit_code == 0, out.output
    assert "super-secret-key" not in out.output
    assert "pg-password" not in out.output
    assert "ECP_API_KEY" in out.output
    assert "********" in out.output
    assert "postgresql+psycopg://ecp:***@db:5432/ecp" in out.output


def test_config_show_masks_passwords_in_a_url_query(monkeypatch: pytest.MonkeyPatch) -> None:
    # libpq takes a password (and a client key's passphrase) in the query
    # too; the halt list's own URL is shown as carefully as the main one.
    monkeypatch.setenv("ECP_DATABASE_URL", "postgresql+psycopg://ecp@db/ecp?password=hunter2")
    monkeypatch.setenv(
        "ECP_HALT_DATABASE_URL",
        "postgresql+psycopg://halt:pw-userinfo@h/halt?sslpassword=passphrase&sslmode=require",
    )
    app = typer.Typer()
    app.add_typer(config_cli.app, name="config")
    out = CliRunner().invoke(app, ["config", "show", "--json"])
    assert out.exit_code == 0, out.output
    for secret in ("hunter2", "pw-userinfo", "passphrase"):
        assert secret not in out.output, out.output
    assert "postgresql+psycopg://ecp@db/ecp?password=***" in out.output
    assert "postgresql+psycopg://halt:***@h/halt?sslmode=require&sslpassword=***" in out.output


def test_config_show_invalid_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECP_ROLE", "boss")
    app = typer.Typer()
    app.add_typer(config_cli.app, name="config")
    out = CliRunner().invoke(app, ["config", "show"])
    assert out.exit_code == 1
    assert "invalid setting ECP_ROLE" in out.output


def test_startup_wait_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().startup_wait_seconds == 60
    for value, expected in (("0", 0.0), ("2.5", 2.5), ("3600", 3600.0)):
        monkeypatch.setenv("ECP_STARTUP_WAIT_SECONDS", value)
        assert load_settings().startup_wait_seconds == expected
