"""Talking to the backend: one pooled httpx client; httpx errors become ours in one place.

``Upstream`` is the backend as the rest of the gateway sees it, wired once in the lifespan: the
client, the router that picks a backend and its chunk format (``routing``), failover to the next
backend, and the load monitor every call reports to (``load``). Neither of those two calls back
into it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote
from urllib.request import getproxies

import httpx
import orjson

from gateway.backend import chunk_format, responses
from gateway.backend.chunks import request_chunks
from gateway.backend.load import LoadMonitor
from gateway.backend.routing import FAILOVER_STATUSES, Router
from gateway.backend.transport import AiohttpTransport
from gateway.config import Settings
from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.metrics import Metrics
from gateway.protocol import PATHS, Endpoint

# RFC 9110 §7.6.1 connection-specific fields, plus those the HTTP stack recomputes itself.
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
        "te", "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length",
    }
)
# Set by our own HTTP server on every response; the upstream's copies would be duplicates.
_SERVER_SET = frozenset({"date", "server"})
_GATEWAY_PREFIX = "x-semcache-"
_PATH_SAFE = "/:@!$&'()*+,;=-._~"  # RFC 3986 pchar and "/": everything else is encoded


@contextmanager
def map_httpx_errors() -> Iterator[None]:
    """The only place an httpx exception is turned into a gateway error."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"upstream did not answer in time ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        detail = str(exc) or type(exc).__name__
        raise UpstreamUnavailable(f"upstream unreachable or broke the connection: {detail}") from exc


# what a pooled connection the other side already closed fails with, before any answer came
_STALE = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


def wire_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """Header values as the client sent their bytes: the server decoded them as Latin-1, so
    encoding them back the same way is exact (httpx would refuse a non-ASCII ``str``). Leading
    and trailing whitespace is not part of a field value (RFC 9110 §5.5) and would make the
    HTTP library refuse the request."""
    return [(k.encode("latin-1"), v.strip(" \t").encode("latin-1")) for k, v in headers.items()]


def response_headers(headers: httpx.Headers, *, decoded: bool) -> dict[str, str]:
    """Upstream response headers worth passing to the client.

    ``decoded``: the body we send is the decoded one, so content-encoding no longer applies.
    """
    drop = HOP_BY_HOP | _SERVER_SET | ({"content-encoding"} if decoded else frozenset())
    return {k: v for k, v in headers.items() if k.lower() not in drop}


def _transport(settings: Settings) -> httpx.AsyncBaseTransport | None:
    """aiohttp's connections (``transport``) unless asked for httpx's own or a proxy is set in
    the environment: httpx honours it only on its own transport (None: httpx's default)."""
    if settings.upstream_transport == "httpx" or getproxies():
        return None
    return AiohttpTransport(max_connections=settings.upstream_max_connections)


