"""Ranking measures shared by ``semcache eval`` and the verifier's training script (numpy only,
so the training script runs where the gateway's other dependencies are not installed).

*The cosine frontier*: for a recall r, the best precision any similarity threshold reaches with
at least r recall. A verifier is worth its cost only above it — else raising the threshold does
better.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


def auc(score: Floats, label: Bools) -> float:
    """Area under the ROC curve (ties count half); NaN when one class is missing."""
    pos, neg = int(label.sum()), int((~label).sum())
    if not pos or not neg:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty(len(s))
    r[order] = ranks
    return float((r[label].sum() - pos * (pos + 1) / 2) / (pos * neg))


def precision_at(score: Floats, label: Bools, recall: float) -> float | None:
    """The best precision a threshold on ``score`` reaches with at least ``recall``; None when
    no threshold does (no positives, or recall > 1)."""
    pos = int(label.sum())
    if not pos or recall > 1:
        return None
    order = np.argsort(-score, kind="stable")
    s, tp = score[order], np.cumsum(label[order])
    # a threshold takes every pair of its score: only the last of a run of ties is reachable
    last = np.append(s[1:] != s[:-1], True)
    prec = tp / np.arange(1, len(order) + 1)
    ok = last & (tp >= recall * pos - 1e-9)
    return round(float(prec[ok].max()), 4) if ok.any() else None


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (0..1 when n is 0)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))
