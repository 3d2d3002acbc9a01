"""The cross-encoder of a worker whose embedding is done by the shared embedding process: the
pairs go there too (``RemoteEmbedder.ascore``), so a GPU holds one copy of the model in one
CUDA context instead of one per worker taking turns (`gpu_gateway` section, 2026-12-07: twelve
workers with their own copies, 1,391 semantic hits/s against 5,521 without the model).

``logits`` is called from a store thread (the lookup's), so it hands the call to the worker's
event loop and waits. A pair the process could not score gets ``-inf``: refused, never served
on a verdict nobody gave.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gateway.cache.verifier.learned import PairModel, same_word_pieces

log = logging.getLogger(__name__)


class SharedPairModel:
    """``PairModel``'s interface (``logits``, ``same_tokens``, ``tokenizer``, ``observe``)."""

    int8 = False  # whatever the process runs; its own log says which

    def __init__(self, remote: Any, loop: asyncio.AbstractEventLoop, timeout_s: float = 2.0):
        self.remote, self.loop, self.timeout_s = remote, loop, timeout_s
        self.tokenizer = PairModel.tokenizer_of_base()  # the cross-encoder's: the base's own
        self.observe: Callable[[int, float], None] | None = None

    def same_tokens(self, a: str, b: str) -> bool:
        return same_word_pieces(self.tokenizer, a, b)

    def logits(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        start = time.perf_counter()
        try:
            logits = asyncio.run_coroutine_threadsafe(
                self.remote.ascore(pairs), self.loop).result(self.timeout_s)
        except Exception as exc:  # unreachable, failed, too slow: these pairs are refused
            log.warning("the embedding process scored no pairs (%s): refused", exc)
            return np.full(len(pairs), -np.inf, dtype=np.float32)
        if self.observe is not None:
            self.observe(len(pairs), time.perf_counter() - start)
        return np.asarray(logits, dtype=np.float32)
