"""The compose stack, checked offline (no Docker engine here).

The schema is the Compose specification's own JSON schema as vendored by
check-jsonschema (``vendor.compose-spec``, from compose-spec/compose-spec).
"""

from __future__ import annotations

import importlib.resources
import json
import re
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from ecp._settings import Settings, env_name, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ECP_SERVICES = ("ecp-authority", "ecp-executor")
#: What a worker cannot run without in this topology (the rest default sanely).
REQUIRED = {
    env_name(n)
    for n in (
        "role",
        "home",
        "temporal_address",
        "namespace",
        "authority_queue",
        "executor_queue",
        "keys_dir",
        "database_url",
        "log_origin",
        "otel_exporter",
        "otel_endpoint",
        "otel_service_name",
    )
}
#: Settings both sides must agree on, or they would not find each other.
SHARED = (
    "ECP_TEMPORAL_ADDRESS",
    "ECP_NAMESPACE",
    "ECP_AUTHORITY_QUEUE",
    "ECP_EXECUTOR_QUEUE",
    "ECP_DATABASE_URL",
    "ECP_LOG_ORIGIN",
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def _env(compose: dict[str, Any], service: str) -> dict[str, str]:
    env = compose["services"][service]["environment"]
    assert isinstance(env, dict), "use the mapping form for environment"
    return {str(k): str(v) for k, v in env.items()}


def test_validates_against_compose_spec(compose: dict[str, Any]) -> None:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath(
        "compose-spec.json"
    )
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    errors = sorted(validator_cls(schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(e.message for e in errors)


def test_services_present_with_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in (
        "postgresql",
        "temporal",
        "temporal-ui",
        "jaeger",
        "otel-collector",
        *ECP_SERVICES,
    ):
        assert name in services, name
    for name in ("postgresql", "temporal", *ECP_SERVICES):
        assert "healthcheck" in services[name], name
    for name in ECP_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["temporal"]["condition"] == "service_healthy"
        assert deps["postgresql"]["condition"] == "service_healthy"
    assert set(compose["volumes"]) >= {"pgdata", "authority-data", "executor-data"}


def test_witness_service_is_separate_with_its_own_state(compose: dict[str, Any]) -> None:
    w = compose["services"]["witness"]
    assert w["command"][:2] == ["witness", "serve"]
    assert "healthcheck" in w
    # Its own state, and no log or authority key: it cannot sign for the log.
    assert w["volumes"] == ["./deploy/witness:/witness"]
    assert "ECP_WITNESSES" in _env(compose, "ecp-authority")


def test_every_ecp_variable_is_a_known_setting(compose: dict[str, Any]) -> None:
    known = {env_name(n) for n in Settings.model_fields}
    for name in ECP_SERVICES:
        env = _env(compose, name)
        assert set(env) <= known, f"{name}: unknown {sorted(set(env) - known)}"
        assert set(env) >= REQUIRED, f"{name}: missing {sorted(REQUIRED - set(env))}"


def test_values_parse_as_settings(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("ECP_"):
            monkeypatch.delenv(key)
    roles = set()
    for name in ECP_SERVICES:
        env = _env(compose, name)
        # Compose interpolates ${VAR:-default}; take the default here.
        values = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v) for k, v in env.items()}
        for k, v in values.items():
            monkeypatch.setenv(k, v)
        s = load_settings()
        roles.add(s.role.value)
    assert roles == {"authority", "executor"}
    a, e = (_env(compose, n) for n in ECP_SERVICES)
    for key in SHARED:
        assert a[key] == e[key], key


def test_executor_mounts_no_authority_key(compose: dict[str, Any]) -> None:
    def mounts(service: str) -> dict[str, str]:
        out = {}
        for v in compose["services"][service]["volumes"]:
            _src, dst, *mode = str(v).split(":")
            out[dst] = ":".join(mode)
            if dst.startswith("/keys/"):
                assert mode == ["ro"], f"{service}: {dst} must be read-only"
        return out

    executor = {d for d in mounts("ecp-executor") if d.startswith("/keys/")}
    assert executor == {"/keys/worker.key", "/keys/truststore.json"}
    authority = {d for d in mounts("ecp-authority") if d.startswith("/keys/")}
    assert authority == {
        "/keys/authority.key",
        "/keys/log.key",
        "/keys/recorder.key",
        "/keys/truststore.json",
    }


def test_dockerfile_is_pinned_non_root_and_keyless() -> None:
    text = (ROOT / "Dockerfile").read_text()
    froms = [ln.split()[1] for ln in text.splitlines() if ln.startswith("FROM ")]
    assert froms, "no FROM"
    for image in froms:
        assert image.startswith("python:3.11."), image
        assert image.endswith("-slim-bookworm"), image
    assert "USER 10001" in text
    instructions = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert not [ln for ln in instructions if "key" in ln.lower()], "keys must be mounted"
