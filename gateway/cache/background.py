"""The cache's background tasks (warm-up, change-log follower, sweeper, hit-count flusher, a
discarded hedge): started beside the request path, stopped together at shutdown.

Loops sleep with ``pause``, which returns early once closing has begun, so each loop ends at
its next pause instead of being cancelled in the middle of a store call (a call cancelled
while it runs in a worker thread leaves its connection orphaned when the engine is disposed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Background:
    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def offload(self, coro: Coroutine[Any, Any, Any], most: int = 256) -> bool:
        """Run ``coro`` beside the caller unless ``most`` background tasks (the gateway's few
        loops count too) are already running or closing has begun: a slow store must not pile
        up writes without bound — the caller then awaits ``coro`` itself."""
        if len(self._tasks) >= most or self.stopping.is_set():
            return False
        self.spawn(coro)
        return True

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` (less if closing has begun); True once it has."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
        return self.stopping.is_set()

    async def close(self, grace_s: float = 5.0) -> None:
        """Ask every loop to end at its next pause; cancel what has not ended after
        ``grace_s``."""
        self.stopping.set()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_s)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
