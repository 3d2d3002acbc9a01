"""Faults: the store going away and coming back; hostile input never 5xx."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from gateway.embedding import SentenceTransformerEmbedder
from tests.conftest import GatewayFactory, _pg_schema_url
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
        gw = gateway_factory(embedder=embedder, database_url=via_proxy, store_retry_s=0.5)
        q = "What is the boiling point of water at sea level?"
        paraphrase = "At sea level, what is the boiling point of water?"
        assert ask(gw.url, q).headers["x-semcache"] == "miss"
        assert ask(gw.url, paraphrase).headers["x-semcache"] == "hit"

        proxy.stop()
        for _ in range(3):
            r = ask(gw.url, paraphrase)
            assert r.status_code == 200, r.text  # the client never notices
            assert r.headers["x-semcache"] in ("miss", "bypass")
        r = httpx.get(f"{gw.url}/readyz")
        assert r.status_code == 503 and r.json()["status"] == "degraded"
        assert ask(gw.url, "Something new while the store is down").status_code == 200
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert 'semcache_bypass_total{reason="store_unavailable"}' in metrics

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
    import socket
    import threading

    body = (b'{"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": '
            b'[{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", '
            b'"content": "ok"}}]}')
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, rest = data.split(b"\r\n\r\n", 1)
                length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n")
                               if h.lower().startswith(b"content-length")), 0)
                while len(rest) < length:
                    rest += conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                time.sleep(0.05)  # then gone, without having said so

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        gw = gateway_factory(cache_enabled=False, upstream_url=f"http://127.0.0.1:{port}/v1",
                             upstream_metrics_url="off")
        statuses = []
        for _ in range(20):
            r = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30, json={
                "model": "m", "messages": [{"role": "user", "content": "hi"}]})
            statuses.append(r.status_code)  # the next one goes out on the connection the
            # upstream is about to close without reading it
        assert statuses == [200] * 20, statuses
    finally:
        stop.set()
        thread.join()
        listener.close()
