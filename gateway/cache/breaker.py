"""The store's circuit breaker: cache trouble degrades to pass-through, never to errors.

A failed store call opens it: for ``retry_s`` requests pass through without touching the store
(no timeouts piling up behind a dead database); the first request after that tries the store
again, and a successful health check closes it at once.

Only the store's *unavailability* opens it (``StoreError.unavailable``): a row the store refuses (a value
too long for its column, a character it cannot hold) fails that one write, never caching for
every tenant. A call past its deadline (``StoreTimeout``) may be an outage or only a saturated
machine: ``TIMEOUTS`` of them within ``retry_s``, with no call succeeding in between, start a
health check (``probe``, the store's ping under its own deadline), and only a failed check opens
it. Each slow request meanwhile passes through after its own deadline. (Opening on timeouts
alone, twelve workers at 3,000 requests/s on a saturated 16-core host, where lookups now and
then waited past 0.2 s for the GIL all at once, turned caching off for 5 s at a time.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.errors import StoreError, StoreTimeout
from gateway.metrics import Metrics

log = logging.getLogger(__name__)


class StoreBreaker:
    TIMEOUTS = 3

    def __init__(self, retry_s: float, metrics: Metrics,
                 probe: Callable[[], Awaitable[Any]] | None = None):
        """``probe``: raises ``StoreError`` when the store is down; None: timeouts alone open
        the breaker."""
        self.retry_s = retry_s
        self.metrics = metrics
        self.probe = probe
        self._open_until = 0.0
        self._timeouts: list[float] = []
        self._probing: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        """True when the store may be used."""
        return time.monotonic() >= self._open_until

    def failed(self, operation: str, error: BaseException | None = None) -> None:
        """Call from the ``except`` of a failed store call (its traceback is logged once)."""
        self.metrics.store_errors.labels(operation).inc()
        if isinstance(error, StoreTimeout):
            now = time.monotonic()
            self._timeouts = [t for t in self._timeouts if t > now - self.retry_s] + [now]
            if len(self._timeouts) < self.TIMEOUTS:
                log.info("document store slow (%s): %s", operation, error)
                return
            self._timeouts = []
            if self.probe is not None:
                if self._probing is None:
                    self._probing = asyncio.get_running_loop().create_task(
                        self._check(operation))
                return
        self._open(operation)

    def _open(self, operation: str) -> None:
        if self.closed:
            log.warning("document store failed (%s); pass-through for %.0fs, then retrying",
                        operation, self.retry_s, exc_info=True)
        self._open_until = time.monotonic() + self.retry_s

    async def _check(self, operation: str) -> None:
        """Slow calls in a row: is the store down, or the machine busy?"""
        assert self.probe is not None
        try:
            await self.probe()
        except StoreError as exc:
            log.warning("document store failed its health check after slow calls (%s): %s",
                        operation, exc.message)
            self._open(operation)
        else:
            log.info("document store slow (%s) but answering its health check: busy, not down",
                     operation)
        finally:
            self._probing = None

    def succeeded(self) -> None:
        """A store call on the request path answered in time: the store is up, slow calls
        before it were the machine's load, not an outage."""
        if self._timeouts:
            self._timeouts = []

    def reset(self) -> None:
        self._open_until = 0.0

    async def aclose(self) -> None:
        if self._probing is not None:  # ``_check`` handles the probe's own StoreError
            self._probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probing
