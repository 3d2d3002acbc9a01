"""The calibrated verifier: the probability that serving a candidate's answer is right.

The rules in ``verify`` veto: one differing slot and the candidate is refused, however strong
the rest of the evidence. Measured on public pairs they lie *below* the cosine frontier (a
higher similarity threshold alone does better), because a rule that fires on a true paraphrase
("Name the first US president" / "Who was the first president of the United States?":
entities) costs as much as one that fires
on a changed question. Here every rule is *evidence* instead, weighed beside the cosine by a
logistic model fitted on labelled pairs (``gateway.tools.train_calibrator``): a rule that often
fires on paraphrases gets a small weight, one that marks changed questions a large one.

``P(right) = σ(w · features(query, candidate, cosine) + b)``; the features are what the gateway
has at verification time anyway (the cosine, the slots of both texts) and cost about as much as
the rules (tens of microseconds). The coefficients and what they were fitted on (the data card)
are in ``calibration.json`` beside this file.

A category opts in with ``verification.max_wrong_rate`` (serve when ``P ≥ 1 - rate``) or an
operating point measured on its own labelled pairs, ``verification.min_probability`` (written by
``semcache tune --max-wrong-rate``, which bounds the wrong-hit rate with 95% confidence instead
of trusting the calibration on data it was not fitted on).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from gateway.cache.verifier.learned import Gate
from gateway.cache.verifier.slots import Slots, extract
from gateway.cache.verifier.verify import OK, Verdict, differences, held_differ, verify
from gateway.categories import ALL_SLOTS, Category, SlotKind

__all__ = ["FEATURES", "Calibrator", "Judge", "Scorer", "decide", "features", "load_calibrator",
           "min_probability", "needs_learned", "scorer_for", "uses_learned"]

CALIBRATION = Path(__file__).with_name("calibration.json")

# the order of the model's weights; the slot kinds first, then the shape of the two texts
FEATURES: tuple[str, ...] = (
    "cosine", *ALL_SLOTS, "content_jaccard", "length_ratio", "order_kept", "reordered",
)


def _shape(a: Slots, b: Slots) -> tuple[float, float, float, float]:
    """Content-word overlap, length ratio, the share of shared words kept in the same order,
    and whether the same words were only put in another order (the word swap that turns
    "X is older than Y" into "Y is older than X")."""
    sa, sb = set(a.content), set(b.content)
    union = sa | sb
    jaccard = len(sa & sb) / len(union) if union else 1.0
    la, lb = len(a.sequence), len(b.sequence)
    ratio = min(la, lb) / max(la, lb) if max(la, lb) else 1.0
    pos_b = {w: i for i, w in reversed(list(enumerate(b.content)))}
    shared = [pos_b[w] for w in dict.fromkeys(a.content) if w in pos_b]
    pairs = len(shared) * (len(shared) - 1) // 2
    kept = sum(1 for i in range(len(shared)) for j in range(i + 1, len(shared))
               if shared[i] < shared[j])
    order = kept / pairs if pairs else 1.0
    reordered = float(sorted(a.content) == sorted(b.content) and a.content != b.content)
    return jaccard, ratio, order, reordered


def features(query: str, candidate: str, cosine: float) -> list[float]:
    a, b = extract(query), extract(candidate)
    differ = set(differences(a, b))
    return [cosine, *(float(k in differ) for k in ALL_SLOTS), *_shape(a, b)]


class Scorer(Protocol):
    def probability(self, query: str, candidate: str, cosine: float) -> float: ...


class Judge(Scorer, Protocol):
    """The learned verifier as the slot rules' second opinion (learned.py)."""

    @property
    def gate(self) -> Gate: ...

    def logit(self, query: str, candidate: str) -> float | None: ...


@dataclass(frozen=True)
class Calibrator:
    weights: tuple[float, ...]
    bias: float
    card: dict[str, Any]   # what the model was fitted on, and how it measured

    def logit(self, values: list[float]) -> float:
        return sum(w * x for w, x in zip(self.weights, values, strict=True)) + self.bias

    def probability(self, query: str, candidate: str, cosine: float) -> float:
        if query == candidate:
            return 1.0
        z = self.logit(features(query, candidate, cosine))
        return 1.0 / (1.0 + math.exp(-z)) if z > -500 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "weights": list(self.weights), "bias": self.bias,
                "card": self.card}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibrator:
        if list(data.get("features", [])) != list(FEATURES):
            raise ValueError(f"calibration features {data.get('features')} are not {FEATURES}: "
                             "re-run `python -m gateway.tools.train_calibrator`")
        return cls(tuple(float(w) for w in data["weights"]), float(data["bias"]),
                   dict(data.get("card", {})))


