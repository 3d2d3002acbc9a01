"""Scale: memory per entry, search latency and restart time at 100k and 1M entries.
Writes the `scale` section of docs/BENCHMARKS.md.

    python benchmarks/scale.py --sizes 100000 1000000

Vectors are synthetic but clustered like embeddings (10k centres, within-cluster cosine ~0.8),
384-d like all-MiniLM-L6-v2; rows are real store rows (SQLite file, ~500-byte answers). For
each size: bulk-load the store, then (1) full rebuild of the index from the store (what a start
without snapshot does), (2) RSS growth per entry, (3) search p50/p99 (k=5, scope filter),
(4) snapshot save, and a restart from the snapshot reconciled with the store.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import stamp, write_section

from gateway.cache import snapshot
from gateway.cache.index import CategoryIndex, ExactIndex, Meta
from gateway.cache.schema import entries, make_engine, run_migrations
from gateway.cache.store import Store
from gateway.resources import trim_heap

DIM = 384
SCOPE = "s" * 64


def rss_mb() -> float:
    gc.collect()
    trim_heap()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((10_000, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    v = centres[rng.integers(0, len(centres), n)] + 0.03 * rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def load_store(store: Store, vecs: np.ndarray) -> None:
    now = time.time()
    answer = orjson.dumps({"choices": [{"message": {"content": "x" * 400}}]}).decode()
    with store.engine.begin() as conn:
        for start in range(0, len(vecs), 20_000):
            conn.execute(entries.insert(), [
                {"namespace": "default", "category": "general", "endpoint": "chat", "model": "m",
                 "scope_hash": SCOPE, "context_hash": "", "query_text": f"query {i}",
                 "embedding": vecs[i].tobytes(), "response": answer, "prompt_tokens": 10,
                 "completion_tokens": 100, "created_at": now, "expires_at": now + 86400,
                 "hit_count": 0, "exact_hash": f"{i:064x}"}
                for i in range(start, min(start + 20_000, len(vecs)))])


def rebuild(store: Store) -> tuple[dict[str, CategoryIndex], ExactIndex]:
    index, exact = CategoryIndex(DIM), ExactIndex()
    n = store.live_counts(time.time()).get("general", 0)
    index.reserve(n + n // 10 + 1024)  # as CacheService does before a rebuild
    for batch in store.iter_live(time.time(), batch=20_000):
        index.add([r.id for r in batch], np.stack([r.embedding for r in batch]),
                  [Meta(r.scope_hash, r.context_hash, r.expires_at) for r in batch])
        for r in batch:
            exact.add(r.exact_hash or "", r.id)
    return {"general": index}, exact


def run_size(n: int, tmp: Path) -> dict[str, float]:
    rng = np.random.default_rng(n)
    url = f"sqlite:///{tmp}/scale-{n}.db"
    run_migrations(url)
    store = Store(make_engine(url))
    vecs = vectors(n, rng)
    t = time.perf_counter()
    load_store(store, vecs)
    load_s = time.perf_counter() - t
    queries = vecs[rng.integers(0, n, 2000)] + 0.02 * rng.standard_normal((2000, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    del vecs
    gc.collect()

    base = rss_mb()
    t = time.perf_counter()
    indexes, exact = rebuild(store)
    rebuild_s = time.perf_counter() - t
    per_entry = (rss_mb() - base) * 1024 * 1024 / n

    index = indexes["general"]
    times = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q, k=5, scope_hash=SCOPE, context_hash="", now=time.time())
        times.append(time.perf_counter() - t0)
    times.sort()

    snap = tmp / f"snap-{n}"
    t = time.perf_counter()
    snapshot.save(snap, indexes, exact, store.max_id(), "bench")
    save_s = time.perf_counter() - t
    del indexes, exact, index
    gc.collect()

    t = time.perf_counter()
    loaded = snapshot.load(snap, DIM, "bench", ["general"])
    assert loaded is not None
    live = store.live_expiries(time.time())
    held = loaded.indexes["general"].expires()
    stale = [i for i, e in held.items() if live.get(i) != e]
    restart_s = time.perf_counter() - t
    assert not stale
    store.dispose()
    return {"n": n, "store_load_s": load_s, "rebuild_s": rebuild_s, "bytes_per_entry": per_entry,
            "rss_mb": rss_mb(), "search_p50_ms": times[len(times) // 2] * 1000,
            "search_p99_ms": times[int(len(times) * 0.99)] * 1000, "snapshot_save_s": save_s,
            "restart_from_snapshot_s": restart_s,
            "db_bytes_per_entry": os.path.getsize(f"{tmp}/scale-{n}.db") / n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--tmp", default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for n in args.sizes:
            rows.append(run_size(n, Path(tmp)))
            print(rows[-1], flush=True)
    lines = [
        "## Scale: index memory, search latency, restart time",
        "",
        stamp(),
        "",
        "One category index (hnswlib, M 16, ef_construction 100, ef 64), clustered synthetic "
        "384-d vectors, SQLite store on local disk. *Rebuild* is a start without snapshot (every "
        "row read from the store and inserted into the graph); *restart from snapshot* loads "
        "the saved graph and reconciles it with the store's live rows (what a start with "
        "`SEMCACHE_INDEX_SNAPSHOT_DIR` does, model loading aside). Memory is the RSS growth of "
        "the process while the index and its metadata were built, per entry.",
        "",
        "| entries | index RAM / entry | process RSS | search p50 | search p99 | rebuild from store "
        "| snapshot save | restart from snapshot | store bytes / entry |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['bytes_per_entry']:.0f} B | {r['rss_mb']:.0f} MB | "
            f"{r['search_p50_ms']:.3f} ms | {r['search_p99_ms']:.3f} ms | {r['rebuild_s']:.0f} s | "
            f"{r['snapshot_save_s']:.1f} s | {r['restart_from_snapshot_s']:.1f} s | "
            f"{r['db_bytes_per_entry']:.0f} B |")
    write_section("scale", "\n".join(lines))


if __name__ == "__main__":
    main()
