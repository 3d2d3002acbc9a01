"""Embedding latency on a GPU vs the CPU of the same machine (run on the lent H100 with
`--model DIR --out FILE`), and `--write FILE` here to put the result in docs/BENCHMARKS.md.

The model is all-MiniLM-L6-v2; it travels to the GPU machine with fp16 weights (the transfer
limit), loaded as fp32 and as fp16. Single-query latency is what a cache lookup pays.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

QUERIES = [
    "Which city is the capital of France?", "Write a Python function that sorts a list",
    "What is 15 percent of 200?", "hi, how are you today?",
]


def measure(model, batch: int, n: int, sync) -> dict[str, float]:  # type: ignore[no-untyped-def]
    texts = (QUERIES * (batch // len(QUERIES) + 1))[:batch]
    for _ in range(10):
        model.encode(texts, normalize_embeddings=True, batch_size=batch)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        model.encode(texts, normalize_embeddings=True, batch_size=batch)
        sync()
        times.append(time.perf_counter() - start)
    times.sort()
    return {"p50_ms": times[len(times) // 2] * 1000, "p99_ms": times[int(len(times) * .99)] * 1000,
            "mean_ms": statistics.mean(times) * 1000, "texts_per_s": batch / statistics.mean(times)}


def run(model_dir: str, out: str) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from sentence_transformers import SentenceTransformer

    results: dict[str, object] = {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__, "cpu_cores": os.cpu_count(), "python": platform.python_version(),
        "rows": [],
    }
    rows = results["rows"]
    assert isinstance(rows, list)
    for device, dtype in (("cuda", torch.float32), ("cuda", torch.float16), ("cpu", torch.float32)):
        model = SentenceTransformer(model_dir, device=device)
        model = model.to(dtype)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        for batch in (1, 16, 64, 256):
            if device == "cpu" and batch > 64:
                continue
            r = measure(model, batch, 200 if batch <= 16 else 50, sync)
            rows.append({"device": device, "dtype": str(dtype).split(".")[-1], "batch": batch, **r})
            print(rows[-1], flush=True)
    Path(out).write_text(json.dumps(results, indent=2))


def write(path: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _report import write_section

    data = json.loads(Path(path).read_text())
    lines = [
        "## Embedding on a GPU (lent NVIDIA H100) vs CPU",
        "",
        f"_Run on {data['gpu']}, {data['cpu_cores']} CPU cores, torch {data['torch']}, Python "
        f"{data['python']}; run 2026-11-23 on the lent device machine; raw numbers in "
        "`benchmarks/results/gpu_embedding_h100.json`._",
        "",
        "all-MiniLM-L6-v2 through sentence-transformers (`encode`, normalised), p50/p99 of 200 "
        "calls (50 for batches ≥ 64) after 10 warm-ups, CUDA synchronised. The CPU rows are that "
        "machine's own CPU (torch), for the ratio in one run; this project's CPU figures with "
        "ONNX Runtime on the 2-core dev machine are in the gateway latency section.",
        "",
        "Reading: one query costs about as much on the H100 as on a CPU core (5.8 vs 6.8 ms, "
        "sentence-transformers' per-call overhead and kernel launches dominate a 10-token "
        "input), while batches are where the GPU pays: 64 queries in 6.8 ms (9,300/s) and 256 "
        "in 11-17 ms (15-19k/s). So on a GPU the gateway's micro-batcher turns concurrency into "
        "throughput at an unchanged per-hit latency; the hit's other stages (classify, search, "
        "store read, verify: ~1.5 ms here) are the same as on CPU.",
        "",
        "| device | dtype | batch | p50 ms | p99 ms | texts/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        lines.append(f"| {r['device']} | {r['dtype']} | {r['batch']} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['texts_per_s']:.0f} |")
    write_section("gpu_embedding", "\n".join(lines))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--out")
    ap.add_argument("--write")
    a = ap.parse_args()
    if a.write:
        write(a.write)
    else:
        run(a.model, a.out)
