"""The evidence ledger: an append-only RFC 6962 log with signed checkpoints.

Entries are evidence envelopes (see :mod:`ecp.lineage.ledger._evidence`); the leaf is the
envelope's canonical JSON. Appends are atomic, idempotent (one entry per
evidence id) and serialised across processes by a lock on the log head (see
:mod:`ecp.lineage.ledger._store`), taken once per batch: the concurrent
appends of one process are sequenced together (see
:mod:`ecp.lineage.ledger._batch`). Proofs read O(log n) stored subtree hashes. A new
checkpoint is signed only after proving it consistent with the previous one.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from ecp.authority._dsse import Envelope
from ecp.authority._keys import Signer
from ecp.authority._truststore import TrustStore
from ecp.lineage.ledger._batch import GroupCommit
from ecp.lineage.ledger._checkpoint import Checkpoint, SignedCheckpoint, open_checkpoint
from ecp.lineage.ledger._cosignature import Cosignature, add_cosignatures, cosignatures
from ecp.lineage.ledger._evidence import EvidenceId, parse_evidence, verify_evidence_signature
from ecp.lineage.ledger._merkle import (
    EMPTY_ROOT,
    CompactRange,
    Hash,
    NodeId,
    consistency_proof,
    consistency_proof_nodes,
    fold_plan,
    inclusion_proof_nodes,
    leaf_hash,
    range_nodes,
    root_from_lookup,
    verify_consistency,
)
from ecp.lineage.ledger._receipt import Receipt, entry_leaf
from ecp.lineage.ledger._scan import ScanMismatch, scan_entries
from ecp.lineage.ledger._store import (
    CHECKPOINT,
    ENTRY,
    KEY_END,
    NODE,
    WITNESSING,
    AppendPlan,
    EntryValues,
    LedgerDatabase,
    StoredHead,
    node_key,
)
from ecp.lineage.ledger.errors import (
    CheckpointOriginError,
    EntryNotFoundError,
    EntryRefusedError,
    EvidenceError,
    EvidenceSignatureError,
    InconsistentCheckpointError,
    LedgerUnavailableError,
    LineageError,
    NoCheckpointError,
    ProofError,
    ProofSizeError,
    TamperError,
    WitnessConflictError,
    WitnessError,
)

if TYPE_CHECKING:
    from ecp.lineage.witness._client import WitnessClient

__all__ = [
    "ACCEPT_UNVERIFIED",
    "DEFAULT_ORIGIN",
    "AppendResult",
    "Ledger",
    "StoredCheckpoint",
    "StoredEntry",
    "TreeHead",
    "VerifyReport",
    "WitnessRecord",
]

DEFAULT_ORIGIN: Final = "ecp.local/ledger"
_VERIFY_CHUNK = 4096


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where an envelope sits in the log; ``created`` is false for a repeat."""

    index: int
    leaf_hash: Hash
    evidence_id: EvidenceId
    created: bool
    #: The checkpoint issued with this append (``checkpoint_every``), if any.
    checkpoint: SignedCheckpoint | None = None


@dataclass(frozen=True, slots=True)
class TreeHead:
    """Size and root of the log as stored."""

    size: int
    root_hash: Hash


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """An entry as stored."""

    index: int
    evidence_id: EvidenceId
    leaf_hash: Hash
    envelope: Envelope
    leaf: bytes
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A checkpoint as stored: its row id and issue time beside the signed note."""

    id: int
    checkpoint: Checkpoint
    note: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class WitnessRecord:
    """What one witness answered when the log asked it to cosign a checkpoint."""

    checkpoint_id: int
    witness: str
    size: int
    #: ``cosigned``, ``unreachable`` or ``refused``.
    outcome: str
    detail: str
    at: datetime


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What :meth:`Ledger.verify_all` checked."""

    size: int
    root_hash: Hash
    checkpoints: int


@dataclass(frozen=True, slots=True)
class _Prepared:
    evidence_id: EvidenceId
    leaf: bytes
    leaf_hash: Hash
    activity: tuple[str, str, str, str]


class _AcceptUnverified:
    """Type of :data:`ACCEPT_UNVERIFIED`."""

    def __repr__(self) -> str:
        return "ACCEPT_UNVERIFIED"


#: Pass as ``trust`` to append evidence without checking who signed it (tests
#: of the tree itself, benchmarks). Nothing in ECP's runtime does.
ACCEPT_UNVERIFIED: Final = _AcceptUnverified()


