"""`ecp keys` commands: create, list and revoke the deployment's keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from authority.clock import system_clock
from authority.keys import Ed25519FileSigner, write_private_key, write_public_key
from authority.truststore import TRUST_STORE_FILENAME, KeyRole, TrustedKey, TrustStore
from ecp.cli._common import CliError, one_line_errors
from ecp.paths import data_dir

__all__ = ["app", "default_keys_dir"]

app = typer.Typer(
    help="Create, list and revoke the Ed25519 keys and the trust store.",
    no_args_is_help=True,
)

_ROLES = (KeyRole.AUTHORITY, KeyRole.APPROVER, KeyRole.LOG, KeyRole.WORKER)


def default_keys_dir() -> Path:
    """``<data dir>/keys`` (``$ECP_HOME/keys``, else ``./.ecp/keys``)."""
    return data_dir() / "keys"


_DIR_HELP = "Key directory (default: $ECP_HOME/keys, else ./.ecp/keys)."
_StoreDir = Annotated[
    Path | None, typer.Option("--dir", help=_DIR_HELP + " A truststore.json file works too.")
]


@app.command("init")
@one_line_errors
def init(
    directory: Annotated[Path | None, typer.Option("--dir", help=_DIR_HELP)] = None,
    approver_name: Annotated[
        str,
        typer.Option(
            "--approver-name",
            help="Identity of the approver key; must be a member of the policy's approval role.",
        ),
    ] = "carol",
) -> None:
    """Create authority, approver, log and worker key pairs and a trust store.

    Private keys are written with mode 0600. Refuses to overwrite anything.
    """
    d = directory or default_keys_dir()
    targets = [d / f"{r.value}.key" for r in _ROLES] + [d / TRUST_STORE_FILENAME]
    existing = [str(p) for p in targets if p.exists()]
    if existing:
        raise CliError(f"refusing to overwrite existing key material: {', '.join(existing)}")
    entries = []
    for role in _ROLES:
        signer = Ed25519FileSigner.generate()
        write_private_key(signer.private_key, d / f"{role.value}.key")
        write_public_key(signer.public_key, d / f"{role.value}.pub")
        name = approver_name if role is KeyRole.APPROVER else role.value
        entries.append(TrustedKey.create(signer.public_key, [role], name=name))
        typer.echo(f"{role.value:<9} {signer.key_id}  {d / (role.value + '.key')}")
    TrustStore(entries).save(d)
    typer.echo(f"trust store {d / TRUST_STORE_FILENAME}")


def _status(key: TrustedKey) -> str:
    now = system_clock()
    if key.revoked_at is not None:
        return f"revoked {key.revoked_at.isoformat()}"
    if key.not_after is not None and now >= key.not_after:
        return "expired"
    if key.not_before is not None and now < key.not_before:
        return "not yet valid"
    return "active"


@app.command("list")
@one_line_errors
def list_keys(
    directory: _StoreDir = None,
) -> None:
    """List the trust store's keys: id, roles, name and status."""
    store = TrustStore.load(directory or default_keys_dir())
    for key in store:
        roles = ",".join(sorted(r.value for r in key.roles))
        typer.echo(f"{key.key_id}  {roles:<9}  {key.name or '-':<12}  {_status(key)}")


@app.command("revoke")
@one_line_errors
def revoke(
    key_id: Annotated[str, typer.Argument(help="Key id to revoke, e.g. ed25519:0123…")],
    directory: _StoreDir = None,
) -> None:
    """Revoke a key in the trust store, effective now and for any claimed time."""
    path = directory or default_keys_dir()
    store = TrustStore.load(path)
    store.revoked(key_id, system_clock()).save(path)
    typer.echo(f"revoked {key_id}")
