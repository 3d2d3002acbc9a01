"""Threshold tuning and plots from an evaluation report (``semcache tune`` / ``semcache eval``).

For each category, ``choose_thresholds`` picks from the report's sweep the threshold whose
*verified* precision reaches the target with the highest recall (ties: the stricter threshold).
A category that reaches the target nowhere is given the strictest threshold of the sweep and
flagged, never a looser one. The result is an overlay file; the shipped category files stay.

``choose_operating_points`` (``semcache tune --max-wrong-rate R``) moves categories to the
calibrated verifier instead: among the pairs over the category's threshold it picks the lowest
probability cut-off whose wrong-hit rate is at most R *with 95% confidence* (the one-sided upper
Wilson bound of wrong / served, not the point estimate, so a handful of lucky pairs promise
nothing). A category without enough pairs to promise R even with no wrong hit at all says how
many it would need and keeps its setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from gateway.categories import Category
from gateway.tools.curves import wilson
from gateway.tools.evaluation import Report

Z_ONE_SIDED_95 = 1.645


@dataclass(frozen=True)
class Choice:
    category: str
    before: float
    after: float
    precision: float
    recall: float
    reached: bool


def choose_thresholds(report: Report, target_precision: float) -> list[Choice]:
    choices = []
    for cat in report.categories:
        ok = [s for s in cat.sweep if s["verified_precision"] >= target_precision
              and s["verified_recall"] > 0]
        if ok:
            best = max(ok, key=lambda s: (s["verified_recall"], s["threshold"]))
            reached = True
        else:
            best = cat.sweep[-1]
            reached = False
        choices.append(Choice(cat.name, cat.threshold, float(best["threshold"]),
                              float(best["verified_precision"]), float(best["verified_recall"]),
                              reached))
    return choices


@dataclass(frozen=True)
class OperatingPoint:
    category: str
    min_probability: float | None  # None: no cut-off can promise the rate with these pairs
    served: int                    # pairs the cut-off serves
    wrong: int                     # of them labelled different
    wrong_upper: float             # 95% upper bound of the wrong-hit rate
    recall: float                  # served right / pairs labelled same in the category
    needed: int                    # pairs served with no wrong hit that could promise the rate


def needed_for(rate: float, z: float = Z_ONE_SIDED_95) -> int:
    """The fewest served pairs, none wrong, whose upper bound is within ``rate``."""
    n = 1
    while wilson(0, n, z)[1] > rate:
        n += 1
    return n


def operating_point(
    category: str, candidates: list[tuple[float, bool]], positives: int, max_wrong_rate: float,
) -> OperatingPoint:
    """The lowest cut-off on (probability, labelled same) candidates whose wrong-hit rate is
    within ``max_wrong_rate`` at 95% confidence; ``positives``: pairs labelled same in all."""
    need = needed_for(max_wrong_rate)
    cands = sorted(candidates, key=lambda t: -t[0])
    best: OperatingPoint | None = None
    served = wrong = 0
    for i, (prob, same) in enumerate(cands):
        served += 1
        wrong += not same
        if i + 1 < len(cands) and cands[i + 1][0] == prob:
            continue  # a cut-off takes every pair of its probability
        upper = wilson(wrong, served, Z_ONE_SIDED_95)[1]
        if upper <= max_wrong_rate:
            best = OperatingPoint(category, round(prob, 6), served, wrong, upper,
                                  round((served - wrong) / max(1, positives), 4), need)
    if best is None:
        right = sum(1 for _, same in cands if same)
        best = OperatingPoint(category, None, 0, 0, 1.0, 0.0, need if right < need else 0)
    return best


def choose_operating_points(report: Report, max_wrong_rate: float) -> list[OperatingPoint]:
    return [operating_point(cat.name, [(p, same) for c, p, same in report.candidates
                                       if c == cat.name], cat.positives, max_wrong_rate)
            for cat in report.categories]


def write_operating_points(
    points: list[OperatingPoint], max_wrong_rate: float, path: Path,
    categories: dict[str, Category], existing: Path | None = None,
) -> None:
    """Merge operating points into an overlay; categories without one are left as they are."""
    data: dict[str, dict[str, object]] = {}
    if existing is not None and existing.exists():
        data = yaml.safe_load(existing.read_text()) or {}
    for pt in points:
        if pt.min_probability is None or pt.category not in categories:
            continue
        entry = data.setdefault(pt.category, {})
        base = entry.get("verification") or categories[pt.category].verification.model_dump()
        entry["verification"] = {**base, "enabled": True, "max_wrong_rate": max_wrong_rate,
                                 "min_probability": pt.min_probability}
    header = "# Written by `semcache tune`; load with SEMCACHE_CATEGORIES_OVERLAY.\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=True))


def write_overlay(
    choices: list[Choice], path: Path, categories: dict[str, Category],
    existing: Path | None = None,
) -> None:
    """Merge thresholds into an overlay (keeping other overrides already in ``existing``).
    A tuned threshold below the category's adaptive floor lowers that floor with it: the
    tuned value is the strict end, and the relaxed end may not be stricter than it."""
    data: dict[str, dict[str, object]] = {}
    if existing is not None and existing.exists():
        data = yaml.safe_load(existing.read_text()) or {}
    for c in choices:
        entry = data.setdefault(c.category, {})
        entry["threshold"] = round(c.after, 2)
        adaptive = categories[c.category].adaptive if c.category in categories else None
        if adaptive is not None and adaptive.threshold_min > entry["threshold"]:
            entry["adaptive"] = {**adaptive.model_dump(), "threshold_min": entry["threshold"]}
    header = "# Written by `semcache tune`; load with SEMCACHE_CATEGORIES_OVERLAY.\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=True))


def plot(report: Report, out_dir: Path) -> list[Path]:
    """Precision-recall per category, and hit rate (recall) vs threshold; PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(7, 5))
    for cat in report.categories:
        ax.plot([s["recall"] for s in cat.sweep], [s["precision"] for s in cat.sweep],
                linestyle=":", alpha=0.6)
        ax.plot([s["verified_recall"] for s in cat.sweep],
                [s["verified_precision"] for s in cat.sweep], label=cat.name,
                color=ax.lines[-1].get_color())
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Precision-recall by category (solid: verified, dotted: similarity only)")
    ax.axhline(0.95, color="grey", linewidth=0.5)
    ax.legend(fontsize=8)
    path = out_dir / "precision_recall.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    written.append(path)

    fig, ax = plt.subplots(figsize=(7, 5))
    for cat in report.categories:
        ax.plot([s["threshold"] for s in cat.sweep], [s["verified_recall"] for s in cat.sweep],
                label=cat.name)
        ax.axvline(cat.threshold, color=ax.lines[-1].get_color(), linewidth=0.6, linestyle="--")
    ax.set_xlabel("similarity threshold")
    ax.set_ylabel("hit rate on pairs labeled same (verified)")
    ax.set_title("Hit rate vs threshold (dashed: threshold in use)")
    ax.legend(fontsize=8)
    path = out_dir / "hit_rate_vs_threshold.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    written.append(path)
    return written