class Upstream:
    def __init__(
        self, settings: Settings, metrics: Metrics | None = None,
        transport: httpx.AsyncBaseTransport | None = None, *,
        router: Router | None = None, load: LoadMonitor | None = None,
    ):
        self.metrics = metrics or Metrics()
        self.router = router or Router(settings, self.metrics)
        self.load = load or LoadMonitor(settings)
        self.settings = settings
        self.base_url = settings.first_backend_url()
        self._api_key = settings.upstream_api_key
        self.stream_no_store = settings.stream_no_store
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                settings.upstream_timeout_s, connect=settings.upstream_connect_timeout_s
            ),
            limits=httpx.Limits(
                max_connections=settings.upstream_max_connections,
                max_keepalive_connections=settings.upstream_max_connections,
            ),
            transport=transport or _transport(settings),
            follow_redirects=False,
        )

    def start(self, *, watch_load: bool) -> None:
        """Probe the backends; ``watch_load``: poll the load too (the cache adapts to it)."""
        self.router.start(self.client)
        if watch_load:
            self.load.start(self.client)

    async def aclose(self) -> None:
        await self.router.aclose()
        await self.load.aclose()
        await self.client.aclose()

    def passthrough_base(self) -> str | None:
        """Where a request without chunks goes (models, embeddings, ...): the least loaded
        backend in rotation when there are several, else the one base URL."""
        return self.router.route([])[0].url if self.router.active else None

    async def open_completion(
        self, endpoint: Endpoint, incoming: Mapping[str, str], body: bytes, query: str = "",
    ) -> httpx.Response:
        """Send a (chat) completion; returns when its status line arrived. With several
        backends (or a chunk format) to the one the router picks, in its format, moving to the
        next candidate when one fails before answering."""
        headers = self.request_headers(incoming, identity=True)
        bridge: responses.ResponsesFromChat | None = None
        if endpoint == "responses" and self.settings.responses_bridge:
            asked = orjson.loads(body)  # validated before it came here
            bridge = responses.ResponsesFromChat(asked)
            endpoint, body = "chat", orjson.dumps(responses.to_chat(asked))
        if not self.router.active:
            resp = await self.open("POST", PATHS[endpoint], headers=headers, content=body,
                                   query=query)
            if bridge is not None:  # applied to successful answers only (forwarding)
                resp.extensions["semcache_convert"] = bridge
            return resp
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        chunks = request_chunks(endpoint, data, self.settings.chunk_delimiter) \
            if isinstance(data, dict) else []
        candidates = self.router.route(chunks)
        last: UpstreamError | None = None
        for n, b in enumerate(candidates):
            prepared = chunk_format.prepare(b.formatter, endpoint, data, body, chunks)
            predicted = self.router.assign(b, chunks)
            try:
                resp = await self.open("POST", prepared.path, headers=headers,
                                       content=prepared.body, query=query, base_url=b.url)
            except UpstreamError as exc:
                self.router.failed(b, exc.message)
                last = exc
                continue
            if resp.status_code in FAILOVER_STATUSES and n + 1 < len(candidates):
                await close(resp)
                self.router.failed(b, f"answered {resp.status_code}")
                continue
            resp.extensions["semcache_route"] = (b, predicted)
            convert: Any = prepared.convert
            if bridge is not None:
                convert = bridge if convert is None else responses.Chained(convert, bridge)
            if convert is not None:
                resp.extensions["semcache_convert"] = convert
            return resp
        assert last is not None
        raise last

    def observe(self, resp: httpx.Response, answer: Any) -> None:
        """An answer (or the stream event) carrying the engine's ``timings`` (llama.cpp):
        what it computed and reused, for the router that chose its backend."""
        route = resp.extensions.get("semcache_route")
        timings = answer.get("timings") if isinstance(answer, dict) else None
        if route is None or not isinstance(timings, dict):
            return
        computed, cached = timings.get("prompt_n"), timings.get("cache_n")
        if isinstance(computed, int) and isinstance(cached, int):
            self.router.observed(route[0], route[1], computed, cached)

    def request_headers(
        self, incoming: Mapping[str, str], *, identity: bool
    ) -> dict[str, str]:
        """Client headers minus hop-by-hop and our own; the upstream key replaces the client's.

        ``identity``: ask for an unencoded body, because the gateway must read it.
        """
        out = {
            k: v
            for k, v in incoming.items()
            if k.lower() not in HOP_BY_HOP and not k.lower().startswith(_GATEWAY_PREFIX)
        }
        if self._api_key is not None:
            out = {k: v for k, v in out.items() if k.lower() != "authorization"}
            out["authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        if identity:
            out = {k: v for k, v in out.items() if k.lower() != "accept-encoding"}
            out["accept-encoding"] = "identity"
        return out

    def url(self, path: str, query: str = "", base_url: str | None = None) -> str:
        """``path`` is a decoded path under the base URL; it is percent-encoded again here."""
        url = f"{base_url or self.base_url}/{quote(path.lstrip('/'), safe=_PATH_SAFE)}"
        return f"{url}?{query}" if query else url

    async def open(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        content: bytes | None = None,
        query: str = "",
        base_url: str | None = None,
    ) -> httpx.Response:
        """Send and return once the status and headers arrived; the body is still to be read.

        The caller must ``aclose()`` the response (``iter_body`` does it).
        """
        request = self.client.build_request(
            method, self.url(path, query, base_url), headers=wire_headers(headers),
            content=content,
        )
        start = time.perf_counter()
        load = self.load
        load.started()
        try:
            with map_httpx_errors():
                try:
                    response = await self.client.send(request, stream=True)
                except _STALE:
                    # a pooled connection the upstream had closed (after a 500 without
                    # ``Connection: close``, an idle timeout): once more, on a new connection
                    response = await self.client.send(request, stream=True)
        except UpstreamError as exc:
            self.metrics.upstream_errors.labels(
                "timeout" if isinstance(exc, UpstreamTimeout) else "unavailable").inc()
            load.finished()
            load.answered(None, 503)  # no answer: no time to first byte to learn from
            raise
        except BaseException:  # cancelled (an abandoned hedge): no answer to count
            load.finished()
            raise
        ttfb = time.perf_counter() - start
        self.metrics.stage_duration.labels("upstream_ttfb").observe(ttfb)
        if response.status_code >= 400:
            self.metrics.upstream_errors.labels(str(response.status_code)).inc()
        load.answered(ttfb, response.status_code)
        response.extensions["semcache_load"] = load
        response.extensions["semcache_start"] = start
        response.extensions["semcache_metrics"] = self.metrics
        return response


async def iter_body(response: httpx.Response, *, raw: bool) -> AsyncIterator[bytes]:
    """The body as it arrives, chunk by chunk; errors mapped; the response closed at the end."""
    metrics: Metrics | None = response.extensions.get("semcache_metrics")
    try:
        with map_httpx_errors():
            chunks = response.aiter_raw() if raw else response.aiter_bytes()
            async for chunk in chunks:
                yield chunk
    except UpstreamError as exc:
        if metrics is not None:
            metrics.upstream_errors.labels(
                "timeout" if isinstance(exc, UpstreamTimeout) else "unavailable").inc()
        raise
    finally:
        await close(response)

async def close(response: httpx.Response) -> None:
    """Close an upstream response: the backend sees the connection go (and stops generating),
    the load monitor counts the call as over, the total upstream time is observed."""
    await response.aclose()
    if (load := response.extensions.pop("semcache_load", None)) is not None:
        load.finished()
    metrics: Metrics | None = response.extensions.get("semcache_metrics")
    if metrics is not None and "semcache_start" in response.extensions:
        metrics.stage_duration.labels("upstream_total").observe(
            time.perf_counter() - response.extensions.pop("semcache_start"))


async def read_body(response: httpx.Response) -> bytes:
    return b"".join([c async for c in iter_body(response, raw=False)])
