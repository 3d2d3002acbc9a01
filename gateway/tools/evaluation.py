"""Hit quality on labeled pairs: precision and recall per category, with and without the
verifier, across thresholds, beside the cosine frontier. Used by ``semcache eval``, ``semcache
tune`` and benchmarks/verifier_quality.py.

A pair ``{"a": query, "b": stored query, "same": bool, "category": optional}`` counts as a
*predicted hit* exactly when the gateway would serve b's answer to a (at no load): a is b
(an exact repeat), or — both read whole by the embedder — cosine(a, b) passes the category's
threshold (``policy.match_threshold``) and the verifier accepts b (``calibrated.decide``: the
rules on the category's slot kinds with the cross-encoder beside them where the category asks, or
the calibrated probability at its operating point), in a
cacheable category. Precision = right hits / predicted
hits; recall = right hits / pairs labeled same, each with its 95% Wilson interval. The category
is the given one, else the classifier's choice for ``a``.

*Frontier*: the best precision a cosine threshold alone reaches at the verifier's recall
(``curves.precision_at``). Verified precision below it means a higher threshold does better
than the verifier.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gateway.cache import policy
from gateway.cache.verifier.calibrated import (
    Calibrator,
    Judge,
    decide,
    load_calibrator,
    needs_learned,
    scorer_for,
)
from gateway.cache.verifier.slots import extract
from gateway.cache.verifier.verify import Verdict
from gateway.categories import Category, Classifier
from gateway.embedding import Embedder, unseen
from gateway.tools.curves import auc, precision_at, wilson


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
    precision_ci: tuple[float, float] = (0.0, 1.0)
    recall_ci: tuple[float, float] = (0.0, 1.0)

    @classmethod
    def of(cls, predicted: np.ndarray, labels: np.ndarray) -> Scores:
        tp = int((predicted & labels).sum())
        fp = int((predicted & ~labels).sum())
        pos = int(labels.sum())
        p = tp / (tp + fp) if tp + fp else 1.0
        r = tp / pos if pos else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        return cls(round(p, 4), round(r, 4), round(f1, 4), tp + fp, fp,
                   wilson(tp, tp + fp), wilson(tp, pos))


@dataclass
class CategoryReport:
    name: str
    pairs: int
    positives: int
    threshold: float
    similarity_only: Scores
    verified: Scores
    # the best precision a cosine threshold alone reaches at the verified recall
    frontier_precision: float | None = None
    auc: float = float("nan")  # of the cosine, this category's pairs
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
    overall_frontier_precision: float | None = None
    auc: float = float("nan")
    # the cosine frontier over all pairs: best precision at each recall
    frontier: list[dict[str, float | None]] = field(default_factory=list)
    # pairs served only as exact repeats (a text the embedder cannot read whole)
    exact_only: int = 0
    # served pairs labeled different: the first 50, for a person to read
    wrong_hits_sample: list[dict[str, Any]] = field(default_factory=list)
    # which pairs the gateway would serve (by index); not written to the JSON report
    served: list[int] = field(default_factory=list, repr=False)
    # every pair over its category's threshold: (category, calibrated probability, labelled
    # same) — what ``semcache tune --max-wrong-rate`` picks operating points from; not written
    candidates: list[tuple[str, float, bool]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("served")
        out.pop("candidates")
        return out


THRESHOLDS = [round(t, 2) for t in np.arange(0.50, 1.0, 0.01)]
PRIME_BATCH = 64  # pairs per cross-encoder batch (within LearnedVerifier.REMEMBERED)
UNSEEN = Verdict(False, "below threshold")  # never read: the pair is not served anyway
RECALLS = [round(r, 2) for r in np.arange(0.05, 1.0001, 0.05)]


def embed_pairs(
    pairs: list[Pair], embedder: Embedder,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Each pair's cosine, and every text's vector (each distinct text embedded once)."""
    texts = sorted({p.a for p in pairs} | {p.b for p in pairs})
    chunks = []
    for start in range(0, len(texts), 256):
        chunks.append(embedder.encode(texts[start : start + 256]))
        if progress is not None:
            progress("embedding", min(start + 256, len(texts)), len(texts))
    vecs = np.concatenate(chunks)
    row = {t: i for i, t in enumerate(texts)}
    sims = np.einsum("ij,ij->i", vecs[[row[p.a] for p in pairs]], vecs[[row[p.b] for p in pairs]])
    return sims.astype(np.float64), {t: vecs[i] for t, i in row.items()}


