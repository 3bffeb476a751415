"""The log as C2SP tlog-tiles: static files any tile client or monitor can read.

Layout under a directory (serve it with any static web server)::

    checkpoint                       the newest signed checkpoint (with cosignatures)
    tile/<L>/<N>[.p/<W>]             Merkle tree tiles: 256 hashes of tree level 8·L
    tile/entries/<N>[.p/<W>]         entry bundles: uint16 big-endian length ‖ leaf bytes

``<N>`` is the tile index in 3-digit groups, all but the last prefixed with
``x`` (1234067 → ``x001/x234/067``). The partial tile at level *l* of a tree
of size *s* has ``floor(s / 256**l) mod 256`` hashes and only exists when
that is not zero. A hash in a level-*l* tile is the RFC 6962 root of 256**l
consecutive leaves, the stored subtree at tree level 8·l. Full tiles and
bundles are immutable and written once; the checkpoint is written last, so a
reader never sees a checkpoint whose tiles are missing.
"""

from __future__ import annotations

import os
import struct
import tempfile
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ecp.lineage.ledger._checkpoint import Checkpoint, SignedCheckpoint
from ecp.lineage.ledger._merkle import HASH_SIZE, Hash, NodeId, consistency_proof, node_hash
from ecp.lineage.ledger._note import parse_note
from ecp.lineage.ledger.errors import CheckpointError, LedgerError

if TYPE_CHECKING:
    from ecp.lineage.ledger._ledger import Ledger

__all__ = [
    "MAX_TILE_BYTES",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "TileId",
    "TileReader",
    "TilesReport",
    "encode_index",
    "tile_path",
    "tiles_for_size",
    "write_tiles",
]

TILE_HEIGHT: Final = 8
TILE_WIDTH: Final = 1 << TILE_HEIGHT
#: Entry bundles prefix each entry with a uint16 length.
_MAX_ENTRY: Final = 0xFFFF
#: A hash tile is at most 256 hashes; a checkpoint far less.
MAX_TILE_BYTES: Final = TILE_WIDTH * HASH_SIZE
_HTTP_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, slots=True, order=True)
class TileId:
    """One tile: its level (``-1`` for an entry bundle), index and width (256 if full)."""

    level: int
    index: int
    width: int

    @property
    def path(self) -> str:
        """The tile's path under the log prefix."""
        return tile_path(self.level, self.index, self.width)


def encode_index(n: int) -> str:
    """A tile index as tlog-tiles path elements: ``1234067`` → ``x001/x234/067``."""
    if n < 0:
        raise ValueError("tile index must be non-negative")
    groups = []
    while True:
        groups.append(f"{n % 1000:03d}")
        n //= 1000
        if n == 0:
            break
    groups.reverse()
    return "/".join([*("x" + g for g in groups[:-1]), groups[-1]])


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    """``tile/<L>/<N>[.p/<W>]``, or ``tile/entries/<N>[.p/<W>]`` for ``level`` -1."""
    if not 1 <= width <= TILE_WIDTH:
        raise ValueError("tile width must be 1 to 256")
    where = "entries" if level < 0 else str(level)
    suffix = "" if width == TILE_WIDTH else f".p/{width}"
    return f"tile/{where}/{encode_index(index)}{suffix}"


