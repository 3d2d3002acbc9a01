"""Faults: the store going away and coming back; hostile input never 5xx."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.embedding import SentenceTransformerEmbedder
from tests.conftest import GatewayFactory, _pg_schema_url
from tests.rawserver import raw_upstream
from tests.tcpproxy import proxied


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _pg_schema_url()


def ask(url: str, q: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", headers={"authorization": "Bearer sk-f"},
                      json={"model": "fake-small", "messages": [{"role": "user", "content": q}]},
                      timeout=30)


@pytest.mark.pg
def test_store_outage_degrades_to_pass_through_and_recovers(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, pg_url: str
) -> None:
    proxy, via_proxy = proxied(pg_url)
    try:
        gw = gateway_factory(embedder=embedder, database_url=via_proxy, store_retry_s=0.5,
                             admin_key="adm-f")
        q = "What is the boiling point of water at sea level?"
        paraphrase = "At sea level, what is the boiling point of water?"
        assert ask(gw.url, q).headers["x-semcache"] == "miss"
        assert ask(gw.url, paraphrase).headers["x-semcache"] == "hit"

        proxy.stop()
        r = ask(gw.url, paraphrase)  # finds the store gone (or a background call did first)
        assert r.status_code == 200 and r.headers["x-semcache"] in ("miss", "bypass"), r.text
        for _ in range(2):
            r = ask(gw.url, paraphrase)
            assert r.status_code == 200, r.text  # the client never notices
            assert (r.headers["x-semcache"], r.headers["x-semcache-bypass"]) == (
                "bypass", "store_unavailable")
        r = httpx.get(f"{gw.url}/readyz")
        assert r.status_code == 503 and r.json()["status"] == "degraded"
        # the admin API, which needs the store, says so in OpenAI's shape (was a bare 500)
        r = httpx.get(f"{gw.url}/admin/entries", headers={"x-semcache-admin-key": "adm-f"},
                      timeout=30)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] in ("store_error", "store_timeout"), r.text
        assert ask(gw.url, "Something new while the store is down").status_code == 200
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert 'semcache_bypass_total{reason="store_unavailable"} 0.0' not in metrics
        assert 'semcache_store_errors_total{operation="read"} 0.0' not in metrics

        proxy.start()
        deadline = time.monotonic() + 20
        while ask(gw.url, paraphrase).headers["x-semcache"] != "hit":
            assert time.monotonic() < deadline, "the gateway did not recover by itself"
            time.sleep(0.3)
        assert httpx.get(f"{gw.url}/readyz").status_code == 200
    finally:
        proxy.stop()


def test_a_connection_the_upstream_closed_is_retried_once(gateway_factory: GatewayFactory) -> None:
    """Issue 17, item 8: an upstream that closes its connection right after answering (a 500
    without ``Connection: close``) left a dead connection in the pool; 3 of 20 following
    requests got 502 ReadError."""
    body = (b'{"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": '
            b'[{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", '
            b'"content": "ok"}}]}')
    reply = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
             b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    with raw_upstream(reply) as url:  # answers, then gone without having said so
        gw = gateway_factory(cache_enabled=False, upstream_url=url, upstream_metrics_url="off")
        statuses = []
        for _ in range(20):
            r = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30, json={
                "model": "m", "messages": [{"role": "user", "content": "hi"}]})
            statuses.append(r.status_code)  # the next one goes out on the connection the
            # upstream is about to close without reading it
        assert statuses == [200] * 20, statuses


@pytest.mark.pg
def test_a_hung_postgresql_never_hangs_requests(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, pg_url: str
) -> None:
    """Issue 17, item 1: behind a proxy that accepts and never answers, 12 concurrent misses
    ran into the client's 60 s timeout and the breaker never opened. Now a lookup gives up
    within its bound and passes through, writes give up within theirs, and the timeouts open
    the breaker; caching resumes once the store answers again."""
    import asyncio

    proxy, via_proxy = proxied(pg_url)
    try:
        gw = gateway_factory(embedder=embedder, database_url=via_proxy, store_retry_s=1.0,
                             store_lookup_timeout_s=0.2, store_timeout_s=0.5)
        q = "What is the boiling point of water at sea level?"
        paraphrase = "At sea level, what is the boiling point of water?"
        assert ask(gw.url, q).headers["x-semcache"] == "miss"
        assert ask(gw.url, paraphrase).headers["x-semcache"] == "hit"

        proxy.blackhole()
        started = time.monotonic()
        r = ask(gw.url, paraphrase)
        assert r.status_code == 200 and time.monotonic() - started < 2.0

        async def burst() -> list[tuple[int, float]]:
            async with httpx.AsyncClient(timeout=30) as c:
                async def one(i: int) -> tuple[int, float]:
                    t = time.monotonic()
                    r = await c.post(f"{gw.url}/v1/chat/completions", json={
                        "model": "fake-small",
                        "messages": [{"role": "user", "content": f"Tell me about topic {i}"}]})
                    return r.status_code, time.monotonic() - t
                return await asyncio.gather(*(one(i) for i in range(12)))

        results = asyncio.run(burst())
        assert all(status == 200 for status, _ in results), results
        assert max(took for _, took in results) < 3.0, results
        # the timeouts, and the health check they started failing, opened the breaker: soon
        # requests do not wait for the store at all
        deadline = time.monotonic() + 5
        while (r := ask(gw.url, "Something new while the store hangs")).headers.get(
                "x-semcache-bypass") != "store_unavailable":
            assert r.status_code == 200 and time.monotonic() < deadline, dict(r.headers)
        started = time.monotonic()
        assert httpx.get(f"{gw.url}/readyz", timeout=30).status_code == 503
        assert time.monotonic() - started < 2.0

        proxy.blackhole(False)
        proxy.stop()  # the hung connections are cut; new ones get through again
        proxy.start()
        deadline = time.monotonic() + 30
        while ask(gw.url, paraphrase).headers["x-semcache"] != "hit":
            assert time.monotonic() < deadline, "caching did not resume"
            time.sleep(0.3)
    finally:
        proxy.stop()


def test_a_locked_sqlite_file_never_hangs_requests(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Any,
) -> None:
    """Issue 17, item 1: with the file held by another process (BEGIN EXCLUSIVE) a miss took
    30.1 s (SQLite's 30 s busy timeout), and a request that should have hit took as long."""
    import sqlite3

    db = tmp_path / "locked.db"
    gw = gateway_factory(embedder=embedder, database_url=f"sqlite:///{db}", store_retry_s=1.0,
                         store_lookup_timeout_s=0.2, store_timeout_s=0.5)
    q = "Who painted the Mona Lisa?"
    assert ask(gw.url, q).headers["x-semcache"] == "miss"
    holder = sqlite3.connect(db, timeout=10)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        for question in (q, "Who wrote War and Peace?", "Who painted The Night Watch?"):
            started = time.monotonic()
            r = ask(gw.url, question)
            assert r.status_code == 200, r.text
            assert time.monotonic() - started < 2.5, (question, time.monotonic() - started)
    finally:
        holder.rollback()
        holder.close()
    deadline = time.monotonic() + 30
    while ask(gw.url, q).headers["x-semcache"] != "hit":
        assert time.monotonic() < deadline, "caching did not resume"
        time.sleep(0.3)


@pytest.mark.parametrize("work", ["touch", "sweep"])
def test_background_writes_refused_by_a_busy_sqlite_file_do_not_stop_caching(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Any,
    work: str,
) -> None:
    """Hit counts are flushed and expired rows swept in the background; with another process
    holding the file's write lock these fail ("database is locked"), and each failure opened
    the breaker: 5 s of pass-through for every request (12 workers on one file did it to
    themselves, 38% of a load run bypassed). Reads go on under WAL; so must the hits."""
    import sqlite3

    db = tmp_path / "busy.db"
    gw = gateway_factory(embedder=embedder, database_url=f"sqlite:///{db}", store_retry_s=30.0,
                         store_timeout_s=0.3, sweep_interval_s=0.5)
    q = "What is the boiling point of water at sea level?"
    paraphrase = "At sea level, what is the boiling point of water?"
    assert ask(gw.url, q).headers["x-semcache"] == "miss"

    def errors() -> float:
        text = httpx.get(f"{gw.url}/metrics").text
        line = next(x for x in text.splitlines()
                    if x.startswith(f'semcache_store_errors_total{{operation="{work}"}}'))
        return float(line.rsplit(" ", 1)[1])

    before = errors()
    holder = sqlite3.connect(db, timeout=10)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the write lock: readers go on, writers wait
        assert ask(gw.url, paraphrase).headers["x-semcache"] == "hit"  # a hit count to flush
        deadline = time.monotonic() + 15
        while errors() == before:  # the flush (every second), the sweep, ran into it
            assert time.monotonic() < deadline, f"the {work} never failed"
            time.sleep(0.2)
        r = ask(gw.url, paraphrase)
        assert r.headers["x-semcache"] == "hit", dict(r.headers)
    finally:
        holder.rollback()
        holder.close()


def test_slow_clients_are_not_held_for_ever(gateway_factory: GatewayFactory) -> None:
    """Issue 17, item 12: no header or body read timeout; 200 slow connections were still held
    after 11 s. Now a request head has ``client_header_timeout_s`` and a body
    ``client_body_timeout_s``."""
    import socket

    gw = gateway_factory(cache_enabled=False, client_header_timeout_s=1.0,
                         client_body_timeout_s=1.0)
    host, port = gw.url.removeprefix("http://").split(":")
    slow = []
    for _ in range(50):
        s = socket.create_connection((host, int(port)))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        slow.append(s)
    for _ in range(4):  # a byte now and then, never the end of the head
        time.sleep(0.4)
        for s in slow:
            with contextlib.suppress(OSError):
                s.sendall(b"x")
    held = 0
    for s in slow:
        s.settimeout(0.5)
        try:
            held += s.recv(1) != b""
        except TimeoutError:
            held += 1  # still open, 1.6 s on
        except OSError:
            pass  # reset: closed
        finally:
            s.close()
    assert held == 0, f"{held} of 50 slow connections still held"

    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                  b"content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"mo")
        s.settimeout(5)
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request_timeout" in answer
    # a client that keeps up is served as ever
    r = httpx.post(f"{gw.url}/v1/chat/completions", json={
        "model": "fake-small", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
