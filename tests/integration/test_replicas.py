"""Several gateway replicas over one PostgreSQL: coherence through the store's change log."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from gateway.cache.changelog import ChangeFollower
from gateway.cache.schema import NewEntry, changes, make_engine, run_migrations
from gateway.cache.store import Store
from gateway.devtools.serverthread import ServerThread
from gateway.embedding import SentenceTransformerEmbedder
from tests.conftest import GatewayFactory, _pg_schema_url, wait_ready
from tests.tcpproxy import proxied

pytestmark = pytest.mark.pg
ADMIN = {"authorization": "Bearer admin-secret"}
BOUND_S = 1.0


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _pg_schema_url()


def ask(gw: ServerThread | SimpleNamespace, q: str, namespace: str | None = None,
        store: bool = True) -> httpx.Response:
    headers = {"authorization": "Bearer sk-r"}
    if not store:
        headers["cache-control"] = "no-store"
    if namespace:
        headers["x-semcache-namespace"] = namespace
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers=headers, timeout=30,
                   json={"model": "fake-small", "messages": [{"role": "user", "content": q}]})
    assert r.status_code == 200, r.text
    return r


def until(predicate, timeout: float) -> float:  # type: ignore[no-untyped-def]
    """Seconds until ``predicate()`` holds; fails after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "not within the bound"
        time.sleep(0.02)
    return time.monotonic() - start


def stats(gw: ServerThread) -> dict[str, dict[str, int]]:
    r = httpx.get(f"{gw.url}/admin/stats", headers=ADMIN)
    cats: dict[str, dict[str, int]] = r.json()["categories"]
    return cats


def indexed(gw: ServerThread) -> int:
    return sum(c["entries"] for c in stats(gw).values())


def replicas(factory: GatewayFactory, embedder: SentenceTransformerEmbedder, url: str,
             n: int = 3, **kw: object) -> list[ServerThread]:
    return [factory(embedder=embedder, database_url=url, admin_key="admin-secret", **kw)
            for _ in range(n)]


def test_an_entry_stored_through_one_replica_is_a_hit_on_the_others(
    pg_url: str, gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder
) -> None:
    a, b, c = replicas(gateway_factory, embedder, pg_url)
    q = "What is the boiling point of water at sea level?"
    paraphrase = "At sea level, what is the boiling point of water?"
    first = ask(a, q)
    assert first.headers["x-semcache"] == "miss"
    for other in (b, c):
        until(lambda o=other: ask(o, q, store=False).headers["x-semcache"] == "hit", BOUND_S)
        hit = ask(other, paraphrase)
        assert hit.headers["x-semcache"] == "hit"
        assert hit.json()["choices"] == first.json()["choices"]

    # an invalidation through one replica stops hits on all of them at once (a hit is always
    # read back from the store), and the deletion reaches every index
    entry = first.headers.get("x-semcache-entry") or ask(a, q).headers["x-semcache-entry"]
    assert httpx.delete(f"{b.url}/admin/entries/{entry}", headers=ADMIN).status_code == 200
    for gw in (a, b, c):
        assert ask(gw, paraphrase, store=False).headers["x-semcache"] == "miss"
    for gw in (a, b, c):
        until(lambda g=gw: indexed(g) == 0, BOUND_S)


@pytest.fixture
def quota_of_3(tmp_path: Path) -> Path:
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("factual: {quota: 3}\n")
    return overlay


def test_quota_is_decided_once_for_all_replicas(
    pg_url: str, gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder,
    quota_of_3: Path,
) -> None:
    a, b, c = replicas(gateway_factory, embedder, pg_url, categories_overlay=quota_of_3)
    q = "What is the boiling point of water at sea level?"
    with ThreadPoolExecutor(6) as pool:  # six writers on three replicas at once
        list(pool.map(lambda i: ask((a, b, c)[i % 3], q, namespace=f"team-{i}"), range(9)))
    # a write made before its replica saw the others' may leave one over: the change log
    # brings them within the sync bound and the quota is enforced then; never below it
    until(lambda: stats(a)["factual"]["stored_rows"] == 3, BOUND_S * 2)
    for gw in (a, b, c):
        until(lambda g=gw: stats(g)["factual"]["entries"] == 3, BOUND_S * 2)
    assert stats(a)["factual"]["stored_rows"] == 3


def test_a_write_made_before_seeing_the_others_is_evicted_once_the_log_brings_them(
    pg_url: str, gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder,
    quota_of_3: Path,
) -> None:
    (a,) = replicas(gateway_factory, embedder, pg_url, n=1, categories_overlay=quota_of_3)
    # b polls the log only every 10 s: its write below is made without seeing a's three
    (b,) = replicas(gateway_factory, embedder, pg_url, n=1, categories_overlay=quota_of_3,
                    sync_interval_s=10)
    q = "What is the boiling point of water at sea level?"
    for i in range(3):
        ask(a, q, namespace=f"a{i}")
    assert stats(b)["factual"]["entries"] == 0
    ask(b, q, namespace="b")
    assert stats(b)["factual"]["entries"] == 1  # b saw nothing over its quota
    # a learns of b's write from the log and evicts the oldest row for all replicas
    until(lambda: stats(a)["factual"]["stored_rows"] == 3, BOUND_S * 2)
    assert stats(a)["factual"]["entries"] == 3