def tiles_for_size(size: int) -> Iterator[TileId]:
    """Every hash tile of a tree of ``size``: per level, the full ones, then the partial one."""
    level = 0
    while size >> (TILE_HEIGHT * level):
        span = size >> (TILE_HEIGHT * level)  # hashes at this level
        for n in range(span // TILE_WIDTH):
            yield TileId(level, n, TILE_WIDTH)
        if span % TILE_WIDTH:
            yield TileId(level, span // TILE_WIDTH, span % TILE_WIDTH)
        level += 1


@dataclass(frozen=True, slots=True)
class TilesReport:
    """What :func:`write_tiles` wrote."""

    size: int
    tiles_written: int
    bundles_written: int


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic: a reader sees the old file or the new one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def write_tiles(
    ledger: Ledger, directory: Path, checkpoint: SignedCheckpoint | None = None
) -> TilesReport:
    """Write the tiles, entry bundles and checkpoint of ``checkpoint`` (default: the newest).

    Full tiles already present are not rewritten (they are immutable).

    Raises:
        NoCheckpointError: the log has no checkpoint yet.
        LedgerError: an entry is longer than an entry bundle can hold (65535 bytes).
        LedgerUnavailableError: the database is unreachable, or (PostgreSQL)
            its synchronous standby never confirmed the newest checkpoint.
    """
    from ecp.lineage.ledger.errors import NoCheckpointError

    # Confirmed: full tiles are immutable, never rewritten from a later
    # checkpoint, so they must not come from one a failover can take away.
    cp = checkpoint or ledger.latest_checkpoint(confirmed=True)
    if cp is None:
        raise NoCheckpointError("the log has no checkpoint to serve; sign one first")
    size = cp.checkpoint.size
    tiles = bundles = 0
    for t in tiles_for_size(size):
        path = directory / t.path
        if t.width == TILE_WIDTH and path.exists():
            continue
        level_bits = TILE_HEIGHT * t.level
        first = t.index * TILE_WIDTH
        ids = [(level_bits, first + i) for i in range(t.width)]
        hashes = ledger.tree_hashes(size, ids)
        _write(path, b"".join(hashes[i] for i in ids))
        tiles += 1
        if t.level == 0:
            bundle = directory / tile_path(-1, t.index, t.width)
            if t.width == TILE_WIDTH and bundle.exists():
                continue
            parts = []
            for i, leaf in enumerate(ledger.leaves(first, first + t.width)):
                if len(leaf) > _MAX_ENTRY:
                    raise LedgerError(f"entry {first + i} is too long for an entry bundle")
                parts.append(struct.pack(">H", len(leaf)) + leaf)
            _write(bundle, b"".join(parts))
            bundles += 1
    _write(directory / "checkpoint", cp.note.encode("utf-8"))
    return TilesReport(size, tiles, bundles)


class TileReader:
    """Reads a tiled log (a directory or an ``http(s)://`` prefix) to compute proofs.

    Nothing read here is trusted: the checkpoint is returned for the caller
    to verify, and proofs computed from tiles are checked against signed
    roots, so a log serving wrong tiles only makes its own proofs fail.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip("/")
        self._cache: dict[str, bytes] = {}

    def _read(self, path: str, limit: int) -> bytes:
        if path in self._cache:
            return self._cache[path]
        try:
            if self.prefix.startswith(("http://", "https://")):
                with urllib.request.urlopen(  # noqa: S310 - scheme checked above
                    f"{self.prefix}/{path}", timeout=_HTTP_TIMEOUT_S
                ) as resp:
                    data = bytes(resp.read(limit + 1))
            else:
                with (Path(self.prefix) / path).open("rb") as fh:
                    data = fh.read(limit + 1)
        except OSError as exc:
            raise CheckpointError(f"cannot read {path} from {self.prefix}: {exc}") from exc
        if len(data) > limit:
            raise CheckpointError(f"{path} from {self.prefix} is larger than {limit} bytes")
        self._cache[path] = data
        return data

    def checkpoint(self) -> tuple[str, Checkpoint]:
        """The served checkpoint note (unverified) and its parsed body.

        Raises:
            CheckpointError: unreadable; MalformedNoteError,
                MalformedCheckpointError: malformed.
        """
        note = self._read("checkpoint", 64 * 1024).decode("utf-8", "replace")
        return note, Checkpoint.parse(parse_note(note).text)

    def _tile_hashes(self, size: int, level: int, index: int) -> list[bytes]:
        span = size >> (TILE_HEIGHT * level)
        width = TILE_WIDTH if index < span // TILE_WIDTH else span % TILE_WIDTH
        if width == 0:
            raise CheckpointError(f"tile {level}/{index} is not part of a tree of size {size}")
        data = self._read(tile_path(level, index, width), MAX_TILE_BYTES)
        if len(data) != width * HASH_SIZE:
            raise CheckpointError(f"tile {tile_path(level, index, width)} has the wrong length")
        return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]

    def node_hashes(self, size: int, ids: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
        """Hashes of perfect subtrees ``(level, index)`` of the tree of ``size``, from tiles.

        A subtree at level ``h`` is the root of ``2**(h mod 8)`` consecutive
        hashes of tile level ``h // 8``.
        """
        out: dict[NodeId, bytes] = {}
        for h, i in ids:
            lvl, r = divmod(h, TILE_HEIGHT)
            first = i << r  # position among the tile level's hashes
            hashes: list[bytes] = []
            pos = first
            while pos < first + (1 << r):
                tile = self._tile_hashes(size, lvl, pos // TILE_WIDTH)
                take = min(first + (1 << r), (pos // TILE_WIDTH + 1) * TILE_WIDTH) - pos
                start = pos % TILE_WIDTH
                hashes.extend(tile[start : start + take])
                pos += take
            if len(hashes) != 1 << r:
                raise CheckpointError(f"tiles do not hold subtree ({h}, {i})")
            out[(h, i)] = hashes[0] if r == 0 else _perfect_root(hashes)
        return out

    def consistency_proof(self, old: int, new: int, served_size: int) -> list[Hash]:
        """A consistency proof from ``old`` to ``new`` (both at most ``served_size``)."""
        if new > served_size:
            raise CheckpointError(
                f"the tiles serve a tree of size {served_size}, not {new}: cannot prove size {new}"
            )
        return consistency_proof(old, new, lambda ids: self.node_hashes(served_size, ids))


def _perfect_root(hashes: list[bytes]) -> Hash:
    # A power-of-two run of subtree roots, paired up level by level (they are
    # nodes already, so no leaf hashing).
    level = hashes
    while len(level) > 1:
        level = [node_hash(level[k], level[k + 1]) for k in range(0, len(level), 2)]
    return Hash(level[0])
