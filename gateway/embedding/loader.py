"""Which embedder a process gets: the shared embedding process's when there is one; on a GPU
the torch path with CUDA graphs; on a CPU the ONNX export, when it matches the model."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.embedding.models import Embedder, OnnxEmbedder, SentenceTransformerEmbedder

if TYPE_CHECKING:
    from gateway.config import Settings

log = logging.getLogger(__name__)


def load_for(settings: Settings) -> Embedder:
    if settings.embedding_server:
        from gateway.embedding.shared import RemoteEmbedder

        return RemoteEmbedder(settings.embedding_server)
    return load_embedder(settings.embedding_model, settings.embedding_device,
                         settings.embedding_backend, settings.embedding_cache_dir,
                         settings.embedding_threads, cuda_graphs=settings.embedding_cuda_graphs,
                         max_batch=settings.embedding_max_batch)


def load_embedder(
    model_path: str | None, device: str, backend: str, cache_dir: Path, threads: int = 0, *,
    cuda_graphs: bool = True, max_batch: int = 64,
) -> Embedder:
    """On a GPU the torch path (``gpu.py``), checked against the model; on CPU the ONNX export
    when ``backend`` allows it and it matches; else the sentence-transformers model itself."""
    torch_model = SentenceTransformerEmbedder(model_path, device)
    if torch_model.device != "cpu" and backend in ("auto", "torch"):
        from gateway.embedding.gpu import TorchEmbedder

        try:
            fast = TorchEmbedder(torch_model, graphs=cuda_graphs, max_batch=max_batch)
        except Exception as exc:
            log.warning("torch embedding path unavailable (%s); using sentence-transformers", exc)
            return torch_model
        fast.warm()
        return fast
    if backend == "torch":
        return torch_model
    try:
        onnx = OnnxEmbedder(torch_model, cache_dir, threads)
    except Exception as exc:
        if backend == "onnx":
            raise
        log.warning("ONNX embedding backend unavailable (%s); using torch", exc)
        return torch_model
    del torch_model
    gc.collect()  # the torch model sits in reference cycles: free its weights now
    return onnx