def test_a_replica_restarted_during_writes_catches_up(
    pg_url: str, gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder
) -> None:
    a, b, c = replicas(gateway_factory, embedder, pg_url)
    c.stop()
    q = "What is the boiling point of water at sea level?"
    done = threading.Event()
    written: list[str] = []

    def write() -> None:
        for i in range(40):
            ask((a, b)[i % 2], q, namespace=f"w{i}")
            written.append(f"w{i}")
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    until(lambda: len(written) >= 10, 60)
    c2 = replicas(gateway_factory, embedder, pg_url, n=1)[0]  # ready = caught up
    assert not done.is_set(), "the restart should overlap the writes"
    writer.join()
    until(lambda: indexed(c2) == indexed(a) == 40, BOUND_S * 2)
    for ns in written:
        assert ask(c2, q, namespace=ns).headers["x-semcache"] == "hit", ns


def test_a_dropped_change_log_connection_loses_nothing(
    pg_url: str, gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder
) -> None:
    proxy, via_proxy = proxied(pg_url)
    b: ServerThread | None = None
    try:
        a = replicas(gateway_factory, embedder, pg_url, n=1)[0]
        b = replicas(gateway_factory, embedder, via_proxy, n=1, store_retry_s=0.2)[0]
        q = "What is the boiling point of water at sea level?"
        proxy.stop()  # every connection of b's to the store is cut
        for i in range(5):
            ask(a, q, namespace=f"cut{i}")
        time.sleep(0.5)  # b's polls fail meanwhile
        proxy.start()
        until(lambda: indexed(b) == 5, 10)
        for i in range(5):
            assert ask(b, q, namespace=f"cut{i}").headers["x-semcache"] == "hit"
        metrics = httpx.get(f"{b.url}/metrics").text
        errors = [ln for ln in metrics.splitlines() if ln.startswith("semcache_sync_errors_total")]
        assert errors and float(errors[0].split()[-1]) > 0
    finally:
        if b is not None:
            b.stop()  # while its store is still reachable: it closes its connections cleanly
        proxy.stop()


def test_a_change_committed_out_of_sequence_order_is_not_skipped(pg_url: str) -> None:
    """Sequence numbers are taken at insert, not commit: the follower must come back for a
    number it saw skipped."""
    run_migrations(pg_url)
    store = Store(make_engine(pg_url))
    follower = ChangeFollower(store)
    follower.start_at(store.last_change())
    slow = store.engine.connect()
    tx = slow.begin()
    slow.execute(changes.insert().values(op="+", entry_id=999, category="factual",
                                         at=time.time()))  # takes seq n, not committed
    import numpy as np

    entry = NewEntry(namespace="d", category="code", endpoint="chat", model="m", scope_hash="s",
                     context_hash="c", query_text="q", embedding=np.ones(4, np.float32),
                     response={"choices": []}, prompt_tokens=None, completion_tokens=None,
                     created_at=time.time(), expires_at=time.time() + 60, exact_hash="e")
    fast_id = store.insert(entry)  # seq n+1, committed first
    first = follower.poll()
    assert first.added == {fast_id: "code"} and len(follower.gaps) == 1
    tx.commit()
    slow.close()
    second = follower.poll()
    assert second.added == {999: "factual"} and not follower.gaps
    assert follower.poll().count == 0
    store.dispose()


def test_serve_with_workers_behaves_like_replicas(pg_url: str, fake_upstream: ServerThread,
                                                  tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SEMCACHE_EMBEDDING_BACKEND": "torch", "SEMCACHE_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--workers", "2", "--port", str(port),
         "--database-url", pg_url, "--upstream", f"{fake_upstream.url}/v1"],
        env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        until(lambda: _ready(url), 120)
        # /readyz is answered by whichever worker accepts, and a worker still starting accepts
        # nothing: wait until both workers have said ready themselves
        seen: set[str] = set()

        def both_ready() -> bool:
            with ThreadPoolExecutor(16) as pool:
                for r in pool.map(lambda _: httpx.get(f"{url}/readyz", timeout=5), range(32)):
                    if r.status_code == 200:
                        seen.add(r.json()["replica"])
            return len(seen) == 2

        until(both_ready, 120)
        gw = SimpleNamespace(url=url)
        q = "What is the boiling point of water at sea level?"
        # concurrent requests spread over both workers: each stores its own entry wherever
        # it lands, and is asked for again wherever that lands
        with ThreadPoolExecutor(16) as pool:
            first = list(pool.map(lambda i: ask(gw, q, namespace=f"n{i}"), range(32)))
            assert {r.headers["x-semcache"] for r in first} == {"miss"}
            # the sync bound is BOUND_S (benchmarks/replicas.py measures it); here only that
            # every entry reaches the other worker, polled so a busy machine cannot fail it
            pending, deadline = set(range(32)), time.monotonic() + BOUND_S + 10
            while pending and time.monotonic() < deadline:
                time.sleep(BOUND_S / 4)
                order = sorted(pending)
                answers = dict(zip(order, pool.map(
                    lambda i: ask(gw, q, namespace=f"n{i}"), order), strict=True))
                pending = {i for i, r in answers.items() if r.headers["x-semcache"] != "hit"}
        assert not pending, f"{len(pending)} of 32 entries never reached the other worker"
    finally:
        proc.terminate()
        proc.wait(30)


def _ready(url: str) -> bool:
    try:
        wait_ready(url, timeout=0.5)
        return True
    except (httpx.HTTPError, TimeoutError):
        return False
