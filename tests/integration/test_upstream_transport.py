"""The upstream's connections: aiohttp's under httpx (the default) behave as httpx's own did —
bodies byte-exact both ways, the same errors for the same failures, proxies honoured."""

from __future__ import annotations

import gzip
import time

import httpx
import orjson
import pytest

from gateway.backend.transport import AiohttpTransport
from gateway.backend.upstream import Upstream
from gateway.config import Settings
from gateway.devtools.serverthread import ServerThread
from tests.conftest import GatewayFactory
from tests.rawserver import raw_upstream

TRANSPORTS = ["aiohttp", "httpx"]
ANSWER = orjson.dumps({
    "id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [
        {"index": 0, "finish_reason": "stop",
         "message": {"role": "assistant", "content": "compressed but whole"}}]})


def gzipped(body: bytes, content_type: bytes = b"application/json") -> bytes:
    packed = gzip.compress(body, mtime=0)  # the same bytes whenever it is made
    return (b"HTTP/1.1 200 OK\r\ncontent-type: " + content_type + b"\r\ncontent-encoding: gzip"
            b"\r\nconnection: close\r\ncontent-length: " + str(len(packed)).encode()
            + b"\r\n\r\n" + packed)


def test_the_upstream_runs_on_aiohttp_unless_told_or_behind_a_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def transport(**overrides: str) -> object:
        return Upstream(Settings(**overrides)).client._transport  # type: ignore[arg-type]

    assert isinstance(transport(), AiohttpTransport)
    assert isinstance(transport(upstream_transport="httpx"), httpx.AsyncHTTPTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    # httpx honours the environment's proxy on its own transport only
    assert isinstance(transport(), httpx.AsyncHTTPTransport)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_compressed_answer_is_decoded_for_the_cache_and_passed_through_as_sent(
    gateway_factory: GatewayFactory, transport: str,
) -> None:
    """A backend that compresses though asked for identity: the gateway reads (and stores) the
    decoded answer; a passthrough route hands the client the bytes as they came."""
    with raw_upstream(gzipped(ANSWER)) as url:
        gw = gateway_factory(cache_enabled=False, upstream_url=url, upstream_metrics_url="off",
                             upstream_transport=transport)
        r = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30, json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "compressed but whole"
        with httpx.Client() as client, client.stream("GET", f"{gw.url}/v1/models") as r:
            assert r.headers["content-encoding"] == "gzip"
            assert b"".join(r.iter_raw()) == gzip.compress(ANSWER, mtime=0)


BROKEN = {
    "a body cut short": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        b"content-length: 500\r\n\r\n" + ANSWER[:40],
    "an answer that is not HTTP": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("reply", list(BROKEN.values()), ids=list(BROKEN))
def test_a_broken_answer_is_an_upstream_error_on_either_transport(
    gateway_factory: GatewayFactory, transport: str, reply: bytes,
) -> None:
    with raw_upstream(reply) as url:
        gw = gateway_factory(cache_enabled=False, upstream_url=url, upstream_metrics_url="off",
                             upstream_transport=transport)
        r = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30, json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] == "upstream_unavailable"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_abandoned_stream_is_closed_upstream(
    gateway_factory: GatewayFactory, fake_upstream: ServerThread, transport: str,
) -> None:
    """A stream the client stops reading: the backend sees its connection go (and stops)."""
    gw = gateway_factory(cache_enabled=False, upstream_transport=transport)
    with httpx.Client(timeout=30) as client, client.stream(
        "POST", f"{gw.url}/v1/chat/completions", headers={"x-fake-chunk-delay": "0.3"},
        json={"model": "fake-small", "stream": True,
              "messages": [{"role": "user", "content": "Tell me a long story"}]},
    ) as r:
        assert r.status_code == 200
        next(r.iter_bytes())
    deadline = time.monotonic() + 10
    while 'vllm:num_requests_running{model_name="fake"} 0.0' not in httpx.get(
            f"{fake_upstream.url}/metrics").text:
        assert time.monotonic() < deadline, "the abandoned stream is still running upstream"
        time.sleep(0.05)
