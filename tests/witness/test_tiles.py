"""tlog-tiles: paths and tile sets against the spec's examples; Go's sumdb/tlog reads our tiles."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ecp.authority._keys import Ed25519FileSigner
from ecp.cli import app
from ecp.lineage.ledger._merkle import leaf_hash
from ecp.lineage.ledger._tiles import (
    TileId,
    TileReader,
    encode_index,
    tile_path,
    tiles_for_size,
    write_tiles,
)
from tests.lineage.support import make_envelope, open_unverified
from tests.witness.conftest import GoBuild


def test_index_encoding_matches_the_spec() -> None:
    # "index 1234067 will be encoded as x001/x234/067"
    assert encode_index(1234067) == "x001/x234/067"
    assert encode_index(0) == "000"
    assert encode_index(999) == "999"
    assert encode_index(1000) == "x001/000"
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path(1, 5, 17) == "tile/1/005.p/17"
    assert tile_path(-1, 3, 112) == "tile/entries/003.p/112"


def _summary(size: int) -> dict[int, tuple[int, int | None]]:
    """Per level: (full tiles, width of the partial tile or None)."""
    out: dict[int, tuple[int, int | None]] = {}
    for t in tiles_for_size(size):
        full, partial = out.get(t.level, (0, None))
        out[t.level] = (full + 1, partial) if t.width == 256 else (full, t.width)
    return out


def test_tile_sets_match_the_spec_examples() -> None:
    # "a tree of size 70,000 will be represented by 273 full level 0 tiles, one
    # partial level 0 tile of width 112, one full level 1 tile, one partial
    # level 1 tile of width 17, and one partial level 2 tile of width 1."
    assert _summary(70_000) == {0: (273, 112), 1: (1, 17), 2: (0, 1)}
    # "a tree of size 256 will be represented by a full level 0 tile and a
    # partial level 1 tile of width 1."
    assert list(tiles_for_size(256)) == [TileId(0, 0, 256), TileId(1, 0, 1)]
    assert list(tiles_for_size(0)) == []


def test_tiles_hash_to_the_tree_and_bundles_to_the_leaves(
    tmp_path: Path, worker: Ed25519FileSigner, log_signer: Ed25519FileSigner
) -> None:
    ledger = open_unverified(f"sqlite:///{tmp_path / 'log.db'}")
    ledger.append_many([make_envelope(i, worker) for i in range(300)])
    ledger.checkpoint(log_signer)
    report = write_tiles(ledger, tmp_path / "tiles")
    assert report.size == 300
    level0 = (tmp_path / "tiles/tile/0/000").read_bytes()
    assert len(level0) == 256 * 32
    bundle = (tmp_path / "tiles/tile/entries/000").read_bytes()
    pos, hashes = 0, []
    while pos < len(bundle):
        n = int.from_bytes(bundle[pos : pos + 2], "big")
        hashes.append(leaf_hash(bundle[pos + 2 : pos + 2 + n]))
        pos += 2 + n
    assert b"".join(hashes) == level0
    # Level 1: one hash, the root of the first 256 leaves.
    level1 = (tmp_path / "tiles/tile/1/000.p/1").read_bytes()
    assert level1 == ledger.root_at(256)
    assert (tmp_path / "tiles/tile/0/001.p/44").stat().st_size == 44 * 32
    assert hashlib.sha256(level0).digest() != level1  # a tile is not hashed flat


@pytest.mark.parametrize("size", [1, 255, 256, 257, 700])
def test_go_sumdb_tlog_reads_the_tiles(
    go_build: GoBuild,
    tmp_path: Path,
    worker: Ed25519FileSigner,
    log_signer: Ed25519FileSigner,
    log_vkey: str,
    size: int,
) -> None:
    gotiles = go_build("gotiles")
    ledger = open_unverified(f"sqlite:///{tmp_path / 'log.db'}")
    half = size // 2
    ledger.append_many([make_envelope(i, worker) for i in range(half)])
    if half:
        ledger.checkpoint(log_signer)
        write_tiles(ledger, tmp_path / "tiles")  # incremental: later runs add to it
    ledger.append_many([make_envelope(i, worker) for i in range(half, size)])
    ledger.checkpoint(log_signer)
    code = CliRunner().invoke(
        app,
        [
            "ledger",
            "tiles",
            "--dir",
            str(tmp_path / "tiles"),
            "--db",
            f"sqlite:///{tmp_path / 'log.db'}",
        ],
    )
    assert code.exit_code == 0, code.stderr
    r = subprocess.run(
        [str(gotiles), str(tmp_path / "tiles"), log_vkey], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"ok {size}"


def test_consistency_proofs_from_tiles_equal_the_ledgers(
    tmp_path: Path, worker: Ed25519FileSigner, log_signer: Ed25519FileSigner
) -> None:
    ledger = open_unverified(f"sqlite:///{tmp_path / 'log.db'}")
    ledger.append_many([make_envelope(i, worker) for i in range(600)])
    ledger.checkpoint(log_signer)
    write_tiles(ledger, tmp_path / "tiles")
    reader = TileReader(str(tmp_path / "tiles"))
    _, served = reader.checkpoint()
    assert served.size == 600
    for old, new in [(1, 2), (3, 600), (255, 256), (256, 257), (100, 513), (511, 599), (600, 600)]:
        assert reader.consistency_proof(old, new, 600) == ledger.consistency_proof(old, new), (
            old,
            new,
        )