class Ledger:
    """An evidence ledger in one SQLite or PostgreSQL database.

    Appends are refused unless the ledger was opened with the trust store
    that says which keys may sign which evidence: without one, nobody can
    tell forged evidence from real, so nothing is accepted.
    """

    def __init__(
        self,
        db: LedgerDatabase,
        *,
        trust: TrustStore | _AcceptUnverified | None = None,
        checkpoint_signer: Signer | None = None,
        origin: str = DEFAULT_ORIGIN,
        checkpoint_every: int = 0,
        witnesses: Sequence[WitnessClient] = (),
    ) -> None:
        self._db = db
        self._trust = trust
        self._signer = checkpoint_signer
        self._origin = origin
        self._every = checkpoint_every
        self._witnesses = tuple(witnesses)
        # Concurrent appends of this process are sequenced together (see _batch).
        # A batch the database refuses is split until only the request whose
        # values it refuses fails (one caller's bad entry costs no other its own).
        self._group: GroupCommit[_Prepared, AppendResult] = GroupCommit(
            self._append_batch, isolate=lambda exc: isinstance(exc, EntryRefusedError)
        )

    @classmethod
    def open(
        cls,
        url: str,
        *,
        create: bool = True,
        trust: TrustStore | _AcceptUnverified | None = None,
        checkpoint_signer: Signer | None = None,
        origin: str = DEFAULT_ORIGIN,
        checkpoint_every: int = 0,
        witnesses: Sequence[WitnessClient] = (),
    ) -> Ledger:
        """Open (and by default create) the ledger at ``url``.

        Args:
            url: ``sqlite:///path`` or ``postgresql+psycopg://user@host:port/db``.
            create: create the schema (and SQLite file) if missing.
            trust: which keys may sign which evidence; appends need a valid
                signature by one of them. ``None`` (read-only use) refuses
                every append; :data:`ACCEPT_UNVERIFIED` accepts any.
            checkpoint_signer: the log key, for checkpoints issued after appends.
            origin: the log's origin line (and checkpoint key name).
            checkpoint_every: with a signer, issue a checkpoint whenever an
                append makes the size a multiple of this (0: never).
            witnesses: witnesses asked to cosign each new checkpoint (C2SP
                tlog-witness); when they cannot be reached the checkpoint is
                still issued, marked unwitnessed.

        Raises:
            LedgerUnavailableError: the database cannot be reached (or does not
                exist and ``create`` is false).
        """
        db = LedgerDatabase.open(url, create=create)
        return cls(
            db,
            trust=trust,
            checkpoint_signer=checkpoint_signer,
            origin=origin,
            checkpoint_every=checkpoint_every,
            witnesses=witnesses,
        )

    @property
    def database(self) -> LedgerDatabase:
        """The storage handle (engine, dialect)."""
        return self._db

    @property
    def origin(self) -> str:
        """The log's origin."""
        return self._origin

    def close(self) -> None:
        """Release database connections."""
        self._db.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- appending ------------------------------------------------------------

    def _prepare(self, envelope: Envelope | bytes | str) -> _Prepared:
        evidence = parse_evidence(envelope)
        if self._trust is None:
            raise EvidenceSignatureError(
                "this ledger was opened without a trust store; it accepts no evidence "
                "(open it with the deployment's trust store)"
            )
        if isinstance(self._trust, TrustStore):
            verify_evidence_signature(evidence, self._trust, datetime.now(UTC))
        leaf = _leaf_bytes(evidence.envelope)
        a = evidence.predicate.activity
        ident = (a.namespace, a.workflow_id, a.run_id, a.activity_id)
        return _Prepared(evidence.evidence_id, leaf, leaf_hash(leaf), ident)

    def append(self, envelope: Envelope | bytes | str) -> AppendResult:
        """Append one evidence envelope (idempotent by evidence id).

        Raises:
            MalformedEvidenceError: the envelope is not valid evidence.
            NonCanonicalEvidenceError: the statement is not canonical JSON.
            EvidenceSignatureError: no trust store, or no trusted key of a role
                allowed for this evidence signed the envelope.
            InconsistentCheckpointError: an automatic checkpoint was refused
                (nothing is appended then).
            EntryRefusedError: the database refused to store this entry's
                values (final; appends batched with it are written without it).
            LedgerUnavailableError: the database is unreachable; nothing was written.
        """
        return self.append_many([envelope])[0]

    def append_many(self, envelopes: Sequence[Envelope | bytes | str]) -> list[AppendResult]:
        """Append several envelopes in one transaction, in order.

        All are validated before anything is written; repeats (within the
        batch or of stored entries) map to the existing entry. The
        transaction may also carry the appends of other threads calling
        this ledger at the same time (see :mod:`ecp.lineage.ledger._batch`);
        it returns once that transaction has committed.

        Raises:
            MalformedEvidenceError, NonCanonicalEvidenceError,
            EvidenceSignatureError, InconsistentCheckpointError,
            EntryRefusedError, LedgerUnavailableError: as for :meth:`append`;
                nothing of this call is written (one refused entry refuses the call).
        """
        prepared = [self._prepare(e) for e in envelopes]
        if not prepared:
            return []
        return self._group.submit(prepared)

    def _append_batch(self, requests: list[Sequence[_Prepared]]) -> list[list[AppendResult]]:
        """Sequence the queued requests of concurrent callers in one transaction.

        Each request's entries stay consecutive and in order; a checkpoint
        issued by the batch covers every request, so each request's last
        result carries it.
        """
        prepared = [p for req in requests for p in req]
        now = datetime.now(UTC)
        results: list[AppendResult] = []

        def plan(head: StoredHead, stored: Mapping[str, tuple[int, bytes]]) -> AppendPlan | None:
            # Runs under the head lock: sequence numbers and repeats are decided here.
            results.clear()
            existing = {k: (seq, Hash(lh)) for k, (seq, lh) in stored.items()}
            border = CompactRange.from_bytes(head.size, head.border)
            entries: list[EntryValues] = []
            nodes: list[tuple[int, bytes]] = []
            for p in prepared:
                if p.evidence_id in existing:
                    seq, lh = existing[p.evidence_id]
                    results.append(AppendResult(seq, lh, p.evidence_id, False))
                    continue
                seq = border.size
                for n in border.push(p.leaf_hash):
                    nodes.append((node_key(n.level, n.index), n.hash))
                entries.append(
                    (seq, p.evidence_id, p.leaf_hash, border.root(), p.leaf, now, *p.activity)
                )
                existing[p.evidence_id] = (seq, p.leaf_hash)
                results.append(AppendResult(seq, p.leaf_hash, p.evidence_id, True))
            if not entries:
                return None
            new_head = StoredHead(border.size, border.root(), border.to_bytes())
            after = None
            signer = self._signer
            if (
                signer is not None
                and self._every > 0
                and border.size // self._every > head.size // self._every
            ):

                def after(conn: Connection) -> None:
                    cp, cp_id = self._checkpoint_in(
                        conn, new_head.size, Hash(new_head.root_hash), signer, self._origin
                    )
                    issued.append(cp_id)
                    results[-1] = _with_checkpoint(results[-1], cp)

            return AppendPlan(entries, nodes, new_head, after)

        issued: list[int] = []
        self._db.append([p.evidence_id for p in prepared], plan)
        last = results[-1].checkpoint if results else None
        if issued and last is not None and self._witnesses:
            # Asked after the commit: no witness round trip holds the log's lock.
            last = self._witness(issued[-1], last)
        out: list[list[AppendResult]] = []
        start = 0
        for req in requests:
            mine = results[start : start + len(req)]
            start += len(req)
            if last is not None:
                mine[-1] = _with_checkpoint(mine[-1], last)
            out.append(mine)
        return out

    # --- reading --------------------------------------------------------------

    def head(self) -> TreeHead:
        """The current size and root.

        Raises:
            LedgerUnavailableError: the database is unreachable.
        """
        rows = self._db.query("SELECT size, root_hash FROM ledger_head WHERE id = 1")
        if not rows:
            raise LedgerUnavailableError(f"no ledger head in database {self._db.display_url}")
        return TreeHead(int(rows[0][0]), Hash(bytes(rows[0][1])))

    def _size_now(self) -> int:
        return self._db.fetch_tree((), ()).size

    def entry(self, index: int) -> StoredEntry:
        """The stored entry at ``index``.

        Raises:
            EntryNotFoundError: no such entry.
            LedgerUnavailableError: the database is unreachable.
        """
        db = self._db
        # A BIGINT key cannot hold it: not in the log (the drivers would
        # raise their own overflow errors instead).
        rows = (
            db.query(
                "SELECT evidence_id, leaf_hash, envelope, recorded_at FROM ledger_entry "  # noqa: S608
                f"WHERE seq = {db.mark}",
                (index,),
            )
            if 0 <= index < KEY_END
            else []
        )
        if not rows:
            raise EntryNotFoundError(f"no entry at index {index}")
        evidence_id, lh, envelope, recorded_at = rows[0]
        leaf = bytes(envelope)
        return StoredEntry(
            index,
            EvidenceId(evidence_id),
            Hash(bytes(lh)),
            Envelope.from_json(leaf),
            leaf,
            db.time_from_db(recorded_at),
        )

    def find(self, evidence_id: str) -> int | None:
        """The index of the entry with ``evidence_id``, if recorded.

        Raises:
            LedgerUnavailableError: the database is unreachable.
        """
        with self._db.read() as conn:
            row = conn.execute(
                select(ENTRY.c.seq).where(ENTRY.c.evidence_id == evidence_id)
            ).first()
        return None if row is None else int(row.seq)

    def find_activity(
        self, namespace: str, workflow_id: str, run_id: str | None, activity_id: str
    ) -> int | None:
        """The newest entry recorded for this activity execution, if any.

        ``run_id=None`` matches any run of the workflow id.

        Raises:
            LedgerUnavailableError: the database is unreachable.
        """
        # One statement through the bare driver, as entry() reads (the prove
        # step asks this once per governed action): SQLAlchemy's statement,
        # connection and transaction layers cost several times the query.
        db, m = self._db, self._db.mark
        sql = (
            "SELECT MAX(seq) FROM ledger_entry "  # noqa: S608 - placeholders only
            f"WHERE namespace = {m} AND workflow_id = {m} AND activity_id = {m}"
        )
        params: tuple[str, ...] = (namespace, workflow_id, activity_id)
        if run_id is not None:
            sql += f" AND run_id = {m}"
            params += (run_id,)
        rows = db.query(sql, params)
        found = rows[0][0] if rows else None
        return None if found is None else int(found)

    def root_at(self, size: int) -> Hash:
        """Root of the first ``size`` entries, from stored subtrees.

        Raises:
            EntryNotFoundError: ``size`` is beyond the log.
            LedgerUnavailableError: the database is unreachable.
        """
        if size < 0:
            raise EntryNotFoundError(f"tree size {size} is beyond the log")
        if size == 0:
            self._fetch(0, [])
            return EMPTY_ROOT
        return fold_plan([range_nodes(0, size)], self._fetch(size, range_nodes(0, size)))[0]

    def _check_size(self, conn: Connection, size: int) -> int:
        current = self._db.read_head(conn).size
        if not 0 <= size <= current:
            raise EntryNotFoundError(f"tree size {size} is beyond the log (size {current})")
        return current

    def _fetch(self, size: int, ids: Sequence[NodeId]) -> dict[NodeId, bytes]:
        """The stored hashes of ``ids``, after checking the log holds ``size`` entries.

        Nodes of a tree of ``size`` never change once written (append-only),
        so one statement reads both the head and the hashes, with no
        transaction around it: on PostgreSQL a proof is one round trip.
        """
        leaves = [ix for lv, ix in ids if lv == 0]
        inner = {node_key(lv, ix): (lv, ix) for lv, ix in ids if lv > 0}
        got = self._db.fetch_tree(leaves, list(inner))
        if not 0 <= size <= got.size:
            raise EntryNotFoundError(f"tree size {size} is beyond the log (size {got.size})")
        out: dict[NodeId, bytes] = {(0, ix): _blob_or_tamper(h, ix) for ix, h in got.leaves.items()}
        for key, h in got.nodes.items():
            lv, ix = inner[key]
            out[(lv, ix)] = _blob_or_tamper(h, ix << lv)
        missing = [i for i in ids if i not in out]
        if missing:
            raise TamperError(
                missing[0][1] << missing[0][0],
                f"stored subtree (level {missing[0][0]}, index {missing[0][1]}) is missing",
            )
        return out

    def tree_hashes(self, size: int, ids: Sequence[NodeId]) -> dict[NodeId, bytes]:
        """Stored hashes of perfect subtrees ``(level, index)`` within the first ``size`` entries.

        For serving tiles: a level-``l`` tile hash is the subtree at level ``8·l``.

        Raises:
            EntryNotFoundError: ``size`` is beyond the log, or a subtree is not
                within it.
            TamperError: a stored hash is missing.
            LedgerUnavailableError: the database is unreachable.
        """
        for lv, ix in ids:
            if lv < 0 or ix < 0 or (ix + 1) << lv > size:
                raise EntryNotFoundError(f"subtree ({lv}, {ix}) is not within tree size {size}")
        return self._fetch(size, ids)

    def leaves(self, start: int, stop: int) -> list[bytes]:
        """The stored leaf bytes of entries ``start`` to ``stop - 1``, in order.

        Raises:
            EntryNotFoundError: an entry in the range is missing.
            LedgerUnavailableError: the database is unreachable.
        """
        if not (0 <= start <= stop <= KEY_END):
            # Beyond what a BIGINT key holds, or a negative start.
            raise EntryNotFoundError(f"entries {start} to {stop - 1} are not all in the log")
        with self._db.read() as conn:
            rows = conn.execute(
                select(ENTRY.c.seq, ENTRY.c.envelope)
                .where(ENTRY.c.seq >= start, ENTRY.c.seq < stop)
                .order_by(ENTRY.c.seq)
            ).all()
        if [int(r.seq) for r in rows] != list(range(start, stop)):
            raise EntryNotFoundError(f"entries {start} to {stop - 1} are not all in the log")
        return [bytes(r.envelope) for r in rows]

    def _proof(self, size: int | None, planner: Callable[[int], list[list[NodeId]]]) -> list[Hash]:
        current = self._size_now() if size is None else size
        try:
            plan = planner(current)
        except ProofSizeError:
            # A size outside the log is reported first, as it was when the
            # head was read before planning.
            if size is not None:
                now = self._size_now()
                if not 0 <= size <= now:
                    raise EntryNotFoundError(
                        f"tree size {size} is beyond the log (size {now})"
                    ) from None
            raise
        wanted = sorted({nid for ids in plan for nid in ids})
        return fold_plan(plan, self._fetch(current, wanted))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[Hash]:
        """Inclusion proof of entry ``index`` in the tree of ``size`` (default: current).

        Raises:
            EntryNotFoundError: ``size`` is beyond the log.
            ProofSizeError: ``index`` is not below ``size``.
            LedgerUnavailableError: the database is unreachable.
        """
        return self._proof(size, lambda n: inclusion_proof_nodes(index, n))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[Hash]:
        """Consistency proof from ``old_size`` to ``new_size`` (default: current).

        Raises:
            EntryNotFoundError: ``new_size`` is beyond the log.
            ProofSizeError: ``old_size`` is 0 or larger than ``new_size``.
            LedgerUnavailableError: the database is unreachable.
        """
        return self._proof(new_size, lambda n: consistency_proof_nodes(old_size, n))

    # --- checkpoints ----------------------------------------------------------

    def checkpoint(self, signer: Signer, origin: str | None = None) -> SignedCheckpoint:
        """Sign a checkpoint of the current tree, if consistent with the last one.

        Returns the previous checkpoint unchanged when the tree has not grown.
        With witnesses configured, each one that has not cosigned it yet is
        asked (after the commit, in parallel); their cosignatures are added
        to the stored note. A witness that cannot be reached or refuses does
        not stop the checkpoint: it is returned with ``witnessed`` false, and
        the next call asks again.

        Raises:
            CheckpointOriginError: ``origin`` differs from the stored checkpoints'.
            InconsistentCheckpointError: the stored tree does not extend the
                previous checkpoint (the log was rewritten); nothing is signed.
            LedgerUnavailableError: the database is unreachable.
        """
        with self._db.write() as (conn, head):
            signed, cp_id = self._checkpoint_in(
                conn, head.size, Hash(head.root_hash), signer, origin or self._origin
            )
        return self._witness(cp_id, signed) if self._witnesses else signed

    def _checkpoint_in(
        self, conn: Connection, size: int, root: Hash, signer: Signer, origin: str
    ) -> tuple[SignedCheckpoint, int]:
        lookup = _Lookup(conn)
        if size and root_from_lookup(size, lookup) != root:
            raise InconsistentCheckpointError(
                f"stored subtrees give another root at size {size} than the log head"
            )
        prev_row = conn.execute(
            select(CHECKPOINT).order_by(CHECKPOINT.c.id.desc()).limit(1)
        ).first()
        if prev_row is not None:
            prev = Checkpoint.parse(_note_text(prev_row.note))
            if prev.origin != origin:
                raise CheckpointOriginError(
                    f"log origin is {prev.origin!r}; refusing to sign as {origin!r}"
                )
            if prev.size > size:
                raise InconsistentCheckpointError(
                    f"log shrank from size {prev.size} to {size}; refusing to sign"
                )
            if prev.size > 0:
                try:
                    proof = consistency_proof(prev.size, size, lookup)
                    verify_consistency(prev.size, size, prev.root_hash, root, proof)
                except ProofError as exc:
                    raise InconsistentCheckpointError(
                        f"tree of size {size} is not consistent with the checkpoint at "
                        f"size {prev.size}: {exc}"
                    ) from exc
            if prev.size == size:
                return SignedCheckpoint(prev, prev_row.note), int(prev_row.id)
        signed = Checkpoint(origin, size, root).sign(signer)
        new_id = conn.execute(
            insert(CHECKPOINT)
            .values(size=size, origin=origin, note=signed.note, created_at=datetime.now(UTC))
            .returning(CHECKPOINT.c.id)
        ).scalar_one()
        return signed, int(new_id)

    # --- witnessing -----------------------------------------------------------

    @property
    def witnesses(self) -> tuple[WitnessClient, ...]:
        """The witnesses this ledger asks to cosign its checkpoints."""
        return self._witnesses

    def _witness(self, cp_id: int, signed: SignedCheckpoint) -> SignedCheckpoint:
        """Ask every witness that has not cosigned ``signed`` yet; store what they answer."""
        have = {c.name for c in cosignatures(signed.note, [w.verifier for w in self._witnesses])}
        missing = [w for w in self._witnesses if w.name not in have]
        if missing:
            last = self._last_cosigned_sizes()
            size = signed.checkpoint.size
            if len(missing) == 1:
                answers = [self._ask(missing[0], last.get(missing[0].name, 0), signed)]
            else:
                with ThreadPoolExecutor(max_workers=len(missing)) as pool:
                    answers = list(
                        pool.map(lambda w: self._ask(w, last.get(w.name, 0), signed), missing)
                    )
            now = datetime.now(UTC)
            got = [a for a in answers if isinstance(a, Cosignature)]
            with self._db.write() as (conn, _head):
                for w, a in zip(missing, answers, strict=True):
                    outcome, detail = ("cosigned", a.line()) if isinstance(a, Cosignature) else a
                    conn.execute(
                        insert(WITNESSING).values(
                            checkpoint_id=cp_id,
                            witness=w.name,
                            size=size,
                            outcome=outcome,
                            detail=detail[:2000],
                            at=now,
                        )
                    )
                if got:
                    note = conn.execute(
                        select(CHECKPOINT.c.note).where(CHECKPOINT.c.id == cp_id)
                    ).scalar_one()
                    note = add_cosignatures(note, [c.signature for c in got])
                    conn.execute(
                        update(CHECKPOINT).where(CHECKPOINT.c.id == cp_id).values(note=note)
                    )
                    signed = SignedCheckpoint(signed.checkpoint, note)
            have |= {c.name for c in got}
        return replace(signed, witnessed=len(have) == len(self._witnesses))

    def _ask(
        self, witness: WitnessClient, old: int, signed: SignedCheckpoint
    ) -> Cosignature | tuple[str, str]:
        """One witness's cosignature, or ``(outcome, detail)`` of why there is none."""
        size = signed.checkpoint.size
        for _ in range(2):
            try:
                if old > size:
                    return "refused", f"witness is at size {old}, beyond this checkpoint"
                proof = self.consistency_proof(old, size) if 0 < old < size else []
                return witness.add_checkpoint(old, proof, signed.note)
            except WitnessConflictError as exc:
                # The witness says where it is; one retry from there (C2SP
                # lets clients learn the size this way).
                if exc.size is None or exc.size == old:
                    return "refused", str(exc)
                old = exc.size
            except WitnessError as exc:
                return ("unreachable" if exc.retryable else "refused"), str(exc)
            except LineageError as exc:
                return "refused", f"no consistency proof from size {old}: {exc}"
        return "refused", f"witness moved again (now at size {old})"

    def _last_cosigned_sizes(self) -> dict[str, int]:
        with self._db.read() as conn:
            rows = conn.execute(
                select(WITNESSING.c.witness, func.max(WITNESSING.c.size))
                .where(WITNESSING.c.outcome == "cosigned")
                .group_by(WITNESSING.c.witness)
            ).all()
        return {str(r[0]): int(r[1]) for r in rows}

    def witnessing(self, checkpoint_id: int | None = None, limit: int = 100) -> list[WitnessRecord]:
        """What the witnesses answered, newest first (for one checkpoint, or all).

        Raises:
            LedgerUnavailableError: the database is unreachable.
        """
        q = select(WITNESSING).order_by(WITNESSING.c.id.desc()).limit(max(limit, 0))
        if checkpoint_id is not None:
            q = q.where(WITNESSING.c.checkpoint_id == checkpoint_id)
        with self._db.read() as conn:
            rows = conn.execute(q).all()
        return [
            WitnessRecord(
                int(r.checkpoint_id),
                r.witness,
                int(r.size),
                r.outcome,
                r.detail,
                r.at if r.at.tzinfo else r.at.replace(tzinfo=UTC),
            )
            for r in rows
        ]

    def checkpoints(self) -> list[SignedCheckpoint]:
        """Every stored checkpoint, oldest first (signatures not re-checked).

        Raises:
            LedgerUnavailableError: the database is unreachable.
        """
        with self._db.read() as conn:
            rows = conn.execute(select(CHECKPOINT.c.note).order_by(CHECKPOINT.c.id)).all()
        return [SignedCheckpoint(Checkpoint.parse(_note_text(r.note)), r.note) for r in rows]

    def stored_checkpoints(self, limit: int | None = None) -> list[StoredCheckpoint]:
        """The stored checkpoints, newest first, at most ``limit`` (read-only).

        Signatures are not re-checked (``verify_all`` does that).

        Raises:
            LedgerUnavailableError: the database is unreachable.
        """
        query = select(CHECKPOINT.c.id, CHECKPOINT.c.note, CHECKPOINT.c.created_at).order_by(
            CHECKPOINT.c.id.desc()
        )
        if limit is not None:
            query = query.limit(max(limit, 0))
        with self._db.read() as conn:
            rows = conn.execute(query).all()
        return [
            StoredCheckpoint(
                int(r.id),
                Checkpoint.parse(_note_text(r.note)),
                r.note,
                # SQLite keeps no zone; the time was written in UTC.
                r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=UTC),
            )
            for r in rows
        ]

    def latest_checkpoint(self, *, confirmed: bool = False) -> SignedCheckpoint | None:
        """The newest stored checkpoint, if any.

        With ``confirmed``, on PostgreSQL only once its synchronous standby
        has it (what receipts and tiles are built from, so that a failover
        cannot take away a tree the log key has vouched for to a client; see
        :meth:`LedgerDatabase.newest_checkpoint_confirmed`). Without it, a
        plain read (which also works on a read-only replica), which may see
        a checkpoint the server only committed locally.

        Raises:
            LedgerUnavailableError: the database is unreachable; with
                ``confirmed``, also when the standby never confirmed it.
        """
        if confirmed:
            rows = self._db.newest_checkpoint_confirmed()
            return (
                SignedCheckpoint(Checkpoint.parse(_note_text(rows[0][0])), rows[0][0])
                if rows
                else None
            )
        cps = self._latest(1)
        return cps[0] if cps else None

    def _latest(self, n: int) -> list[SignedCheckpoint]:
        # One statement (a receipt, a tile, a poll for the newest checkpoint).
        rows = self._db.query(
            f"SELECT note FROM ledger_checkpoint ORDER BY id DESC LIMIT {int(n)}"  # noqa: S608
        )
        return [SignedCheckpoint(Checkpoint.parse(_note_text(note)), note) for (note,) in rows]

    # --- receipts -------------------------------------------------------------

    def receipt(self, index: int, *, signer: Signer | None = None) -> Receipt:
        """A receipt for entry ``index`` against the newest checkpoint.

        With ``signer``, a fresh checkpoint is issued first if none covers the entry.

        Raises:
            EntryNotFoundError: no entry at ``index``.
            NoCheckpointError: no checkpoint covers the entry and no signer was given.
            InconsistentCheckpointError: a fresh checkpoint was refused.
            LedgerUnavailableError: the database is unreachable, or (PostgreSQL)
                its synchronous standby never confirmed the checkpoint.
        """
        stored = self.entry(index)
        # Confirmed: the checkpoint, and (WAL order) the entry it covers,
        # are on the synchronous standby; else LedgerUnavailableError. A
        # fresh checkpoint below is a write, confirmed by its own commit.
        cp = self.latest_checkpoint(confirmed=True)
        if cp is None or cp.checkpoint.size <= index:
            if signer is None:
                raise NoCheckpointError(
                    f"no checkpoint covers entry {index} yet; run `ecp ledger checkpoint`"
                )
            cp = self.checkpoint(signer)
        proof = self.inclusion_proof(index, cp.checkpoint.size)
        return Receipt(
            index, stored.leaf_hash, stored.envelope, cp.checkpoint.size, tuple(proof), cp.note
        )

    # --- auditing -------------------------------------------------------------

    def verify_all(
        self,
        log_key: Ed25519PublicKey | None = None,
        *,
        trust: TrustStore | None = None,
        deep: bool = False,
    ) -> VerifyReport:
        """Recompute every entry hash and the whole tree; check every checkpoint.

        Checks, in log order: sequence numbers are gap-free; each entry's bytes
        hash to its leaf hash and evidence id; with ``trust``, each entry is
        signed by a trusted key of a role allowed for it (an operator of the
        database can rewrite rows and hashes, but cannot sign); every stored
        subtree hash is the recomputed one; the head matches; then every
        checkpoint's signature (with ``log_key``), its root against the
        recomputed tree at its size, and consistency between successive
        checkpoints.

        The stored root after each entry (``root_after``, read by nothing but
        this check) is compared at every checkpoint size and the head; with
        ``deep``, after every entry (about five times slower). Whenever the
        fast pass finds damage, the exact pass runs to name the first bad
        entry, so reordered or replaced entries are named exactly either way.

        Raises:
            TamperError: the first damage found, naming the first bad entry index.
            LedgerUnavailableError: the database is unreachable.
        """
        if deep:
            return self._verify_exact(log_key, trust)
        try:
            return self._verify_fast(log_key, trust)
        except ScanMismatch as found:
            # The exact pass names the damage precisely; it cannot pass where
            # the fast one failed, but if it did, the fast finding stands.
            self._verify_exact(log_key, trust)
            raise TamperError(found.index, f"stored log damaged: {found}") from None

    def _verify_fast(
        self, log_key: Ed25519PublicKey | None, trust: TrustStore | None
    ) -> VerifyReport:
        check = None
        if trust is not None:
            store = trust

            def check(i: int, leaf: bytes) -> None:
                _check_signed(i, leaf, store)

        with self._db.read(snapshot=True) as conn:
            head = self._db.read_head(conn)
            cp_rows = conn.execute(
                select(
                    CHECKPOINT.c.id, CHECKPOINT.c.size, CHECKPOINT.c.origin, CHECKPOINT.c.note
                ).order_by(CHECKPOINT.c.id)
            ).all()
            wanted = {int(r.size) for r in cp_rows if 0 <= int(r.size) <= head.size}
            wanted.add(head.size)
            result = scan_entries(
                self._db.bulk_query(conn),
                qmark="?" if self._db.is_sqlite else "%s",
                size=head.size,
                wanted=wanted,
                per_entry=check,
            )
            top, count = conn.execute(select(func.max(ENTRY.c.seq), func.count())).one()
            if count != head.size or (count and top != head.size - 1):
                raise ScanMismatch(None, f"{count} entries stored, the head says {head.size}")
            if result.roots[head.size] != head.root_hash or b"".join(result.border) != head.border:
                raise ScanMismatch(None, "head")
            nodes_count = conn.execute(select(func.count()).select_from(NODE)).scalar_one()
            if nodes_count != head.size - head.size.bit_count():
                raise ScanMismatch(None, "subtree row count")
            roots = {k: Hash(v) for k, v in result.roots.items()}
            self._verify_checkpoints(conn, cp_rows, log_key, roots, head.size)
        return VerifyReport(head.size, Hash(head.root_hash), len(cp_rows))

    def _verify_checkpoints(
        self,
        conn: Connection,
        cp_rows: Sequence[Any],
        log_key: Ed25519PublicKey | None,
        roots: Mapping[int, Hash],
        log_size: int,
    ) -> None:
        prev: Checkpoint | None = None
        for r in cp_rows:
            cp = self._verify_stored_checkpoint(
                r.id, r.size, r.origin, r.note, log_key, roots, log_size
            )
            if prev is not None:
                if prev.origin != cp.origin:
                    raise TamperError(None, f"checkpoint #{r.id} changes the origin")
                if cp.size < prev.size:
                    raise TamperError(cp.size, f"checkpoint #{r.id} is smaller than an earlier one")
                if prev.size > 0:
                    try:
                        proof = consistency_proof(prev.size, cp.size, _Lookup(conn))
                        verify_consistency(prev.size, cp.size, prev.root_hash, cp.root_hash, proof)
                    except ProofError as exc:
                        raise TamperError(
                            prev.size,
                            f"checkpoint #{r.id} is not consistent with the previous one: {exc}",
                        ) from exc
            prev = cp

    def _verify_exact(
        self, log_key: Ed25519PublicKey | None, trust: TrustStore | None
    ) -> VerifyReport:
        """The exact pass: as :meth:`verify_all`, also recomputing the root after every entry.

        The root after each entry names the first reordered or replaced
        entry exactly; entries are read in chunks through SQLAlchemy.

        Raises:
            TamperError: the first damage found, naming the first bad entry index.
            LedgerUnavailableError: the database is unreachable.
        """
        with self._db.read() as conn:
            head = self._db.read_head(conn)
            cp_rows = conn.execute(
                select(
                    CHECKPOINT.c.id, CHECKPOINT.c.size, CHECKPOINT.c.origin, CHECKPOINT.c.note
                ).order_by(CHECKPOINT.c.id)
            ).all()
            wanted_sizes = {int(r.size) for r in cp_rows}
            roots: dict[int, Hash] = {}
            border = CompactRange()
            if 0 in wanted_sizes:
                roots[0] = border.root()
            for rows, stored_nodes in _chunks(conn, head.size):
                for row in rows:
                    i = border.size
                    if row.seq != i:
                        raise TamperError(
                            i, f"entry missing (sequence numbers jump from {i - 1} to {row.seq})"
                        )
                    leaf = _blob(row.envelope, i, "entry bytes")
                    lh = leaf_hash(leaf)
                    if lh != _blob(row.leaf_hash, i, "leaf hash"):
                        raise TamperError(i, "entry bytes do not match the stored leaf hash")
                    if _evidence_id(leaf) != row.evidence_id:
                        raise TamperError(i, "evidence id does not match the entry")
                    if trust is not None:
                        _check_signed(i, leaf, trust)
                    for n in border.push(lh):
                        key = node_key(n.level, n.index)
                        if stored_nodes.get(key) != n.hash:
                            raise TamperError(
                                i,
                                f"stored subtree hash (level {n.level}, index {n.index}) "
                                "differs from the recomputed one",
                            )
                    if border.root() != _blob(row.root_after, i, "root after entry"):
                        raise TamperError(
                            i,
                            "tree root after this entry differs from the stored one "
                            "(entries reordered, replaced or a stored root rewritten)",
                        )
                    if border.size in wanted_sizes:
                        roots[border.size] = border.root()
            if border.size != head.size:
                raise TamperError(
                    border.size,
                    f"log head says size {head.size} but {border.size} entries are stored",
                )
            if border.root() != head.root_hash or border.to_bytes() != head.border:
                raise TamperError(None, "log head root or border differs from the recomputed tree")
            nodes_count = conn.execute(select(func.count()).select_from(NODE)).scalar_one()
            if nodes_count != head.size - head.size.bit_count():
                raise TamperError(
                    None,
                    f"{nodes_count} subtree rows stored, expected "
                    f"{head.size - head.size.bit_count()}",
                )
            self._verify_checkpoints(conn, cp_rows, log_key, roots, head.size)
        return VerifyReport(head.size, Hash(head.root_hash), len(cp_rows))

    @staticmethod
    def _verify_stored_checkpoint(
        cp_id: int,
        size: int,
        origin: str,
        note: str,
        log_key: Ed25519PublicKey | None,
        roots: Mapping[int, Hash],
        log_size: int,
    ) -> Checkpoint:
        try:
            if log_key is not None:
                cp, _ = open_checkpoint(note, log_key, origin=origin)
            else:
                cp = Checkpoint.parse(_note_text(note))
        except LineageError as exc:
            raise TamperError(None, f"checkpoint #{cp_id} does not verify: {exc}") from exc
        if cp.origin != origin or cp.size != size:
            raise TamperError(None, f"checkpoint #{cp_id} row differs from its signed note")
        if cp.size > log_size:
            raise TamperError(
                log_size,
                f"checkpoint #{cp_id} signs size {cp.size} but the "
                f"log holds {log_size} entries (entries deleted)",
            )
        if roots.get(cp.size) != cp.root_hash:
            raise TamperError(
                max(cp.size - 1, 0),
                f"checkpoint #{cp_id} root differs from the recomputed tree at size {cp.size}",
            )
        return cp


