"""One typed settings model.

Read from ``ECP_*`` environment variables and an optional settings file.

Every process (CLI, workers, demo) reads the same model, so a deployment is
described by environment alone; ``ECP_CONFIG_FILE`` names a TOML file (keys
are the field names) or an env-file (``ECP_*=`` lines) whose values apply
where the environment sets nothing. Paths default to the local data directory.
"""

from __future__ import annotations

import os
import re
import tomllib
from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ecp._paths import data_dir
from ecp.errors import EcpError

#: ``ECP_ACCEPTED_POLICY_DIGESTS`` value that accepts grants under any bundle.
ACCEPT_ANY_POLICY = "*"
#: The console's roles: viewer reads, auditor also exports, approver also approves.
CONSOLE_ROLES = ("viewer", "auditor", "approver")

__all__ = [
    "ACCEPT_ANY_POLICY",
    "CONFIG_FILE_ENV",
    "CONSOLE_ROLES",
    "ENV_PREFIX",
    "LogFormat",
    "OtelExporter",
    "Role",
    "Settings",
    "SettingsError",
    "env_name",
    "load_settings",
]

ENV_PREFIX = "ECP_"
#: Names the optional settings file (TOML if it ends in .toml, else env-file).
CONFIG_FILE_ENV = "ECP_CONFIG_FILE"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SettingsError(EcpError):
    """A setting is invalid; the message names it."""

    code = "settings_invalid"


_POLICY_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class Role(StrEnum):
    """Which side of the separation of duties a worker process plays."""

    AUTHORITY = "authority"
    EXECUTOR = "executor"
    ALL = "all"


class OtelExporter(StrEnum):
    """Where traces and metrics go."""

    NONE = "none"
    CONSOLE = "console"
    OTLP = "otlp"


class LogFormat(StrEnum):
    """How log lines are written to stderr."""

    TEXT = "text"
    JSON = "json"


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return ENV_PREFIX + field.upper()


