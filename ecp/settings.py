"""One typed settings model, read from ``ECP_*`` environment variables.

Every process (CLI, workers, demo) reads the same model, so a deployment is
described by environment alone. Paths default to the local data directory.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ecp.errors import EcpError
from ecp.paths import data_dir

__all__ = ["Role", "Settings", "SettingsError", "load_settings"]


class SettingsError(EcpError):
    """A setting is invalid; the message names it."""


class Role(StrEnum):
    """Which side of the separation of duties a worker process plays."""

    AUTHORITY = "authority"
    EXECUTOR = "executor"
    ALL = "all"


class Settings(BaseSettings):
    """Effective configuration of an ECP process."""

    model_config = SettingsConfigDict(env_prefix="ECP_", extra="ignore", frozen=True)

    home: Path = Field(default_factory=data_dir, description="local data directory")
    temporal_address: str = Field("127.0.0.1:7233", description="Temporal frontend host:port")
    namespace: str = Field("default", description="Temporal namespace")
    authority_queue: str = Field("ecp-authority", description="authority task queue")
    executor_queue: str = Field("ecp-executor", description="executor task queue")
    role: Role = Field(Role.ALL, description="worker role")
    keys_dir: Path | None = Field(None, description="key directory (default HOME/keys)")
    trust_store: Path | None = Field(None, description="trust store (default KEYS_DIR)")
    policy_bundle: Path | None = Field(None, description="Cedar policy bundle directory")
    database_url: str | None = Field(None, description="ledger/replay database URL")
    log_origin: str = Field("ecp.local/ledger", description="checkpoint origin line")
    grant_ttl_seconds: float = Field(300.0, gt=0, description="grant validity window")

    @field_validator("temporal_address")
    @classmethod
    def _address(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("must be host:port")
        return v

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


def load_settings() -> Settings:
    """Read settings from the environment.

    Raises:
        SettingsError: a setting is invalid (the message names it, one line).
    """
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "ECP_" + str(err["loc"][0]).upper() if err["loc"] else "ECP_*"
        raise SettingsError(f"invalid setting {name}: {err['msg']}") from exc
