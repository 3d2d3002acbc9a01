"""The gateway as a plain proxy, driven by the official openai client over real HTTP."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from gateway.devtools.fake_upstream import fake_text
from gateway.devtools.serverthread import ServerThread, free_port
from tests.clients import openai_client
from tests.conftest import GatewayFactory

MSG = [{"role": "user", "content": "Explain what a reverse proxy does."}]


def _strip_volatile(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("id", "created")}


@pytest.fixture
def proxy(gateway_factory: GatewayFactory) -> ServerThread:
    return gateway_factory(cache_enabled=False)


_KW: dict[str, Any] = {"api_key": "sk-client", "max_retries": 0}


def client(base: str) -> openai.OpenAI:
    return openai_client(f"{base}/v1", **_KW)


def test_sync_chat_equals_upstream(proxy: ServerThread, fake_upstream: ServerThread) -> None:
    via_gw, direct = client(proxy.url), client(fake_upstream.url)
    got = via_gw.chat.completions.create(model="fake-small", messages=MSG)  # type: ignore[arg-type]
    want = direct.chat.completions.create(model="fake-small", messages=MSG)  # type: ignore[arg-type]
    assert _strip_volatile(got.model_dump()) == _strip_volatile(want.model_dump())
    assert got.choices[0].message.content == fake_text("fake-small", MSG[0]["content"])


async def test_async_chat_and_completions(proxy: ServerThread, fake_upstream: ServerThread) -> None:
    async with (openai.AsyncOpenAI(base_url=f"{proxy.url}/v1", **_KW) as via_gw,
                openai.AsyncOpenAI(base_url=f"{fake_upstream.url}/v1", **_KW) as direct):
        await _async_chat_and_completions(via_gw, direct)


async def _async_chat_and_completions(via_gw: openai.AsyncOpenAI, direct: openai.AsyncOpenAI) -> None:
    got = await via_gw.chat.completions.create(model="fake-large", messages=MSG)  # type: ignore[arg-type]
    want = await direct.chat.completions.create(model="fake-large", messages=MSG)  # type: ignore[arg-type]
    assert _strip_volatile(got.model_dump()) == _strip_volatile(want.model_dump())

    got_c = await via_gw.completions.create(model="fake-small", prompt="Once upon a time")
    want_c = await direct.completions.create(model="fake-small", prompt="Once upon a time")
    assert _strip_volatile(got_c.model_dump()) == _strip_volatile(want_c.model_dump())
    assert got_c.choices[0].text == fake_text("fake-small", "Once upon a time")


def test_streaming_chat_and_completions(proxy: ServerThread, fake_upstream: ServerThread) -> None:
    via_gw, direct = client(proxy.url), client(fake_upstream.url)

    def collect(client: openai.OpenAI) -> tuple[list[str], Any]:
        stream = client.chat.completions.create(
            model="fake-small", messages=MSG, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
        parts, usage = [], None
        for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
            usage = chunk.usage or usage
        return parts, usage

    assert collect(via_gw) == collect(direct)
    assert "".join(collect(via_gw)[0]) == fake_text("fake-small", MSG[0]["content"])

    text = "".join(
        c.choices[0].text
        for c in via_gw.completions.create(model="fake-small", prompt="abc", stream=True)
    )
    assert text == fake_text("fake-small", "abc")


def test_models_and_embeddings(proxy: ServerThread, fake_upstream: ServerThread) -> None:
    via_gw, direct = client(proxy.url), client(fake_upstream.url)
    assert [m.id for m in via_gw.models.list()] == [m.id for m in direct.models.list()]
    got = via_gw.embeddings.create(model="e", input=["one", "two"])
    want = direct.embeddings.create(model="e", input=["one", "two"])
    assert got.model_dump() == want.model_dump()
    assert len(got.data) == 2


def test_first_chunk_arrives_before_upstream_finishes(proxy: ServerThread) -> None:
    via_gw = client(proxy.url)
    start = time.monotonic()
    stream = via_gw.chat.completions.create(
        model="fake-small", messages=MSG, stream=True,  # type: ignore[arg-type]
        extra_headers={"x-fake-chunk-delay": "0.15"},
    )
    arrivals = [time.monotonic() - start for _ in stream]
    # ~26 chunks 0.15 s apart: the upstream needs about 4 s to finish. Relative bounds: a
    # buffering proxy would deliver everything at the end, however busy the machine
    assert arrivals[-1] > 3.0
    assert arrivals[0] < arrivals[-1] / 3, f"first chunk only after {arrivals[0]:.2f}s: buffered"
    assert arrivals[len(arrivals) // 2] < arrivals[-1] * 0.75


def test_passthrough_is_verbatim(proxy: ServerThread) -> None:
    r = httpx.put(
        f"{proxy.url}/v1/echo/some/thing?x=1&y=two&status=418",
        content=b'{"k": [1, 2]}',
        headers={"x-custom": "kept", "authorization": "Bearer sk-client",
                 "connection": "keep-alive", "x-semcache-namespace": "n1"},
    )
    assert r.status_code == 418
    assert r.headers["x-fake-echo"] == "yes"
    echo = r.json()
    assert echo["method"] == "PUT"
    assert echo["path"] == "some/thing"
    assert echo["query"] == "x=1&y=two&status=418"
    assert echo["body"] == '{"k": [1, 2]}'
    assert echo["headers"]["x-custom"] == "kept"
    assert echo["headers"]["authorization"] == "Bearer sk-client"
    assert "x-semcache-namespace" not in echo["headers"]

    r = httpx.delete(f"{proxy.url}/v1/echo/items/7")
    assert r.status_code == 200 and r.json()["method"] == "DELETE"


@pytest.mark.parametrize("path", [
    "/v1/..%2ffake/stats", "/v1/%2e%2e/fake/stats", "/v1/echo/..%2f..%2ffake/stats",
    "/v1/.%2f..%2ffake/stats", "/v1/..%5cfake/stats",
])
def test_passthrough_never_leaves_v1(proxy: ServerThread, path: str) -> None:
    """Issue 17, item 3: a percent-encoded dot segment reached the upstream's root (where vLLM
    serves /metrics and /reset_prefix_cache) with 200."""
    r = httpx.get(f"{proxy.url}{path}")
    assert r.status_code == 404, (r.status_code, r.text)
    assert r.json()["error"]["type"] == "not_found_error"


def test_a_decoded_question_mark_stays_in_the_path(proxy: ServerThread) -> None:
    echo = httpx.get(f"{proxy.url}/v1/echo/a%3Fb=1%23c").json()
    assert echo["path"] == "a?b=1#c" and echo["query"] == ""


def test_upstream_key_replaces_client_key(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(cache_enabled=False, upstream_api_key="sk-gateway")
    echo = httpx.post(
        f"{gw.url}/v1/echo/x", headers={"authorization": "Bearer sk-client"}
    ).json()
    assert echo["headers"]["authorization"] == "Bearer sk-gateway"


@pytest.mark.parametrize(("status", "exc"), [
    (429, openai.RateLimitError), (500, openai.InternalServerError), (400, openai.BadRequestError),
])
def test_upstream_errors_pass_through(proxy: ServerThread, status: int, exc: type[Exception]) -> None:
    via_gw = client(proxy.url)
    with pytest.raises(exc) as info:
        via_gw.chat.completions.create(
            model="fake-small", messages=MSG,  # type: ignore[arg-type]
            extra_headers={"x-fake-status": str(status)},
        )
    assert info.value.status_code == status  # type: ignore[attr-defined]
    assert info.value.body["message"] == f"fake upstream error {status}"  # type: ignore[attr-defined]


def _assert_openai_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code"}
    assert err["code"] == code
    assert err["message"]


def test_upstream_down_is_502(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(cache_enabled=False, upstream_url=f"http://127.0.0.1:{free_port()}/v1")
    r = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "m", "messages": MSG})
    _assert_openai_error(r, 502, "upstream_unavailable")
    r = httpx.get(f"{gw.url}/v1/models")
    _assert_openai_error(r, 502, "upstream_unavailable")


def test_upstream_slow_is_504(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(cache_enabled=False, upstream_timeout_s=0.5)
    r = httpx.post(
        f"{gw.url}/v1/chat/completions", json={"model": "m", "messages": MSG},
        headers={"x-fake-delay": "2"}, timeout=10,
    )
    _assert_openai_error(r, 504, "upstream_timeout")


@pytest.mark.parametrize(("body", "code"), [
    (b"{not json", "invalid_json"),
    (b"", "invalid_request"),
    (b"[1, 2]", "invalid_request"),
    (b'{"model": "m"}', "invalid_request"),
    (b'{"model": "m", "messages": []}', "invalid_request"),
    (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "invalid_request"),
    (b'\xff\xfe\x00garbage', "invalid_json"),
])
def test_bad_request_json_is_400(proxy: ServerThread, body: bytes, code: str) -> None:
    r = httpx.post(f"{proxy.url}/v1/chat/completions", content=body,
                   headers={"content-type": "application/json"})
    _assert_openai_error(r, 400, code)


def test_body_over_limit_is_413(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(cache_enabled=False, max_request_bytes=2048)
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}
    r = httpx.post(f"{gw.url}/v1/chat/completions", json=big)
    _assert_openai_error(r, 413, "request_too_large")


def test_stream_cut_by_upstream_ends_with_error(proxy: ServerThread) -> None:
    via_gw = client(proxy.url)
    seen: list[str] = []
    with pytest.raises(openai.APIError, match="upstream"):
        for chunk in via_gw.chat.completions.create(
            model="fake-small", messages=MSG, stream=True,  # type: ignore[arg-type]
            extra_headers={"x-fake-cut-after": "3"},
        ):
            if chunk.choices:
                seen.append(chunk.choices[0].delta.content or "")
    assert 1 <= len(seen) <= 4


def test_unknown_route_is_openai_shaped_404(proxy: ServerThread) -> None:
    r = httpx.get(f"{proxy.url}/nope")
    assert r.status_code == 404
    assert "error" in r.json()
    assert httpx.get(f"{proxy.url}/healthz").json() == {"status": "ok"}


def test_the_cached_endpoints_skip_the_router_and_keep_its_answers(
    gateway_factory: GatewayFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The three cached POSTs are dispatched before FastAPI's router (its route matching and
    dependency solving cost ~0.4 ms a request); every other request still goes through it.
    What a client sees is the same: answers, errors in OpenAI's envelope, the request id, 405
    for another method."""
    from fastapi.routing import APIRoute

    routed: list[str] = []
    handle = APIRoute.handle

    async def counted(self: APIRoute, scope: Any, receive: Any, send: Any) -> None:
        if self.endpoint.__module__.startswith("gateway.api"):  # not the fake upstream's
            routed.append(scope["path"])
        await handle(self, scope, receive, send)

    monkeypatch.setattr(APIRoute, "handle", counted)
    gw = gateway_factory(cache_enabled=False, max_request_bytes=2048)
    answer = client(gw.url).chat.completions.create(model="fake-small", messages=MSG)  # type: ignore[arg-type]
    assert answer.choices[0].message.content
    r = httpx.post(f"{gw.url}/v1/completions", content=b"{not json",
                   headers={"x-request-id": "req-fast-1"})
    _assert_openai_error(r, 400, "invalid_json")
    assert r.headers["x-request-id"] == "req-fast-1"
    big = {"model": "m", "input": "x" * 5000}
    _assert_openai_error(httpx.post(f"{gw.url}/v1/responses", json=big), 413, "request_too_large")
    assert routed == []
    assert httpx.get(f"{gw.url}/v1/chat/completions").status_code == 405
    assert httpx.get(f"{gw.url}/v1/models").status_code == 200
    assert routed == ["/v1/chat/completions", "/v1/models"]  # the 405 is the router's
