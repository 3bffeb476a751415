"""Ledger benchmark: append throughput vs raw INSERT, proof cost at 10^5/10^6, full verify.

Run: ``python bench/bench_ledger.py [--quick]``. Not a test. Needs the local
PostgreSQL (postgres@127.0.0.1:5432, trust auth); creates and drops its own
database. ``--quick`` uses smaller append counts and tree sizes 10^4/10^5.

Baselines: the raw INSERT rate is the same database, through the bare driver,
with the same durability settings (SQLite WAL + synchronous=FULL; PostgreSQL
defaults), one row of a similar size per transaction into a plain table.
Large trees are bulk-loaded straight into the ledger tables (computing the
same leaf, subtree, root-after and head values an append would), because
signing 10^6 envelopes would measure Ed25519, not the log.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import multiprocessing as mp
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecp.authority._keys import Ed25519FileSigner

# Appends here measure the log itself; signature checks (about 120 us each) are
# what the runtime adds on top, as before this benchmark existed.
from ecp.lineage.ledger._ledger import ACCEPT_UNVERIFIED, Ledger
from ecp.lineage.ledger._merkle import CompactRange, leaf_hash, verify_consistency, verify_inclusion
from ecp.lineage.ledger._store import node_key
from tests.lineage.support import make_envelope

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
#: What main prints as its last line.
SUMMARY: dict[str, object] = {}


# --- append throughput ---------------------------------------------------------------


def _append_worker(url: str, envs: list[bytes], q: mp.Queue) -> None:  # type: ignore[type-arg]
    with Ledger.open(url, trust=ACCEPT_UNVERIFIED) as ledger:
        ledger.append(envs[0])  # warm the pool
        t = time.perf_counter()
        for e in envs[1:]:
            ledger.append(e)
        q.put((len(envs) - 1, time.perf_counter() - t))


def _raw_worker(url: str, n: int, size: int, wid: int, q: mp.Queue) -> None:  # type: ignore[type-arg]
    blob = os.urandom(size)
    if url.startswith("sqlite"):
        con = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=60, isolation_level=None)
        con.execute("PRAGMA synchronous=FULL")
        t = time.perf_counter()
        for i in range(n):
            con.execute("BEGIN IMMEDIATE")
            con.execute("INSERT INTO raw_insert (id, data) VALUES (?, ?)", (wid * 10**7 + i, blob))
            con.execute("COMMIT")
    else:
        con = psycopg.connect(url.replace("+psycopg", ""), autocommit=False)  # type: ignore[assignment]
        t = time.perf_counter()
        for i in range(n):
            con.execute(
                "INSERT INTO raw_insert (id, data) VALUES (%s, %s)", (wid * 10**7 + i, blob)
            )
            con.commit()
    q.put((n, time.perf_counter() - t))
    con.close()


def _run(target, arglists) -> float:  # type: ignore[no-untyped-def]
    ctx = mp.get_context("fork")
    q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=target, args=(*a, q)) for a in arglists]
    t = time.perf_counter()
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - t
    total = sum(n for n, _ in results)
    # Rate over the slowest writer's own timed loop (excludes process start-up).
    return total / max(max(d for _, d in results), 1e-9) if wall else 0.0


def bench_appends(url: str, n: int, worker: Ed25519FileSigner, tag: str) -> None:
    envs = [make_envelope(i, worker).to_json() for i in range(4 * (n + 1) + 10)]
    size = len(envs[0])
    _reset(url)
    Ledger.open(url, trust=ACCEPT_UNVERIFIED).close()
    _raw_table(url)
    one = _run(_append_worker, [(url, envs[: n + 1])])
    raw1 = _run(_raw_worker, [(url, n, size, 0)])
    _reset(url)
    Ledger.open(url, trust=ACCEPT_UNVERIFIED).close()
    _raw_table(url)
    chunks = [envs[w * (n + 1) : (w + 1) * (n + 1)] for w in range(4)]
    four = _run(_append_worker, [(url, c) for c in chunks])
    raw4 = _run(_raw_worker, [(url, n, size, w + 1) for w in range(4)])
    with Ledger.open(url, trust=ACCEPT_UNVERIFIED) as ledger:
        ledger.verify_all()
    SUMMARY[f"{tag}_append_ratio_1_writer"] = round(raw1 / one, 3)
    SUMMARY[f"{tag}_append_ratio_4_writers"] = round(raw4 / four, 3)
    SUMMARY[f"{tag}_appends_per_s_1_writer"] = round(one, 1)
    print(
        f"{tag:10} appends/s 1 writer {one:8.0f}  raw INSERT {raw1:8.0f}  ratio {raw1 / one:4.2f}x"
    )
    print(
        f"{tag:10} appends/s 4 writers {four:7.0f}  raw INSERT {raw4:8.0f}  "
        f"ratio {raw4 / four:4.2f}x"
    )


def _raw_table(url: str) -> None:
    if url.startswith("sqlite"):
        con = sqlite3.connect(url.removeprefix("sqlite:///"))
        con.execute("DROP TABLE IF EXISTS raw_insert")
        con.execute("CREATE TABLE raw_insert (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        con.commit()
    else:
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as con:
            con.execute("DROP TABLE IF EXISTS raw_insert")
            con.execute("CREATE TABLE raw_insert (id BIGINT PRIMARY KEY, data BYTEA NOT NULL)")


def _reset(url: str) -> None:
    tables = ("ledger_entry", "ledger_node", "ledger_head", "ledger_checkpoint", "raw_insert")
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            p.unlink(missing_ok=True)
    else:
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as con:
            for t in tables:
                con.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(t)))


# --- bulk loading a large tree ---------------------------------------------------------


def _synthetic(n: int):  # type: ignore[no-untyped-def]
    """Rows for n entries, computed exactly as appends would."""
    border = CompactRange()
    for i in range(n):
        payload = b"%d" % i
        leaf = json.dumps(
            {"payload": base64.b64encode(payload).decode(), "payloadType": "x", "signatures": []},
            separators=(",", ":"),
        ).encode()
        lh = leaf_hash(leaf)
        nodes = [(node_key(x.level, x.index), x.hash) for x in border.push(lh)]
        eid = "sha256:" + hashlib.sha256(payload).hexdigest()
        yield (i, eid, lh, border.root(), leaf), nodes, border


def _synthetic_leaf(i: int):  # type: ignore[no-untyped-def]
    payload = b"%d" % i
    leaf = json.dumps(
        {"payload": base64.b64encode(payload).decode(), "payloadType": "x", "signatures": []},
        separators=(",", ":"),
    ).encode()
    yield leaf_hash(leaf)


def bulk_load(url: str, n: int) -> None:
    _reset(url)
    Ledger.open(url, trust=ACCEPT_UNVERIFIED).close()
    now = "2025-01-01 00:00:00"
    entries, nodes = [], []
    border = CompactRange()
    if url.startswith("sqlite"):
        con = sqlite3.connect(url.removeprefix("sqlite:///"))
        con.execute("PRAGMA synchronous=OFF")
        ins_e = (
            "INSERT INTO ledger_entry (seq, evidence_id, leaf_hash, root_after, envelope, "
            "recorded_at, namespace, workflow_id, run_id, activity_id) "
            "VALUES (?,?,?,?,?,?,'ns','wf','run','a')"
        )
        ins_n = "INSERT INTO ledger_node VALUES (?,?)"

        def flush() -> None:
            con.executemany(ins_e, entries)
            con.executemany(ins_n, nodes)
            entries.clear()
            nodes.clear()

        for row, nd, border in _synthetic(n):  # noqa: B007 - the last border is the head
            entries.append((*row, now))
            nodes.extend(nd)
            if len(entries) >= 50_000:
                flush()
        flush()
        con.execute(
            "UPDATE ledger_head SET size=?, root_hash=?, border=? WHERE id=1",
            (border.size, border.root(), border.to_bytes()),
        )
        con.commit()
        con.close()
    else:
        with psycopg.connect(url.replace("+psycopg", "")) as con:
            with con.cursor() as cur:
                with cur.copy(
                    "COPY ledger_entry (seq, evidence_id, leaf_hash, root_after, "
                    "envelope, recorded_at, namespace, workflow_id, run_id, activity_id) FROM STDIN"
                ) as cp:
                    for row, nd, border in _synthetic(n):  # noqa: B007 - the last border is the head
                        cp.write_row((*row, now, "ns", "wf", "run", "a"))
                        nodes.extend(nd)
                with cur.copy("COPY ledger_node (node_id, hash) FROM STDIN") as cp:
                    for r in nodes:
                        cp.write_row(r)
                cur.execute(
                    "UPDATE ledger_head SET size=%s, root_hash=%s, border=%s WHERE id=1",
                    (border.size, border.root(), border.to_bytes()),
                )
            con.commit()


def bench_proofs(url: str, n: int, tag: str, *, full_verify: bool) -> None:
    t = time.perf_counter()
    bulk_load(url, n)
    load = time.perf_counter() - t
    with Ledger.open(url, trust=ACCEPT_UNVERIFIED) as ledger:
        head = ledger.head()
        import random

        rng = random.Random(1)
        gen, ver, cgen, cver = [], [], [], []
        for _ in range(300):
            i = rng.randrange(n)
            t0 = time.perf_counter()
            proof = ledger.inclusion_proof(i, n)
            t1 = time.perf_counter()
            lh = next(_synthetic_leaf(i))
            t2 = time.perf_counter()
            verify_inclusion(i, n, lh, proof, head.root_hash)
            t3 = time.perf_counter()
            gen.append(t1 - t0)
            ver.append(t3 - t2)
        old = n // 3 + 7
        old_root = ledger.root_at(old)
        for _ in range(100):
            t0 = time.perf_counter()
            cp = ledger.consistency_proof(old, n)
            t1 = time.perf_counter()
            verify_consistency(old, n, old_root, head.root_hash, cp)
            cgen.append(t1 - t0)
            cver.append(time.perf_counter() - t1)
        ms = lambda xs: statistics.median(xs) * 1000  # noqa: E731
        SUMMARY[f"{tag}_{n}_inclusion_gen_ms"] = round(ms(gen), 4)
        SUMMARY[f"{tag}_{n}_inclusion_verify_ms"] = round(ms(ver), 4)
        print(
            f"{tag:10} n={n:>8}  bulk load {load:6.1f}s  inclusion proof gen {ms(gen):.3f} ms "
            f"(p99 {sorted(gen)[int(len(gen) * 0.99)] * 1000:.3f}) verify {ms(ver):.3f} ms  "
            f"consistency gen {ms(cgen):.3f} ms verify {ms(cver):.3f} ms"
        )
        if full_verify:
            t = time.perf_counter()
            ledger.verify_all()
            d = time.perf_counter() - t
            print(f"{tag:10} n={n:>8}  full verify {d:6.1f}s ({n / d:,.0f} entries/s)")
            SUMMARY[f"{tag}_{n}_full_verify_s"] = round(d, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (10^4 and 10^5 trees)")
    args = ap.parse_args()
    n_app = 150 if args.quick else 500
    sizes = [10**4, 10**5] if args.quick else [10**5, 10**6]
    worker = Ed25519FileSigner.generate()
    tmp = Path(tempfile.mkdtemp(prefix="ecp-bench-"))
    sqlite_url = f"sqlite:///{tmp / 'bench.db'}"
    dbname = f"ecp_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    pg_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{dbname}"
    try:
        print(f"# ledger benchmark ({'quick' if args.quick else 'full'}), {os.cpu_count()} cores")
        bench_appends(sqlite_url, n_app, worker, "sqlite")
        bench_appends(pg_url, n_app, worker, "postgres")
        for n in sizes:
            bench_proofs(sqlite_url, n, "sqlite", full_verify=True)
        for n in sizes:  # the proof goal is stated at 10^6, on both back ends
            bench_proofs(pg_url, n, "postgres", full_verify=True)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()
    # One JSON object as the last line, for scripts that compare runs.
    print(json.dumps({"benchmark": "ledger", "quick": args.quick, **SUMMARY}, sort_keys=True))


if __name__ == "__main__":
    main()
