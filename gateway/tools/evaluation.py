"""Hit quality on labeled pairs: precision and recall per category, with and without the
verifier, across thresholds. Used by ``semcache eval`` and benchmarks/verifier_quality.py.

A pair ``{"a": query, "b": stored query, "same": bool, "category": optional}`` counts as a
*predicted hit* when cosine(a, b) ≥ the category's threshold and (with verification) the
verifier accepts b for a. Precision = right hits / predicted hits; recall = right hits / pairs
labeled same. The category is the given one, else the classifier's choice for ``a``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gateway.cache.verifier.slots import extract
from gateway.cache.verifier.verify import verify
from gateway.categories import Category, Classifier
from gateway.embedding import Embedder


class PairsFileError(ValueError):
    pass


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    same: bool
    category: str | None = None


def load_pairs(path: Path) -> list[Pair]:
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            pair = Pair(str(obj["a"]), str(obj["b"]), bool(obj["same"]), obj.get("category"))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise PairsFileError(f"{path}:{n}: expected {{a, b, same[, category]}}: {exc}") from exc
        pairs.append(pair)
    if not pairs:
        raise PairsFileError(f"{path}: no pairs")
    return pairs


@dataclass
class Scores:
    precision: float
    recall: float
    f1: float
    hits: int
    wrong_hits: int

    @classmethod
    def of(cls, predicted: np.ndarray, labels: np.ndarray) -> Scores:
        tp = int((predicted & labels).sum())
        fp = int((predicted & ~labels).sum())
        pos = int(labels.sum())
        p = tp / (tp + fp) if tp + fp else 1.0
        r = tp / pos if pos else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        return cls(round(p, 4), round(r, 4), round(f1, 4), tp + fp, fp)


@dataclass
class CategoryReport:
    name: str
    pairs: int
    positives: int
    threshold: float
    similarity_only: Scores
    verified: Scores
    sweep: list[dict[str, float]] = field(default_factory=list)
    rejections: dict[str, int] = field(default_factory=dict)


@dataclass
class Report:
    pairs: int
    categories: list[CategoryReport]
    overall_similarity_only: Scores
    overall_verified: Scores
    best_global_threshold: dict[str, float]
    verify_us_per_pair: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


THRESHOLDS = [round(t, 2) for t in np.arange(0.50, 1.0, 0.01)]


def evaluate(
    pairs: list[Pair], embedder: Embedder, categories: dict[str, Category],
    classifier: Classifier, progress: Callable[[int, int], None] | None = None,
) -> Report:
    texts = sorted({p.a for p in pairs} | {p.b for p in pairs})
    chunks = []
    for start in range(0, len(texts), 256):
        chunks.append(embedder.encode(texts[start : start + 256]))
        if progress is not None:
            progress(min(start + 256, len(texts)), len(texts))
    vecs = np.concatenate(chunks)
    row = {t: i for i, t in enumerate(texts)}
    sims = np.array([float(vecs[row[p.a]] @ vecs[row[p.b]]) for p in pairs])
    labels = np.array([p.same for p in pairs])
    cats = []
    for p in pairs:
        name = p.category if p.category in categories else classifier.classify(vecs[row[p.a]])[0]
        cats.append(name)
    cat_arr = np.array(cats)

    verdicts = []
    extract.cache_clear()
    started = time.perf_counter()
    for p, name in zip(pairs, cats, strict=True):
        spec = categories[name].verification
        verdicts.append(verify(p.a, p.b, spec.slots) if spec.enabled else verify(p.a, p.a))
    verify_us = (time.perf_counter() - started) / len(pairs) * 1e6
    accepted = np.array([v.ok for v in verdicts])

    thresholds = np.array([categories[c].threshold for c in cats])
    cacheable = np.array([categories[c].cacheable for c in cats])
    sim_hit = (sims >= thresholds) & cacheable
    ver_hit = sim_hit & accepted

    reports = []
    for name in sorted(set(cats)):
        m = cat_arr == name
        cat = categories[name]
        sweep = []
        for t in THRESHOLDS:
            s = Scores.of((sims[m] >= t), labels[m])
            v = Scores.of((sims[m] >= t) & accepted[m], labels[m])
            sweep.append({"threshold": t, "precision": s.precision, "recall": s.recall,
                          "verified_precision": v.precision, "verified_recall": v.recall})
        rejections: dict[str, int] = {}
        for i in np.flatnonzero(m & sim_hit & ~accepted):
            reason = verdicts[i].reason or "?"
            rejections[reason] = rejections.get(reason, 0) + 1
        reports.append(CategoryReport(
            name=name, pairs=int(m.sum()), positives=int(labels[m].sum()),
            threshold=cat.threshold,
            similarity_only=Scores.of(sim_hit[m], labels[m]),
            verified=Scores.of(ver_hit[m], labels[m]), sweep=sweep, rejections=rejections,
        ))

    best = max(
        (Scores.of(sims >= t, labels), t) for t in THRESHOLDS
        if Scores.of(sims >= t, labels).precision >= 0.95
    ) if any(Scores.of(sims >= t, labels).precision >= 0.95 for t in THRESHOLDS) else None
    f1_best = max(THRESHOLDS, key=lambda t: Scores.of(sims >= t, labels).f1)
    f1_scores = Scores.of(sims >= f1_best, labels)
    best_global = {"threshold_best_f1": f1_best, "precision": f1_scores.precision,
                   "recall": f1_scores.recall}
    if best is not None:
        best_global["threshold_for_p95"] = best[1]
    return Report(
        pairs=len(pairs), categories=reports,
        overall_similarity_only=Scores.of(sim_hit, labels),
        overall_verified=Scores.of(ver_hit, labels),
        best_global_threshold=best_global, verify_us_per_pair=round(verify_us, 1),
    )