def _blob(value: object, index: int, what: str) -> bytes:
    # A BLOB column rewritten as text (SQLite is dynamically typed) is tampering too.
    if isinstance(value, bytes | memoryview | bytearray):
        return bytes(value)
    raise TamperError(index, f"stored {what} is not binary data")


def _with_checkpoint(r: AppendResult, cp: SignedCheckpoint) -> AppendResult:
    # The checkpoint may come back from witnessing with cosignatures added.
    return AppendResult(r.index, r.leaf_hash, r.evidence_id, r.created, cp)


def _note_text(note: str) -> str:
    # The body is everything up to the blank line before the signatures.
    return note[: note.rfind("\n\n") + 1]


def _blob_or_tamper(value: object, index: int) -> bytes:
    if isinstance(value, bytes | memoryview | bytearray):
        return bytes(value)
    raise TamperError(index, "a stored tree hash is not binary data")


def _leaf_bytes(envelope: Envelope) -> bytes:
    """:func:`~ecp.lineage.ledger._receipt.entry_leaf`, without the general RFC 8785 encoder.

    An envelope's JSON holds only strings under fixed ASCII keys, and for
    that shape RFC 8785 is exactly sorted keys, no whitespace, UTF-8, and
    JSON's minimal escapes, which :func:`json.dumps` produces (tested
    against ``entry_leaf``). Anything it cannot encode (a lone surrogate)
    goes through ``entry_leaf`` and fails the same way.
    """
    try:
        return json.dumps(
            envelope.to_dict(), ensure_ascii=False, separators=(",", ":"), sort_keys=True
        ).encode("utf-8")
    except UnicodeEncodeError:
        return entry_leaf(envelope)


