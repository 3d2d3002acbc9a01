"""The whole gateway on a GPU machine: the embedding paths, one request at a time, and
throughput under load with and without the shared embedding process. Writes the `gpu_gateway`
section of docs/BENCHMARKS.md (absolute figures: run it on the GPU machine).

    python benchmarks/gpu_gateway.py [--seconds 10] [--workers 8 12] [--load-procs 4] [--conns 64]

Workload: 1,000 stored questions (10 question families x 100 countries), asked in two other
wordings each (2,000 paraphrases, never the stored text, so a hit is a semantic one unless that
paraphrase missed once and was stored). The wordings are ones the shipped verifier accepts (each
checked one at a time on 12 countries, 2026-12-02: 12 of 12; "known for" for "famous for" and
"When is" for "What is the best time to visit" were refused and replaced), so the load is
semantic hits, not misses. Load comes from raw HTTP/1.1 keep-alive connections in
``--load-procs`` processes (a Python HTTP client library would be the bottleneck); every response
is counted by its `x-semcache` header (exact repeats: similarity 1.0000). CPU per hit: the CPU
time of every gateway process (workers, the shared embedding process, the parent) over the run,
divided by the hits. GPU utilisation: nvidia-smi, sampled every 250 ms during the run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _profile
import orjson
from _report import pct, stamp, write_section
from _servers import cross_encoder_off, fake_upstream, gateway
from under_load import gateway_cpu

FAMILIES = (
    ("What is the capital of {}?", "Which city is the capital of {}?",
     "What's the capital city of {}?"),
    ("What is the population of {}?", "What's the population of {}?",
     "Tell me the population of {}."),
    ("What language is spoken in {}?", "Which language is spoken in {}?",
     "What languages are spoken in {}?"),
    ("What is the currency of {}?", "Which currency is used in {}?", "What currency does {} use?"),
    ("What is the climate like in {}?", "What's the climate like in {}?",
     "How is the climate in {}?"),
    ("Give me a short history of {}.", "Tell me a short history of {}.",
     "Can you give me a brief history of {}?"),
    ("What food is {} famous for?", "What foods is {} famous for?",
     "Which food is {} famous for?"),
    ("What are the main exports of {}?", "What are {}'s main exports?",
     "Which are the main exports of {}?"),
    ("Describe the flag of {}.", "What does the flag of {} look like?", "Describe {}'s flag."),
    ("What is the most popular sport in {}?", "Which sport is most popular in {}?",
     "What's the most popular sport in {}?"),
)
COUNTRIES = (
    "France Spain Italy Germany Portugal Austria Poland Norway Sweden Finland Denmark Ireland "
    "Greece Turkey Egypt Kenya Nigeria Brazil Chile Peru Argentina Mexico Canada Japan China "
    "India Thailand Vietnam Australia Iceland Belgium Netherlands Switzerland Hungary Romania "
    "Bulgaria Serbia Croatia Slovenia Slovakia Ukraine Belarus Lithuania Latvia Estonia Georgia "
    "Armenia Azerbaijan Kazakhstan Uzbekistan Mongolia Nepal Bhutan Bangladesh Pakistan "
    "Afghanistan Iran Iraq Syria Jordan Lebanon Israel Oman Yemen Qatar Kuwait Bahrain Morocco "
    "Algeria Tunisia Libya Sudan Ethiopia Somalia Uganda Tanzania Rwanda Zambia Zimbabwe Angola "
    "Namibia Botswana Mozambique Madagascar Ghana Senegal Mali Niger Chad Cameroon Gabon "
    "Colombia Venezuela Ecuador Bolivia Paraguay Uruguay Cuba Jamaica Haiti Panama Honduras"
).split()


def body(q: str) -> bytes:
    return orjson.dumps({"model": "fake-small", "messages": [{"role": "user", "content": q}]})


def workload() -> tuple[list[bytes], list[bytes]]:
    stored = [body(f[0].format(c)) for f in FAMILIES for c in COUNTRIES]
    paraphrases = [body(p.format(c)) for f in FAMILIES for p in f[1:] for c in COUNTRIES]
    random.Random(7).shuffle(paraphrases)
    return stored, paraphrases


# --- a raw HTTP/1.1 load generator -------------------------------------------------------------
async def _connection(port: int, method: str, path: str, bodies: list[bytes], start: int,
                      until: float, out: dict[str, list[float]]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = start
    try:
        while time.perf_counter() < until:
            b = bodies[i % len(bodies)] if bodies else b""
            i += 1
            head = (f"{method} {path} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(b)}\r\n\r\n").encode()
            t0 = time.perf_counter()
            writer.write(head + b)
            raw = await reader.readuntil(b"\r\n\r\n")
            headers = dict(line.split(b": ", 1) for line in raw.lower().split(b"\r\n")[1:-2])
            await reader.readexactly(int(headers.get(b"content-length", b"0")))
            elapsed = time.perf_counter() - t0
            status = raw[9:12]
            kind = headers.get(b"x-semcache", b"-").decode()
            if kind == "hit":
                kind = "exact" if headers.get(b"x-semcache-similarity") == b"1.0000" else "semantic"
            elif kind == "bypass":
                kind = f"bypass ({headers.get(b'x-semcache-bypass', b'?').decode()})"
            out.setdefault(kind if status == b"200" else f"status {status.decode()}",
                           []).append(elapsed)
    finally:
        writer.close()


def _load_process(args: tuple[int, str, str, list[bytes], int, float, int]) -> dict[str, list[float]]:
    port, method, path, bodies, conns, seconds, seed = args
    out: dict[str, list[float]] = {}

    async def main() -> None:
        until = time.perf_counter() + seconds
        await asyncio.gather(*(_connection(port, method, path, bodies, seed * 7919 + k * 131,
                                           until, out) for k in range(conns)))

    asyncio.run(main())
    return out


def load(url: str, bodies: list[bytes], seconds: float, procs: int, conns: int,
         method: str = "POST", path: str = "/v1/chat/completions") -> dict[str, list[float]]:
    port = int(url.rsplit(":", 1)[1])
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        parts = pool.map(_load_process, [(port, method, path, bodies, conns, seconds, s)
                                         for s in range(procs)])
    merged: dict[str, list[float]] = {}
    for part in parts:
        for k, v in part.items():
            merged.setdefault(k, []).extend(v)
    return merged


class GpuSampler:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
             "-lms", "250"], stdout=subprocess.PIPE, text=True) if shutil.which("nvidia-smi") \
            else None

    def stop(self) -> float:
        if self.proc is None:
            return float("nan")
        self.proc.terminate()
        out, _ = self.proc.communicate()
        values = [float(x) for x in out.split() if x.strip().isdigit()]
        return statistics.mean(values) if values else float("nan")


# --- the parts -----------------------------------------------------------------------------------
def encoder_rows() -> list[str]:
    import numpy as np
    import torch

    from gateway.embedding import SentenceTransformerEmbedder
    from gateway.embedding.gpu import TorchEmbedder

    ref = SentenceTransformerEmbedder(os.environ.get("SEMCACHE_EMBEDDING_MODEL"), "cuda")
    texts = [orjson.loads(b)["messages"][0]["content"] for b in workload()[1][:256]]
    paths = [("sentence-transformers encode", ref),
             ("torch path, eager", TorchEmbedder(ref, graphs=False, max_batch=256)),
             ("torch path, CUDA graphs", TorchEmbedder(ref, graphs=True, max_batch=256))]
    rows = []
    if not getattr(paths[2][1], "uses_graphs", False):
        paths[2] = ("torch path, CUDA graphs (capture FAILED: eager)", paths[2][1])
    for name, emb in paths:
        for n in (1, 8, 64, 256):
            batch = texts[:n]
            for _ in range(5):
                emb.encode(batch)
            times = []
            for _ in range(100 if n < 256 else 30):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                emb.encode(batch)
                times.append(time.perf_counter() - t0)
            drift = float(np.abs(emb.encode(batch) - ref.encode(batch)).max())
            p50 = statistics.median(times) * 1000
            rows.append(f"| {name} | {n} | {p50:.2f} | {pct(times, 0.99):.2f} | "
                        f"{n / (p50 / 1000):,.0f} | {drift:.1e} |")
    return rows


def start_profiles(upstream: str, seconds: float) -> dict[str, Future[Any]]:
    """py-spy on one worker and on the shared embedding process (if any), in threads, for the
    middle of a load of ``seconds``."""
    pool = ThreadPoolExecutor(2)
    by_role: dict[str, int] = {}
    for pid in _profile.gateway_children(upstream):
        by_role.setdefault(_profile.role(pid), pid)
    span = max(1, int(seconds) - 2)
    futures = {name: pool.submit(_profile.record, pid, span) for name, pid in by_role.items()
               if name != "other"}
    pool.shutdown(wait=False)
    return futures


def seed_store(url: str, stored: list[bytes]) -> None:
    """Each stored question asked once (a miss, stored); then wait until every worker has every
    entry (replica sync through the store) before any load starts."""
    import httpx

    with httpx.Client(timeout=60) as c:
        def ask(b: bytes) -> str:
            r = c.post(f"{url}/v1/chat/completions", content=b,
                       headers={"content-type": "application/json"})
            assert r.status_code == 200, r.text
            return r.headers["x-semcache"]


        with ThreadPoolExecutor(16) as pool:  # httpx.Client is thread-safe
            list(pool.map(ask, stored))
        deadline = time.monotonic() + 60
        probes = stored[:: max(1, len(stored) // 64)] * 4
        while [ask(b) for b in probes].count("hit") < len(probes) \
                and time.monotonic() < deadline:
            time.sleep(1)


def _country(b: bytes) -> str:
    words = orjson.loads(b)["messages"][0]["content"].rstrip("?.").split()
    return next((w.removesuffix("'s") for w in words if w.removesuffix("'s") in COUNTRIES), "")


def summarise(result: dict[str, list[float]], seconds: float, kind: str) -> dict[str, float]:
    lat = result.get(kind, [])
    total = sum(len(v) for v in result.values())
    return {"rps": len(lat) / seconds, "p50": statistics.median(lat) * 1000 if lat else 0,
            "p99": pct(lat, 0.99), "share": len(lat) / max(1, total)}


def one_at_a_time(upstream: str, db: str, stored: list[bytes], paraphrases: list[bytes],
                  env: dict[str, str]) -> str:
    with gateway(upstream, db, **env) as url:
        seed_store(url, stored)
        load(url, paraphrases[:50], 2, 1, 1)  # warm
        health = load(url, [], 3, 1, 1, method="GET", path="/healthz")
        sem = load(url, paraphrases, 5, 1, 1)
    h = statistics.median(health["-"]) * 1000
    s = statistics.median(sem.get("semantic", [0])) * 1000
    return f"{h:.2f} | {s:.2f} | {s - h:.2f} | {len(sem.get('semantic', [])) / 5:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[8, 12])
    ap.add_argument("--load-procs", type=int, default=4)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--skip-encoder", action="store_true")
    ap.add_argument("--skip-one", action="store_true", help="no one-request-at-a-time rows")
    ap.add_argument("--variants", nargs="+", default=["off:2", "on:2", "on:0"],
                    help="shared embedding (on/off) : batch wait ms, one load row each")
    ap.add_argument("--cross-encoder", nargs="+", default=["on"], choices=["on", "off"],
                    help="on: the shipped categories (the cross-encoder beside the rules, on "
                    "this machine's CPU cores); off: the rules alone (an overlay); a row each")
    ap.add_argument("--repeats", nargs="+", default=["off"], choices=["on", "off"],
                    help="verified repeats (SEMCACHE_VERIFIED_REPEATS): off, every wording "
                    "decided anew (the whole path); on, the default; a row each")
    ap.add_argument("--section", default="gpu_gateway")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy one worker and the embedding process in the first load row")
    args = ap.parse_args()
    stored, paraphrases = workload()
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    asked = os.environ.get("SEMCACHE_VERIFIER_DEVICE", "auto")
    ce_where = ("the GPU (torch, CUDA graphs; with a shared embedding process, there)"
                if asked.startswith("cuda") or (asked == "auto" and torch.cuda.is_available())
                else "the CPU cores (ONNX Runtime)")
    head = [stamp(), "", f"GPU: {gpu}.", "",
            "SQLite store, the fake upstream, all-MiniLM-L6-v2 "
            f"({os.environ.get('SEMCACHE_BENCH_MODEL_NOTE', 'packaged weights')}).", ""]
    encoder: list[str] = []
    one: list[str] = []
    rows: list[str] = []
    profiles: dict[str, collections.Counter[str]] = {}

    def report(done: bool = False) -> None:
        """The section as measured so far: a run cut short (a lent machine's time limit) still
        leaves what it measured, and says so."""
        lines = list(head)
        if encoder:
            lines += ["Embedding paths alone (one process, the batch of paraphrases encoded 100 "
                      "times after 5 warm-ups; drift: largest difference from "
                      "sentence-transformers):", "", "| path | batch | p50 ms | p99 ms | texts/s "
                      "| drift |", "|---|---:|---:|---:|---:|---:|", *encoder, ""]
        if one:
            lines += ["One request at a time (1 process; semantic hits vs a bare `GET /healthz`; "
                      f"ms; the cross-encoder beside the rules, as shipped, on {ce_where} "
                      "unless the row says rules alone):", "",
                      "| embedding | healthz p50 | semantic hit p50 | added p50 | "
                      "hits/s |", "|---|---:|---:|---:|---:|", *one, ""]
        if rows:
            lines += [f"Under load ({args.load_procs} load processes x {args.conns} connections, "
                      f"{args.seconds:.0f} s; moderate: 2 x 8 connections, added over "
                      "`GET /healthz` at that load):", "",
                      f"| workers | shared embedding | batch wait ms | cross-encoder ({ce_where}) | "
                      "verified repeats | semantic hits/s (share) | "
                      "p50 / p99 ms | exact hits/s | moderate: added p50 ms | CPU ms per hit | "
                      "GPU util | errors |",
                      "|---:|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|", *rows, "",
                      "Verified repeats off: every request is embedded and verified (each "
                      "wording decided anew). On (the default): a worker serves a wording it has "
                      "served before on its remembered decision; the 2,000 wordings come back "
                      "during the warm-up and the moderate load, so most of the row is those.",
                      ""]
        if profiles:
            lines += ["Where the CPU goes under that load (py-spy, 100 samples/s of the threads "
                      "that run, over the load's middle; one worker and the shared embedding "
                      "process):", "", *_profile.table(profiles), ""]
        if not done:
            lines.append("_The run stopped before its last configuration: what it measured._")
        write_section(args.section, "\n".join(lines))
        print("\n".join(lines[len(head):]), flush=True)

    if not args.skip_encoder and torch.cuda.is_available():
        encoder = encoder_rows()
        report()
    tmp = Path(tempfile.mkdtemp())
    rules_alone = {"SEMCACHE_CATEGORIES_OVERLAY": str(cross_encoder_off(tmp / "off.yaml"))}
    anew = {"SEMCACHE_VERIFIED_REPEATS": "0"}  # each wording decided anew: the whole path
    with fake_upstream() as upstream:
        for name, env in () if args.skip_one else (
                ("GPU, CUDA graphs", anew),
                ("GPU, CUDA graphs; rules alone (`cross_encoder: false`)", {**anew, **rules_alone}),
                ("GPU, CUDA graphs; verified repeats on (the default): repeated wordings", {}),
                ("this machine's CPU (ONNX Runtime, 4 threads)",
                 {**anew, "SEMCACHE_EMBEDDING_DEVICE": "cpu", "SEMCACHE_EMBEDDING_THREADS": "4"})):
            db = f"sqlite:///{tmp / f'one-{len(one)}.db'}"
            first = set(COUNTRIES[:20])
            mine_stored = [b for b in stored if _country(b) in first]
            mine = [b for b in paraphrases if _country(b) in first]
            one.append(f"| {name} | " + one_at_a_time(upstream, db, mine_stored, mine, env) + " |")
            report()
        for workers, (shared, wait), ce, repeats in itertools.product(
                args.workers, (v.split(":") for v in args.variants), args.cross_encoder,
                args.repeats):
            db = f"sqlite:///{tmp / f'w{workers}-{shared}-{wait}-{ce}-{repeats}.db'}"
            env = {"SEMCACHE_EMBEDDING_SHARED": shared,
                   "SEMCACHE_EMBEDDING_BATCH_WAIT_MS": wait,
                   **(rules_alone if ce == "off" else {}), **(anew if repeats == "off" else {})}
            with gateway(upstream, db, "--workers", str(workers), **env) as url:
                seed_store(url, stored)
                load(url, paraphrases, 2, args.load_procs, 8)  # warm every worker
                health = load(url, [], 3, 2, 8, method="GET", path="/healthz")
                moderate = load(url, paraphrases, 5, 2, 8)
                cpu0, sampler = gateway_cpu(upstream), GpuSampler()
                profiling = start_profiles(upstream, args.seconds) \
                    if args.profile and not profiles else None
                full = load(url, paraphrases, args.seconds, args.load_procs, args.conns)
                util, cpu = sampler.stop(), gateway_cpu(upstream) - cpu0
                if profiling is not None:
                    got = {name: f.result() for name, f in profiling.items()}
                    profiles.update({f"{name} ({workers} workers, wait {wait} ms)": c
                                     for name, c in got.items() if c is not None})
                exact = load(url, stored, 5, args.load_procs, args.conns)
            h = statistics.median(health["-"]) * 1000
            m = summarise(moderate, 5, "semantic")
            f = summarise(full, args.seconds, "semantic")
            e = summarise(exact, 5, "exact")
            hits = sum(len(full.get(k, [])) for k in ("semantic", "exact"))
            rows.append(
                f"| {workers} | {shared} | {wait} | {ce} | {repeats} | "
                f"**{f['rps']:,.0f}** ({f['share']:.0%}) | "
                f"{f['p50']:.1f} / {f['p99']:.1f} | {e['rps']:,.0f} | "
                f"{m['p50'] - h:.2f} ({m['rps']:,.0f}/s) | {cpu / max(1, hits) * 1000:.2f} | "
                f"{util:.0f}% | {sum(len(v) for k, v in full.items() if k.startswith('status'))} |")
            print({k: len(v) for k, v in full.items()}, flush=True)
            report()
    report(done=True)


if __name__ == "__main__":
    main()
