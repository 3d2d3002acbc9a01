"""No sequence of cache operations can make an answer serve another request.

A stateful property test (hypothesis ``RuleBasedStateMachine``) drives two replicas sharing one
real store (SQLite file or PostgreSQL schema) through asks, expiries, sweeps, invalidations,
deletions, evictions (quota 3), change-log syncs and restarts (with and without an index
snapshot), for two tenants and two models. After every step it checks that every answer a
replica served was made for that tenant, model and question, and that every label of every
index still holds the vector of the row with that id. The upstream is an
``httpx.MockTransport`` whose answer names the tenant's key, the model and the question.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import sqlalchemy as sa
import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from starlette.datastructures import Headers

from gateway.cache import sync, upkeep
from gateway.cache.admin import CacheAdmin
from gateway.cache.service import CacheService
from gateway.config import Settings
from gateway.embedding import SentenceTransformerEmbedder, Vectors
from gateway.protocol import ChatCompletionRequest
from tests.services import answer, start_service, stop_service

# far apart from each other: no two are a legitimate semantic hit for one another
QUESTIONS = [
    "What causes thunder during a storm?",
    "Why is the sky blue?",
    "Who painted the Mona Lisa?",
    "How many bones are in the adult human body?",
    "What is the boiling point of water at sea level?",
    "When did the Berlin Wall fall?",
]
MODELS = ["model-a", "model-b"]
KEYS = ["sk-tenant-1", "sk-tenant-2"]


class Memo:
    """The real model, each text encoded once for the whole test."""

    def __init__(self, inner: SentenceTransformerEmbedder):
        self.inner, self.dim, self.name = inner, inner.dim, inner.name
        self.cache: dict[str, Vectors] = {}

    def encode(self, texts: list[str]) -> Vectors:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            self.cache.update(zip(todo, self.inner.encode(todo), strict=True))
        return np.stack([self.cache[t] for t in texts])


def run_machine(database_url: str, tmp_path: Path, embedder: Any) -> None:
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({
        name: {"quota": 3} for name in ("factual", "general", "conversation", "creative")}))
    snapshots = tmp_path / "snapshots"
    memo = Memo(embedder)

    class Machine(RuleBasedStateMachine):
        entries = Bundle("entries")

        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.replicas: list[CacheService | None] = [None, None]
            self.engine = sa.create_engine(database_url)

        def run(self, coro: Any) -> Any:
            return self.loop.run_until_complete(coro)

        async def _start(self, snapshot: bool) -> CacheService:
            settings = Settings(
                database_url=database_url, upstream_url="http://upstream.invalid/v1",
                upstream_metrics_url="off", categories_overlay=overlay, replica_sync=True,
                sweep_interval_s=3600, sync_interval_s=10, coalesce=False,
                index_snapshot_dir=snapshots if snapshot else None,
            )
            return await start_service(settings, memo)

        async def _stop(self, svc: CacheService) -> None:
            await stop_service(svc)

        @initialize()
        def empty_store(self) -> None:
            from gateway.cache.schema import run_migrations

            run_migrations(database_url)
            with self.engine.begin() as conn:
                for table in ("cache_entries", "cache_changes", "feedback"):
                    conn.execute(sa.text(f"DELETE FROM {table}"))
            for i in range(2):
                self.replicas[i] = self.run(self._start(snapshot=False))

        def teardown(self) -> None:
            for svc in self.replicas:
                if svc is not None:
                    self.run(self._stop(svc))
            self.loop.close()
            self.engine.dispose()

        def svc(self, i: int) -> CacheService:
            svc = self.replicas[i]
            assert svc is not None
            return svc

        @rule(target=entries, replica=st.integers(0, 1), question=st.sampled_from(QUESTIONS),
              model=st.sampled_from(MODELS), key=st.sampled_from(KEYS))
        def ask(self, replica: int, question: str, model: str, key: str) -> int:
            data = {"model": model, "messages": [{"role": "user", "content": question}]}
            raw = orjson.dumps(data)
            headers = Headers({"content-type": "application/json",
                               "authorization": f"Bearer {key}"})
            response = self.run(self.svc(replica).complete(
                headers, raw, ChatCompletionRequest.model_validate(data)))
            assert response.status_code == 200
            served = orjson.loads(response.body)["choices"][0]["message"]["content"]
            assert served == answer(model, question, key), (
                response.headers.get("x-semcache"), response.headers.get("x-semcache-entry"))
            return int(response.headers.get("x-semcache-entry", "0"))

        @rule(entry=entries)
        def expire(self, entry: int) -> None:
            with self.engine.begin() as conn:
                conn.execute(sa.text("UPDATE cache_entries SET expires_at = 0 WHERE id = :i"),
                             {"i": entry})

        @rule(replica=st.integers(0, 1))
        def sweep(self, replica: int) -> None:
            self.run(upkeep.sweep(self.svc(replica)))

        @rule(replica=st.integers(0, 1))
        def poll_change_log(self, replica: int) -> None:
            svc = self.svc(replica)
            assert svc.follower is not None
            self.run(sync.apply(svc, svc.follower))

        @rule(replica=st.integers(0, 1), entry=entries)
        def delete(self, replica: int, entry: int) -> None:
            self.run(CacheAdmin(self.svc(replica)).invalidate(ids=[entry]))

        @rule(replica=st.integers(0, 1), category=st.sampled_from(["factual", "general"]))
        def invalidate_category(self, replica: int, category: str) -> None:
            self.run(CacheAdmin(self.svc(replica)).invalidate(category=category))

        @rule(replica=st.integers(0, 1), snapshot=st.booleans())
        def restart(self, replica: int, snapshot: bool) -> None:
            self.run(self._stop(self.svc(replica)))
            self.replicas[replica] = None
            self.replicas[replica] = self.run(self._start(snapshot=snapshot))

        @invariant()
        def labels_hold_their_rows_vectors(self) -> None:
            with self.engine.connect() as conn:
                rows = {r.id: (r.category, np.frombuffer(r.embedding, dtype=np.float32))
                        for r in conn.execute(sa.text(
                            "SELECT id, category, embedding FROM cache_entries"))}
            for svc in self.replicas:
                if svc is None:
                    continue
                for name, index in svc.indexes.items():
                    for label in list(index._meta):
                        vec = index._index.get_items([label])[0]  # raises if the label is lost
                        if label in rows:
                            category, stored = rows[label]
                            assert category == name
                            assert np.allclose(vec, stored, atol=1e-5), (name, label)

    run_state_machine_as_test(Machine, settings=settings(
        max_examples=20, stateful_step_count=30, deadline=None,
        suppress_health_check=list(HealthCheck), derandomize=True,
    ))


def test_no_operation_sequence_serves_another_requests_answer(
    database_url: str, tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    run_machine(database_url, tmp_path, embedder)



def test_store_never_hands_out_an_id_twice(database_url: str) -> None:
    """SQLite's plain INTEGER PRIMARY KEY reused the highest deleted id (issue 16, item 1)."""
    from gateway.cache.schema import NewEntry, make_engine, run_migrations
    from gateway.cache.store import Store

    run_migrations(database_url)
    store = Store(make_engine(database_url))
    try:
        def put(q: str) -> int:
            return store.insert(NewEntry(
                namespace="n", category="factual", endpoint="chat", model="m", scope_hash="s",
                context_hash="", query_text=q, embedding=np.zeros(4, np.float32), response={},
                prompt_tokens=None, completion_tokens=None, created_at=0, expires_at=1,
                exact_hash=q))
        first = [put("a"), put("b")]
        assert sorted(i for i, _ in store.sweep_expired(now=2)) == first
        again = [put("c"), put("d")]
        assert min(again) > max(first), (first, again)
    finally:
        store.dispose()


