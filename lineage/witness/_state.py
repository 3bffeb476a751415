"""A witness's own storage: its key, the logs it watches, and the latest checkpoint of each.

One directory per witness: ``witness.key`` (Ed25519, PEM, mode 0600) and
``witness.db`` (SQLite). The database holds the witness's name, the
verifier key of every log it accepts, and per origin the size, root and note
of the latest checkpoint it cosigned. Updates compare-and-set the stored size
under SQLite's write lock (``BEGIN IMMEDIATE``), so two concurrent requests
cannot roll the state back, and a restarted witness starts from what it
cosigned last: it never goes backwards.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ecp.authority._keys import Ed25519FileSigner, generate_private_key, write_private_key
from ecp.lineage.ledger._cosignature import witness_verifier
from ecp.lineage.ledger._note import NoteKeyType, NoteVerifier
from ecp.lineage.ledger.errors import VerifierKeyError, WitnessError

__all__ = ["KEY_FILE", "STATE_FILE", "LogHead", "WitnessState"]

KEY_FILE: Final = "witness.key"
STATE_FILE: Final = "witness.db"
#: SQLite integers are signed 64-bit; no real log gets near this.
_MAX_SIZE: Final = (1 << 63) - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS witness_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS witness_log (origin TEXT PRIMARY KEY, vkey TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS witness_head (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class LogHead:
    """The latest checkpoint a witness cosigned for one log."""

    origin: str
    size: int
    root: bytes
    note: str
    updated_at: int


class WitnessState:
    """A witness directory: key, name, known logs and per-log heads."""

    def __init__(self, directory: Path) -> None:
        """Open an initialised witness directory.

        Raises:
            WitnessError: the directory holds no witness (run ``ecp witness init``).
            KeyFileError: the key cannot be read.
        """
        self.directory = directory
        db = directory / STATE_FILE
        if not db.is_file() or not (directory / KEY_FILE).is_file():
            raise WitnessError(f"{directory} holds no witness; run `ecp witness init` first")
        self._path = db
        con = sqlite3.connect(db)
        try:
            # Once per open, not per request: WAL is a property of the file.
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)
        finally:
            con.close()
        self.signer = Ed25519FileSigner.from_file(directory / KEY_FILE)
        with self._connect() as con:
            row = con.execute("SELECT value FROM witness_meta WHERE key = 'name'").fetchone()
        if row is None:
            raise WitnessError(f"{db} has no witness name")
        self.name: str = row[0]
        self.verifier: NoteVerifier = witness_verifier(self.name, self.signer.public_key)

    @classmethod
    def init(cls, directory: Path, name: str) -> WitnessState:
        """Create a witness in ``directory``: a new key and an empty state.

        Raises:
            WitnessError: a witness already lives there.
            VerifierKeyError: ``name`` is not a valid key name.
        """
        witness_verifier(name, generate_private_key().public_key())  # validates the name
        if (directory / KEY_FILE).exists() or (directory / STATE_FILE).exists():
            raise WitnessError(f"{directory} already holds a witness; refusing to replace it")
        directory.mkdir(parents=True, exist_ok=True)
        write_private_key(generate_private_key(), directory / KEY_FILE)
        con = sqlite3.connect(directory / STATE_FILE)
        try:
            con.executescript(_SCHEMA)
            con.execute("INSERT INTO witness_meta (key, value) VALUES ('name', ?)", (name,))
            con.commit()
        finally:
            con.close()
        return cls(directory)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE below).
        con = sqlite3.connect(self._path, timeout=30.0, isolation_level=None)
        try:
            con.execute("PRAGMA synchronous=FULL")  # a cosigned head survives a power cut
            yield con
        finally:
            con.close()

    # --- logs -----------------------------------------------------------------

    def add_log(self, vkey: str) -> NoteVerifier:
        """Accept checkpoints of the log with this Ed25519 verifier key (its name is the origin).

        Raises:
            VerifierKeyError: malformed, or not a log (Ed25519) key.
        """
        v = NoteVerifier.from_vkey(vkey)
        if v.key_type is not NoteKeyType.ED25519:
            raise VerifierKeyError(f"{v.name!r} is not an Ed25519 log key")
        with self._connect() as con:
            con.execute(
                "INSERT INTO witness_log (origin, vkey) VALUES (?, ?) "
                "ON CONFLICT (origin) DO UPDATE SET vkey = excluded.vkey",
                (v.name, v.vkey()),
            )
        return v

    def log_key(self, origin: str) -> NoteVerifier | None:
        """The verifier of log ``origin``, if the witness accepts it."""
        with self._connect() as con:
            row = con.execute("SELECT vkey FROM witness_log WHERE origin = ?", (origin,)).fetchone()
        return None if row is None else NoteVerifier.from_vkey(row[0])

    def logs(self) -> list[str]:
        """Origins of the logs this witness accepts."""
        with self._connect() as con:
            return [r[0] for r in con.execute("SELECT origin FROM witness_log ORDER BY origin")]

    # --- heads ----------------------------------------------------------------

    def head(self, origin: str) -> LogHead | None:
        """The latest cosigned checkpoint of ``origin``, if any."""
        with self._connect() as con:
            return _head(con, origin)

    def heads(self) -> list[LogHead]:
        """The latest cosigned checkpoint of every log."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT origin, size, root, note, updated_at FROM witness_head ORDER BY origin"
            ).fetchall()
        return [LogHead(r[0], int(r[1]), bytes(r[2]), r[3], int(r[4])) for r in rows]

    @contextmanager
    def update(self, origin: str) -> Iterator[tuple[LogHead | None, _Commit]]:
        """Hold the write lock, read ``origin``'s head, and let the caller store a new one.

        The check of the old size and the write of the new head happen in one
        transaction, as C2SP tlog-witness requires (else two requests could
        roll the state back).
        """
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                commit = _Commit(con, origin)
                yield _head(con, origin), commit
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise


class _Commit:
    """Writes the new head inside :meth:`WitnessState.update`."""

    def __init__(self, con: sqlite3.Connection, origin: str) -> None:
        self._con = con
        self._origin = origin

    def __call__(self, size: int, root: bytes, note: str) -> None:
        if size > _MAX_SIZE:
            raise WitnessError(f"tree size {size} is beyond what this witness stores")
        self._con.execute(
            "INSERT INTO witness_head (origin, size, root, note, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE SET "
            "size = excluded.size, root = excluded.root, note = excluded.note, "
            "updated_at = excluded.updated_at",
            (self._origin, size, root, note, int(time.time())),
        )


def _head(con: sqlite3.Connection, origin: str) -> LogHead | None:
    row = con.execute(
        "SELECT origin, size, root, note, updated_at FROM witness_head WHERE origin = ?",
        (origin,),
    ).fetchone()
    return None if row is None else LogHead(row[0], int(row[1]), bytes(row[2]), row[3], int(row[4]))