class Settings(BaseSettings):
    """Effective configuration of an ECP process."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    home: Path = Field(default_factory=data_dir, description="local data directory")
    config_file: Path | None = Field(None, description="settings file (TOML or env-file)")
    temporal_address: str = Field("127.0.0.1:7233", description="Temporal frontend host:port")
    namespace: str = Field("default", description="Temporal namespace")
    tls: bool = Field(False, description="TLS to Temporal (implied by client certs or API key)")
    tls_ca: Path | None = Field(None, description="CA bundle for the Temporal server certificate")
    tls_cert: Path | None = Field(None, description="mTLS client certificate (PEM)")
    tls_key: Path | None = Field(
        None, validate_default=True, description="mTLS client private key (PEM)"
    )
    tls_server_name: str | None = Field(None, description="TLS server name override")
    api_key: SecretStr | None = Field(None, description="Temporal Cloud API key")
    authority_queue: str = Field("ecp-authority", description="authority task queue")
    executor_queue: str = Field("ecp-executor", description="executor task queue")
    role: Role = Field(Role.ALL, description="worker role")
    keys_dir: Path | None = Field(None, description="key directory (default HOME/keys)")
    trust_store: Path | None = Field(None, description="trust store (default KEYS_DIR)")
    policy_bundle: Path | None = Field(None, description="Cedar policy bundle directory")
    database_url: str | None = Field(None, description="ledger/replay database URL")
    log_origin: str = Field("ecp.local/ledger", description="checkpoint origin line")
    witnesses: str = Field(
        "",
        description=(
            "comma-separated witnesses asked to cosign each checkpoint, each "
            "VKEY@URL (the witness's verifier key, its tlog-witness submission prefix)"
        ),
    )
    grant_ttl_seconds: float = Field(300.0, gt=0, description="grant validity window")
    accepted_policy_digests: str = Field(
        "",
        description=(
            "comma-separated policy digests executors accept; empty: only the "
            "configured policy bundle's; '*': any the authority signs (say so explicitly)"
        ),
    )
    allow_unauthenticated: bool = Field(
        False,
        description=(
            "accept requests whose initiator carries no proof (marked unauthenticated "
            "in decision, grant and evidence); off in production"
        ),
    )
    oidc_issuer: str | None = Field(None, description="OpenID Connect issuer URL for ID tokens")
    oidc_audience: str | None = Field(None, description="the audience ID tokens must name")
    oidc_jwks_file: Path | None = Field(
        None, description="offline JWKS file for the issuer (else fetched via discovery)"
    )
    oidc_principal_claim: str = Field("sub", description="ID-token claim naming the principal")
    governed_actions: str = Field(
        "",
        description=(
            "comma-separated activity types the gate governs by name, whichever "
            "function serves them (besides the @governed ones)"
        ),
    )
    max_concurrent_activities: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description=(
            "activity slots of each ECP worker (default: the SDK's 100); Temporal's "
            "start-to-close runs from when a worker takes a task, so take no more than "
            "a worker finishes within the policy's execute timeout"
        ),
    )
    startup_wait_seconds: float = Field(
        60.0,
        ge=0,
        le=3600,
        description=(
            "how long a starting worker waits for its databases and Temporal to answer "
            "(capped exponential backoff, one log line per retry); 0: fail at once"
        ),
    )
    halt_database_url: str | None = Field(
        None, description="database URL of the halt list (default: DATABASE_URL)"
    )
    halt_refresh_seconds: float = Field(
        2.0, gt=0, le=60, description="how often a gate reads the halt list (control log)"
    )
    halt_bound_seconds: float = Field(
        10.0,
        gt=0,
        le=600,
        description="a gate that could not read the halt list for longer refuses governed bodies",
    )
    console_oidc_issuer: str | None = Field(
        None, description="the console signs visitors in with this OpenID Connect issuer"
    )
    console_oidc_client_id: str | None = Field(
        None, description="the console's client id at that issuer (required with the issuer)"
    )
    console_oidc_client_secret: SecretStr | None = Field(
        None, description="the console's client secret (a confidential client)"
    )
    console_session_key: SecretStr | None = Field(
        None,
        description=(
            "hex HMAC key (32 bytes or more) signing console sessions; unset: a random "
            "key, sessions end when the console restarts"
        ),
    )
    console_public_url: str | None = Field(
        None, description="the console's base URL as browsers reach it (the redirect URI's base)"
    )
    console_roles: str = Field(
        "",
        description=(
            "comma-separated CLAIM_VALUE=viewer|auditor|approver: which values of the "
            "role claim give which console role"
        ),
    )
    console_role_claim: str = Field(
        "groups", min_length=1, description="the ID-token claim console roles come from"
    )
    console_public_mode: bool = Field(
        False,
        description="serve signed-out visitors the Proof Viewer and a redacted list (with sign-in)",
    )
    console_session_seconds: int = Field(
        8 * 3600, ge=60, le=7 * 24 * 3600, description="how long a console session lasts"
    )
    otel_exporter: OtelExporter = Field(OtelExporter.NONE, description="none, console or otlp")
    otel_endpoint: str = Field("http://127.0.0.1:4318", description="OTLP/HTTP collector base URL")
    otel_service_name: str = Field("ecp", min_length=1, description="OTel service.name")
    log_format: LogFormat = Field(LogFormat.TEXT, description="text or json")
    log_level: str = Field("INFO", description="root log level")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file, so one file can serve several
        # processes that differ only in, say, ECP_ROLE.
        path = os.environ.get(CONFIG_FILE_ENV)
        if not path:
            return (init_settings, env_settings)
        file = Path(path)
        _check_file_keys(file)
        source: PydanticBaseSettingsSource
        if file.suffix == ".toml":
            source = TomlConfigSettingsSource(settings_cls, toml_file=file)
        else:
            source = DotEnvSettingsSource(settings_cls, env_file=file, env_prefix=ENV_PREFIX)
        return (init_settings, env_settings, source)

    @field_validator("accepted_policy_digests")
    @classmethod
    def _digests(cls, v: str) -> str:
        if v.strip() == ACCEPT_ANY_POLICY:
            return v
        for item in filter(None, (d.strip() for d in v.split(","))):
            if not _POLICY_DIGEST.fullmatch(item):
                raise ValueError(f"{item!r} is not a sha256:<64 hex> policy digest")
        return v

    @property
    def accepted_digests(self) -> frozenset[str] | None:
        """Policy digests an executor's gate accepts, as configured.

        ``None`` accepts any the authority signed: only when set to ``*``. An
        empty setting is the empty set here; the runtime then pins the digest
        of the configured bundle (so a compromised or stale authority bundle
        cannot authorise work on this executor by default).
        """
        if self.accepted_policy_digests.strip() == ACCEPT_ANY_POLICY:
            return None
        return frozenset(d.strip() for d in self.accepted_policy_digests.split(",") if d.strip())

    @property
    def governed_action_names(self) -> frozenset[str]:
        """Activity types governed by name (``ECP_GOVERNED_ACTIONS``)."""
        return frozenset(a.strip() for a in self.governed_actions.split(",") if a.strip())

    @field_validator("witnesses")
    @classmethod
    def _witnesses(cls, v: str) -> str:
        # Parsed at start so a typo names the setting, not the first checkpoint.
        from ecp.lineage.ledger.errors import VerifierKeyError
        from ecp.lineage.witness._client import parse_witness_spec

        for item in filter(None, (w.strip() for w in v.split(","))):
            try:
                parse_witness_spec(item)
            except VerifierKeyError as exc:
                raise ValueError(str(exc)) from None
        return v

    @property
    def witness_specs(self) -> list[str]:
        """The configured witnesses, one ``VKEY@URL`` each (``ECP_WITNESSES``)."""
        return [w.strip() for w in self.witnesses.split(",") if w.strip()]

    @field_validator("temporal_address")
    @classmethod
    def _address(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("must be host:port")
        return v

    @field_validator("tls_ca", "tls_cert", "tls_key")
    @classmethod
    def _pem_file(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"{v}: no such file")
        return v

    @field_validator("tls_key", mode="after")
    @classmethod
    def _cert_pair(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if (v is None) != (info.data.get("tls_cert") is None) and "tls_cert" in info.data:
            raise ValueError("ECP_TLS_CERT and ECP_TLS_KEY must be set together")
        return v

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        # Parsed here so a typo fails at start with the setting's name, not
        # as a driver traceback when the ledger first opens.
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            backend = make_url(v).get_backend_name()
        except ArgumentError:
            raise ValueError(
                "not a database URL (sqlite:///PATH or postgresql+psycopg://...)"
            ) from None
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {backend!r} (sqlite or postgresql)")
        if backend == "sqlite" and make_url(v).database in (None, "", ":memory:"):
            # The store refuses it too, but as an outage; here it is what it
            # is, a setting to fix (and nothing for a starting worker to wait on).
            raise ValueError("the ledger needs a SQLite file (sqlite:///PATH), not memory")
        return v

    @field_validator("otel_endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http(s):// URL")
        return v.rstrip("/")

    @field_validator("console_oidc_issuer", "console_public_url")
    @classmethod
    def _console_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.startswith(("http://", "https://")) or len(v) > 2000:
            raise ValueError("must be an http(s):// URL")
        return v.rstrip("/") if v.count("/") > 2 else v

    @field_validator("console_session_key")
    @classmethod
    def _session_key(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return v
        try:
            raw = bytes.fromhex(v.get_secret_value())
        except ValueError:
            raise ValueError("must be hex (e.g. openssl rand -hex 32)") from None
        if len(raw) < 32:
            raise ValueError(f"must be 32 bytes or more (64 hex digits); it is {len(raw)}")
        return v

    @field_validator("console_roles")
    @classmethod
    def _console_roles(cls, v: str) -> str:
        cls.parse_console_roles(v)
        return v

    @staticmethod
    def parse_console_roles(v: str) -> dict[str, str]:
        """``CLAIM_VALUE=ROLE,...`` as a mapping (``ECP_CONSOLE_ROLES``).

        Raises:
            ValueError: an item is not ``CLAIM_VALUE=ROLE`` or names another role.
        """
        out: dict[str, str] = {}
        for item in filter(None, (r.strip() for r in v.split(","))):
            value, sep, role = item.rpartition("=")
            if not sep or not value.strip():
                raise ValueError(f"{item!r} is not CLAIM_VALUE=ROLE")
            if role.strip() not in CONSOLE_ROLES:
                raise ValueError(
                    f"{item!r} names role {role.strip()!r}; roles are {', '.join(CONSOLE_ROLES)}"
                )
            out[value.strip()] = role.strip()
        return out

    @property
    def console_role_values(self) -> dict[str, str]:
        """Claim value -> console role (``ECP_CONSOLE_ROLES``)."""
        return self.parse_console_roles(self.console_roles)

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        if v.upper() not in _LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}")
        return v.upper()

    @property
    def keys(self) -> Path:
        """The key directory."""
        return self.keys_dir or self.home / "keys"

    @property
    def trust(self) -> Path:
        """The trust store file or directory."""
        return self.trust_store or self.keys

    @property
    def policy(self) -> Path:
        """The policy bundle: the configured one, else the bundled example."""
        if self.policy_bundle is not None:
            return self.policy_bundle
        return Path(__file__).resolve().parent / "examples" / "policy"

    @property
    def db_url(self) -> str:
        """The database URL, SQLite in the data directory by default."""
        return self.database_url or f"sqlite:///{self.home / 'ecp.db'}"

    @property
    def halt_db_url(self) -> str:
        """Where the halt list lives: its own URL, else the shared database."""
        return self.halt_database_url or self.db_url

    @property
    def uses_tls(self) -> bool:
        """Whether the Temporal connection uses TLS."""
        return self.tls or self.tls_cert is not None or self.api_key is not None


def _check_file_keys(file: Path) -> None:
    # extra="ignore" keeps unrelated environment variables harmless, but a
    # misspelt key in a file written for ECP is a mistake worth stopping on.
    if not file.is_file():
        raise SettingsError(f"invalid setting {CONFIG_FILE_ENV}: {file}: no such file")
    known = set(Settings.model_fields)
    try:
        if file.suffix == ".toml":
            names = list(tomllib.loads(file.read_text(encoding="utf-8")))
        else:
            names = [
                line.split("=", 1)[0].strip().removeprefix("export ").strip()
                for line in file.read_text(encoding="utf-8").splitlines()
                if "=" in line and not line.lstrip().startswith("#")
            ]
            names = [n.removeprefix(ENV_PREFIX).lower() for n in names]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise SettingsError(f"invalid setting {CONFIG_FILE_ENV}: {file}: {first}") from exc
    for name in names:
        if name not in known:
            raise SettingsError(f"invalid setting {CONFIG_FILE_ENV}: {file}: unknown key {name}")


def load_settings() -> Settings:
    """Read settings from the environment and the optional settings file.

    Raises:
        SettingsError: a setting is invalid (the message names it, one line).
    """
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = env_name(str(err["loc"][0])) if err["loc"] else "ECP_*"
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"invalid setting {name}: {msg}") from exc
