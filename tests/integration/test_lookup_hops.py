"""A lookup costs one store-thread call however many categories it searches (issue 21): the
search used to hop to a store thread, and query the store, once per ranked category — 2.6 times
per miss in the latency benchmark. The order stays: the first category's verified candidate
wins."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.datastructures import Headers

from gateway.cache.keys import chat_key
from gateway.config import Settings
from gateway.embedding import SentenceTransformerEmbedder
from gateway.protocol import ChatCompletionRequest
from tests.services import start_service, stop_service


def _settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, upstream_url="http://upstream.invalid/v1",
                    upstream_metrics_url="off", sweep_interval_s=3600, coalesce=False)


def _request(q: str) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": q}]})


def test_one_store_call_searches_every_ranked_category(
    database_url: str, embedder: SentenceTransformerEmbedder
) -> None:
    async def scenario() -> None:
        settings = _settings(database_url)
        svc = await start_service(settings, embedder)
        try:
            stored = "What is the boiling point of water at sea level?"
            r = await svc.complete(Headers({}), orjson.dumps(_request(stored).model_dump(
                exclude_none=True)), _request(stored))
            assert r.headers["x-semcache"] == "miss"
            (entry_id,) = svc.exact.state().values()
            home = next(n for n, ix in svc.indexes.items() if entry_id in ix)
            others = [n for n in svc.categories if n != home and svc.categories[n].cacheable]
            assert len(others) >= 2

            calls: list[Any] = []
            real = svc.store.call

            async def counting(timeout_s: float, fn: Any, *args: Any, **kw: Any) -> Any:
                calls.append(fn)
                return await real(timeout_s, fn, *args, **kw)

            svc.store.call = counting  # type: ignore[method-assign]
            asked = "At sea level, what is the boiling point of water?"
            key = chat_key(_request(asked), "default", settings.max_query_chars)
            vec = await svc.batcher.embed(key.embed_text)
            category = svc.categories[home]
            # every other category first: the home category, searched last, still hits
            hit = await svc.finder.search(key, category, [*others, home], svc.categories, vec)
            assert hit is not None and hit.entry.id == entry_id
            assert len(calls) == 1, calls
            calls.clear()
            miss = await svc.finder.search(key, category, others, svc.categories, vec)
            assert miss is None and len(calls) == 1, calls
        finally:
            await stop_service(svc)

    asyncio.run(scenario())


def test_one_store_read_for_the_candidates_of_every_category(
    database_url: str, embedder: SentenceTransformerEmbedder
) -> None:
    """Candidates in several categories are read back in one query, not one per category (a
    read costs ~0.5 ms in the gateway; a miss near several categories paid it each time)."""
    async def scenario() -> None:
        settings = _settings(database_url)
        svc = await start_service(settings, embedder)
        try:
            stored = {"factual": "What is the boiling point of water at sea level?",
                      "general": "What's the boiling point of water at sea level?"}
            for name, q in stored.items():
                r = await svc.complete(Headers({"x-semcache-category": name}), orjson.dumps(
                    _request(q).model_dump(exclude_none=True)), _request(q))
                assert r.headers["x-semcache"] == "miss"
            ids = {n: next(i for i in svc.exact.state().values() if i in svc.indexes[n])
                   for n in stored}

            reads: list[list[int]] = []
            real = svc.store.get_many_or_none

            def counting(wanted: list[int]) -> Any:
                reads.append(list(wanted))
                return real(wanted)

            svc.store.get_many_or_none = counting  # type: ignore[method-assign]
            asked = "At sea level, what is the boiling point of water?"
            key = chat_key(_request(asked), "default", settings.max_query_chars)
            vec = await svc.batcher.embed(key.embed_text)
            for order in (["general", "factual"], ["factual", "general"]):
                reads.clear()
                hit = await svc.finder.search(key, svc.categories[order[0]], order,
                                              svc.categories, vec)
                assert len(reads) == 1, reads
                assert sorted(reads[0]) == sorted(ids.values())
                # the first category whose candidate passes wins, as before
                assert hit is not None and hit.entry.id == ids[order[0]]
        finally:
            await stop_service(svc)

    asyncio.run(scenario())
