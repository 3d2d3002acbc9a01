"""Latency the gateway adds to one request at a time, measured in one run against the same fake
upstream (separate processes, loopback). Writes the `gateway_latency` section of
docs/BENCHMARKS.md.

    python benchmarks/gateway_latency.py [--n 300]

Compared in the same run: a bare HTTP round trip to the gateway (GET /healthz), a direct call to
the upstream, and through the gateway a miss, an exact-repeat hit and a semantic (paraphrase)
hit. "Added" for a miss is gateway miss − direct call; for a hit it is hit − bare round trip
(the hit makes no upstream call; what it adds is the gateway's own work).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _report import pct, stamp, write_section
from _servers import fake_upstream, gateway

COUNTRIES = ("France Spain Italy Germany Portugal Austria Poland Norway Sweden Finland Denmark "
             "Ireland Greece Turkey Egypt Kenya Nigeria Brazil Chile Peru Argentina Mexico Canada "
             "Japan China India Thailand Vietnam Australia Iceland").split()


def body(q: str) -> dict[str, object]:
    return {"model": "fake-small", "messages": [{"role": "user", "content": q}]}


async def timed(client: httpx.AsyncClient, method: str, url: str, **kw: object) -> tuple[float, str]:
    start = time.perf_counter()
    r = await client.request(method, url, **kw)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - start
    assert r.status_code == 200, r.text
    return elapsed, r.headers.get("x-semcache", "")


async def sequential(client: httpx.AsyncClient, calls: list[tuple[str, str, dict]]) -> tuple[list[float], list[str]]:
    times, outcomes = [], []
    for method, url, kw in calls:
        t, o = await timed(client, method, url, **kw)
        times.append(t)
        outcomes.append(o)
    return times, outcomes


STAGE = re.compile(r'semcache_stage_duration_seconds_sum\{stage="(\w+)"\} ([0-9.e+-]+)')


async def stages(client: httpx.AsyncClient, gw: str) -> dict[str, float]:
    text = (await client.get(f"{gw}/metrics")).text
    return {m.group(1): float(m.group(2)) for m in STAGE.finditer(text)}


def misses(chat_gw: str, n: int, first: int) -> list[tuple[str, str, dict]]:
    return [("POST", chat_gw, {"json": body(f"Tell me about the history of item number {i} "
                                            "in the museum")}) for i in range(first, first + n)]


async def after_reply_misses(up: str, url: str, n: int) -> list[float]:
    with gateway(up, url, SEMCACHE_STORE_WRITES="after_reply") as gw:
        async with httpx.AsyncClient(timeout=60) as c:
            await sequential(c, misses(f"{gw}/v1/chat/completions", 30, 200_000))
            times, outcomes = await sequential(c, misses(f"{gw}/v1/chat/completions", n, 100_000))
            assert set(outcomes) == {"miss"}, set(outcomes)
            return times


async def run(n: int, database_url: str | None) -> str:
    with tempfile.TemporaryDirectory() as tmp, fake_upstream() as up, \
            gateway(up, database_url or f"sqlite:///{tmp}/bench.db") as gw:
        async with httpx.AsyncClient(timeout=60) as c:
            chat_gw, chat_up = f"{gw}/v1/chat/completions", f"{up}/v1/chat/completions"
            # seed: one stored answer per country
            for x in COUNTRIES:
                await c.post(chat_gw, json=body(f"What is the capital of {x}?"))
            warm = [("GET", f"{gw}/healthz", {})] * 50
            await sequential(c, warm)
            rtt, _ = await sequential(c, [("GET", f"{gw}/healthz", {})] * n)
            direct, _ = await sequential(c, [("POST", chat_up, {"json": body(f"direct {i}")})
                                            for i in range(n)])
            # the same warm-up of misses as the after_reply gateway gets (its first misses are
            # slower: first store writes, index growth)
            await sequential(c, misses(chat_gw, 30, 200_000))
            before = await stages(c, gw)
            miss, mo = await sequential(c, misses(chat_gw, n, 0))
            spent = {k: (v - before.get(k, 0.0)) * 1000 / n for k, v in (await stages(c, gw)).items()}
            exact, eo = await sequential(c, [
                ("POST", chat_gw, {"json": body(f"What is the capital of {COUNTRIES[i % len(COUNTRIES)]}?")})
                for i in range(n)])
            semantic, so = await sequential(c, [
                ("POST", chat_gw, {"json": body(f"Which city is the capital of {COUNTRIES[i % len(COUNTRIES)]}?")})
                for i in range(n)])
            assert set(mo) == {"miss"}, set(mo)
            assert set(eo) == {"hit"}, set(eo)
            hit_share = so.count("hit") / len(so)
        after = await after_reply_misses(up, database_url or f"sqlite:///{tmp}/after.db", n)

    def row(name: str, xs: list[float], base: list[float] | None) -> str:
        added = (f"{pct(xs, .5) - pct(base, .5):.2f} | {pct(xs, .99) - pct(base, .99):.2f}"
                 if base else "- | -")
        return (f"| {name} | {pct(xs, .5):.2f} | {pct(xs, .99):.2f} | {added} | "
                f"{statistics.mean(xs) * 1000:.2f} |")

    lines = [
        "## Gateway latency, one request at a time",
        "",
        stamp(),
        "",
        f"Gateway and fake upstream in separate processes on loopback, SQLite store, CPU "
        f"embedding (all-MiniLM-L6-v2), {n} sequential requests per row, one at a time. "
        f"Times in ms. Semantic hits are paraphrases of stored questions ({hit_share:.0%} of "
        "them hit). Throughput and latency under load: the `under_load` section.",
        "",
        "| concurrency 1 | p50 | p99 | added p50 | added p99 | mean |",
        "|---|---|---|---|---|---|",
        row("bare round trip (GET /healthz)", rtt, None),
        row("direct upstream call", direct, None),
        row("gateway miss (vs direct)", miss, direct),
        row("gateway miss, `SEMCACHE_STORE_WRITES=after_reply` (vs direct)", after, direct),
        row("gateway exact-repeat hit (vs round trip)", exact, rtt),
        row("gateway semantic hit (vs round trip)", semantic, rtt),
        "",
        "Where a miss's time goes (default gateway, mean ms per miss, from its stage histograms; "
        "`search`, `verify` and `store_read` cover every candidate checked and rejected; the "
        "rest of the miss is HTTP, routing, validation, keys and the threads' hops): "
        + ", ".join(f"{k} {v:.2f}" for k, v in spent.items() if v > 0.005)
        + f"; mean miss {statistics.mean(miss) * 1000:.2f}, direct call "
        f"{statistics.mean(direct) * 1000:.2f}.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--postgres", metavar="URL", help="also measure with this empty PostgreSQL "
                    "store (a second table in the section)")
    args = ap.parse_args()
    text = asyncio.run(run(args.n, None))
    if args.postgres:
        pg = asyncio.run(run(args.n, args.postgres)).split("\n")
        start = next(i for i, line in enumerate(pg) if line.startswith("| concurrency"))
        text += "\n\nThe same with a PostgreSQL 15 store on this machine (loopback):\n\n" \
            + "\n".join(pg[start:])
    print(text)
    write_section("gateway_latency", text)


if __name__ == "__main__":
    main()