@lru_cache(maxsize=4)
def load_calibrator(path: Path = CALIBRATION) -> Calibrator:
    return Calibrator.from_json(json.loads(path.read_text(encoding="utf-8")))


def min_probability(category: Category, searched: Category) -> float | None:
    """The probability a candidate from ``searched``'s index needs for a query classified as
    ``category``: the stricter of the two categories' operating points; None when neither uses
    the calibrated verifier (the rules decide)."""
    points = [p for p in (_point(category), _point(searched)) if p is not None]
    return max(points) if points else None


def _point(category: Category) -> float | None:
    v = category.verification
    if not v.enabled:
        return None
    if v.min_probability is not None:
        return v.min_probability
    if v.max_wrong_rate is not None:
        return 1.0 - v.max_wrong_rate
    return None


def uses_learned(*categories: Category) -> bool:
    """Whether any of these categories decides by the learned verifier's probability."""
    return any(c.verification.enabled and c.verification.learned and _point(c) is not None
               for c in categories)


def judged(*categories: Category) -> bool:
    """Whether any of these categories has the cross-encoder judge beside its slot rules (a
    category with an operating point decides by a probability instead)."""
    return any(c.verification.enabled and c.verification.cross_encoder and _point(c) is None
               for c in categories)


def needs_learned(*categories: Category) -> bool:
    """Whether deciding for these categories reads the learned verifier at all."""
    return uses_learned(*categories) or judged(*categories)


def scorer_for(category: Category, searched: Category, calibrator: Scorer | None,
               learned: Scorer | None) -> Scorer | None:
    """The model whose probability decides for these two categories: the learned verifier's
    where either asks for it, else the calibrated one's."""
    return learned if uses_learned(category, searched) else calibrator


def decide(
    query: str, candidate: str, cosine: float, category: Category, searched: Category,
    calibrator: Calibrator | None, learned: Judge | None = None,
) -> Verdict:
    """Whether a candidate over the threshold may be served — the one decision the request path
    and ``semcache eval`` share. A category on the rules (verification enabled, no operating
    point) vetoes on its slot kinds; where it has the cross-encoder beside them
    (``cross_encoder``), the cross-encoder's logit refuses a pair it judges different and
    overrules a veto where it is sure (``learned.Gate``). A category with an operating point
    needs the calibrated probability to reach it (the stricter of the two categories'), the
    learned verifier's (``learned``) where either of them asks for it. Neither verifying: served.
    Where a model is asked for and there is none to read, the candidate is refused."""
    if query == candidate:
        return OK
    ruled = [c for c in {category.name: category, searched.name: searched}.values()
             if c.verification.enabled and _point(c) is None]
    if ruled:
        verdict = verify(query, candidate,
                         list(dict.fromkeys(k for c in ruled for k in c.verification.slots)))
        if judged(*ruled):
            verdict = _second_opinion(verdict, query, candidate, learned,
                                      [k for c in ruled for k in c.verification.slots])
        if not verdict.ok:
            return verdict
    point = min_probability(category, searched)
    if point is None:
        return OK
    model = scorer_for(category, searched, calibrator, learned)
    if model is None:  # no model to read: refuse rather than serve unverified
        return Verdict(False, "probability")
    p = model.probability(query, candidate, cosine)
    return Verdict(p >= point, None if p >= point else "probability", round(p, 6))


def _second_opinion(rules: Verdict, query: str, candidate: str, learned: Judge | None,
                    kinds: list[SlotKind]) -> Verdict:
    """The cross-encoder beside the rules' verdict (on ``kinds``): it refuses below its gate, and
    overrules a veto from its upper point unless a kind it never overrules differs; a pair it
    cannot judge (too few shared words) keeps the rules' verdict."""
    if learned is None:  # no model to read: refuse rather than serve half-verified
        return Verdict(False, "cross_encoder")
    if not rules.ok and held_differ(extract(query), extract(candidate), kinds,
                                    learned.gate.never_overruled):
        return rules  # refused whatever the model would say: not run (a forward saved)
    logit = learned.logit(query, candidate)
    if logit is None:
        return rules
    gate = learned.gate
    if logit < gate.refuse_below:
        return Verdict(False, "cross_encoder" if rules.ok else rules.reason)
    return OK if not rules.ok and logit >= gate.overrule_from else rules
