"""Request coalescing: concurrent misses for the same question share one upstream call.

The first miss for a key leads: it forwards as usual. The key is the whole request but for
its delivery (``RequestKey.request_hash``: every field, keyed or shareable, so a leader with
``max_tokens: 9000`` never stands for a plain follower). Misses with the same key that arrive
while it is in flight follow: they wait (at most ``wait_s``) for the leader's outcome instead of
calling the backend themselves. Only a complete answer that may be stored is shared (replayed
as a stream where asked); anything else — an error status, a failure, an answer cut short or
marked ``no-store``, a wait that runs out — sends the follower upstream on its own: an error
is the leader's, not the follower's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Shared:
    response: dict[str, Any] | None = None    # the complete answer; None: go upstream yourself


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
