"""The embedding backends and the micro-batcher, with the real packaged model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from gateway.embedding import MicroBatcher, OnnxEmbedder, SentenceTransformerEmbedder

TEXTS = [
    "hi", "What is the capital of France?", "Write a Python function that sorts a list " * 20,
    "Ünïcödé and emoji 🚀 text", "",
]


def test_onnx_matches_torch_and_export_is_cached(
    embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    onnx = OnnxEmbedder(embedder, tmp_path)
    assert onnx.encode([]).shape == (0, embedder.dim)
    for batch in (TEXTS, TEXTS[:1], TEXTS[2:3], TEXTS * 7):
        got, want = onnx.encode(batch), embedder.encode(batch)
        assert got.shape == want.shape == (len(batch), embedder.dim)
        assert np.abs(got - want).max() < 1e-4
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    (exported,) = tmp_path.glob("*.onnx")
    stamp = exported.stat().st_mtime_ns
    OnnxEmbedder(embedder, tmp_path)
    assert exported.stat().st_mtime_ns == stamp, "the export should be reused, not redone"


def test_the_export_writes_attention_out_and_leaves_the_torch_model_as_it_was(
    embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    """The ONNX graph is exported from eager attention (matmul, softmax), not SDPA's fused op
    (whose export carries a fifth more nodes of shape bookkeeping: `export_forms` section); the
    torch model the gateway may keep (the reference, a GPU path) keeps its own attention."""
    import onnx

    transformer = embedder.model[0].auto_model
    was = transformer.config._attn_implementation
    OnnxEmbedder(embedder, tmp_path)
    assert transformer.config._attn_implementation == was
    (exported,) = tmp_path.glob("*.onnx")
    ops = [n.op_type for n in onnx.load(str(exported)).graph.node]
    # SDPA's export guards each layer's softmax against fully masked rows (IsNaN, Where) and
    # works its shapes out at run time (twice the Shape and Gather nodes); eager's does not
    assert ops.count("Softmax") == transformer.config.num_hidden_layers
    assert "IsNaN" not in ops, "exported from SDPA"


async def test_concurrent_queries_share_encode_calls(embedder: SentenceTransformerEmbedder) -> None:
    batcher = MicroBatcher(embedder, wait_s=0.002, max_batch=64)
    batcher.start()
    try:
        queries = [f"question number {i} about caching" for i in range(40)]
        vecs = await asyncio.gather(*(batcher.embed(q) for q in queries))
        assert batcher.batches < len(queries) / 2
        want = embedder.encode(queries)
        assert np.abs(np.stack(vecs) - want).max() < 1e-5
        single = await batcher.embed("alone")
        assert np.abs(single - embedder.encode(["alone"])[0]).max() < 1e-5
    finally:
        await batcher.aclose()

