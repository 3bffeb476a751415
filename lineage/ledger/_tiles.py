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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ecp.lineage.ledger._checkpoint import SignedCheckpoint
from ecp.lineage.ledger.errors import LedgerError

if TYPE_CHECKING:
    from ecp.lineage.ledger._ledger import Ledger

__all__ = [
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "TileId",
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
        LedgerUnavailableError: the database is unreachable.
    """
    from ecp.lineage.ledger.errors import NoCheckpointError

    cp = checkpoint or ledger.latest_checkpoint()
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
