"""What README promises and no other test checked (issue 24): shared key namespaces, /readyz and
pass-through while warming, invalidation by ids and by category, the expiry counter, the
request id on every kind of answer, and 413 on every endpoint and upload style."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.app import create_app
from gateway.config import Settings
from gateway.devtools.serverthread import ServerThread
from gateway.embedding import SentenceTransformerEmbedder
from tests.conftest import GatewayFactory

CHAT = "/v1/chat/completions"


def ask(gw: ServerThread, q: str, key: str = "sk-p", **headers: str) -> httpx.Response:
    return httpx.post(f"{gw.url}{CHAT}", timeout=30, headers={
        "authorization": f"Bearer {key}", **headers},
        json={"model": "fake-small", "messages": [{"role": "user", "content": q}]})


@pytest.fixture
def start(gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder,
          database_url: str) -> Callable[..., ServerThread]:
    def make(**kw: Any) -> ServerThread:
        return gateway_factory(embedder=embedder, database_url=database_url, **kw)

    return make


def test_api_key_namespaces_share_entries_between_the_keys_named(
    start: Callable[..., ServerThread]
) -> None:
    team = {hashlib.sha256(k.encode()).hexdigest(): "team" for k in ("sk-ann", "sk-bob")}
    gw = start(api_key_namespaces=team)
    q = "Who wrote Pride and Prejudice?"
    assert ask(gw, q, "sk-ann").headers["x-semcache"] == "miss"
    assert ask(gw, q, "sk-bob").headers["x-semcache"] == "hit"
    assert ask(gw, q, "sk-eve").headers["x-semcache"] == "miss"


def test_readyz_is_503_while_warming_and_requests_pass_through(
    embedder: SentenceTransformerEmbedder, fake_upstream: ServerThread, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway.cache import warmup

    release = threading.Event()
    original = warmup.rebuild

    async def slow_rebuild(svc: Any) -> None:
        await asyncio.to_thread(release.wait, 60)
        await original(svc)

    monkeypatch.setattr(warmup, "rebuild", slow_rebuild)
    settings = Settings(upstream_url=f"{fake_upstream.url}/v1",
                        database_url=f"sqlite:///{tmp_path}/w.db")
    with ServerThread(create_app(settings, embedder=embedder)) as gw:
        r = httpx.get(f"{gw.url}/readyz")
        assert r.status_code == 503 and "rebuilding" in r.text
        q = "What is the largest ocean on Earth?"
        r = ask(gw, q)
        assert r.status_code == 200
        assert (r.headers["x-semcache"], r.headers["x-semcache-bypass"]) == ("bypass",
                                                                             "warming_up")
        release.set()
        deadline = time.monotonic() + 30
        while httpx.get(f"{gw.url}/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert ask(gw, q).headers["x-semcache"] == "miss"  # nothing was stored while warming
        assert ask(gw, q).headers["x-semcache"] == "hit"


def test_invalidate_by_ids_and_by_category(start: Callable[..., ServerThread]) -> None:
    gw = start(admin_key="adm")
    admin = {"authorization": "Bearer adm"}
    qs = ["Who painted the Mona Lisa?", "When did the Berlin Wall fall?",
          "Write a Python function that reverses a string"]
    for q in qs:
        ask(gw, q)
    ids = {q: int(ask(gw, q).headers["x-semcache-entry"]) for q in qs}
    cats = {q: ask(gw, q).headers["x-semcache-category"] for q in qs}
    assert cats[qs[0]] == cats[qs[1]] == "factual" and cats[qs[2]] == "code"
    r = httpx.post(f"{gw.url}/admin/invalidate", headers=admin, json={"ids": [ids[qs[0]]]})
    assert r.status_code == 200 and r.json()["count"] == 1
    assert [ask(gw, q).headers["x-semcache"] for q in qs] == ["miss", "hit", "hit"]
    r = httpx.post(f"{gw.url}/admin/invalidate", headers=admin, json={"category": "factual"})
    assert r.json()["count"] == 2  # the one just stored again, and the other
    assert [ask(gw, q).headers["x-semcache"] for q in qs] == ["miss", "miss", "hit"]


def test_expirations_are_counted(start: Callable[..., ServerThread], tmp_path: Path) -> None:
    overlay = tmp_path / "o.yaml"
    overlay.write_text(yaml.safe_dump({"factual": {"ttl_seconds": 1}}))
    gw = start(categories_overlay=overlay, sweep_interval_s=0.3)
    ask(gw, "Who painted the Mona Lisa?")
    deadline = time.monotonic() + 10
    while 'semcache_expirations_total{category="factual"} 1.0' not in httpx.get(
            f"{gw.url}/metrics").text:
        assert time.monotonic() < deadline, "the expiry was never counted"
        time.sleep(0.1)


@pytest.fixture
def gw(start: Callable[..., ServerThread]) -> ServerThread:
    return start(max_request_bytes=4096, upstream_timeout_s=1.0)


@pytest.fixture
def dead_upstream() -> Iterator[str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1"  # nothing listens there


def test_every_answer_carries_the_request_id(
    gw: ServerThread, gateway_factory: GatewayFactory, dead_upstream: str
) -> None:
    def rid(r: httpx.Response, sent: str) -> None:
        assert r.headers.get("x-request-id") == sent, (r.status_code, dict(r.headers))

    q = {"model": "fake-small", "messages": [{"role": "user", "content": "Who wrote Emma?"}]}
    rid(httpx.post(f"{gw.url}{CHAT}", json=q, headers={"x-request-id": "miss-1"}), "miss-1")
    hit = httpx.post(f"{gw.url}{CHAT}", json=q, headers={"x-request-id": "hit-1"})
    assert hit.headers["x-semcache"] == "hit"
    rid(hit, "hit-1")
    with httpx.stream("POST", f"{gw.url}{CHAT}", json={**q, "stream": True},
                      headers={"x-request-id": "stream-1"}) as r:
        list(r.iter_bytes())
    rid(r, "stream-1")
    rid(httpx.post(f"{gw.url}{CHAT}", json={"model": "m"}, headers={"x-request-id": "bad-1"}),
        "bad-1")
    big = httpx.post(f"{gw.url}{CHAT}", content=b"x" * 5000, headers={"x-request-id": "big-1"})
    assert big.status_code == 413
    rid(big, "big-1")
    slow = httpx.post(f"{gw.url}{CHAT}", json=q, timeout=30,
                      headers={"x-request-id": "slow-1", "x-fake-delay": "3",
                               "cache-control": "no-cache"})
    assert slow.status_code == 504
    rid(slow, "slow-1")
    down = gateway_factory(cache_enabled=False, upstream_url=dead_upstream,
                           upstream_metrics_url="off")
    gone = httpx.post(f"{down.url}{CHAT}", json=q, headers={"x-request-id": "down-1"})
    assert gone.status_code == 502
    rid(gone, "down-1")


@pytest.mark.parametrize("path", [CHAT, "/v1/completions", "/v1/embeddings", "/v1/echo/x"])
@pytest.mark.parametrize("chunked", [False, True])
def test_413_on_every_endpoint_and_upload_style(gw: ServerThread, path: str, chunked: bool) -> None:
    body = b'{"model": "m", "input": "' + b"x" * 6000 + b'"}'

    def pieces() -> Iterator[bytes]:  # no Content-Length: the limit is found while reading
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    r = httpx.post(f"{gw.url}{path}", content=pieces() if chunked else body,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413, (r.status_code, r.text[:200])
    assert r.json()["error"]["type"] == "invalid_request_error"
    if chunked:
        assert r.request.headers.get("transfer-encoding") == "chunked"
