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
from contextlib import ExitStack
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _report import pct, stamp, write_section
from _servers import cross_encoder_off, fake_upstream, gateway

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


# the gateways compared, each its own process, all up at once: rows interleave (this VM's speed
# drifts by up to 2x over minutes; only requests sent turn about are compared)
# every semantic row but "repeats" decides each wording anew (the same wordings come back
# ROUNDS times): verified repeats off
ANEW = {"SEMCACHE_VERIFIED_REPEATS": "0"}
VARIANTS = {
    "default": ANEW,
    "httpx": {**ANEW, "SEMCACHE_UPSTREAM_TRANSPORT": "httpx"},
    "after_reply": {**ANEW, "SEMCACHE_STORE_WRITES": "after_reply"},
    "rules_alone": ANEW,  # SEMCACHE_CATEGORIES_OVERLAY: cross_encoder false, set in run()
    "repeats": {},  # verified repeats on, as shipped
}
ROUNDS = 6


async def interleaved(c: httpx.AsyncClient, plans: dict[str, list[tuple[str, str, dict]]]
                      ) -> dict[str, tuple[list[float], list[str]]]:
    """Each plan's calls in ``ROUNDS`` blocks, the plans taking turns (the order rotating)."""
    out: dict[str, tuple[list[float], list[str]]] = {k: ([], []) for k in plans}
    names = list(plans)
    for r in range(ROUNDS):
        for name in names[r % len(names):] + names[:r % len(names)]:
            calls = plans[name]
            size = -(-len(calls) // ROUNDS)
            times, outcomes = await sequential(c, calls[r * size:(r + 1) * size])
            out[name][0].extend(times)
            out[name][1].extend(outcomes)
    return out


def spent_ms(before: dict[str, float], after: dict[str, float], n: int) -> str:
    return ", ".join(f"{k} {(v - before.get(k, 0.0)) * 1000 / n:.2f}" for k, v in after.items()
                     if (v - before.get(k, 0.0)) * 1000 / n > 0.005)


async def run(n: int, database_url: str | None) -> str:
    with tempfile.TemporaryDirectory() as tmp, fake_upstream() as up, ExitStack() as stack:
        env = {**VARIANTS, "rules_alone": {**ANEW,
            "SEMCACHE_CATEGORIES_OVERLAY": str(cross_encoder_off(Path(tmp) / "off.yaml"))}}
        gws = {name: stack.enter_context(gateway(
            up, database_url if database_url and name == "default"
            else f"sqlite:///{tmp}/{name}.db", **extra)) for name, extra in env.items()}
        gw = gws["default"]
        async with httpx.AsyncClient(timeout=60) as c:
            chat_up = f"{up}/v1/chat/completions"
            for url in gws.values():  # seed: one stored answer per country; warm-up misses
                await sequential(c, [("POST", f"{url}/v1/chat/completions",
                                      {"json": body(f"What is the capital of {x}?")})
                                     for x in COUNTRIES])
                await sequential(c, misses(f"{url}/v1/chat/completions", 30, 200_000))
            await sequential(c, [("GET", f"{gw}/healthz", {})] * 50)
            before = await stages(c, gw)
            plans = {name: misses(f"{url}/v1/chat/completions", n, 0)
                     for name, url in gws.items() if name not in ("rules_alone", "repeats")}
            plans["rtt"] = [("GET", f"{gw}/healthz", {})] * n
            plans["direct"] = [("POST", chat_up, {"json": body(f"direct {i}")}) for i in range(n)]
            got = await interleaved(c, plans)
            miss_spent = spent_ms(before, await stages(c, gw), n)
            for name in ("default", "httpx", "after_reply"):
                assert set(got[name][1]) == {"miss"}, (name, set(got[name][1]))

            def asked(prefix: str) -> list[str]:
                return [f"{prefix} {COUNTRIES[i % len(COUNTRIES)]}?" for i in range(n)]

            # each wording served once by the "repeats" gateway: its row is repeats alone
            await sequential(c, [("POST", f"{gws['repeats']}/v1/chat/completions",
                                  {"json": body(f"Which city is the capital of {x}?")})
                                 for x in COUNTRIES])
            before = await stages(c, gw)
            pairs = await counter(c, gw, "semcache_verifier_model_pairs_total")
            hits = await interleaved(c, {
                "exact": [("POST", f"{gw}/v1/chat/completions", {"json": body(q)})
                          for q in asked("What is the capital of")],
                "semantic": [("POST", f"{gw}/v1/chat/completions", {"json": body(q)})
                             for q in asked("Which city is the capital of")],
                "semantic_rules": [("POST", f"{gws['rules_alone']}/v1/chat/completions",
                                    {"json": body(q)})
                                   for q in asked("Which city is the capital of")],
                "repeated": [("POST", f"{gws['repeats']}/v1/chat/completions", {"json": body(q)})
                             for q in asked("Which city is the capital of")],
                "rtt": [("GET", f"{gw}/healthz", {})] * n})
            hit_spent = spent_ms(before, await stages(c, gw), 2 * n)
            pairs = await counter(c, gw, "semcache_verifier_model_pairs_total") - pairs
            assert set(hits["exact"][1]) == {"hit"}, set(hits["exact"][1])
            hit_share = {k: hits[k][1].count("hit") / n
                         for k in ("semantic", "semantic_rules", "repeated")}
            remembered = await counter(c, gws["repeats"], "semcache_verified_repeats_total")
        alone = await transports_alone(up)

    def row(name: str, xs: list[float], base: list[float] | None) -> str:
        added = (f"{pct(xs, .5) - pct(base, .5):.2f} | {pct(xs, .99) - pct(base, .99):.2f}"
                 if base else "- | -")
        return (f"| {name} | {pct(xs, .5):.2f} | {pct(xs, .99):.2f} | {added} | "
                f"{statistics.mean(xs) * 1000:.2f} |")

    rtt, direct = got["rtt"][0] + hits["rtt"][0], got["direct"][0]
    lines = [
        "## Gateway latency, one request at a time",
        "",
        stamp(),
        "",
        f"Gateway and fake upstream in separate processes on loopback, SQLite store, CPU "
        f"embedding (all-MiniLM-L6-v2), {n} sequential requests per row, one at a time. "
        f"Five gateways run side by side and the rows are measured in {ROUNDS} rounds, taking "
        "turns, so they compare like for like: the shipped configuration (the cross-encoder "
        "beside the rules, the upstream on aiohttp's connections, the answer stored before "
        "its last byte) with verified repeats off, so that every semantic hit is decided anew, "
        "and each with one thing changed. Times in ms. Semantic hits are "
        "paraphrases of stored questions (with the cross-encoder "
        f"{hit_share['semantic']:.0%} of them hit, with the rules alone "
        f"{hit_share['semantic_rules']:.0%}). The same wording again: those paraphrases on a "
        "gateway with verified repeats on (the default) that has served each once "
        f"({hit_share['repeated']:.0%} hit, {remembered:.0f} of them on a remembered decision). "
        "Throughput and latency under load: the `under_load` section.",
        "",
        "| concurrency 1 | p50 | p99 | added p50 | added p99 | mean |",
        "|---|---|---|---|---|---|",
        row("bare round trip (GET /healthz)", rtt, None),
        row("direct upstream call", direct, None),
        row("gateway miss (vs direct)", got["default"][0], direct),
        row("gateway miss, `SEMCACHE_UPSTREAM_TRANSPORT=httpx` (vs direct)", got["httpx"][0],
            direct),
        row("gateway miss, `SEMCACHE_STORE_WRITES=after_reply` (vs direct)",
            got["after_reply"][0], direct),
        row("gateway exact-repeat hit (vs round trip)", hits["exact"][0], rtt),
        row("gateway semantic hit (vs round trip)", hits["semantic"][0], rtt),
        row("gateway semantic hit, rules alone: `cross_encoder: false` (vs round trip)",
            hits["semantic_rules"][0], rtt),
        row("gateway semantic hit, the same wording again: a verified repeat (vs round trip)",
            hits["repeated"][0], rtt),
        "",
        "Where a miss's time goes (default gateway, mean ms per miss, from its stage histograms; "
        "`search`, `verify` and `store_read` cover every candidate checked and rejected; the "
        "rest of the miss is HTTP, routing, validation, keys and the threads' hops): "
        + miss_spent + f"; mean miss {statistics.mean(got['default'][0]) * 1000:.2f}, direct "
        f"call {statistics.mean(direct) * 1000:.2f}.",
        "",
        "Where the default gateway's hits go (mean ms per hit, exact and semantic together; "
        "`cross_encoder` is inside `verify`): " + hit_spent
        + f"; the cross-encoder scored {pairs:.0f} pairs for the {n} semantic hits.",
        "",
        alone,
    ]
    return "\n".join(lines)


async def transports_alone(up: str, rounds: int = 12, calls: int = 200) -> str:
    """The upstream call by itself, in this process: ``Upstream.open`` and the body read of one
    small chat answer, on each transport, taking turns; the median of each round's median."""
    import orjson

    from gateway.backend.upstream import Upstream, read_body
    from gateway.config import Settings

    ups = {t: Upstream(Settings(upstream_url=f"{up}/v1", upstream_transport=t,
                                upstream_metrics_url="off")) for t in ("aiohttp", "httpx")}
    payload = orjson.dumps(body("hello there"))
    rounds_ms: dict[str, list[float]] = {t: [] for t in ups}
    try:
        for r in range(rounds):
            for t in list(ups) if r % 2 == 0 else list(ups)[::-1]:
                xs = []
                for _ in range(calls):
                    start = time.perf_counter()
                    resp = await ups[t].open("POST", "/chat/completions", content=payload,
                                             headers={"content-type": "application/json"})
                    await read_body(resp)
                    xs.append(time.perf_counter() - start)
                rounds_ms[t].append(statistics.median(xs) * 1000)
    finally:
        for u in ups.values():
            await u.aclose()
    a, h = (statistics.median(rounds_ms[t]) for t in ("aiohttp", "httpx"))
    wins = sum(x < y for x, y in zip(rounds_ms["aiohttp"], rounds_ms["httpx"], strict=True))
    return (f"The upstream call alone, in one process (`Upstream.open` and the body read of one "
            f"small chat answer from the fake upstream, {rounds} rounds of {calls} calls, the "
            f"transports taking turns; median of the rounds' medians): aiohttp {a:.2f} ms, "
            f"httpx {h:.2f} ms ({a / h:.2f}x; aiohttp faster in {wins} of {rounds} rounds). "
            "The fake upstream's own time is in both.")


async def counter(client: httpx.AsyncClient, gw: str, name: str) -> float:
    text = (await client.get(f"{gw}/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


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
