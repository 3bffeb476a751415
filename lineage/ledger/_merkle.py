"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification.

Hashing: leaf = SHA-256(0x00 ‖ data), node = SHA-256(0x01 ‖ left ‖ right),
the empty tree's root = SHA-256(""). Proof *generation* never rebuilds the
tree: it names the perfect subtrees it needs as :data:`NodeId` ``(level,
index)`` pairs (the subtree of ``2**level`` leaves starting at leaf
``index * 2**level``) and asks a :data:`HashLookup` for them all at once, so a
store answers with one O(log n) read. Verification follows RFC 9162
§2.1.3.2 (inclusion) and §2.1.4.2 (consistency) literally, after checking
hash lengths, sizes and the exact proof length.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NewType

from ecp.lineage.ledger.errors import (
    ConsistencyProofError,
    HashLengthError,
    InclusionProofError,
    ProofLengthError,
    ProofSizeError,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "Hash",
    "HashLookup",
    "InMemoryTree",
    "NewNode",
    "NodeId",
    "consistency_proof",
    "consistency_proof_nodes",
    "fold_plan",
    "inclusion_proof",
    "inclusion_proof_nodes",
    "leaf_hash",
    "node_hash",
    "range_nodes",
    "root_from_lookup",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

#: A 32-byte SHA-256 Merkle tree hash.
Hash = NewType("Hash", bytes)
#: A perfect subtree: ``(level, index)`` covers leaves ``[index·2^level, (index+1)·2^level)``.
NodeId = tuple[int, int]
#: Returns the hash of every requested perfect subtree (missing ids are a store bug).
HashLookup = Callable[[Sequence[NodeId]], Mapping[NodeId, bytes]]

HASH_SIZE = 32
EMPTY_ROOT = Hash(hashlib.sha256(b"").digest())

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> Hash:
    """RFC 6962 leaf hash of ``data``."""
    return Hash(_sha256(b"\x00" + data).digest())


def node_hash(left: bytes, right: bytes) -> Hash:
    """RFC 6962 interior node hash of two child hashes."""
    return Hash(_sha256(b"\x01" + left + right).digest())


def root_of(leaf_hashes: Sequence[bytes]) -> Hash:
    """Root of the tree over ``leaf_hashes`` (already leaf-hashed)."""
    cr = CompactRange()
    for h in leaf_hashes:
        cr.push(h)
    return cr.root()


# --- proof planning (which perfect subtrees a proof needs) -------------------


def _largest_power_below(n: int) -> int:
    """Largest power of two strictly less than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_nodes(start: int, end: int) -> list[NodeId]:
    """The perfect subtrees whose hashes fold into MTH(D[start:end]).

    Only valid for the ranges RFC 6962's recursions produce: ``start`` is a
    multiple of a power of two at least ``end - start``, so the greedy split
    into decreasing powers of two yields aligned subtrees.
    """
    ids: list[NodeId] = []
    while start < end:
        level = (end - start).bit_length() - 1
        size = 1 << level
        assert start % size == 0, "range is not a right-border subtree"
        ids.append((level, start >> level))
        start += size
    return ids


def _fold(ids: Sequence[NodeId], hashes: Mapping[NodeId, bytes]) -> Hash:
    # MTH of a right-border range: the rightmost subtrees combine first.
    acc = hashes[ids[-1]]
    for nid in reversed(ids[:-1]):
        acc = node_hash(hashes[nid], acc)
    return Hash(acc)


def _path(m: int, start: int, end: int, out: list[tuple[int, int]]) -> None:
    # RFC 6962 §2.1.1 PATH(m, D[start:end]), deepest sibling first.
    n = end - start
    if n == 1:
        return
    k = _largest_power_below(n)
    if m < k:
        _path(m, start, start + k, out)
        out.append((start + k, end))
    else:
        _path(m - k, start + k, end, out)
        out.append((start, start + k))


def _subproof(m: int, start: int, end: int, b: bool, out: list[tuple[int, int]]) -> None:
    # RFC 6962 §2.1.2 SUBPROOF(m, D[start:end], b).
    n = end - start
    if m == n:
        if not b:
            out.append((start, end))
        return
    k = _largest_power_below(n)
    if m <= k:
        _subproof(m, start, start + k, b, out)
        out.append((start + k, end))
    else:
        _subproof(m - k, start + k, end, False, out)
        out.append((start, start + k))


def inclusion_proof_nodes(index: int, size: int) -> list[list[NodeId]]:
    """Plan an inclusion proof: per proof hash, the perfect subtrees to fold.

    Raises:
        ProofSizeError: ``index`` is not inside a tree of ``size`` leaves.
    """
    if not 0 <= index < size:
        raise ProofSizeError(f"leaf index {index} is outside a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    _path(index, 0, size, ranges)
    return [range_nodes(s, e) for s, e in ranges]


def consistency_proof_nodes(old_size: int, new_size: int) -> list[list[NodeId]]:
    """Plan a consistency proof between two tree sizes.

    Raises:
        ProofSizeError: ``old_size`` is 0 or larger than ``new_size``.
    """
    if old_size <= 0 or old_size > new_size:
        raise ProofSizeError(
            f"no consistency proof from size {old_size} to size {new_size} (need 0 < old <= new)"
        )
    ranges: list[tuple[int, int]] = []
    _subproof(old_size, 0, new_size, True, ranges)
    return [range_nodes(s, e) for s, e in ranges]


def fold_plan(plan: Sequence[Sequence[NodeId]], hashes: Mapping[NodeId, bytes]) -> list[Hash]:
    """The proof hashes of ``plan`` (from ``*_proof_nodes``) given its subtree hashes.

    Raises:
        KeyError: ``hashes`` lacks a subtree the plan names.
    """
    return [_fold(ids, hashes) for ids in plan]


def _resolve(plan: list[list[NodeId]], lookup: HashLookup) -> list[Hash]:
    wanted = sorted({nid for ids in plan for nid in ids})
    hashes = lookup(wanted) if wanted else {}
    return fold_plan(plan, hashes)


def inclusion_proof(index: int, size: int, lookup: HashLookup) -> list[Hash]:
    """Audit path for leaf ``index`` in the tree of ``size`` leaves.

    Raises:
        ProofSizeError: ``index`` is not inside the tree.
    """
    return _resolve(inclusion_proof_nodes(index, size), lookup)


def consistency_proof(old_size: int, new_size: int, lookup: HashLookup) -> list[Hash]:
    """Consistency proof from ``old_size`` to ``new_size``.

    Raises:
        ProofSizeError: ``old_size`` is 0 or larger than ``new_size``.
    """
    return _resolve(consistency_proof_nodes(old_size, new_size), lookup)


def root_from_lookup(size: int, lookup: HashLookup) -> Hash:
    """Root of the first ``size`` leaves, from stored perfect subtrees."""
    if size == 0:
        return EMPTY_ROOT
    ids = range_nodes(0, size)
    return _fold(ids, lookup(ids))


# --- verification (RFC 9162) -------------------------------------------------


def _check_len(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise HashLengthError(f"{what} is {len(value)} bytes, a tree hash is {HASH_SIZE}")


def _decomp_inclusion(index: int, size: int) -> tuple[int, int]:
    # Number of proof hashes below the point where the leaf's path meets the
    # right border (inner), and on the border itself (border).
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner, border


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Verify that ``leaf`` (a leaf *hash*) is at ``index`` in the tree ``root``.

    Raises:
        HashLengthError: the leaf hash, the root or a proof hash is not 32 bytes.
        ProofSizeError: ``index >= size``.
        ProofLengthError: the proof has the wrong number of hashes.
        InclusionProofError: the recomputed root is not ``root``.
    """
    _check_len(leaf, "leaf hash")
    _check_len(root, "root hash")
    for i, p in enumerate(proof):
        _check_len(p, f"proof hash {i}")
    if not 0 <= index < size:
        raise ProofSizeError(f"leaf index {index} is outside a tree of size {size}")
    inner, border = _decomp_inclusion(index, size)
    if len(proof) != inner + border:
        raise ProofLengthError(
            f"inclusion proof has {len(proof)} hashes, index {index} in size {size} "
            f"needs {inner + border}"
        )
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofLengthError("inclusion proof is longer than the path")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofLengthError("inclusion proof is shorter than the path")
    if r != root:
        raise InclusionProofError(
            f"inclusion proof for index {index} leads to root {r.hex()}, not {root.hex()}"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Verify that the tree ``new_root`` extends the tree ``old_root``.

    Raises:
        HashLengthError: a root or proof hash is not 32 bytes.
        ProofSizeError: ``old_size`` is 0, ``old_size > new_size``, or the sizes
            are equal and the proof is not empty.
        ProofLengthError: the proof has the wrong number of hashes.
        ConsistencyProofError: the proof does not lead to both roots.
    """
    if old_size <= 0:
        # A consistency proof from the empty tree proves nothing: refuse it.
        raise ProofSizeError("consistency from an empty tree is meaningless")
    if old_size > new_size:
        raise ProofSizeError(f"old size {old_size} is larger than new size {new_size}")
    if old_size == new_size:
        if proof:
            raise ProofSizeError("sizes are equal but the consistency proof is not empty")
        if old_root != new_root:
            raise ConsistencyProofError("equal sizes with different roots: the log forked")
        # Equal sizes compare the roots as given, like transparency-dev/merkle;
        # hash lengths matter only once hashing starts.
        return
    _check_len(old_root, "old root hash")
    _check_len(new_root, "new root hash")
    for i, p in enumerate(proof):
        _check_len(p, f"proof hash {i}")
    inner, border = _decomp_inclusion(old_size - 1, new_size)
    shift = (old_size & -old_size).bit_length() - 1
    inner -= shift
    start = 0 if old_size == 1 << shift else 1
    if len(proof) != start + inner + border:
        raise ProofLengthError(
            f"consistency proof has {len(proof)} hashes, {old_size}→{new_size} "
            f"needs {start + inner + border}"
        )
    path = list(proof)
    if old_size == 1 << shift:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofLengthError("consistency proof is longer than the path")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofLengthError("consistency proof is shorter than the path")
    if fr != old_root:
        raise ConsistencyProofError(f"consistency proof misses the old root at size {old_size}")
    if sr != new_root:
        raise ConsistencyProofError(f"consistency proof misses the new root at size {new_size}")


# --- building trees ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewNode:
    """A perfect subtree completed by an append (level >= 1)."""

    level: int
    index: int
    hash: Hash


@dataclass(slots=True)
class CompactRange:
    """The right border of a tree: one perfect-subtree root per set bit of ``size``.

    Enough to append leaves and compute the root without reading the tree;
    the ledger keeps it in its head row.
    """

    size: int = 0
    #: Roots of the border subtrees, largest (leftmost) first.
    hashes: list[Hash] = field(default_factory=list)

    def push(self, leaf: bytes) -> list[NewNode]:
        """Append one leaf hash; return the interior nodes it completed."""
        h = Hash(leaf)
        idx = self.size
        level = 0
        completed: list[NewNode] = []
        while idx & 1:
            h = node_hash(self.hashes.pop(), h)
            idx >>= 1
            level += 1
            completed.append(NewNode(level, idx, h))
        self.hashes.append(h)
        self.size += 1
        return completed

    def root(self) -> Hash:
        """Root hash of the tree of ``size`` leaves."""
        if not self.hashes:
            return EMPTY_ROOT
        acc = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            acc = node_hash(h, acc)
        return acc

    def to_bytes(self) -> bytes:
        """Concatenated border hashes (the size is stored beside them)."""
        return b"".join(self.hashes)

    @classmethod
    def from_bytes(cls, size: int, data: bytes) -> CompactRange:
        """Rebuild from :meth:`to_bytes` output.

        Raises:
            HashLengthError: ``data`` does not hold one hash per set bit of ``size``.
        """
        want = bin(size).count("1") * HASH_SIZE
        if len(data) != want:
            raise HashLengthError(f"compact range for size {size} must be {want} bytes")
        return cls(size, [Hash(data[i : i + HASH_SIZE]) for i in range(0, want, HASH_SIZE)])

    @classmethod
    def from_lookup(cls, size: int, lookup: HashLookup) -> CompactRange:
        """Rebuild the border of the first ``size`` leaves from stored subtrees."""
        ids = range_nodes(0, size)
        hashes = lookup(ids) if ids else {}
        return cls(size, [Hash(hashes[i]) for i in ids])


class InMemoryTree:
    """A whole tree in memory: for tests, tools and small logs."""

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[Hash]] = [[]]
        self._border = CompactRange()
        for h in leaf_hashes:
            self.append_hash(h)

    def __len__(self) -> int:
        return self._border.size

    def append_hash(self, leaf: bytes) -> int:
        """Append a leaf hash; return its index."""
        index = self._border.size
        self._levels[0].append(Hash(leaf))
        for n in self._border.push(leaf):
            if len(self._levels) <= n.level:
                self._levels.append([])
            self._levels[n.level].append(n.hash)
        return index

    def append(self, data: bytes) -> int:
        """Hash ``data`` as a leaf and append it; return its index."""
        return self.append_hash(leaf_hash(data))

    def lookup(self, ids: Sequence[NodeId]) -> dict[NodeId, bytes]:
        """A :data:`HashLookup` over this tree."""
        return {(lv, ix): self._levels[lv][ix] for lv, ix in ids}

    def root(self, size: int | None = None) -> Hash:
        """Root of the first ``size`` leaves (default: all)."""
        n = len(self) if size is None else size
        return root_from_lookup(n, self.lookup)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[Hash]:
        """See :func:`inclusion_proof`.

        Raises:
            ProofSizeError: ``index`` is not inside the tree.
        """
        return inclusion_proof(index, len(self) if size is None else size, self.lookup)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[Hash]:
        """See :func:`consistency_proof`.

        Raises:
            ProofSizeError: ``old_size`` is 0 or larger than ``new_size``.
        """
        return consistency_proof(old_size, len(self) if new_size is None else new_size, self.lookup)