def _evidence_id(leaf: bytes) -> str:
    # A light re-derivation: verify must be fast over millions of entries,
    # and the leaf hash already pins the bytes.
    try:
        payload = base64.b64decode(json.loads(leaf)["payload"])
    except (ValueError, KeyError, TypeError):
        return ""
    return "sha256:" + hashlib.sha256(payload).hexdigest()


class _Lookup:
    """A :data:`~ecp.lineage.ledger._merkle.HashLookup` over the stored tree.

    One query per level kind.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def __call__(self, ids: Sequence[NodeId]) -> dict[NodeId, bytes]:
        out: dict[NodeId, bytes] = {}
        leaves = [ix for lv, ix in ids if lv == 0]
        inner = {node_key(lv, ix): (lv, ix) for lv, ix in ids if lv > 0}
        if leaves:
            for r in self._conn.execute(
                select(ENTRY.c.seq, ENTRY.c.leaf_hash).where(ENTRY.c.seq.in_(leaves))
            ):
                out[(0, int(r.seq))] = bytes(r.leaf_hash)
        if inner:
            for r in self._conn.execute(
                select(NODE.c.node_id, NODE.c.hash).where(NODE.c.node_id.in_(list(inner)))
            ):
                out[inner[int(r.node_id)]] = bytes(r.hash)
        missing = [i for i in ids if i not in out]
        if missing:
            raise TamperError(
                missing[0][1] << missing[0][0],
                f"stored subtree (level {missing[0][0]}, index {missing[0][1]}) is missing",
            )
        return out


def _check_signed(index: int, leaf: bytes, trust: TrustStore) -> None:
    try:
        evidence = parse_evidence(leaf)
        signed_at = datetime.fromisoformat(evidence.predicate.finished_at.replace("Z", "+00:00"))
        verify_evidence_signature(evidence, trust, signed_at)
    except (EvidenceError, ValueError) as exc:
        raise TamperError(index, f"entry is not evidence signed by a trusted key: {exc}") from exc


def _chunks(conn: Connection, size: int) -> Iterator[tuple[Sequence[Any], dict[int, bytes]]]:
    """Entries in order, chunk by chunk, with the subtree rows those entries completed."""
    next_seq = 0
    while True:
        rows = conn.execute(
            select(
                ENTRY.c.seq,
                ENTRY.c.evidence_id,
                ENTRY.c.leaf_hash,
                ENTRY.c.root_after,
                ENTRY.c.envelope,
            )
            .where(ENTRY.c.seq >= next_seq)
            .order_by(ENTRY.c.seq)
            .limit(_VERIFY_CHUNK)
        ).all()
        if not rows:
            return
        first, last = int(rows[0].seq), int(rows[-1].seq)
        lo = 2 * first - first.bit_count()
        hi = 2 * (last + 1) - (last + 1).bit_count()
        nodes = {
            int(r.node_id): bytes(r.hash)
            for r in conn.execute(
                select(NODE.c.node_id, NODE.c.hash).where(NODE.c.node_id >= lo, NODE.c.node_id < hi)
            )
        }
        yield rows, nodes
        next_seq = last + 1
