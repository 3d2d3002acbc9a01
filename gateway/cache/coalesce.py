"""Request coalescing: concurrent misses for the same question share one upstream call.

The first miss for a key (same scope, conversation and normalised query) leads: it forwards as
usual. Misses for the same key that arrive while it is in flight follow: they wait (at most
``wait_s``) for the leader's outcome instead of calling the backend themselves. A complete
answer is served to every follower (replayed as a stream where asked); an upstream error status
or failure is handed to them as it was to the leader; anything else (an answer cut short, a
wait that runs out) sends the follower upstream on its own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from gateway.errors import UpstreamError


@dataclass(frozen=True)
class Shared:
    response: dict[str, Any] | None = None    # the complete answer
    status: int | None = None                 # an error status the upstream answered with
    body: bytes | None = None
    error: UpstreamError | None = None        # the upstream failed (timeout, unreachable)


class Coalescer:
    def __init__(self, wait_s: float):
        self.wait_s = wait_s
        self._inflight: dict[str, asyncio.Future[Shared]] = {}

    def __len__(self) -> int:
        return len(self._inflight)

    def in_flight(self, key: str) -> asyncio.Future[Shared] | None:
        return self._inflight.get(key)

    def lead(self, key: str) -> asyncio.Future[Shared]:
        fut: asyncio.Future[Shared] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        # a leader whose client vanished before its body started must not hold followers or
        # memory forever
        asyncio.get_running_loop().call_later(self.wait_s * 2, self.finish, key, fut, Shared())
        return fut

    async def follow(self, fut: asyncio.Future[Shared]) -> Shared | None:
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.wait_s)
        except TimeoutError:
            return None

    def finish(self, key: str, fut: asyncio.Future[Shared], outcome: Shared) -> None:
        if not fut.done():
            fut.set_result(outcome)
        if self._inflight.get(key) is fut:
            del self._inflight[key]
