"""Bulk verification of the stored entries and subtrees: the fast pass of ``verify_all``.

One sequential read of ``ledger_entry`` and ``ledger_node`` in large chunks
through the bare driver (no row objects), hashing with :mod:`hashlib` on
bytes and a plain list as the tree's right border. Per entry it checks what
every reader of the log relies on: sequence numbers without gaps, the entry
bytes against the stored leaf hash, the evidence id against the entry, and
every stored subtree hash against the recomputed one (stored subtrees are
compared in key order, which is completion order). It also returns the
recomputed roots at the requested sizes (the checkpoints') and the border.

It does not recompute the root after every entry (``root_after``): that is
``popcount(size)`` hashes per entry, five times the rest of the pass, for a
column no proof or checkpoint reads; it is checked at the requested sizes,
and the exact pass (``verify_all(deep=True)``, and automatically whenever this
pass finds anything) checks it for every entry and names the first bad entry.

Any anomaly raises :class:`ScanMismatch` with the index where it was seen;
the caller then runs the exact pass for the precise diagnosis.
"""

from __future__ import annotations

import binascii
import hashlib
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

__all__ = ["ScanMismatch", "ScanResult", "scan_entries"]

_CHUNK = 16384
_PAYLOAD_KEY = b'{"payload":"'
# Characters of a base64 payload that JSON decoding leaves as they are.
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


class ScanMismatch(Exception):
    """The fast pass saw something wrong at ``index`` (None: not entry-specific)."""

    def __init__(self, index: int | None, what: str) -> None:
        super().__init__(what)
        self.index = index


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What the fast pass recomputed."""

    size: int
    #: Root of the first ``s`` entries, for each requested size ``s``.
    roots: dict[int, bytes]
    #: The right border (largest subtree first), as the head row stores it.
    border: list[bytes]


def _root(border: list[bytes]) -> bytes:
    if not border:
        return hashlib.sha256(b"").digest()
    acc = border[-1]
    for h in reversed(border[:-1]):
        acc = hashlib.sha256(b"\x01" + h + acc).digest()
    return acc


def _slow_evidence_id(leaf: bytes) -> str:
    try:
        payload = binascii.a2b_base64(json.loads(leaf)["payload"])
    except (ValueError, KeyError, TypeError):
        return ""
    return "sha256:" + hashlib.sha256(payload).hexdigest()


def scan_entries(
    query: Callable[[str, tuple[int, ...]], list[Any]],
    *,
    qmark: str,
    size: int,
    wanted: Collection[int],
    per_entry: Callable[[int, bytes], None] | None = None,
) -> ScanResult:
    """Verify entries ``0 .. size-1`` and their subtrees; see the module docstring.

    ``query(sql, params)`` runs a statement in the caller's read transaction
    and returns all rows as tuples; ``qmark`` is its placeholder. ``per_entry(index,
    leaf)`` runs for each entry (the signature check, when asked for).

    Raises:
        ScanMismatch: the first anomaly seen.
    """
    sha = hashlib.sha256
    a2b = binascii.a2b_base64
    entries_sql = (
        "SELECT seq, evidence_id, leaf_hash, envelope FROM ledger_entry "  # noqa: S608
        f"WHERE seq >= {qmark} AND seq < {qmark} ORDER BY seq"
    )
    # Only at the requested sizes: a third less to move per row on PostgreSQL.
    root_sql = f"SELECT root_after FROM ledger_entry WHERE seq = {qmark}"  # noqa: S608
    nodes_sql = (
        "SELECT node_id, hash FROM ledger_node "  # noqa: S608
        f"WHERE node_id >= {qmark} AND node_id < {qmark} ORDER BY node_id"
    )
    roots: dict[int, bytes] = {}
    if 0 in wanted:
        roots[0] = _root([])
    border: list[bytes] = []
    i = 0
    while i < size:
        stop = min(i + _CHUNK, size)
        rows = query(entries_sql, (i, stop))
        # The subtrees completed by entries i .. stop-1, in completion order.
        lo = 2 * i - i.bit_count()
        hi = 2 * stop - stop.bit_count()
        nodes = query(nodes_sql, (lo, hi))
        if len(nodes) != hi - lo - (stop - i):
            raise ScanMismatch(i, "stored subtree rows missing or extra")
        n = 0
        for seq, eid, lh, leaf in rows:
            if seq != i:
                raise ScanMismatch(i, "sequence gap")
            if type(leaf) is not bytes:  # a text value rewritten into a BLOB column
                leaf = bytes(leaf) if isinstance(leaf, memoryview) else None
                if leaf is None:
                    raise ScanMismatch(i, "entry bytes not binary")
            h = sha(b"\x00" + leaf).digest()
            if h != lh:
                raise ScanMismatch(i, "leaf hash")
            # Evidence id: sha256 of the base64 payload, read straight from the
            # canonical leaf when its shape allows (one payload key, first, pure
            # base64 so JSON decoding would not change it); else parsed.
            got = ""
            if leaf[:12] == _PAYLOAD_KEY:
                b64 = leaf[12 : leaf.find(b'"', 12)]
                if not b64.translate(None, _B64) and leaf.count(b'"payload":') == 1:
                    got = "sha256:" + sha(a2b(b64)).hexdigest()
            if not got:
                got = _slow_evidence_id(leaf)
            if got != eid:
                raise ScanMismatch(i, "evidence id")
            if per_entry is not None:
                per_entry(i, leaf)
            if i & 1:
                base = 2 * i - i.bit_count()
                idx = i
                level = 0
                while idx & 1:
                    h = sha(b"\x01" + border.pop() + h).digest()
                    idx >>= 1
                    level += 1
                    key, stored = nodes[n]
                    n += 1
                    if key != base + level or stored != h:
                        raise ScanMismatch(i, "subtree hash")
            border.append(h)
            i += 1
            if i in wanted:
                roots[i] = _root(border)
                if query(root_sql, (i - 1,)) != [(roots[i],)]:
                    raise ScanMismatch(i - 1, "root after entry")
        if i != stop:
            raise ScanMismatch(i, "entry missing")
    return ScanResult(size, roots, border)