def test_a_label_that_stands_for_another_row_never_serves_it(
    database_url: str, tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    """Whatever the index holds, a hit is served only from a row whose own stored vector is
    within the threshold: here the label of the row for question B is put on question A's
    vector, and asking A again must not get B's answer."""

    async def scenario() -> None:
        settings = Settings(database_url=database_url, upstream_url="http://upstream.invalid/v1",
                            upstream_metrics_url="off", sweep_interval_s=3600, coalesce=False)
        svc = await start_service(settings, embedder)
        try:
            async def ask(q: str) -> tuple[str, str]:
                data = {"model": "m", "messages": [{"role": "user", "content": q}]}
                r = await svc.complete(Headers({}), orjson.dumps(data),
                                       ChatCompletionRequest.model_validate(data))
                return (orjson.loads(r.body)["choices"][0]["message"]["content"],
                        r.headers["x-semcache"])

            a, b = QUESTIONS[0], QUESTIONS[1]
            await ask(b)
            (b_id,) = svc.exact.state().values()
            category = next(n for n, ix in svc.indexes.items() if b_id in ix)
            svc.indexes[category]._index.add_items(
                await svc.batcher.embed(a), np.asarray([b_id]), replace_deleted=False)
            assert svc.indexes[category].search(
                await svc.batcher.embed(a), k=1, scope_hash=next(iter(
                    svc.indexes[category]._meta.values())).scope_hash, context_hash="",
                now=0)[0][0] == b_id  # the index now proposes B's row for A
            text, outcome = await ask(a)
            assert (text, outcome) == (answer("m", a), "miss")
            assert b_id not in svc.indexes[category]  # the bad label is dropped
        finally:
            await stop_service(svc)

    asyncio.run(scenario())
