"""Where a request's time goes inside the gateway, step by step: the app called in process
(ASGI, no client and no HTTP server, whose noise on a shared 2-core VM is larger than some
steps), the fake upstream in its own process, a SQLite store. Each step's start and end is
stamped by a wrapper around the function that does it; the table gives medians in ms from the
request's entry. Writes the `request_path` section of docs/BENCHMARKS.md.

    python benchmarks/request_path.py [--n 300]

Also measured: the candidates' read (``Store.get_many``) in a warm loop and right after the
embedding model ran — the model's weights pass through the CPU's caches on every encode, and
whatever runs after it runs cold.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from _report import stamp, write_section
from _servers import fake_upstream

from gateway.api import completions
from gateway.app import create_app
from gateway.backend import forwarding
from gateway.backend.upstream import Upstream
from gateway.cache.lookup import Finder
from gateway.cache.service import CacheService
from gateway.cache.store import Store
from gateway.config import Settings
from gateway.embedding.batcher import MicroBatcher

MARKS: list[tuple[str, float]] = []
STEPS = [(completions, "read_body", "body read"), (CacheService, "_complete", "cache"),
         (MicroBatcher, "embed", "embedding"), (Finder, "search", "search (one store call)"),
         (Store, "get_many", "candidates read"), (Finder, "_verify", "verify"),
         (Upstream, "open_completion", "upstream call"), (forwarding, "read_body", "upstream body"),
         (CacheService, "_store", "store write"), (Store, "insert", "insert")]


def _stamped(owner: Any, name: str, label: str) -> None:
    f = getattr(owner, name)
    if asyncio.iscoroutinefunction(f):
        @functools.wraps(f)
        async def step(*a: Any, **k: Any) -> Any:
            MARKS.append((f"{label} >", time.perf_counter()))
            try:
                return await f(*a, **k)
            finally:
                MARKS.append((f"{label} <", time.perf_counter()))
    else:
        @functools.wraps(f)
        def step(*a: Any, **k: Any) -> Any:
            MARKS.append((f"{label} >", time.perf_counter()))
            try:
                return f(*a, **k)
            finally:
                MARKS.append((f"{label} <", time.perf_counter()))
    setattr(owner, name, step)


async def call(app: Any, body: bytes) -> None:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80),
             "headers": [(b"content-type", b"application/json"), (b"host", b"bench"),
                         (b"content-length", str(len(body)).encode())]}
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    assert status == [200], status


def body(q: str) -> bytes:
    return orjson.dumps({"model": "fake-small", "messages": [{"role": "user", "content": q}]})


async def timeline(app: Any, questions: list[str]) -> dict[str, float]:
    at: dict[str, list[float]] = defaultdict(list)
    for q in questions:
        MARKS.clear()
        start = time.perf_counter()
        await call(app, body(q))
        end = time.perf_counter()
        for label, t in MARKS:
            at[label].append((t - start) * 1000)
        at["end"].append((end - start) * 1000)
    return {k: statistics.median(v) for k, v in at.items() if len(v) >= len(questions) // 2}


async def run(n: int) -> str:
    for owner, name, label in STEPS:
        _stamped(owner, name, label)
    with tempfile.TemporaryDirectory() as tmp, fake_upstream() as up:
        app = create_app(Settings(upstream_url=f"{up}/v1", database_url=f"sqlite:///{tmp}/b.db"))
        async with app.router.lifespan_context(app):
            capitals = [f"What is the capital of country number {i}?" for i in range(30)]
            for q in capitals:
                await call(app, body(q))
            for i in range(50):  # warm-up
                await call(app, body(f"Tell me about the history of item number {i} in the museum"))
            kinds = {
                "miss (near stored questions: candidates read and refused)": [
                    f"Tell me about the history of item number {i} in the museum"
                    for i in range(1000, 1000 + n)],
                "exact-repeat hit": [capitals[i % 30] for i in range(n)],
                "semantic hit": [f"Which city is the capital of country number {i % 30}?"
                                 for i in range(n)],
            }
            tables = {name: await timeline(app, qs) for name, qs in kinds.items()}
            store = app.state.services.cache.store
            embedder = app.state.services.cache.batcher.embedder
            warm, cold = [], []
            for i in range(n):
                ids = random.Random(i).sample(range(1, 300), 3)
                t0 = time.perf_counter()
                store.get_many(ids)
                warm.append(time.perf_counter() - t0)
                embedder.encode([f"Tell me about item {i}"])
                t0 = time.perf_counter()
                store.get_many(ids)
                cold.append(time.perf_counter() - t0)
    lines = ["## Where a request's time goes inside the gateway (`benchmarks/request_path.py`)",
             "", stamp(), "",
             f"The app called in process (no HTTP server or client), SQLite store, the fake "
             f"upstream in its own process, CPU embedding; medians of {n} requests of each kind, "
             "ms from the request's entry to each step's start (>) and end (<).", ""]
    for name, at in tables.items():
        lines += [f"**{name}**", "", "| step | at (ms) |", "|---|---:|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in sorted(at.items(), key=lambda kv: kv[1])]
        lines.append("")
    lines.append(
        f"The candidates' read (`Store.get_many`, 3 ids) in a warm loop: "
        f"{statistics.median(warm) * 1000:.3f} ms; right after an encode: "
        f"{statistics.median(cold) * 1000:.3f} ms. Every step after the embedding runs that "
        "much colder than a microbenchmark of it shows.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    text = asyncio.run(run(args.n))
    print(text)
    write_section("request_path", text)


if __name__ == "__main__":
    main()
