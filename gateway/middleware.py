"""Pure-ASGI middleware: a request id on every request, in the logs and in the response.

It is also where an unexpected exception becomes a response: Starlette's own last-resort
handler runs outside every user middleware, so its 500 would carry no ``X-Request-ID``. Here
the 500 (OpenAI's error shape) carries it, and a client that went away while sending its body
is logged as what it is, without a traceback.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_response

log = logging.getLogger(__name__)

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SAFE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Takes a well-formed ``X-Request-ID`` from the client or makes one; echoes it back."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        rid = given if _SAFE.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            log.info("client went away before its request was read: %s %s",
                     scope.get("method"), scope.get("path"))
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:  # too late for a status: the connection is dropped
                raise
            response = error_response(500, "internal gateway error", "internal_error",
                                      "internal_error")
            await response(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
