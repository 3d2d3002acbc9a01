"""httpx's client over aiohttp's HTTP/1.1 connections: what a miss pays for its upstream call.

The gateway talks to its backends through one ``httpx.AsyncClient`` (``upstream``): its
requests, responses, timeouts and error classes are what the rest of the code knows. Under it,
httpx's own transport (httpcore, h11) parses every response in Python; aiohttp's parser and
writer are compiled. This transport sends httpx's requests on an aiohttp connection pool and
hands back httpx responses, raising httpx's exceptions, so nothing above it changes
(``benchmarks/gateway_latency.py`` measures both: ``SEMCACHE_UPSTREAM_TRANSPORT``).

Kept byte-exact where aiohttp could not be: aiohttp writes header values as UTF-8, so a request
carrying a header value that is not valid UTF-8 (Latin-1 bytes a client sent) goes through
httpx's own transport instead, which writes bytes as they are. Bodies are not decoded here
(httpx decodes them, as before), nor are redirects followed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp connection pool (made in the loop that first uses it) behind httpx."""

    def __init__(self, *, max_connections: int, keepalive_s: float = 5.0):
        self._max, self._keepalive = max_connections, keepalive_s
        self._session: aiohttp.ClientSession | None = None
        self._fallback: httpx.AsyncHTTPTransport | None = None
        self._ssl = httpx.create_ssl_context()  # the trust store httpx would use

    def _pool(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max, limit_per_host=0, ssl=self._ssl,
                                               keepalive_timeout=self._keepalive),
                # the upstream's cookies are the client's business (passed on), not the pool's
                auto_decompress=False, skip_auto_headers=("User-Agent",),
                cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            headers = [(k.decode("ascii"), v.decode("utf-8")) for k, v in request.headers.raw]
        except UnicodeDecodeError:  # bytes aiohttp would not write as they came
            if self._fallback is None:
                self._fallback = httpx.AsyncHTTPTransport(
                    limits=httpx.Limits(max_connections=self._max), verify=self._ssl)
            return await self._fallback.handle_async_request(request)
        body = await request.aread()
        timeout = request.extensions.get("timeout", {})
        try:
            resp = await self._pool().request(
                request.method, str(request.url), headers=headers, data=body or None,
                allow_redirects=False, timeout=_timeout(timeout))
        except BaseException as exc:
            _raise_httpx(exc, request)
            raise
        return httpx.Response(
            resp.status, headers=list(resp.raw_headers), stream=_Body(resp, request),
            request=request,
            extensions={"http_version": b"HTTP/1.1",
                        "reason_phrase": (resp.reason or "").encode("latin-1", "replace")})

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._fallback is not None:
            await self._fallback.aclose()


class _Body(httpx.AsyncByteStream):
    def __init__(self, resp: aiohttp.ClientResponse, request: httpx.Request):
        self._resp, self._request = resp, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except BaseException as exc:
            _raise_httpx(exc, self._request)
            raise

    async def aclose(self) -> None:
        # read to its end: the connection goes back to the pool; else it is closed, so the
        # backend sees the client go (and stops generating)
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()


def _timeout(t: dict[str, float | None]) -> aiohttp.ClientTimeout:
    """httpx's per-request timeouts: connect, read (between two reads) and pool (waiting for a
    connection) — aiohttp's ``connect`` covers the wait for a pooled connection and the
    connect, ``sock_connect`` the connect alone."""
    connect, pool = t.get("connect"), t.get("pool")
    return aiohttp.ClientTimeout(
        total=None, sock_read=t.get("read"), sock_connect=connect,
        connect=None if connect is None or pool is None else connect + pool)


def _raise_httpx(exc: BaseException, request: httpx.Request) -> None:
    """aiohttp's failure as the httpx exception httpcore raises for it (no return: raises);
    anything else (a cancellation, a bug) is left to propagate as it is."""
    detail = str(exc) or type(exc).__name__
    mapped: httpx.TransportError
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        mapped = httpx.ConnectTimeout(detail, request=request)
    elif isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        mapped = httpx.ReadTimeout(detail, request=request)
    elif isinstance(exc, aiohttp.ClientConnectorError):
        mapped = httpx.ConnectError(detail, request=request)
    elif isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        # closed before a whole answer: what a pooled connection the upstream had already
        # closed fails with (``upstream`` retries it once), or a body cut short
        mapped = httpx.RemoteProtocolError(detail, request=request)
    elif isinstance(exc, aiohttp.ClientOSError):
        mapped = httpx.ReadError(detail, request=request)
    elif isinstance(exc, aiohttp.ClientError):
        mapped = httpx.NetworkError(detail, request=request)
    else:
        return
    raise mapped from exc