def evaluate(
    pairs: list[Pair], embedder: Embedder, categories: dict[str, Category],
    classifier: Classifier, progress: Callable[[str, int, int], None] | None = None,
    margin: float = 0.0,
    embedded: tuple[np.ndarray, dict[str, np.ndarray]] | None = None,
    calibrator: Calibrator | None = None,
    learned: Judge | None = None,
) -> Report:
    """``margin``: the gateway's ``classify_margin`` (categories searched beside the best);
    ``embedded``: ``embed_pairs``' result when the same pairs are evaluated more than once;
    ``calibrator``: the calibrated verifier's model (default: the packaged one); ``learned``:
    the learned verifier (default: the packaged one, loaded when a category uses it)."""
    calibrator = calibrator or load_calibrator()
    if learned is None and needs_learned(*categories.values()):
        from gateway.cache.verifier.learned import load_learned
        from gateway.config import Settings

        learned = load_learned(Settings().embedding_cache_dir)
    sims, vec_of = embedded if embedded is not None else embed_pairs(pairs, embedder, progress)
    texts = list(vec_of)
    labels = np.array([p.same for p in pairs], dtype=bool)
    unread = {t for t in texts if unseen(embedder, t) is not None}
    exact = np.array([p.a == p.b for p in pairs], dtype=bool)
    semantic_ok = np.array([p.a not in unread and p.b not in unread for p in pairs], dtype=bool)
    # as the request path decides: the query a is classified (the best category and those
    # within the margin are searched), b was stored under its own best category
    cats, stored, searched = [], [], []
    for p in pairs:
        if p.category in categories:
            names = [p.category]
            home = p.category
        else:
            names = [n for n, _ in classifier.ranked(vec_of[p.a], margin)]
            home = classifier.classify(vec_of[p.b])[0]
        cats.append(names[0])
        stored.append(home)
        searched.append(home in names)
    cat_arr = np.array(cats)

    thresholds = np.array([policy.match_threshold(categories[c], categories[h], 0.0)
                           for c, h in zip(cats, stored, strict=True)])
    # a pair under every threshold the report reads (the sweep's and its category's) is never
    # served: not verified, so the cross-encoder runs only where the gateway would run it
    floor = np.minimum(thresholds, THRESHOLDS[0])
    verdicts: list[Verdict] = []
    extract.cache_clear()
    started = time.perf_counter()
    for start in range(0, len(pairs), PRIME_BATCH):
        todo = [n for n in range(start, min(start + PRIME_BATCH, len(pairs)))
                if sims[n] >= floor[n]]
        if learned is not None:  # one batch through the cross-encoder, as a lookup does
            learned.prime_pairs([(pairs[n].a, pairs[n].b) for n in todo
                                 if needs_learned(categories[cats[n]], categories[stored[n]])])
        for n in range(start, min(start + PRIME_BATCH, len(pairs))):
            verdicts.append(decide(pairs[n].a, pairs[n].b, float(sims[n]), categories[cats[n]],
                                   categories[stored[n]], calibrator, learned)
                            if n in todo or exact[n] else UNSEEN)
        if progress is not None:
            progress("verifying", min(start + PRIME_BATCH, len(pairs)), len(pairs))
    verify_us = (time.perf_counter() - started) / len(pairs) * 1e6
    accepted = np.array([v.ok for v in verdicts], dtype=bool)

    cacheable = np.array([categories[c].cacheable for c in cats], dtype=bool)
    findable = cacheable & semantic_ok & np.array(searched, dtype=bool) & np.array(
        [categories[h].cacheable for h in stored], dtype=bool)
    sim_hit = cacheable & (exact | (findable & (sims >= thresholds)))
    ver_hit = cacheable & (exact | (findable & (sims >= thresholds) & accepted))
    # what a threshold alone can rank: exact repeats first, pairs it never serves last
    score = np.where(exact & cacheable, 2.0, np.where(findable, sims, -2.0))

    reports = []
    for name in sorted(set(cats)):
        m = cat_arr == name
        cat = categories[name]
        sweep = []
        for t in THRESHOLDS:
            s = Scores.of(score[m] >= t, labels[m])
            v = Scores.of((score[m] >= t) & (accepted[m] | exact[m]), labels[m])
            sweep.append({"threshold": t, "precision": s.precision, "recall": s.recall,
                          "verified_precision": v.precision, "verified_recall": v.recall})
        rejections: dict[str, int] = {}
        for i in np.flatnonzero(m & sim_hit & ~ver_hit):
            reason = verdicts[i].reason or "?"
            rejections[reason] = rejections.get(reason, 0) + 1
        verified = Scores.of(ver_hit[m], labels[m])
        reports.append(CategoryReport(
            name=name, pairs=int(m.sum()), positives=int(labels[m].sum()),
            threshold=cat.threshold,
            similarity_only=Scores.of(sim_hit[m], labels[m]), verified=verified,
            frontier_precision=precision_at(score[m], labels[m], verified.recall)
            if verified.recall > 0 else None,
            auc=round(auc(score[m], labels[m]), 4), sweep=sweep, rejections=rejections,
        ))

    global_scores = {t: Scores.of(score >= t, labels) for t in THRESHOLDS}
    f1_best = max(THRESHOLDS, key=lambda t: global_scores[t].f1)
    best_global: dict[str, float] = {"threshold_best_f1": f1_best,
                                     "precision": global_scores[f1_best].precision,
                                     "recall": global_scores[f1_best].recall}
    reaching = [t for t in THRESHOLDS if global_scores[t].precision >= 0.95]
    if reaching:  # the most recall; among equal recall, the stricter threshold
        best_global["threshold_for_p95"] = max(
            reaching, key=lambda t: (global_scores[t].recall, t))
    overall = Scores.of(ver_hit, labels)
    return Report(
        pairs=len(pairs), categories=reports,
        overall_similarity_only=Scores.of(sim_hit, labels), overall_verified=overall,
        best_global_threshold=best_global, verify_us_per_pair=round(verify_us, 1),
        overall_frontier_precision=precision_at(score, labels, overall.recall)
        if overall.recall > 0 else None,
        auc=round(auc(score, labels), 4),
        frontier=[{"recall": r, "precision": precision_at(score, labels, r)} for r in RECALLS],
        exact_only=int((~semantic_ok & ~exact).sum()),
        wrong_hits_sample=[
            {"a": pairs[i].a, "b": pairs[i].b, "similarity": round(float(sims[i]), 4),
             "category": cats[i]} for i in np.flatnonzero(ver_hit & ~labels)[:50]],
        served=[int(i) for i in np.flatnonzero(ver_hit)],
        candidates=[(cats[i], 1.0 if exact[i] else
                     (scorer_for(categories[cats[i]], categories[stored[i]], calibrator, learned)
                      or calibrator).probability(pairs[i].a, pairs[i].b, float(sims[i])),
                     bool(labels[i])) for i in np.flatnonzero(sim_hit)],
    )


