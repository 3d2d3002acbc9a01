"""Soak: many concurrent clients for a bounded time, mixed exact hits, semantic hits, misses
and streams, with small quotas so eviction runs all the time. Reports errors (goal 0), latency
percentiles by outcome and the gateway's RSS over time (goal: flat once quotas are full).
Writes the `soak` section of docs/BENCHMARKS.md.

    python benchmarks/soak.py --seconds 600 --clients 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import pct, stamp, write_section
from _servers import fake_upstream, gateway

TOPICS = [f"{a} {b}" for a in ("history", "chemistry", "geography", "economics", "music",
                                "biology", "astronomy", "law")
          for b in ("of Rome", "of Japan", "of rivers", "of cells", "of jazz", "of stars",
                    "of trade", "of mountains")]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def gateway_pid(port: str) -> int:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in cmd and port.encode() in cmd:
                return int(proc.name)
    raise RuntimeError("gateway process not found")


async def client(c: httpx.AsyncClient, url: str, until: float, rng: random.Random,
                 lat: dict[str, list[float]], errors: list[str]) -> None:
    while time.monotonic() < until:
        roll, topic = rng.random(), rng.choice(TOPICS)
        if roll < 0.4:
            q = f"Tell me about the {topic}"
        elif roll < 0.7:
            q = f"Can you tell me about the {topic}?"
        else:
            q = f"Question {rng.randrange(10**9)} about the {topic}"
        stream = rng.random() < 0.3
        body = {"model": "fake-small", "stream": stream,
                "messages": [{"role": "user", "content": q}]}
        t0 = time.perf_counter()
        try:
            if stream:
                async with c.stream("POST", url, json=body) as r:
                    lines = [line async for line in r.aiter_lines()]
                    ok = r.status_code == 200 and "data: [DONE]" in lines
                    outcome = r.headers.get("x-semcache", f"status {r.status_code}")
            else:
                r = await c.post(url, json=body)
                ok = r.status_code == 200 and bool(r.json()["choices"][0]["message"]["content"])
                outcome = r.headers.get("x-semcache", f"status {r.status_code}")
                if not ok:
                    outcome += f" {r.status_code} {r.text[:200]}"
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            ok, outcome = False, type(exc).__name__
        if ok:
            lat[outcome + (" stream" if stream else "")].append(time.perf_counter() - t0)
        else:
            errors.append(outcome)


async def run(seconds: float, clients: int) -> str:
    overlay = Path(tempfile.mkdtemp()) / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({n: {"quota": 300} for n in (
        "code", "math", "factual", "conversation", "finance_news", "creative", "general")}))
    with tempfile.TemporaryDirectory() as tmp, fake_upstream() as up, gateway(
            up, f"sqlite:///{tmp}/soak.db", SEMCACHE_CATEGORIES_OVERLAY=str(overlay)) as gw:
        pid = gateway_pid(gw.rsplit(":", 1)[1])
        lat: dict[str, list[float]] = defaultdict(list)
        errors: list[str] = []
        samples: list[tuple[float, float]] = []
        start = time.monotonic()
        until = start + seconds

        async def sampler() -> None:
            while time.monotonic() < until:
                samples.append((time.monotonic() - start, rss_mb(pid)))
                await asyncio.sleep(5)

        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(timeout=60, limits=limits) as c:
            await asyncio.gather(sampler(), *(
                client(c, f"{gw}/v1/chat/completions", until, random.Random(i), lat, errors)
                for i in range(clients)))
        samples.append((time.monotonic() - start, rss_mb(pid)))
    total = sum(len(v) for v in lat.values()) + len(errors)

    lines = [
        "## Soak: bounded load on loopback",
        "",
        stamp(),
        "",
        f"{clients} concurrent clients for {seconds:.0f} s against a gateway (SQLite, ONNX "
        "embedding, quotas of 300 entries per category so eviction runs throughout) and the "
        "fake LLM, both in their own processes: 40% exact repeats, 30% paraphrases, 30% new "
        f"questions, 30% streamed. {total} requests, **{len(errors)} errors**"
        + (f" ({', '.join(sorted(set(errors)))})" if errors else "") + ".",
        "",
        "| outcome | requests | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for outcome, xs in sorted(lat.items()):
        lines.append(f"| {outcome} | {len(xs)} | {pct(xs, .5):.1f} | {pct(xs, .95):.1f} | "
                     f"{pct(xs, .99):.1f} |")
    lines += ["", "Gateway RSS over time (MB): " + ", ".join(
        f"{t:.0f}s {m:.0f}" for t, m in samples[:: max(1, len(samples) // 12)])]
    first_half = [m for t, m in samples if t >= seconds / 2]
    if first_half:
        lines.append(f"Second half of the run: RSS between {min(first_half):.0f} and "
                     f"{max(first_half):.0f} MB.")
    print(json.dumps({"requests": total, "errors": len(errors)}))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--clients", type=int, default=32)
    args = ap.parse_args()
    text = asyncio.run(run(args.seconds, args.clients))
    print(text)
    write_section("soak", text)


if __name__ == "__main__":
    main()
