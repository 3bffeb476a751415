"""`ecp ledger` commands: append evidence, sign and list checkpoints, prove, verify, key."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ecp._paths import data_dir, default_database_url
from ecp.authority._keys import Ed25519FileSigner, load_public_key
from ecp.authority._truststore import TrustStore
from ecp.cli._common import CliError, one_line_errors

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from ecp.lineage.ledger._audit import ConsistencyProver
    from ecp.lineage.ledger._cosignature import WitnessPolicy
    from ecp.lineage.ledger._note import NoteVerifier
    from ecp.lineage.witness._client import WitnessClient

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


_VERIFY_KEY_HELP = (
    "The log's key: a PEM file (public or private), a C2SP verifier key "
    "ORIGIN+KEYID+BASE64 (as `ecp ledger key` prints it), or a file holding one."
)
#: A verifier key file holds one line; anything larger is not one.
_MAX_VKEY_FILE_BYTES = 4096


def _looks_like_vkey(text: str) -> bool:
    # <name>+<hex id>+<base64>: no whitespace, at least two '+'.
    return text.count("+") >= 2 and not any(ch.isspace() for ch in text)


def _parse_log_key(value: str, expected_origin: str | None) -> Ed25519PublicKey | NoteVerifier:
    """The log key named by a ``--log-key`` value.

    A file holding a PEM key gives the bare public key (its note key name is
    then the origin); a verifier key (given inline or in a file) gives a
    :class:`NoteVerifier`, refused unless it is an Ed25519 key named
    ``expected_origin`` (when one is expected).

    Raises:
        KeyFileError: a file that is neither PEM nor a verifier key, or missing.
        VerifierKeyError: a malformed verifier key.
        CliError: a verifier key for another origin, or not a log signing key.
    """
    from ecp.lineage.ledger._note import NoteKeyType, NoteVerifier

    path = Path(value)
    text = value
    try:
        is_file = path.is_file()
    except (OSError, ValueError):  # too long, or a NUL: no file name at all
        is_file = False
    if is_file:
        try:
            data = path.read_bytes()[: _MAX_VKEY_FILE_BYTES + 1]
        except OSError as exc:
            raise CliError(f"cannot read log key {path}: {exc.strerror}") from exc
        stripped = data.strip().decode("utf-8", "replace")
        if b"-----BEGIN" in data or len(data) > _MAX_VKEY_FILE_BYTES:
            return load_public_key(path)
        if not _looks_like_vkey(stripped):
            return load_public_key(path)  # names the file and why it is no key
        text = stripped
    elif "+" not in value:
        return load_public_key(path)  # a missing key file: say so
    verifier = NoteVerifier.from_vkey(text)
    if verifier.key_type is not NoteKeyType.ED25519:
        raise CliError(f"verifier key {verifier.name!r} is a witness key, not a log key")
    if expected_origin is not None and verifier.name != expected_origin:
        raise CliError(
            f"verifier key is for {verifier.name[:64]!r}, not the log's origin {expected_origin!r}"
        )
    return verifier


_WITNESS_HELP = (
    "A witness to ask for a cosignature, as VKEY@URL (its verifier key, then its "
    "submission prefix); repeat for several. Default: $ECP_WITNESSES (comma-separated)."
)
_WITNESS_KEY_HELP = (
    "A trusted witness's verifier key (NAME+KEYID+BASE64, as `ecp witness key` prints "
    "it), inline or in a file; repeat for several."
)
_MIN_WITNESSES_HELP = "How many of the trusted witnesses must have cosigned (default: all given)."


def _witness_clients(specs: list[str] | None) -> list[WitnessClient]:
    from ecp.lineage.witness._client import parse_witness_spec

    if not specs:
        env = os.environ.get("ECP_WITNESSES", "")
        specs = [s for s in (x.strip() for x in env.split(",")) if s]
    return [parse_witness_spec(s) for s in specs]


def _witness_policy(keys: list[str] | None, minimum: int | None) -> WitnessPolicy | None:
    """The k-of-n policy given on the command line, or ``None`` when no witness is required."""
    from ecp.lineage.ledger._cosignature import WitnessPolicy

    vkeys: list[str] = []
    for k in keys or []:
        path = Path(k)
        try:
            is_file = "+" not in k or path.is_file()
        except (OSError, ValueError):
            is_file = False
        vkeys.append(_read(path, "witness key").decode().strip() if is_file else k)
    if not vkeys:
        if minimum:
            raise CliError("--min-witnesses needs the witnesses' keys (--witness-key)")
        return None
    return WitnessPolicy.from_vkeys(vkeys, minimum)


def _ledger_prover(db: str) -> ConsistencyProver:
    from ecp.lineage.ledger._ledger import Ledger

    def prove(old: int, new: int) -> list[bytes]:
        with Ledger.open(db, create=False) as ledger:
            return list(ledger.consistency_proof(old, new))

    return prove


def _tiles_prover(prefix: str) -> ConsistencyProver:
    from ecp.lineage.ledger._tiles import TileReader

    reader = TileReader(prefix)

    def prove(old: int, new: int) -> list[bytes]:
        _, served = reader.checkpoint()
        return list(reader.consistency_proof(old, new, served.size))

    return prove


def _prover(db: str | None, tiles: str | None) -> ConsistencyProver | None:
    if db and tiles:
        raise CliError("give --db or --tiles, not both")
    return _ledger_prover(db) if db else _tiles_prover(tiles) if tiles else None


_TILES_HELP = (
    "The log served as C2SP tlog-tiles (a directory or an http(s):// prefix), "
    "for consistency proofs."
)


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
    witness: Annotated[list[str] | None, typer.Option("--witness", help=_WITNESS_HELP)] = None,
) -> None:
    """Sign a checkpoint of the current tree (refused if inconsistent with the last one).

    With witnesses, each is asked to cosign it; the note printed carries their
    cosignatures. Witnesses that cannot be reached do not stop the checkpoint:
    it is then marked unwitnessed (said on stderr, exit code 0).
    """
    from ecp.lineage.ledger._ledger import Ledger

    signer = Ed25519FileSigner.from_file(_log_key_path(log_key))
    clients = _witness_clients(witness)
    with Ledger.open(_url(db), origin=origin, witnesses=clients) as ledger:
        signed = ledger.checkpoint(signer, origin)
        if signed.witnessed is False:
            records = ledger.witnessing(limit=len(clients))
            why = "; ".join(f"{r.witness}: {r.outcome} ({r.detail[:120]})" for r in records)
            typer.echo(f"warning: checkpoint is unwitnessed: {why}", err=True)
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
        str | None,
        typer.Option(
            "--log-key",
            help=_VERIFY_KEY_HELP
            + " A verifier key must be named for the stored checkpoints' origin."
            + " Default: <data dir>/keys/log.key.",
        ),
    ] = None,
    trust_store: Annotated[Path | None, typer.Option("--trust-store", help=_TRUST_HELP)] = None,
    deep: Annotated[
        bool,
        typer.Option(
            "--deep",
            help="Also recompute the stored tree root after every entry (about five times "
            "slower; by default it is compared at each checkpoint and the head, and after "
            "every entry whenever damage is found).",
        ),
    ] = False,
) -> None:
    """Recompute every hash, check every entry's signature and all checkpoints.

    Names the first bad index.
    """
    from ecp.lineage.ledger._ledger import Ledger
    from ecp.lineage.ledger._note import NoteVerifier

    key_arg = log_key if log_key is not None else str(_log_key_path(None))
    trust = _trust(trust_store)
    with Ledger.open(_url(db), create=False) as ledger:
        latest = ledger.latest_checkpoint()
        # The log signs under its origin: a key named otherwise verifies nothing here.
        expected = latest.checkpoint.origin if latest is not None else None
        key = _parse_log_key(key_arg, expected)
        public = key.public_key if isinstance(key, NoteVerifier) else key
        report = ledger.verify_all(public, trust=trust, deep=deep)
    typer.echo(
        f"ok: {report.size} entries signed by trusted keys, root {report.root_hash.hex()}, "
        f"{report.checkpoints} checkpoints verified"
    )


@app.command("verify-receipt")
@one_line_errors
def verify_receipt_cmd(
    receipt: Annotated[Path, typer.Argument(help="A receipt JSON file from `ecp ledger prove`.")],
    log_key: Annotated[str, typer.Option("--log-key", help=_VERIFY_KEY_HELP)],
    origin: Annotated[
        str | None,
        typer.Option(
            "--origin",
            help="The log the receipt must come from (default: a verifier key's name, "
            "else any log signed by the PEM key).",
        ),
    ] = None,
    min_size: Annotated[
        int, typer.Option("--min-size", min=0, help="Reject checkpoints older than this tree size.")
    ] = 0,
    witness_key: Annotated[
        list[str] | None, typer.Option("--witness-key", help=_WITNESS_KEY_HELP)
    ] = None,
    min_witnesses: Annotated[
        int | None, typer.Option("--min-witnesses", min=0, help=_MIN_WITNESSES_HELP)
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="Where the newest checkpoint seen per log is remembered (default: "
            "$ECP_CHECKPOINT_STATE, else ~/.config/ecp/checkpoints.json).",
        ),
    ] = None,
    remember: Annotated[
        bool,
        typer.Option(
            "--remember/--no-remember",
            help="Check the receipt's checkpoint against the newest one seen before, "
            "and remember the newer.",
        ),
    ] = True,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="The log's database, for a consistency proof when the receipt's "
            "checkpoint differs in size from the one remembered.",
        ),
    ] = None,
    tiles: Annotated[str | None, typer.Option("--tiles", help=_TILES_HELP)] = None,
) -> None:
    """Verify a receipt offline with the log's public key (no database needed).

    A verifier key names the log: its name must be --origin when given, and
    the receipt must come from the log of that name. With --witness-key, the
    checkpoint must carry cosignatures by --min-witnesses of them. The newest
    checkpoint verified is remembered (as Go's checksum-database client
    does): a receipt whose checkpoint does not extend it, or is not extended
    by it, is refused as a fork of the log.
    """
    from ecp.lineage.ledger._audit import CheckpointMemory, default_state_path
    from ecp.lineage.ledger._note import NoteVerifier
    from ecp.lineage.ledger._receipt import Receipt, verify_receipt

    key = _parse_log_key(log_key, origin)
    if isinstance(key, NoteVerifier):
        origin = key.name
    policy = _witness_policy(witness_key, min_witnesses)
    parsed = Receipt.from_json(_read(receipt, "receipt"))
    v = verify_receipt(parsed, key, origin=origin, min_tree_size=min_size)
    cosigned = policy.check(parsed.checkpoint_note) if policy is not None else []
    by = f", cosigned by {', '.join(c.name for c in cosigned)}" if cosigned else ""
    if remember:
        memory = CheckpointMemory(state or default_state_path())
        verifier = key if isinstance(key, NoteVerifier) else NoteVerifier.for_key(v.origin, key)
        before = memory.observe(
            f"{verifier.name}+{verifier.key_id:08x}",
            v.checkpoint,
            parsed.checkpoint_note,
            _prover(db, tiles),
        )
        if before is not None:
            typer.echo(
                f"consistent with the checkpoint at size {before.size} seen before "
                f"(remembered in {memory.path})",
                err=True,
            )
    typer.echo(f"ok: entry {v.log_index} is in {v.origin} at tree size {v.tree_size}{by}")


@app.command("audit")
@one_line_errors
def audit(
    checkpoint: Annotated[
        Path,
        typer.Option(
            "--checkpoint",
            help="A signed checkpoint kept from before (a note file, or a receipt JSON).",
        ),
    ],
    db: Annotated[str | None, typer.Option("--db", help=_DB_HELP)] = None,
    log_key: Annotated[
        str | None,
        typer.Option("--log-key", help=_VERIFY_KEY_HELP + " Default: <data dir>/keys/log.key."),
    ] = None,
    witness_key: Annotated[
        list[str] | None, typer.Option("--witness-key", help=_WITNESS_KEY_HELP)
    ] = None,
    min_witnesses: Annotated[
        int | None, typer.Option("--min-witnesses", min=0, help=_MIN_WITNESSES_HELP)
    ] = None,
    tiles: Annotated[
        str | None,
        typer.Option(
            "--tiles", help="Audit the log as served in C2SP tlog-tiles (directory or URL)."
        ),
    ] = None,
) -> None:
    """Prove the log's current checkpoint consistent with a checkpoint kept before.

    Both must be signed by the log's key; with --witness-key the current one
    must also be cosigned by --min-witnesses of them. A log rewritten since
    the saved checkpoint (an entry deleted or replaced, then re-signed) fails:
    `ecp ledger verify` cannot see that, since the rewritten log is
    self-consistent.
    """
    from ecp.lineage.ledger._audit import check_extends
    from ecp.lineage.ledger._checkpoint import open_checkpoint
    from ecp.lineage.ledger._ledger import Ledger
    from ecp.lineage.ledger._receipt import Receipt

    data = _read(checkpoint, "checkpoint")
    saved_note = (
        Receipt.from_json(data).checkpoint_note if data.lstrip().startswith(b"{") else data.decode()
    )
    key_arg = log_key if log_key is not None else str(_log_key_path(None))
    policy = _witness_policy(witness_key, min_witnesses)
    if tiles is not None:
        from ecp.lineage.ledger._tiles import TileReader

        if db is not None:
            raise CliError("give --db or --tiles, not both")
        reader = TileReader(tiles)
        latest_note, served = reader.checkpoint()
        key = _parse_log_key(key_arg, served.origin)
        saved, _ = open_checkpoint(saved_note, key, origin=served.origin)
        current, _ = open_checkpoint(latest_note, key, origin=served.origin)
        if policy is not None:
            policy.check(latest_note)
        check_extends(saved, current, lambda a, b: reader.consistency_proof(a, b, served.size))
    else:
        with Ledger.open(_url(db), create=False) as ledger:
            latest = ledger.latest_checkpoint()
            if latest is None:
                raise CliError("the log has no checkpoint to audit")
            key = _parse_log_key(key_arg, latest.checkpoint.origin)
            saved, _ = open_checkpoint(saved_note, key, origin=latest.checkpoint.origin)
            current, _ = open_checkpoint(latest.note, key, origin=latest.checkpoint.origin)
            if policy is not None:
                policy.check(latest.note)
            check_extends(saved, current, lambda a, b: ledger.consistency_proof(a, b))
    typer.echo(
        f"ok: {current.origin} at size {current.size} extends the saved checkpoint "
        f"at size {saved.size}"
    )


@app.command("tiles")
@one_line_errors
def tiles(
    out: Annotated[
        Path, typer.Option("--dir", help="Directory to write (serve it as the log's prefix).")
    ],
    db: Annotated[str | None, typer.Option("--db", help=_DB_HELP)] = None,
) -> None:
    """Write the log as C2SP tlog-tiles: checkpoint, hash tiles and entry bundles.

    Static files for any tile client or monitor (Go's sumdb/tlog reads them);
    run it after each checkpoint. Full tiles are written once.
    """
    from ecp.lineage.ledger._ledger import Ledger
    from ecp.lineage.ledger._tiles import write_tiles

    with Ledger.open(_url(db), create=False) as ledger:
        report = write_tiles(ledger, out)
    typer.echo(
        f"ok: size {report.size}, {report.tiles_written} tiles and "
        f"{report.bundles_written} entry bundles written to {out}"
    )


@app.command("key")
@one_line_errors
def show_key(
    log_key: Annotated[
        Path | None,
        typer.Option(
            "--log-key",
            help="The log's key (public or private PEM; default: the configured key "
            "directory's log.key).",
        ),
    ] = None,
    origin: Annotated[
        str | None,
        typer.Option(
            "--origin",
            help="The log's origin, its key name (default: $ECP_LOG_ORIGIN, else "
            f"{_DEFAULT_ORIGIN}).",
        ),
    ] = None,
) -> None:
    """Print the log's C2SP verifier key, ORIGIN+KEYID+BASE64.

    Give it to whoever verifies receipts or checkpoints (`--log-key` takes it);
    it holds the public key only.
    """
    from ecp._keyring import KeyFiles
    from ecp._settings import load_settings
    from ecp.lineage.ledger._note import NoteVerifier

    if log_key is None or origin is None:
        settings = load_settings()
        log_key = log_key or KeyFiles(settings.keys).log
        origin = origin or settings.log_origin
    typer.echo(NoteVerifier.for_key(origin, load_public_key(log_key)).vkey())


@app.command("checkpoints")
@one_line_errors
def checkpoints(
    db: Annotated[str | None, typer.Option("--db", help=_DB_HELP)] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="Show at most this many (newest first).")
    ] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON array, with each signed note.")
    ] = False,
) -> None:
    """List the stored signed checkpoints, newest first: id, size, root hash, time.

    With witnesses configured, each line also says who cosigned it, or that
    it is unwitnessed. Read as stored; `ecp ledger verify` checks their
    signatures and roots.
    """
    from ecp.lineage.ledger._ledger import Ledger

    with Ledger.open(_url(db), create=False) as ledger:
        rows = ledger.stored_checkpoints(limit)
        # What the witnesses answered, per checkpoint (newest answer first).
        answers: dict[int, dict[str, str]] = {}
        for rec in ledger.witnessing(limit=1000):
            answers.setdefault(rec.checkpoint_id, {}).setdefault(rec.witness, rec.outcome)
    if as_json:
        _emit(
            [
                {
                    "id": r.id,
                    "origin": r.checkpoint.origin,
                    "size": r.checkpoint.size,
                    "rootHash": base64.b64encode(r.checkpoint.root_hash).decode(),
                    "createdAt": r.created_at.isoformat(),
                    "note": r.note,
                    "witnessing": [
                        {"witness": w, "outcome": o} for w, o in answers.get(r.id, {}).items()
                    ],
                }
                for r in rows
            ]
        )
        return
    if not rows:
        typer.echo("no checkpoints yet; run `ecp ledger checkpoint`")
        return
    for r in rows:
        cp = r.checkpoint
        root = base64.b64encode(cp.root_hash).decode()
        got = answers.get(r.id, {})
        mark = ""
        if got:
            ok = sorted(w for w, o in got.items() if o == "cosigned")
            mark = f"  witnessed by {', '.join(ok)}" if ok else "  unwitnessed"
            if ok and len(ok) < len(got):
                mark += f" ({len(got) - len(ok)} of {len(got)} did not cosign)"
        typer.echo(f"#{r.id:<5} size {cp.size:<8} root {root}  {r.created_at.isoformat()}{mark}")
