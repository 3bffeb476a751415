"""Ledger benchmark: batched appends by writers, receipt latency, proofs and verify at 10^6.

Run: ``python bench/bench_ledger.py [--quick] [--size N] [--plot FILE]``. Not
a test. Needs the local PostgreSQL (postgres@127.0.0.1:5432, trust auth);
creates and drops its own database. ``--quick`` appends fewer entries and
builds a 10^5 tree; ``--size`` sets the tree size for the proof and verify
figures (default 10^6, the size the goals are stated at).

Appends: each writer is a process with ``--callers`` threads appending one
envelope at a time (as the activities of one worker do); the ledger sequences
the concurrent appends of a process in batches (one head lock per batch).
Writers 1, 2 and 4 are measured on each back end, and the old shape (one
caller per process, one head lock per entry) beside them. Receipt latency:
while the 4-writer run goes, a checkpointer signs a checkpoint every
``--checkpoint-ms``; for every ``--sample``-th append a receipt (inclusion
proof against the newest checkpoint covering it) is built and verified, and
the time from the start of the append to the verified receipt is recorded.

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
import platform
import queue
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
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
from ecp.lineage.ledger._receipt import verify_receipt
from ecp.lineage.ledger._store import node_key
from tests.lineage.support import make_envelope

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
#: What main prints as its last line.
SUMMARY: dict[str, object] = {}
#: appends/s by (back end, mode) and writer count, for the plot.
CURVES: dict[str, dict[int, float]] = {}


# --- append throughput ---------------------------------------------------------------


def _append_worker(url: str, envs: list[bytes], q: mp.Queue) -> None:  # type: ignore[type-arg]
    with Ledger.open(url, trust=ACCEPT_UNVERIFIED) as ledger:
        ledger.append(envs[0])  # warm the pool
        t = time.perf_counter()
        for e in envs[1:]:
            ledger.append(e)
        q.put((len(envs) - 1, time.perf_counter() - t))


def _group_worker(  # type: ignore[no-untyped-def]
    url: str, envs: list[bytes], callers: int, sample: int, log_key, q: mp.Queue
) -> None:
    """``callers`` threads append concurrently; sampled receipts are built and verified."""
    with Ledger.open(url, trust=ACCEPT_UNVERIFIED) as ledger:
        ledger.append(envs[0])  # warm the pool
        work = envs[1:]
        slices = [work[c::callers] for c in range(callers)]
        samples: queue.Queue[tuple[float, int] | None] = queue.Queue()
        latencies: list[float] = []
        start = threading.Barrier(callers + 1)

        def caller(mine: list[bytes]) -> None:
            start.wait()
            for k, e in enumerate(mine):
                t0 = time.perf_counter()
                r = ledger.append(e)
                if sample and k % sample == 0:
                    samples.put((t0, r.index))

        def receipts() -> None:
            waiting: list[tuple[float, int]] = []
            done = False
            while not done or waiting:
                while True:
                    try:
                        item = samples.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        done = True
                    else:
                        waiting.append(item)
                cp = ledger.latest_checkpoint()
                covered = cp.checkpoint.size if cp is not None else 0
                still: list[tuple[float, int]] = []
                for t0, index in waiting:
                    if index < covered:
                        verify_receipt(ledger.receipt(index), log_key)
                        latencies.append(time.perf_counter() - t0)
                    else:
                        still.append((t0, index))
                waiting = still
                time.sleep(0.025)

        threads = [threading.Thread(target=caller, args=(m,)) for m in slices]
        rt = threading.Thread(target=receipts)
        for th in threads:
            th.start()
        rt.start()
        start.wait()
        t = time.perf_counter()
        cpu = time.process_time()  # every thread of this writer (SQLite runs in it too)
        for th in threads:
            th.join()
        d = time.perf_counter() - t
        cpu = time.process_time() - cpu
        samples.put(None)
        rt.join()
        q.put((len(work), d, latencies, cpu))


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


def _run(target, arglists) -> tuple[float, list]:  # type: ignore[no-untyped-def,type-arg]
    ctx = mp.get_context("fork")
    q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=target, args=(*a, q)) for a in arglists]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a writer process failed (exit code {p.exitcode})")
    total = sum(r[0] for r in results)
    # Rate over the slowest writer's own timed loop (excludes process start-up).
    return total / max(max(r[1] for r in results), 1e-9), results


def _fresh(url: str) -> None:
    _reset(url)
    Ledger.open(url, trust=ACCEPT_UNVERIFIED).close()
    _raw_table(url)


def _checkpointer(url: str, log: Ed25519FileSigner, every_s: float, stop) -> None:  # type: ignore[no-untyped-def]
    # Its own process: a thread in the parent could hold a lock at the moment
    # the writers fork, and they would inherit it locked.
    with Ledger.open(url, trust=ACCEPT_UNVERIFIED) as ledger:
        while not stop.wait(every_s):
            ledger.checkpoint(log)
        ledger.checkpoint(log)


def bench_appends(url: str, args: argparse.Namespace, envs: list[bytes], tag: str) -> None:
    n = args.appends
    size = len(envs[0])
    log = Ed25519FileSigner.generate()
    _fresh(url)
    one = _run(_append_worker, [(url, envs[: args.legacy + 1])])[0]
    raw1 = _run(_raw_worker, [(url, args.legacy, size, 0)])[0]
    _fresh(url)
    chunks = [envs[w * (args.legacy + 1) : (w + 1) * (args.legacy + 1)] for w in range(4)]
    four = _run(_append_worker, [(url, c) for c in chunks])[0]
    raw4 = _run(_raw_worker, [(url, args.legacy, size, w + 1) for w in range(4)])[0]
    CURVES[f"{tag}, 1 caller per writer (one head lock per entry)"] = {1: one, 4: four}
    batched: dict[int, float] = {}
    for writers in (1, 2, 4):
        _fresh(url)
        per = n // writers
        chunks = [envs[w * (per + 1) : (w + 1) * (per + 1)] for w in range(writers)]
        ctx = mp.get_context("fork")
        stop = ctx.Event()
        cp = ctx.Process(target=_checkpointer, args=(url, log, args.checkpoint_ms / 1000, stop))
        cp.start()
        try:
            rate, results = _run(
                _group_worker,
                [(url, c, args.callers, args.sample, log.public_key) for c in chunks],
            )
        finally:
            stop.set()
            cp.join()
        batched[writers] = rate
        lat = sorted(x for r in results for x in r[2])
        p50 = statistics.median(lat) * 1000 if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")
        print(
            f"{tag:10} appends/s {writers} writer(s) x {args.callers} callers {rate:8.0f}  "
            f"receipt latency p50 {p50:6.1f} ms p99 {p99:6.1f} ms ({len(lat)} receipts)"
        )
        if writers == 4:
            cpu_us = sum(r[3] for r in results) / sum(r[0] for r in results) * 1e6
            print(
                f"{tag:10} writer CPU per append {cpu_us:.0f} us (receipt thread included): "
                f"{(os.cpu_count() or 1) * 1e6 / cpu_us:,.0f} appends/s if the writers "
                "had every core to themselves"
            )
            SUMMARY[f"{tag}_writer_cpu_us_per_append_4w"] = round(cpu_us, 1)
            SUMMARY[f"appends_per_s_{tag}_4w"] = round(rate, 1)
            SUMMARY[f"receipt_latency_p50_ms_{tag}"] = round(p50, 1)
            SUMMARY[f"receipt_latency_p99_ms_{tag}"] = round(p99, 1)
            SUMMARY[f"{tag}_batched_over_raw_insert_4w"] = round(rate / raw4, 3)
        with Ledger.open(url, trust=ACCEPT_UNVERIFIED) as ledger:
            report = ledger.verify_all(log.public_key)
            want = writers * (per + 1)  # each writer warms up with one
            if report.size != want:
                raise SystemExit(f"{tag}: {report.size} entries stored, {want} appended")
    CURVES[f"{tag}, {args.callers} callers per writer (batched)"] = batched
    SUMMARY[f"{tag}_batched_over_one_caller_4w"] = round(batched[4] / four, 2)
    SUMMARY[f"appends_per_s_{tag}_1w"] = round(batched[1], 1)
    SUMMARY[f"{tag}_append_ratio_1_writer"] = round(raw1 / one, 3)
    SUMMARY[f"{tag}_append_ratio_4_writers"] = round(raw4 / four, 3)
    SUMMARY[f"{tag}_appends_per_s_1_writer"] = round(one, 1)
    SUMMARY[f"{tag}_appends_per_s_4_writers_1_caller"] = round(four, 1)
    SUMMARY[f"{tag}_raw_insert_per_s_4_writers"] = round(raw4, 1)
    print(
        f"{tag:10} appends/s 1 writer x 1 caller {one:8.0f}  raw INSERT {raw1:8.0f}  "
        f"ratio {raw1 / one:4.2f}x"
    )
    print(
        f"{tag:10} appends/s 4 writers x 1 caller {four:7.0f}  raw INSERT {raw4:8.0f}  "
        f"ratio {raw4 / four:4.2f}x; batched 4 writers = {batched[4] / raw4:4.2f}x raw INSERT"
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
    tables = (
        "ledger_entry",
        "ledger_node",
        "ledger_head",
        "ledger_checkpoint",
        "ledger_witnessing",
        "raw_insert",
    )
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


def _exp(n: int) -> str:
    # 1000000 -> "1e6"; other sizes as they are.
    k = len(str(n)) - 1
    return f"1e{k}" if n == 10**k else str(n)


def bench_proofs(url: str, n: int, tag: str) -> None:
    t = time.perf_counter()
    bulk_load(url, n)
    load = time.perf_counter() - t
    with Ledger.open(url, trust=ACCEPT_UNVERIFIED) as ledger:
        head = ledger.head()
        rng = random.Random(1)
        gen, ver, cgen, cver = [], [], [], []
        for _ in range(50):  # warm the pool and the statement caches, not measured
            ledger.inclusion_proof(rng.randrange(n), n)
        for _ in range(1000):
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
        p99 = sorted(gen)[int(len(gen) * 0.99)] * 1000
        SUMMARY[f"proof_p50_ms_{_exp(n)}_{tag}"] = round(ms(gen), 4)
        SUMMARY[f"proof_p99_ms_{_exp(n)}_{tag}"] = round(p99, 4)
        SUMMARY[f"{tag}_{n}_inclusion_verify_ms"] = round(ms(ver), 4)
        print(
            f"{tag:10} n={n:>8}  bulk load {load:6.1f}s  inclusion proof gen {ms(gen):.3f} ms "
            f"(p99 {p99:.3f}) verify {ms(ver):.3f} ms  "
            f"consistency gen {ms(cgen):.3f} ms verify {ms(cver):.3f} ms"
        )
        t = time.perf_counter()
        report = ledger.verify_all()
        d = time.perf_counter() - t
        assert report.size == n
        print(f"{tag:10} n={n:>8}  full verify {d:6.2f}s ({n / d:,.0f} entries/s)")
        SUMMARY[f"verify_entries_per_s_{tag}"] = round(n / d)
        SUMMARY[f"{tag}_{n}_full_verify_s"] = round(d, 2)


# --- the plot ------------------------------------------------------------------------


def write_svg(path: Path, curves: dict[str, dict[int, float]], title: str) -> None:
    """A line chart of appends/s by writer processes, written without a plotting library."""
    w, h, left, right, top, bottom = 720, 420, 70, 250, 40, 50
    xs = sorted({x for c in curves.values() for x in c})
    ymax = max(v for c in curves.values() for v in c.values()) * 1.1 or 1.0
    step = 10 ** (len(str(int(ymax))) - 1)
    if ymax / step < 3:
        step /= 2
    px = lambda x: left + (w - left - right) * (xs.index(x) / max(len(xs) - 1, 1))  # noqa: E731
    py = lambda y: h - bottom - (h - top - bottom) * (y / ymax)  # noqa: E731
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14">{title}</text>',
    ]
    y = 0.0
    while y <= ymax:
        out.append(
            f'<line x1="{left}" x2="{w - right}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#ddd"/>'
        )
        out.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:,.0f}</text>')
        y += step
    for x in xs:
        out.append(f'<text x="{px(x):.1f}" y="{h - bottom + 18}" text-anchor="middle">{x}</text>')
    out.append(
        f'<text x="{(left + w - right) / 2:.1f}" y="{h - 10}" text-anchor="middle">'
        "writer processes</text>"
    )
    out.append(
        f'<text x="16" y="{(top + h - bottom) / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {(top + h - bottom) / 2:.1f})">appends/s</text>'
    )
    for k, (name, pts) in enumerate(curves.items()):
        colour = colours[k % len(colours)]
        dash = ' stroke-dasharray="5,4"' if "1 caller" in name else ""
        coords = " ".join(f"{px(x):.1f},{py(v):.1f}" for x, v in sorted(pts.items()))
        out.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        for x, v in sorted(pts.items()):
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(v):.1f}" r="3" fill="{colour}"/>')
        ly = top + 10 + 34 * k
        out.append(
            f'<line x1="{w - right + 12}" x2="{w - right + 36}" y1="{ly}" y2="{ly}" '
            f'stroke="{colour}" stroke-width="2"{dash}/>'
        )
        first, _, rest = name.partition(", ")
        out.append(f'<text x="{w - right + 42}" y="{ly + 4}">{first}</text>')
        out.append(f'<text x="{w - right + 42}" y="{ly + 18}" font-size="10">{rest}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer appends, a 10^5 tree")
    ap.add_argument(
        "--size", type=int, default=None, help="tree size for proofs and verify (default 10^6)"
    )
    ap.add_argument(
        "--appends", type=int, default=None, help="batched appends per run (default 12000)"
    )
    ap.add_argument("--callers", type=int, default=16, help="appending threads per writer")
    ap.add_argument(
        "--checkpoint-ms", type=float, default=250.0, help="checkpoint interval during appends"
    )
    ap.add_argument("--sample", type=int, default=25, help="build a receipt for every Nth append")
    ap.add_argument("--plot", type=Path, default=None, help="write the appends plot (SVG) here")
    ap.add_argument(
        "--only", choices=["sqlite", "postgres"], default=None, help="one back end only"
    )
    ap.add_argument(
        "--part", choices=["all", "appends", "tree"], default="all", help="appends or tree only"
    )
    args = ap.parse_args()
    args.appends = args.appends or (3000 if args.quick else 12000)
    args.legacy = 150 if args.quick else 400
    size = args.size or (10**5 if args.quick else 10**6)
    worker = Ed25519FileSigner.generate()
    tmp = Path(tempfile.mkdtemp(prefix="ecp-bench-"))
    sqlite_url = f"sqlite:///{tmp / 'bench.db'}"
    dbname = f"ecp_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    pg_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{dbname}"
    backends = [("sqlite", sqlite_url), ("postgres", pg_url)]
    if args.only:
        backends = [b for b in backends if b[0] == args.only]
    try:
        print(
            f"# ledger benchmark ({'quick' if args.quick else 'full'}), {os.cpu_count()} cores, "
            f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
        )
        envs = [
            make_envelope(i, worker).to_json()
            for i in range(
                max(args.appends + 8, 4 * (args.legacy + 1)) if args.part != "tree" else 0
            )
        ]
        for tag, url in backends if args.part != "tree" else []:
            bench_appends(url, args, envs, tag)
        for tag, url in backends if args.part != "appends" else []:
            bench_proofs(url, size, tag)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()
    lat = [v for k, v in SUMMARY.items() if k.startswith("receipt_latency_p99_ms_")]
    if lat:
        SUMMARY["receipt_latency_p99_ms"] = max(lat)  # type: ignore[type-var]
    ver = [v for k, v in SUMMARY.items() if k.startswith("verify_entries_per_s_")]
    if ver:
        SUMMARY["verify_entries_per_s"] = min(ver)  # type: ignore[type-var]
    if args.plot is not None:
        write_svg(args.plot, CURVES, "Ledger appends by writer processes (higher is better)")
        print(f"# plot written to {args.plot}")
    # One JSON object as the last line, for scripts that compare runs.
    print(
        json.dumps(
            {"benchmark": "ledger", "quick": args.quick, "tree_size": size, **SUMMARY},
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