def with_verification(categories: dict[str, Category], **update: Any) -> dict[str, Category]:
    """The categories with fields of their ``verification`` replaced (``enabled=False``: the
    threshold alone; ``slots=[...]``, ``cross_encoder=...``)."""
    return {n: c.model_copy(update={"verification": c.verification.model_copy(update=update)})
            for n, c in categories.items()}


@dataclass(frozen=True)
class Shipped:
    """The shipped categories, classified as the gateway classifies, on the packaged model (ONNX
    Runtime on CPU): what benchmarks and fitting tools evaluate pair sets against."""

    embedder: Embedder
    categories: dict[str, Category]
    classifier: Classifier
    margin: float

    def evaluate(self, pairs: list[Pair], categories: dict[str, Category] | None = None,
                 **kwargs: Any) -> Report:
        return evaluate(pairs, self.embedder, self.categories if categories is None
                        else categories, self.classifier, margin=self.margin, **kwargs)


def load_shipped() -> Shipped:
    from gateway.categories import load_categories
    from gateway.config import Settings
    from gateway.embedding import load_embedder
    from gateway.resources import categories_dir

    settings = Settings()
    embedder = load_embedder(None, "cpu", "onnx", settings.embedding_cache_dir)
    shipped = load_categories(categories_dir())
    classifier = Classifier(shipped, {n: embedder.encode(c.exemplars) for n, c in shipped.items()},
                            settings.classify_min_similarity)
    return Shipped(embedder, shipped, classifier, settings.classify_margin)
