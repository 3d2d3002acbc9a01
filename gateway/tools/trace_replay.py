"""``semcache replay``: a request trace through a gateway; hit rate, latency, precision.

Trace lines (JSONL): ``{"query": "..."}`` or ``{"messages": [...]}``, and optionally
``model``, ``t`` (seconds from the start: replayed on that schedule, scaled by ``speed``),
``namespace``, ``stream`` and ``label`` (an intent id: requests with the same label want the
same answer). Precision is measured on hits whose request has a label: a hit is right when the
answer it served was first produced for a request of the same label.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


class TraceError(ValueError):
    pass


@dataclass(frozen=True)
class TraceItem:
    messages: list[dict[str, Any]]
    model: str = "fake-small"
    t: float | None = None
    label: str | None = None
    namespace: str | None = None
    stream: bool = False


def load_trace(path: Path) -> list[TraceItem]:
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            messages = obj.get("messages") or [{"role": "user", "content": str(obj["query"])}]
            items.append(TraceItem(
                messages=messages, model=str(obj.get("model", "fake-small")),
                t=float(obj["t"]) if "t" in obj else None,
                label=str(obj["label"]) if obj.get("label") is not None else None,
                namespace=obj.get("namespace"), stream=bool(obj.get("stream", False)),
            ))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise TraceError(f"{path}:{n}: expected {{query|messages, ...}}: {exc}") from exc
    if not items:
        raise TraceError(f"{path}: empty trace")
    return items


@dataclass
class CategoryStats:
    requests: int = 0
    hits: int = 0
    labeled_hits: int = 0
    right_hits: int = 0


@dataclass
class ReplayReport:
    requests: int
    errors: int
    seconds: float
    latency_ms: dict[str, dict[str, float]]
    categories: dict[str, CategoryStats] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float:
        hits = sum(c.hits for c in self.categories.values())
        return hits / max(1, self.requests - self.errors)

    @property
    def precision(self) -> float | None:
        labeled = sum(c.labeled_hits for c in self.categories.values())
        if not labeled:
            return None
        return sum(c.right_hits for c in self.categories.values()) / labeled


def _percentiles(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    pick = (lambda p: xs[min(len(xs) - 1, int(p * len(xs)))] * 1000) if xs else (lambda p: 0.0)
    return {"p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99), "n": float(len(xs))}


async def _send(client: httpx.AsyncClient, url: str, item: TraceItem) -> tuple[int, dict[str, str], str]:
    headers = {"x-semcache-namespace": item.namespace} if item.namespace else {}
    body = {"model": item.model, "messages": item.messages, "stream": item.stream}
    if not item.stream:
        r = await client.post(url, json=body, headers=headers)
        content = ""
        if r.status_code == 200:
            content = r.json()["choices"][0]["message"]["content"] or ""
        return r.status_code, dict(r.headers), content
    parts = []
    async with client.stream("POST", url, json=body, headers=headers) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                for ch in chunk.get("choices", []):
                    parts.append((ch.get("delta") or {}).get("content") or "")
        return r.status_code, dict(r.headers), "".join(parts)


async def replay(
    items: list[TraceItem], base_url: str, *, speed: float = 1.0, concurrency: int = 8,
    progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    url = f"{base_url.rstrip('/')}/v1/chat/completions"
    latencies: dict[str, list[float]] = defaultdict(list)
    cats: dict[str, CategoryStats] = defaultdict(CategoryStats)
    origin: dict[str, str] = {}     # answer content -> label of the request that produced it
    errors = 0
    gate = asyncio.Semaphore(concurrency)
    start = time.monotonic()
    done = 0

    async def one(client: httpx.AsyncClient, item: TraceItem) -> None:
        nonlocal errors, done
        if item.t is not None and speed > 0:
            await asyncio.sleep(max(0.0, start + item.t / speed - time.monotonic()))
        async with gate:
            t0 = time.perf_counter()
            try:
                status, headers, content = await _send(client, url, item)
            except httpx.HTTPError:
                status, headers, content = 0, {}, ""
            elapsed = time.perf_counter() - t0
        done += 1
        if progress is not None:
            progress(done)
        if status != 200:
            errors += 1
            latencies["error"].append(elapsed)
            return
        outcome = headers.get("x-semcache", "miss")
        latencies[outcome].append(elapsed)
        latencies["all"].append(elapsed)
        c = cats[headers.get("x-semcache-category", "-")]
        c.requests += 1
        if outcome == "hit":
            c.hits += 1
            if item.label is not None and content in origin:
                c.labeled_hits += 1
                c.right_hits += origin[content] == item.label
        elif item.label is not None:
            origin.setdefault(content, item.label)

    async with httpx.AsyncClient(timeout=120) as client:
        if all(i.t is None for i in items):
            # untimed traces keep their order among requests of the same intent
            for item in items:
                await one(client, item)
        else:
            await asyncio.gather(*(one(client, i) for i in items))
    return ReplayReport(
        requests=len(items), errors=errors, seconds=time.monotonic() - start,
        latency_ms={k: _percentiles(v) for k, v in latencies.items()}, categories=dict(cats),
    )
