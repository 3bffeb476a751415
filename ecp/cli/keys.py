"""`ecp keys` commands: create, list and revoke the deployment's keys, add approvers' passkeys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ecp._keyring import init_keyring
from ecp._paths import data_dir
from ecp._settings import load_settings
from ecp.authority._clock import system_clock
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.authority._webauthn import (
    PasskeyCredential,
    b64url_decode,
    credential_from_attestation,
)
from ecp.authority.errors import TrustStoreError
from ecp.cli._common import one_line_errors

__all__ = ["app", "default_keys_dir"]

app = typer.Typer(
    help="Create, list and revoke the Ed25519 keys and the trust store; add passkeys.",
    no_args_is_help=True,
)


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
    initiators: Annotated[
        list[str] | None,
        typer.Option(
            "--initiator",
            help="Also create a request-signing key for this initiator (repeatable).",
        ),
    ] = None,
) -> None:
    """Create authority, approver, log, worker, recorder and halt key pairs and a trust store.

    With --initiator NAME, also initiator-NAME.key, with which NAME signs the
    requests they submit (ecp submit --key). Private keys are written with
    mode 0600. Refuses to overwrite anything.
    """
    d = directory or default_keys_dir()
    names = initiators or []
    files = init_keyring(d, approver=approver_name, initiators=names)
    store = TrustStore.load(files.trust_store)
    made = [files.authority, files.approver, files.log, files.worker, files.recorder, files.halt]
    for path in [*made, *(files.initiator(n) for n in names)]:
        key = store.get(Ed25519FileSigner.from_file(path).key_id)
        assert key is not None  # init_keyring just wrote it
        roles = ",".join(sorted(r.value for r in key.roles))
        typer.echo(f"{path.stem:<9} {roles:<9} {key.key_id}  {path}")
    typer.echo(f"trust store {files.trust_store}")


def _status(key: TrustedKey | PasskeyCredential) -> str:
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
    origin: Annotated[
        str | None,
        typer.Option(
            "--origin",
            help="The log's origin, naming the log key's verifier key "
            "(default: $ECP_LOG_ORIGIN, else ecp.local/ledger).",
        ),
    ] = None,
) -> None:
    """List the trust store's keys: id, roles, name and status.

    A log key's line ends with its C2SP verifier key (ORIGIN+KEYID+BASE64), which
    `ecp ledger verify-receipt --log-key` takes.
    """
    store = TrustStore.load(directory or default_keys_dir())
    for key in store:
        roles = ",".join(sorted(r.value for r in key.roles))
        line = f"{key.key_id}  {roles:<9}  {key.name or '-':<12}  {_status(key)}"
        if KeyRole.LOG in key.roles:
            from ecp.lineage.ledger._note import NoteVerifier

            if origin is None:
                origin = load_settings().log_origin
            line += f"  {NoteVerifier.for_key(origin, key.public_key).vkey()}"
        typer.echo(line)
    for pk in store.passkeys():
        typer.echo(
            f"{pk.key_id}  {'approver':<9}  {pk.name or '-':<12}  {_status(pk)}"
            f"  passkey rp={pk.rp_id} origins={','.join(pk.origins)}"
        )


@app.command("add-passkey")
@one_line_errors
def add_passkey(
    name: Annotated[str, typer.Option(help="The approver's name (their policy identity).")],
    rp_id: Annotated[str, typer.Option(help="Relying party id: the console's domain.")],
    origin: Annotated[
        list[str], typer.Option(help="The console's origin, e.g. https://ecp.example.com.")
    ],
    attestation_object: Annotated[
        str | None,
        typer.Option(help="base64url attestationObject of the registration (credentials.create)."),
    ] = None,
    credential_id: Annotated[
        str | None, typer.Option(help="base64url credential id (without --attestation-object).")
    ] = None,
    public_key: Annotated[
        str | None,
        typer.Option(help="base64url COSE public key (without --attestation-object)."),
    ] = None,
    directory: _StoreDir = None,
) -> None:
    """Trust an approver's passkey (a WebAuthn credential) to approve as NAME.

    Only this (an operator editing the trust store) makes a passkey an
    approver's: the console relays approvals but cannot add approvers.
    """
    try:
        if attestation_object is not None:
            if credential_id is not None or public_key is not None:
                raise TrustStoreError(
                    "give --attestation-object, or --credential-id and --public-key"
                )
            cred_id, cose = credential_from_attestation(
                b64url_decode(attestation_object, "attestation object", limit=64 * 1024), rp_id
            )
        elif credential_id is not None and public_key is not None:
            cred_id = b64url_decode(credential_id, "credential id")
            cose = b64url_decode(public_key, "public key")
        else:
            raise TrustStoreError("give --attestation-object, or --credential-id and --public-key")
    except ValueError as exc:
        raise TrustStoreError(str(exc)) from exc
    cred = PasskeyCredential.create(
        cred_id, cose, rp_id=rp_id, origins=origin, roles={KeyRole.APPROVER}, name=name
    )
    path = directory or default_keys_dir()
    store = TrustStore.load(path)
    if any(p.key_id == cred.key_id for p in store.passkeys()):
        raise TrustStoreError(f"passkey {cred.key_id} is already in the trust store")
    store.with_passkey(cred).save(path)
    typer.echo(f"added {cred.key_id}  approver  {name}  passkey rp={rp_id}")


@app.command("revoke")
@one_line_errors
def revoke(
    key_id: Annotated[
        str,
        typer.Argument(help="Key id to revoke, e.g. ed25519:0123… or webauthn:0123… (a passkey)"),
    ],
    directory: _StoreDir = None,
) -> None:
    """Revoke a key in the trust store, effective now and for any claimed time."""
    path = directory or default_keys_dir()
    store = TrustStore.load(path)
    store.revoked(key_id, system_clock()).save(path)
    typer.echo(f"revoked {key_id}")
