"""The cross-encoder on a GPU: the merged torch model, each pair one CUDA graph replay.

On a GPU machine ONNX Runtime would run the cross-encoder on the CPU cores beside the workers:
a few milliseconds of a core for every pair judged, as much again as the rest of a semantic
hit. Here the adapter, merged into the packaged weights, runs in fp32 on the GPU, one pair at
a time (a pair's logit does not depend on what else is judged); each shape — one row, its
tokens rounded up to a bucket, padding masked out — is captured once as a CUDA graph, as the
embedder's torch path does (``gateway.embedding.gpu``): a call is the tokenizer, one copy in,
one replay, one copy out.

Its logits are fp32's: a few tenths from the int8 model's the gate was fitted on (the
``verifier_gate`` section measures the decisions with fp32 logits beside the int8 ones).
Without CUDA (or ``graphs=False``) the same forward runs eagerly: what the CPU tests exercise.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gateway.cache.verifier.learned import PROBES, same_word_pieces
from gateway.embedding.gpu import TOKEN_BUCKETS, CapturedGraph

log = logging.getLogger(__name__)

MAX_DRIFT = 1e-3  # graph replay (padded to its bucket) against the eager forward, in logits


def verifier_device(asked: str) -> str:
    """The ``verifier_device`` setting resolved: "auto" is the first GPU where torch sees CUDA."""
    if asked != "auto":
        return asked
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TorchPairModel:
    """``PairModel``'s interface (``logits``, ``same_tokens``, ``tokenizer``, ``observe``)."""

    int8 = False

    def __init__(self, adapter: Path, device: str, max_length: int = 128, graphs: bool = True):
        import torch

        from gateway.cache.verifier.model import apply_adapter

        model, self.tokenizer, _ = apply_adapter(adapter)
        self._torch, self.device, self.max_length = torch, device, max_length
        self._model = model.to(device).eval()
        self.observe: Callable[[int, float], None] | None = None
        self._lock = threading.Lock()  # one caller at a time owns a graph's buffers
        self._graphs: dict[int, CapturedGraph] = {}
        self._use_graphs = graphs and device.startswith("cuda") and torch.cuda.is_available()
        self._pad = self.tokenizer.pad_token_id or 0
        eager = np.array([self._eager(*self._encode(a, b)) for a, b in PROBES])
        drift = float(np.abs(self.logits(PROBES) - eager).max())
        if drift > MAX_DRIFT:
            raise ValueError(f"the cross-encoder's CUDA graphs differ by {drift:.2e}")
        log.info("learned verifier on %s (CUDA graphs %s)", device,
                 "on" if self._use_graphs else "off")

    def same_tokens(self, a: str, b: str) -> bool:
        return same_word_pieces(self.tokenizer, a, b)

    def logits(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        out = np.zeros(len(pairs), dtype=np.float32)
        for i, (a, b) in enumerate(pairs):
            ids, types = self._encode(a, b)
            with self._lock:
                start = time.perf_counter()
                out[i] = self._run(ids, types)
                spent = time.perf_counter() - start
            if self.observe is not None:
                self.observe(1, spent)
        return out

    def _encode(self, a: str, b: str) -> tuple[list[int], list[int]]:
        enc = self.tokenizer(a, b, truncation=True, max_length=self.max_length)
        return list(enc["input_ids"]), list(enc["token_type_ids"])

    def _run(self, ids: list[int], types: list[int]) -> float:
        tokens = next((t for t in TOKEN_BUCKETS if t >= len(ids)), len(ids))
        if self._use_graphs:
            graph = self._graphs.get(tokens) or self._capture(tokens)
            if graph is not None:
                return float(graph.run([ids], self._pad, [types])[0])
        return self._eager(ids, types)

    def _eager(self, ids: list[int], types: list[int]) -> float:
        torch = self._torch
        with torch.inference_mode():
            t_ids = torch.tensor([ids], device=self.device)
            return float(self._forward(t_ids, torch.ones_like(t_ids),
                                       torch.tensor([types], device=self.device))[0])

    def _forward(self, ids: Any, mask: Any, types: Any) -> Any:
        return self._model.correction(ids, mask, types).float()

    def _capture(self, tokens: int) -> CapturedGraph | None:
        try:
            graph = CapturedGraph(self._torch, self._forward, 1, tokens, self.device, segments=True)
        except Exception as exc:  # a forward that cannot be captured: run it eagerly
            log.warning("CUDA graph capture failed (%s); the cross-encoder runs without", exc)
            self._use_graphs = False
            return None
        self._graphs[tokens] = graph
        return graph
