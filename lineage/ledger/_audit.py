"""Comparing what a log handed out with what it says now.

:func:`check_extends` proves a newer checkpoint consistent with an older one
(RFC 6962 consistency proof, fetched from wherever the caller can get one).
:class:`CheckpointMemory` is a verifier's memory of the newest checkpoint it
saw per log, as Go's checksum-database client keeps one: each new checkpoint
is checked against it, and the newer of the two is remembered. A log whose
operator rewrote history (same size, another root; or a larger tree that does
not extend the old one) is refused with :class:`CheckpointForkError`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from ecp.lineage.ledger._checkpoint import Checkpoint
from ecp.lineage.ledger._merkle import verify_consistency
from ecp.lineage.ledger._note import parse_note
from ecp.lineage.ledger.errors import CheckpointError, CheckpointForkError, ProofError

__all__ = [
    "STATE_ENV",
    "CheckpointMemory",
    "ConsistencyProver",
    "check_extends",
    "default_state_path",
]

#: Overrides where the CLI remembers checkpoints.
STATE_ENV: Final = "ECP_CHECKPOINT_STATE"

#: ``prove(old_size, new_size)`` → consistency proof hashes (from a ledger or tiles).
ConsistencyProver = Callable[[int, int], Sequence[bytes]]


def check_extends(old: Checkpoint, new: Checkpoint, prove: ConsistencyProver | None) -> None:
    """Check that ``new`` extends ``old`` (same log, append-only).

    Raises:
        CheckpointForkError: another origin, a smaller tree, equal sizes with
            different roots, or a consistency proof that does not verify.
        CheckpointError: the sizes differ and no ``prove`` source was given.
        LineageError: the ``prove`` source could not give a proof.
    """
    if old.origin != new.origin:
        raise CheckpointForkError(f"checkpoints of two logs: {old.origin!r} and {new.origin!r}")
    if new.size < old.size:
        raise CheckpointForkError(
            f"log {new.origin!r} shrank: size {new.size} after size {old.size} was seen"
        )
    if new.size == old.size:
        if new.root_hash != old.root_hash:
            raise CheckpointForkError(
                f"log {new.origin!r} has two roots at size {new.size}: its history was rewritten"
            )
        return
    if old.size == 0:
        return  # the empty tree is a prefix of every tree
    if prove is None:
        raise CheckpointError(
            f"cannot check size {new.size} against the size {old.size} seen before without "
            "a consistency proof; give the log's database or tiles"
        )
    # A source that cannot answer (unreachable, too old) raises its own error:
    # that refuses too, but it is not evidence of a fork.
    proof = list(prove(old.size, new.size))
    try:
        verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
    except ProofError as exc:
        raise CheckpointForkError(
            f"log {new.origin!r} at size {new.size} does not extend the checkpoint at size "
            f"{old.size} seen before: its history was rewritten ({exc})"
        ) from exc


def default_state_path() -> Path:
    """``$ECP_CHECKPOINT_STATE``, else ``$XDG_CONFIG_HOME/ecp/checkpoints.json``."""
    env = os.environ.get(STATE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ecp" / "checkpoints.json"


class CheckpointMemory:
    """The newest checkpoint seen per log, in a small JSON file.

    A log is its origin and its key id (``log`` is ``origin+keyid``, the
    head of its verifier key): two logs that share an origin under different
    keys (tests, a key rotation the verifier chose) are remembered apart.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, str]:
        try:
            doc = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # Failing closed: a lost memory would silently accept a fork.
            raise CheckpointError(f"cannot read remembered checkpoints {self.path}: {exc}") from exc
        logs = doc.get("logs") if isinstance(doc, dict) else None
        if not isinstance(logs, dict) or not all(isinstance(v, str) for v in logs.values()):
            raise CheckpointError(f"{self.path} is not a remembered-checkpoints file")
        return {str(k): v for k, v in logs.items()}

    def latest(self, log: str) -> Checkpoint | None:
        """The newest checkpoint remembered for ``log``.

        Raises:
            CheckpointError: the file is unreadable or malformed.
        """
        note = self._load().get(log)
        return None if note is None else Checkpoint.parse(parse_note(note).text)

    def observe(
        self, log: str, cp: Checkpoint, note: str, prove: ConsistencyProver | None
    ) -> Checkpoint | None:
        """Check ``cp`` of ``log`` against the remembered one; remember the newer.

        Returns the checkpoint remembered before, or ``None`` on first sight.

        ``note`` must already be verified by the caller (log signature and any
        witness policy): only verified checkpoints are remembered.

        Raises:
            CheckpointForkError: ``cp`` and the remembered checkpoint are not
                one append-only history.
            CheckpointError: the sizes differ and no proof source was given,
                or the file cannot be read or written.
        """
        logs = self._load()
        known_note = logs.get(log)
        if known_note is None:
            logs[log] = note
            self._store(logs)
            return None
        known = Checkpoint.parse(parse_note(known_note).text)
        if cp.size >= known.size:
            check_extends(known, cp, prove)
            if cp.size > known.size:
                logs[log] = note
                self._store(logs)
        else:
            check_extends(cp, known, prove)
        return known

    def _store(self, logs: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"logs": logs}, indent=2, ensure_ascii=False) + "\n"
        # Atomic replace: a crash leaves the old file or the new one, never half.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".checkpoints-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
            os.replace(tmp, self.path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise CheckpointError(f"cannot write {self.path}: {exc}") from exc
