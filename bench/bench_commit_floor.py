"""What one durable commit costs on this machine, next to the gate's crypto floor.

The gate's single-use check must be durable before a body runs: a use that a
power loss could roll back lets the body run once more. This bench measures
the floor that sets for a per-check store on SQLite: one ``INSERT … ON
CONFLICT DO NOTHING RETURNING`` in its own transaction, with
``synchronous=FULL`` (an fsync per commit, durable across power loss) and
with ``synchronous=NORMAL`` (durable across a process crash only, in WAL
mode), each against the gate's crypto floor (one Ed25519 verify plus a
SHA-256 of an argument payload) measured in the same run.

    python bench/bench_commit_floor.py [--n 2000]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import tempfile
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def _commits(path: str, synchronous: str, n: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE used (grant_id TEXT, attempt INT, PRIMARY KEY (grant_id, attempt))")
    t0 = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO used VALUES (?, 1) ON CONFLICT DO NOTHING RETURNING grant_id", (f"g{i}",)
        ).fetchall()
        conn.execute("COMMIT")
    cost = (time.perf_counter() - t0) / n
    conn.close()
    return cost


def _crypto_floor(n: int) -> float:
    key = Ed25519PrivateKey.generate()
    message = os.urandom(600)  # about a grant's pre-authentication encoding
    sig = key.sign(message)
    public = key.public_key()
    payload = json.dumps({"amount": 250, "currency": "EUR", "recipient": "acme"}).encode()
    t0 = time.perf_counter()
    for _ in range(n):
        public.verify(sig, message)
        hashlib.sha256(payload).digest()
    return (time.perf_counter() - t0) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="commits (and verifies) per figure")
    n = parser.parse_args().n
    floor = _crypto_floor(n)
    with tempfile.TemporaryDirectory() as tmp:
        full = _commits(os.path.join(tmp, "full.db"), "FULL", n)
        normal = _commits(os.path.join(tmp, "normal.db"), "NORMAL", n)
    print(f"crypto floor (Ed25519 verify + SHA-256)     {floor * 1e6:8.1f} us")
    print(f"SQLite commit, synchronous=FULL (fsync)     {full * 1e6:8.1f} us ({full / floor:.2f}x)")
    print(
        f"SQLite commit, synchronous=NORMAL (no fsync){normal * 1e6:8.1f} us "
        f"({normal / floor:.2f}x)"
    )
    print(
        json.dumps(
            {
                "n": n,
                "crypto_floor_us": round(floor * 1e6, 1),
                "sqlite_full_commit_us": round(full * 1e6, 1),
                "sqlite_normal_commit_us": round(normal * 1e6, 1),
                "full_commit_over_floor": round(full / floor, 2),
                "normal_commit_over_floor": round(normal / floor, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
