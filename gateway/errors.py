"""The gateway's exceptions, and the one place they become OpenAI-shaped error responses.

    SemcacheError                      every error the gateway raises on purpose
    ├── ClientError                    the request is at fault: 4xx, never retried by us
    │   ├── InvalidRequest             400 invalid_request_error
    │   ├── Unauthorized               401 authentication_error
    │   ├── NotFound                   404 not_found_error
    │   ├── RequestTimeout             408 invalid_request_error (the body came too slowly)
    │   └── PayloadTooLarge            413 invalid_request_error
    ├── UpstreamError                  the backend could not be used: 5xx
    │   ├── UpstreamUnavailable        502 connection refused, reset, bad protocol
    │   └── UpstreamTimeout            504 no byte within the timeout
    └── CacheError                     the cache itself failed; never reaches a client of the
        └── StoreError                 OpenAI API (the request degrades to pass-through and a
            └── StoreTimeout           metric counts it); on the admin API 503

An upstream that *answers* with an error status is not an exception here: its status and body
are passed through unchanged (see ``upstream.py``).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger(__name__)


class SemcacheError(Exception):
    status_code = 500
    error_type = "internal_error"
    code: str | None = None

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param


class ClientError(SemcacheError):
    status_code = 400
    error_type = "invalid_request_error"


class InvalidRequest(ClientError):
    code = "invalid_request"


class Unauthorized(ClientError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class NotFound(ClientError):
    status_code = 404
    error_type = "not_found_error"
    code = "not_found"


class RequestTimeout(ClientError):
    status_code = 408
    code = "request_timeout"


class PayloadTooLarge(ClientError):
    status_code = 413
    code = "request_too_large"


class UpstreamError(SemcacheError):
    status_code = 502
    error_type = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    code = "upstream_timeout"


class CacheError(SemcacheError):
    code = "cache_error"


class StoreError(CacheError):
    """A document-store call failed; raised only by ``Store.call``, the one place a SQLAlchemy
    exception becomes ours. ``unavailable``: the store could not be reached or used
    (connection, lock, timeout, pool) — what opens the breaker — as opposed to refusing what
    was asked of it (data, integrity)."""

    status_code = 503
    error_type = "server_error"
    code = "store_error"

    def __init__(self, message: str, *, unavailable: bool = False):
        super().__init__(message)
        self.unavailable = unavailable


class StoreTimeout(StoreError):
    """A store call ran past its deadline (``Store.call``): the store is treated as unavailable
    for that request; the call itself may still finish on its thread."""

    code = "store_timeout"

    def __init__(self, message: str):
        super().__init__(message, unavailable=True)


def error_body(
    message: str, error_type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(
    status: int, message: str, error_type: str, code: str | None = None, param: str | None = None
) -> Response:
    return Response(
        orjson.dumps(error_body(message, error_type, code, param)),
        status_code=status,
        media_type="application/json",
    )


def from_exception(exc: SemcacheError) -> Response:
    return error_response(exc.status_code, exc.message, exc.error_type, exc.code, exc.param)


def http_error(exc: StarletteHTTPException) -> Response:
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return error_response(exc.status_code, str(exc.detail), kind, None)


def install_handlers(app: FastAPI) -> None:
    """Every error leaves the gateway in OpenAI's envelope; nothing leaves as a bare 500."""

    @app.exception_handler(SemcacheError)
    async def _semcache(_: Request, exc: SemcacheError) -> Response:
        return from_exception(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_response(
            400, f"{loc or 'request'}: {first.get('msg', 'invalid')}", "invalid_request_error",
            "invalid_request", loc or None,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        return http_error(exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal gateway error", "internal_error", "internal_error")
