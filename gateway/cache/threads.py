"""The conversations behind Responses-API response ids (``previous_response_id``).

Every response the gateway stores (a miss) or serves (a hit, under an id the gateway makes up)
is remembered with the conversation it ended: the one it continued, its input items, its
output. A later request naming it is then keyed like a multi-turn chat (the conversation is its
context, ``responses_keys``), and — when the id is one the gateway made up, or the backend is
bridged to chat completions and keeps no responses — forwarded with that conversation written
out as ``input`` instead of the id the upstream would not know. Ids are looked up only in the
namespace that made them. Rows expire after ``responses_ttl_s`` and are swept with the cache.

The functions run on a store thread (``Store.call``, the store's one error boundary).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from gateway.cache.breaker import StoreBreaker
from gateway.cache.keys import RequestKey, namespace_of
from gateway.cache.responses_keys import responses_key, turn
from gateway.cache.schema import responses
from gateway.cache.store import Store
from gateway.config import Settings
from gateway.errors import StoreError
from gateway.protocol import ResponsesRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Thread:
    conversation: list[Any]   # turns, oldest first
    minted: bool              # the gateway's id: the upstream never saw it


def remember(engine: Engine, response_id: str, namespace: str, conversation: list[Any],
             minted: bool, now: float, ttl_s: float, whole: dict[str, Any] | None = None) -> None:
    row = {"id": response_id, "namespace": namespace,
           "conversation": orjson.dumps(conversation).decode(), "minted": minted,
           "response": orjson.dumps(whole).decode() if whole is not None else None,
           "created_at": now, "expires_at": now + ttl_s}
    try:
        with engine.begin() as conn:
            conn.execute(responses.insert().values(**row))
    except IntegrityError:
        pass  # the same id twice (an upstream that repeats ids): the first one stands


def recall(engine: Engine, response_id: str, namespace: str, now: float) -> Thread | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(responses.c.conversation, responses.c.minted).where(
                responses.c.id == response_id, responses.c.namespace == namespace,
                responses.c.expires_at > now)).first()
    if row is None:
        return None
    return Thread(orjson.loads(row.conversation), bool(row.minted))


def recall_response(engine: Engine, response_id: str, namespace: str, now: float,
                    ) -> dict[str, Any] | None:
    """The response the gateway gave under an id of its own (a hit), or None."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(responses.c.response).where(
            responses.c.id == response_id, responses.c.namespace == namespace,
            responses.c.minted.is_(True), responses.c.expires_at > now)).first()
    if row is None or row.response is None:
        return None
    found: dict[str, Any] = orjson.loads(row.response)
    return found


def forget_expired(engine: Engine, now: float) -> int:
    with engine.begin() as conn:
        return int(conn.execute(responses.delete().where(responses.c.expires_at <= now)).rowcount)


def written_out(data: dict[str, Any], conversation: list[Any]) -> dict[str, Any]:
    """The request with ``previous_response_id`` replaced by the conversation it names."""
    out = {k: v for k, v in data.items() if k != "previous_response_id"}
    current = data.get("input")
    items = [{"role": "user", "content": current}] if isinstance(current, str) else list(current or [])
    out["input"] = [_as_input(t) for t in conversation] + items
    return out


def _as_input(t: Any) -> Any:
    """A remembered turn as a Responses input item (a message of any role, as written)."""
    if isinstance(t, dict) and "role" in t and "type" not in t:
        return {"type": "message", **t}
    return t


async def key_for(
    store: Store, settings: Settings, parsed: ResponsesRequest, raw: bytes, namespace: str,
    query: str,
) -> tuple[RequestKey, bytes]:
    """The request's key, and the body to forward: the client's own, or — when it names a
    response the upstream cannot know (the gateway's id, or a bridged backend) — with the
    conversation written out."""
    found: Thread | None = None
    if parsed.previous_response_id:
        try:
            found = await store.call(settings.store_lookup_timeout_s, recall, store.engine,
                                     parsed.previous_response_id, namespace, time.time())
        except StoreError as exc:
            log.warning("previous_response_id not looked up (%s): the request bypasses",
                        exc.message)
    key = responses_key(parsed, namespace, settings.max_query_chars, settings.extra_fields,
                        query, found.conversation if found is not None else None)
    if found is not None and (found.minted or settings.responses_bridge):
        raw = orjson.dumps(written_out(orjson.loads(raw), found.conversation))
    return key, raw


async def remember_answer(store: Store, settings: Settings, key: RequestKey, response_id: str,
                          output: list[Any], *, minted: bool,
                          whole: dict[str, Any] | None = None) -> None:
    """Remember the conversation ``response_id`` ends; a failure is logged (a request naming
    the id later bypasses the cache), never the client's."""
    if not response_id or key.conversation is None:
        return
    conversation = [*key.conversation, *(turn(i) for i in output
                                         if isinstance(i, dict) and i.get("type") != "reasoning")]
    try:
        await store.call(settings.store_timeout_s, remember, store.engine, response_id,
                         key.namespace, conversation, minted, time.time(), settings.responses_ttl_s,
                         whole)
    except StoreError as exc:
        log.warning("response %s not remembered (%s)", response_id, exc.message)


def recorder(store: Store, settings: Settings, key: RequestKey, breaker: StoreBreaker,
             ) -> Callable[[dict[str, Any]], Awaitable[None]]:
    """What a forwarded Responses request hands each final response: remember it (a bridged
    backend's ids are the gateway's own: follow-ups are written out), unless the store is
    known to be down."""
    async def record(response: dict[str, Any]) -> None:
        if breaker.closed:
            bridged = settings.responses_bridge  # the bridge's ids: the backend knows none
            await remember_answer(store, settings, key, str(response.get("id") or ""),
                                  response.get("output") or [], minted=bridged,
                                  whole=response if bridged else None)
    return record


async def stored_response(store: Store, settings: Settings, headers: Any, response_id: str,
                          ) -> dict[str, Any] | None:
    """``GET /v1/responses/{id}`` for an id the gateway made (in the caller's namespace)."""
    namespace = namespace_of(headers, key_namespaces=settings.api_key_namespaces,
                             anonymous=settings.default_namespace,
                             trust_header=settings.trust_namespace_header)
    try:
        found: dict[str, Any] | None = await store.call(
            settings.store_lookup_timeout_s, recall_response, store.engine, response_id,
            namespace, time.time())
    except StoreError:
        return None
    return found
