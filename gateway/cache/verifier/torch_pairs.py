"""The cross-encoder on a GPU: the merged torch model, each batch of pairs one CUDA graph replay.

On a GPU machine ONNX Runtime would run the cross-encoder on the CPU cores beside the workers:
a few milliseconds of a core for every pair judged, as much again as the rest of a semantic
hit. Here the adapter, merged into the packaged weights, runs in fp32 on the GPU, a batch at
a time (the pairs the shared embedding process gathers from every worker; padding masked out,
so a pair's logit beside others is its logit alone within float rounding); each shape — rows
rounded up to a power of two, tokens to a bucket — is captured once as a CUDA graph, as the
embedder's torch path does (``gateway.embedding.gpu``): a call is the tokenizer, one copy in,
one replay, one copy out.

Its logits are fp32's: a few tenths from the int8 model's the gate was fitted on (on the probes
the two are held within ``INT8_TOLERANCE``), so a pair right at the gate's points can be judged
otherwise here than on a CPU.
Without CUDA (or ``graphs=False``) the same forward runs eagerly: what the CPU tests exercise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gateway.cache.verifier.learned import ADAPTER, PROBES, PairModel, same_word_pieces
from gateway.embedding.gpu import GPU_LOCK, GRAPH_MAX_TOKENS, TOKEN_BUCKETS, CapturedGraph

log = logging.getLogger(__name__)

MAX_DRIFT = 1e-3  # graph replay (padded to its bucket) against the eager forward, in logits
MAX_ROWS = 64  # pairs in one forward


def verifier_device(asked: str) -> str:
    """The ``verifier_device`` setting resolved: "auto" is the first GPU where torch sees CUDA."""
    if asked != "auto":
        return asked
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def pair_model(cache_dir: Path, threads: int, device: str) -> Any:
    """The cross-encoder on ``device`` (resolved): "cpu", ONNX Runtime with int8 weights
    (``learned.PairModel``); a GPU, torch in fp32 with CUDA graphs (``TorchPairModel``)."""
    if device == "cpu":
        return PairModel(ADAPTER, cache_dir, threads)
    return TorchPairModel(ADAPTER, device)


class TorchPairModel:
    """``PairModel``'s interface (``logits``, ``same_tokens``, ``tokenizer``, ``observe``)."""

    int8 = False

    def __init__(self, adapter: Path, device: str, max_length: int = 128, graphs: bool = True):
        import torch

        from gateway.cache.verifier.model import apply_adapter

        model, self.tokenizer, _ = apply_adapter(adapter)
        self._torch, self.device, self.max_length = torch, device, max_length
        self.observe: Callable[[int, float], None] | None = None
        self._lock = GPU_LOCK  # with the embedder's calls, one at a time (gpu.py)
        self._graphs: dict[tuple[int, int], CapturedGraph] = {}
        self._use_graphs = graphs and device.startswith("cuda") and torch.cuda.is_available()
        self._pad = self.tokenizer.pad_token_id or 0
        with self._lock:  # made in the shared process while the embedder may be capturing
            self._model = model.to(device).eval()
            alone = np.concatenate([self._eager([ids], [types])
                                    for ids, types in (self._encode(a, b) for a, b in PROBES)])
        drift = max(float(np.abs(self.logits(PROBES) - alone).max()),
                    float(np.abs(self.logits(PROBES[:1]) - alone[:1]).max()))
        if drift > MAX_DRIFT:
            raise ValueError(f"the cross-encoder's CUDA graphs differ by {drift:.2e}")
        log.info("learned verifier on %s (CUDA graphs %s)", device,
                 "on" if self._use_graphs else "off")

    def same_tokens(self, a: str, b: str) -> bool:
        return same_word_pieces(self.tokenizer, a, b)

    def logits(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """One logit per pair, in batches of up to ``MAX_ROWS`` (the shared embedding process
        gathers the workers' pairs): fp32 with padding masked out, so a pair's logit beside
        others is its logit alone within float rounding (1e-5, not the int8 model's tenths)."""
        out = np.zeros(len(pairs), dtype=np.float32)
        encoded = [self._encode(a, b) for a, b in pairs]
        for start in range(0, len(encoded), MAX_ROWS):
            chunk = encoded[start:start + MAX_ROWS]
            with self._lock:
                began = time.perf_counter()
                out[start:start + len(chunk)] = self._run(chunk)
                spent = time.perf_counter() - began
            if self.observe is not None:
                self.observe(len(chunk), spent)
        return out

    def _encode(self, a: str, b: str) -> tuple[list[int], list[int]]:
        enc = self.tokenizer(a, b, truncation=True, max_length=self.max_length)
        return list(enc["input_ids"]), list(enc["token_type_ids"])

    def _run(self, chunk: list[tuple[list[int], list[int]]]) -> np.ndarray:
        ids, types = [i for i, _ in chunk], [t for _, t in chunk]
        rows, longest = 1 << (len(chunk) - 1).bit_length(), max(map(len, ids))
        tokens = next((t for t in TOKEN_BUCKETS if t >= longest), longest)
        if self._use_graphs and rows * tokens <= GRAPH_MAX_TOKENS:
            graph = self._graphs.get((rows, tokens)) or self._capture(rows, tokens)
            if graph is not None:
                return graph.run(ids, self._pad, types)[:len(chunk)]
        return self._eager(ids, types)

    def _eager(self, ids: list[list[int]], types: list[list[int]]) -> np.ndarray:
        torch = self._torch
        host = np.full((len(ids), max(map(len, ids))), self._pad, dtype=np.int64)
        mask, segments = np.zeros_like(host), np.zeros_like(host)
        for row, (x, t) in enumerate(zip(ids, types, strict=True)):
            host[row, :len(x)], mask[row, :len(x)], segments[row, :len(t)] = x, 1, t
        with torch.inference_mode():
            return self._forward(*(torch.from_numpy(a).to(self.device)
                                   for a in (host, mask, segments))).cpu().numpy()

    def _forward(self, ids: Any, mask: Any, types: Any) -> Any:
        return self._model.correction(ids, mask, types).float()

    def _capture(self, rows: int, tokens: int) -> CapturedGraph | None:
        try:
            graph = CapturedGraph(self._torch, self._forward, rows, tokens, self.device,
                                  segments=True)
        except Exception as exc:  # a forward that cannot be captured: run it eagerly
            log.warning("CUDA graph capture failed (%s); the cross-encoder runs without", exc)
            self._use_graphs = False
            return None
        self._graphs[(rows, tokens)] = graph
        return graph
