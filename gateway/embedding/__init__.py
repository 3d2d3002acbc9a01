"""Embedding: queries to L2-normalised float32 vectors, so inner product = cosine similarity in
[-1, 1].

    models.py   the Embedder protocol; sentence-transformers; its ONNX export for the CPU
    gpu.py      the torch path without per-call overhead, CUDA graphs on a GPU
    loader.py   which of them a process gets (or the shared process's)
    batcher.py  MicroBatcher: concurrent queries gathered into one encode, off the event loop
    shared.py   one process embedding for every worker of ``serve --workers N``
"""

from gateway.embedding.batcher import MicroBatcher
from gateway.embedding.loader import load_embedder, load_for
from gateway.embedding.models import (
    Embedder,
    OnnxEmbedder,
    SentenceTransformerEmbedder,
    Vectors,
    length_groups,
    unseen,
)

__all__ = [
    "Embedder", "MicroBatcher", "OnnxEmbedder", "SentenceTransformerEmbedder", "Vectors",
    "length_groups", "load_embedder", "load_for", "unseen",
]
