"""`ecp ledger` commands: append evidence, sign checkpoints, prove, verify."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Annotated

import typer

from ecp._paths import data_dir, default_database_url
from ecp.authority._keys import Ed25519FileSigner, load_public_key
from ecp.authority._truststore import TrustStore
from ecp.cli._common import CliError, one_line_errors

__all__ = ["app"]

app = typer.Typer(
    help="The evidence ledger: an RFC 6962 Merkle log with signed C2SP checkpoints.",
    no_args_is_help=True,
)

_DEFAULT_ORIGIN = "ecp.local/ledger"
_MAX_INPUT_BYTES = 1024 * 1024

_DB_HELP = "Ledger database URL (default: $ECP_DATABASE_URL, else SQLite in the data directory)."
_KEY_HELP = "The log's signing key (PEM; default: <data dir>/keys/log.key)."
_ORIGIN_HELP = "The log's origin line, also its checkpoint key name."


def _url(db: str | None) -> str:
    return db or default_database_url()


def _log_key_path(path: Path | None) -> Path:
    return path or data_dir() / "keys" / "log.key"


_TRUST_HELP = "The trust store naming the keys that may sign evidence (default: $ECP_HOME/keys)."


def _trust(path: Path | None) -> TrustStore:
    # Without the trust store nobody can tell forged evidence from real.
    chosen = path or data_dir() / "keys" / "truststore.json"
    if not chosen.exists():
        raise CliError(f"no trust store at {chosen}; pass --trust-store FILE")
    return TrustStore.load(chosen)


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if len(data) > _MAX_INPUT_BYTES:
        raise CliError(f"{what} {path} is larger than {_MAX_INPUT_BYTES} bytes")
    return data


def _emit(doc: object) -> None:
    typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))


@app.command("append")
@one_line_errors
def append(
    file: Annotated[
        Path, typer.Argument(help="A DSSE evidence envelope (JSON); '-' is not accepted.")
    ],
    db: Annotated[str | None, typer.Option("--db", help=_DB_HELP)] = None,
    trust_store: Annotated[Path | None, typer.Option("--trust-store", help=_TRUST_HELP)] = None,
) -> None:
    """Append one evidence envelope signed by a trusted key; prints its index (idempotent)."""
    from ecp.lineage.ledger._ledger import Ledger

    data = _read(file, "evidence file")
    trust = _trust(trust_store)
    with Ledger.open(_url(db), trust=trust) as ledger:
        r = ledger.append(data)
    _emit(
        {
            "index": r.index,
            "leafHash": r.leaf_hash.hex(),
            "evidenceId": r.evidence_id,
            "created": r.created,
        }
    )


@app.command("checkpoint")
@one_line_errors
def checkpoint(
    db: Annotated[str | None, typer.Option("--db", help=_DB_HELP)] = None,
    log_key: Annotated[Path | None, typer.Option("--log-key", help=_KEY_HELP)] = None,
    origin: Annotated[str, typer.Option("--origin", help=_ORIGIN_HELP)] = _DEFAULT_ORIGIN,
) -> None:
    """Sign a checkpoint of the current tree (refused if inconsistent with the last one)."""
    from ecp.lineage.ledger._ledger import Ledger

    signer = Ed25519FileSigner.from_file(_log_key_path(log_key))
    with Ledger.open(_url(db), origin=origin) as ledger:
        signed = ledger.checkpoint(signer, origin)
    typer.echo(signed.note, nl=False)


@app.command("prove")
@one_line_errors
def prove(
    index: Annotated[int, typer.Argument(min=0, help="Entry index (0-based).")],
    db: Annotated[str | None, typer.Option("--db", help=_DB_HELP)] = None,
    log_key: Annotated[
        Path | None,
        typer.Option(
            "--log-key", help=_KEY_HELP + " Used to sign a checkpoint if none covers the entry."
        ),
    ] = None,
    origin: Annotated[str, typer.Option("--origin", help=_ORIGIN_HELP)] = _DEFAULT_ORIGIN,
) -> None:
    """Print a receipt (entry + inclusion proof + signed checkpoint) as JSON."""
    from ecp.lineage.ledger._ledger import Ledger

    key_path = _log_key_path(log_key)
    signer = Ed25519FileSigner.from_file(key_path) if key_path.exists() else None
    with Ledger.open(_url(db), create=False, origin=origin) as ledger:
        receipt = ledger.receipt(index, signer=signer)
    typer.echo(receipt.to_json().decode(), nl=False)


@app.command("consistency")
@one_line_errors
def consistency(
    old_size: Annotated[int, typer.Argument(min=0, help="The older tree size.")],
    new_size: Annotated[int, typer.Argument(min=0, help="The newer tree size.")],
    db: Annotated[str | None, typer.Option("--db", help=_DB_HELP)] = None,
) -> None:
    """Print a consistency proof between two tree sizes, with both roots."""
    from ecp.lineage.ledger._ledger import Ledger

    with Ledger.open(_url(db), create=False) as ledger:
        proof = ledger.consistency_proof(old_size, new_size)
        old_root, new_root = ledger.root_at(old_size), ledger.root_at(new_size)
    _emit(
        {
            "oldSize": old_size,
            "newSize": new_size,
            "oldRoot": base64.b64encode(old_root).decode(),
            "newRoot": base64.b64encode(new_root).decode(),
            "hashes": [base64.b64encode(h).decode() for h in proof],
        }
    )


@app.command("verify")
@one_line_errors
def verify(
    db: Annotated[str | None, typer.Option("--db", help=_DB_HELP)] = None,
    log_key: Annotated[
        Path | None,
        typer.Option(
            "--log-key", help="The log's key (public or private PEM) to check checkpoints."
        ),
    ] = None,
    trust_store: Annotated[Path | None, typer.Option("--trust-store", help=_TRUST_HELP)] = None,
) -> None:
    """Recompute every hash, check every entry's signature and all checkpoints.

    Names the first bad index.
    """
    from ecp.lineage.ledger._ledger import Ledger

    public = load_public_key(_log_key_path(log_key))
    trust = _trust(trust_store)
    with Ledger.open(_url(db), create=False) as ledger:
        report = ledger.verify_all(public, trust=trust)
    typer.echo(
        f"ok: {report.size} entries signed by trusted keys, root {report.root_hash.hex()}, "
        f"{report.checkpoints} checkpoints verified"
    )


@app.command("verify-receipt")
@one_line_errors
def verify_receipt_cmd(
    receipt: Annotated[Path, typer.Argument(help="A receipt JSON file from `ecp ledger prove`.")],
    log_key: Annotated[Path, typer.Option("--log-key", help="The log's public key (PEM).")],
    origin: Annotated[
        str | None,
        typer.Option(
            "--origin", help="The log the receipt must come from (default: any signed by the key)."
        ),
    ] = None,
    min_size: Annotated[
        int, typer.Option("--min-size", min=0, help="Reject checkpoints older than this tree size.")
    ] = 0,
) -> None:
    """Verify a receipt offline with the log's public key (no database needed)."""
    from ecp.lineage.ledger._receipt import verify_receipt

    v = verify_receipt(
        _read(receipt, "receipt"), load_public_key(log_key), origin=origin, min_tree_size=min_size
    )
    typer.echo(f"ok: entry {v.log_index} is in {v.origin} at tree size {v.tree_size}")
