"""The model through torch without sentence-transformers' per-call work, and on a GPU with each
batch shape captured once as a CUDA graph.

Measured on an H200 (benchmarks/gpu_gateway.py): ``SentenceTransformer.encode`` takes 6.5 ms
for one short query (its pipeline's Python, then the kernel launches of a 6-layer BERT, one by
one, from the CPU), this path 0.66 ms; 64 queries 12.3 vs 4.5 ms. Here a call is: the fast
tokenizer, the ids written into a pinned host buffer of the batch's bucket (rows rounded up to a
power of two, tokens to a step of ``TOKEN_BUCKETS``), one copy in, one graph replay (transformer,
mean pooling, normalisation), one copy out. Padding rows and tokens are masked out, so a vector
does not depend on its bucket; the constructor checks the result against the reference model
and refuses to serve (``ValueError``) past ``MAX_DRIFT``.

Without CUDA (or with ``graphs=False``) the same forward runs eagerly: that path is what the CPU
tests exercise, and what a shape too large for a graph (``GRAPH_MAX_TOKENS``) takes on the GPU.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.embedding.models import OnnxEmbedder, SentenceTransformerEmbedder, Vectors

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512)
GRAPH_MAX_TOKENS = 64 * 128  # rows x tokens of the largest captured shape
# One caller at a time on the GPU, whatever model it runs: a CUDA graph captured while another
# thread launches work fails ("operation failed due to a previous error during capture", seen
# in the shared embedding process with the embedder and the cross-encoder side by side), and
# a call owns its graph's static buffers until it has read its output.
GPU_LOCK = threading.Lock()
MAX_DRIFT = 1e-4


class TorchEmbedder:
    PROBES = OnnxEmbedder.PROBES

    def __init__(self, reference: SentenceTransformerEmbedder, *, graphs: bool = True,
                 max_batch: int = 64):
        import torch

        self._torch = torch
        self.dim, self.device = reference.dim, reference.device
        self.name = reference.name  # the same vectors as the reference (checked below)
        self.tokenizer = reference.tokenizer
        self.max_length = reference.max_length
        self.model_path = reference.model_path
        self._transformer = reference.model[0].auto_model.eval()
        self._graphs: dict[tuple[int, int], CapturedGraph] = {}
        self._use_graphs = graphs and self.device.startswith("cuda") and torch.cuda.is_available()
        self._max_rows = 1 << max(0, max_batch - 1).bit_length()
        self._lock = GPU_LOCK
        self._pad = self.tokenizer.pad_token_id or 0
        probes = list(self.PROBES)
        expected = reference.encode(probes)
        drift = max(float(np.abs(self.encode(probes) - expected).max()),
                    float(np.abs(self.encode(probes[:1]) - expected[:1]).max()))
        if drift > MAX_DRIFT:
            raise ValueError(f"torch path differs from the model by {drift:.2e}")
        log.info("torch embedding path ready on %s (CUDA graphs %s)", self.device,
                 "on" if self._use_graphs else "off")

    @property
    def uses_graphs(self) -> bool:
        return self._use_graphs

    def encode(self, texts: list[str]) -> Vectors:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        step = self._max_rows
        with self._lock:
            for start in range(0, len(ids), step):
                out[start:start + step] = self._run(ids[start:start + step])
        return out

    def _run(self, ids: list[list[int]]) -> Vectors:
        rows = 1 << (len(ids) - 1).bit_length()
        longest = max(map(len, ids))
        tokens = next((b for b in TOKEN_BUCKETS if b >= longest), longest)
        if self._use_graphs and rows * tokens <= GRAPH_MAX_TOKENS:
            graph = self._graphs.get((rows, tokens))
            if graph is None:
                graph = self._capture(rows, tokens)
            if graph is not None:
                return graph.run(ids, self._pad)
        host_ids = np.full((len(ids), longest), self._pad, dtype=np.int64)
        host_mask = np.zeros_like(host_ids)
        _fill(host_ids, host_mask, ids)
        torch = self._torch
        with torch.inference_mode():
            t_ids = torch.from_numpy(host_ids).to(self.device)
            t_mask = torch.from_numpy(host_mask).to(self.device)
            return self._forward(t_ids, t_mask).float().cpu().numpy()

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        torch = self._torch
        hidden = self._transformer(
            input_ids=input_ids, attention_mask=mask, token_type_ids=torch.zeros_like(input_ids),
        ).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1)

    def _capture(self, rows: int, tokens: int) -> CapturedGraph | None:
        try:
            graph = CapturedGraph(self._torch, self._forward, rows, tokens, self.device)
        except Exception as exc:  # a model whose forward cannot be captured: run it eagerly
            log.warning("CUDA graph capture failed (%s); embedding without graphs", exc)
            self._use_graphs = False
            return None
        self._graphs[(rows, tokens)] = graph
        return graph

    def warm(self, shapes: list[tuple[int, int]] | None = None) -> None:
        """Capture the common shapes now (one query up to the batch size, short texts) rather
        than on the first request that needs each: a capture takes tens of milliseconds."""
        if not self._use_graphs:
            return
        shapes = shapes or [(1 << i, t) for i in range(self._max_rows.bit_length())
                            for t in TOKEN_BUCKETS[:3]]
        with self._lock:
            for rows, tokens in shapes:
                if (rows, tokens) not in self._graphs and rows * tokens <= GRAPH_MAX_TOKENS:
                    self._capture(rows, tokens)


class CapturedGraph:
    """One captured forward of a fixed (rows, tokens) shape, with pinned host buffers.
    ``segments``: the forward takes token type ids too (a pair's: 0 for the first text, 1 for
    the second) — ``forward(ids, mask)`` or ``forward(ids, mask, types)``."""

    def __init__(self, torch: Any, forward: Any, rows: int, tokens: int, device: str,
                 segments: bool = False):
        self._torch = torch
        names = ("ids", "mask", "types") if segments else ("ids", "mask")
        self.host = [torch.zeros((rows, tokens), dtype=torch.int64).pin_memory() for _ in names]
        self.dev = [torch.zeros((rows, tokens), dtype=torch.int64, device=device) for _ in names]
        self.dev[1][:, 0] = 1  # warm-up rows are never all padding
        with torch.inference_mode():
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):  # allocations and lazy initialisation happen outside the graph
                    forward(*self.dev)
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                out = forward(*self.dev)
            self.out = out
            self.host_out = torch.empty(out.shape, dtype=torch.float32).pin_memory()

    def run(self, ids: list[list[int]], pad: int, types: list[list[int]] | None = None
            ) -> Vectors:
        host = [h.numpy() for h in self.host]
        host[0].fill(pad)
        for h in host[1:]:
            h.fill(0)
        _fill(host[0], host[1], ids)
        if types is not None:
            for row, x in enumerate(types):
                host[2][row, :len(x)] = x
        with self._torch.inference_mode():
            for d, h in zip(self.dev, self.host, strict=True):
                d.copy_(h, non_blocking=True)
            self.graph.replay()
            self.host_out.copy_(self.out, non_blocking=True)
            self._torch.cuda.current_stream().synchronize()
        return self.host_out.numpy()[: len(ids)].copy()


def _fill(host_ids: np.ndarray, host_mask: np.ndarray, ids: list[list[int]]) -> None:
    for row, x in enumerate(ids):
        host_ids[row, :len(x)] = x
        host_mask[row, :len(x)] = 1
