"""``MicroBatcher`` gathers the queries of concurrent requests for at most ``wait_s`` and encodes
them in one call on a worker thread: the event loop never runs the model, and throughput grows
with concurrency instead of queueing one encode per request. An embedder with ``aencode`` (the
shared process's) is awaited on the loop itself: its work is elsewhere, no thread is needed."""

from __future__ import annotations

import asyncio
import contextlib

from gateway.embedding.models import Embedder, Vectors

_Item = tuple[str, "asyncio.Future[Vectors]"]


class MicroBatcher:
    def __init__(self, embedder: Embedder, *, wait_s: float = 0.002, max_batch: int = 64):
        self.embedder = embedder
        self.wait_s = wait_s
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # encode calls made; tests and benchmarks read it
        self._last_size = 0
        self._aencode = getattr(embedder, "aencode", None)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="embed-batcher")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        closing = getattr(self.embedder, "aclose", None)
        if closing is not None:
            await closing()

    async def embed(self, text: str) -> Vectors:
        """One normalised vector (shape ``(dim,)``)."""
        fut: asyncio.Future[Vectors] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((text, fut))
        return await fut

    async def embed_many(self, texts: list[str]) -> Vectors:
        """Bulk work (classifier exemplars, eval): one direct encode on a worker thread."""
        if self._aencode is not None:
            return await self._aencode(texts, bulk=True)
        return await asyncio.to_thread(self.embedder.encode, texts)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            # Wait for company only under concurrency (the last batch had several queries):
            # a lone request is encoded at once and pays no batching delay.
            if self.wait_s > 0 and self._queue.empty() and self._last_size > 1:
                await asyncio.sleep(self.wait_s)
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(t, f) for t, f in batch if not f.done()]
            if not live:
                continue
            try:
                texts = [t for t, _ in live]
                vecs = await (self._aencode(texts) if self._aencode is not None
                              else asyncio.to_thread(self.embedder.encode, texts))
                self.batches += 1
                self._last_size = len(live)
            except Exception as exc:  # the model failed: every waiter learns it
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), vec in zip(live, vecs, strict=True):
                if not fut.done():
                    fut.set_result(vec)
