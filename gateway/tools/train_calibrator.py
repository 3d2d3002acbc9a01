"""Fit the calibrated verifier (``gateway/cache/verifier/calibrated.py``) and write
``calibration.json`` with its data card.

    python -m gateway.tools.verifier_data --out /tmp/vsets      # the seeded sets
    python -m gateway.tools.train_calibrator --sets /tmp/vsets   # fit on train, report the rest

The model is a logistic regression (L2, Newton's method; numpy only) over ``FEATURES``. It is
fitted on the *train* set of ``verifier_data`` (PAWS-Wiki dev, STS-B train, Disfl-QA train with
mined and synthetic negatives, the project's generated dev set), only on pairs above a
recall-oriented cosine gate — the gateway asks it only about candidates its threshold let
through.

Which features it may use is chosen, not assumed: starting from the cosine alone, a feature is
added (greedily, the best first) only when, refitted with it, the model's precision at recall
0.5 / 0.55 / 0.6 is *nowhere* lower than the cosine's (the cosine frontier) on any tuning set —
*calib* (a seeded 15% of the training sources, never fitted on) split by source, and StackFAQ
train (its licence allows tuning) — and higher on average. A feature that helps on word-swap
pairs but costs recall on question rephrasings (word order does, measured) stays out. The other
features keep weight 0. Every other set is held out and reported: precision at those recalls
beside the cosine alone, AUC, and the expected calibration error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gateway.cache.verifier.calibrated import CALIBRATION, FEATURES, Calibrator, features
from gateway.tools.curves import auc, precision_at
from gateway.tools.verifier_data import Row, read

GATE = 0.5          # pairs below this cosine never reach the verifier in any shipped category
L2 = 1.0            # ridge on the weights (not the bias), in units of the summed log-loss
RECALLS = (0.5, 0.55, 0.6)
HELD_OUT = ("paws_wiki_test", "stsb_devtest", "disflqa_devtest", "stackfaq_dev", "stackfaq_train")


def fit(x: np.ndarray, y: np.ndarray, l2: float = L2, iters: int = 50) -> tuple[np.ndarray, float]:
    """Weights and bias of a logistic regression (Newton's method on the penalised log-loss)."""
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(d + 1)
    ridge = np.full(d + 1, l2)
    ridge[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (p - y) + ridge * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(ridge) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1])


def ece(prob: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the mean |predicted - observed| over equal-width bins."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(prob, edges) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(prob[m].mean() - y[m].mean())
    return round(float(total / len(prob)), 4)


def matrix(rows: list[Row], cosine: np.ndarray) -> np.ndarray:
    return np.array([features(r["a"], r["b"], float(c)) for r, c in zip(rows, cosine, strict=True)])


def compare(prob: np.ndarray, cos: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """A verifier's probability beside the cosine alone: AUC, calibration error, precision at
    each of RECALLS (the data cards' figures)."""
    out: dict[str, Any] = {"pairs": len(y), "positives": int(y.sum()),
                           "auc": round(auc(prob, y), 4), "cosine_auc": round(auc(cos, y), 4),
                           "ece": ece(prob, y.astype(float))}
    for r in RECALLS:
        out[f"p@r{r}"] = precision_at(prob, y, r)
        out[f"cosine_p@r{r}"] = precision_at(cos, y, r)
    return out


def measure(model: Calibrator, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """The probability beside the cosine alone, on pairs above the gate."""
    return compare(1.0 / (1.0 + np.exp(-(x @ np.array(model.weights) + model.bias))), x[:, 0], y)


def by_source(rows: list[Row], *arrays: np.ndarray) -> dict[str, tuple[np.ndarray, ...]]:
    """*calib*'s tuning splits: ``arrays`` (one entry per row) cut by each row's source."""
    sources = np.array([r["source"] for r in rows])
    return {f"calib:{s}": tuple(a[sources == s] for a in arrays) for s in sorted(set(sources))}


def add_set_arguments(ap: argparse.ArgumentParser, out: Path) -> None:
    ap.add_argument("--sets", type=Path, required=True, help="verifier_data's output folder")
    ap.add_argument("--extra", type=Path, nargs="*", default=[],
                    help="more held-out pair files to report ({a, b, same})")
    ap.add_argument("--out", type=Path, default=out)


def read_sets(args: argparse.Namespace, names: list[str], missing_ok: bool = False
              ) -> dict[str, list[Row]]:
    """The named sets of ``--sets`` (those missing there skipped when ``missing_ok``), and
    each ``--extra`` file by its stem."""
    sets = {n: read(args.sets / f"{n}.jsonl") for n in names
            if not missing_ok or (args.sets / f"{n}.jsonl").exists()}
    for extra in args.extra:
        sets[extra.stem] = read(extra)
    return sets


def _gains(x: np.ndarray, y: np.ndarray, cols: list[int], tuning: dict[str, tuple[np.ndarray, np.ndarray]],
           l2: float) -> dict[str, list[float]]:
    """Precision at each of RECALLS over the cosine's, per tuning set, for a model on ``cols``."""
    w, b = fit(x[:, cols], y.astype(float), l2)
    out = {}
    for name, (xt, yt) in tuning.items():
        score = xt[:, cols] @ w + b
        out[name] = [(precision_at(score, yt, r) or 0.0) - (precision_at(xt[:, 0], yt, r) or 0.0)
                     for r in RECALLS]
    return out


def select(x: np.ndarray, y: np.ndarray, tuning: dict[str, tuple[np.ndarray, np.ndarray]],
           l2: float = L2, tolerance: float = 0.002) -> list[int]:
    """Columns (0, the cosine, always): greedy forward selection under "never below the
    frontier on any tuning set" (within ``tolerance``), while the mean gain grows."""
    cols = [0]
    mean = 0.0
    while True:
        best: tuple[float, int] | None = None
        for c in range(1, x.shape[1]):
            if c in cols:
                continue
            g = _gains(x, y, [*cols, c], tuning, l2)
            if min(min(v) for v in g.values()) < -tolerance:
                continue
            m = float(np.mean([np.mean(v) for v in g.values()]))
            if best is None or m > best[0]:
                best = (m, c)
        if best is None or best[0] <= mean + 0.001:
            return cols
        mean = best[0]
        cols.append(best[1])


def train(
    sets: dict[str, list[Row]], cosines: dict[str, np.ndarray], l2: float = L2,
    progress: Callable[[str], None] = lambda _: None,
) -> Calibrator:
    gated = {name: np.flatnonzero(cosines[name] >= GATE) for name in sets}
    mats = {}
    for name, rows in sets.items():
        progress(f"features: {name}")
        keep = gated[name]
        mats[name] = (matrix([rows[i] for i in keep], cosines[name][keep]),
                      np.array([rows[i]["same"] for i in keep], dtype=bool))
    x, y = mats["train"]
    tuning = by_source([sets["calib"][i] for i in gated["calib"]], *mats["calib"])
    if "stackfaq_train" in mats:
        tuning["stackfaq_train"] = mats["stackfaq_train"]
    progress("selecting features")
    cols = select(x, y, tuning, l2)
    w, bias = fit(x[:, cols], y.astype(float), l2)
    weights = np.zeros(x.shape[1])
    weights[cols] = w
    model = Calibrator(tuple(round(float(v), 5) for v in weights), round(bias, 5), {})
    card = {
        "model": "logistic regression over FEATURES (gateway/cache/verifier/calibrated.py)",
        "fitted_on": "verifier_data train: PAWS-Wiki dev, STS-B train, Disfl-QA train positives, "
                     "mined Disfl-QA negatives (marked mined), synthetic one-edit pairs, the "
                     "project's generated dev set (benchmarks/data/dev_pairs.jsonl)",
        "licences": "PAWS-Wiki: Google, free use with attribution; STS-B: CC BY-SA 4.0 (mixed "
                    "sources); Disfl-QA: CC BY 4.0 — see ../shared/data/pairs/README.md. "
                    "StackFAQ is only evaluated on, never fitted on.",
        "selected": [FEATURES[c] for c in cols],
        "selected_on": sorted(tuning),
        "gate": GATE, "l2": l2, "seed": 13,
        "written": dt.date.today().isoformat(), "machine": platform.node() or "?",
        "sets": {name: measure(model, *mats[name]) for name in mats},
    }
    return Calibrator(model.weights, model.bias, card)


def cosines_of(sets: dict[str, list[Row]], encode: Callable[[list[str]], np.ndarray]
               ) -> dict[str, np.ndarray]:
    texts = sorted({t for rows in sets.values() for r in rows for t in (r["a"], r["b"])})
    vecs = np.concatenate([encode(texts[i:i + 256]) for i in range(0, len(texts), 256)])
    at = {t: i for i, t in enumerate(texts)}
    return {name: np.array([float(vecs[at[r["a"]]] @ vecs[at[r["b"]]]) for r in rows])
            for name, rows in sets.items()}


def main() -> None:
    from gateway.config import Settings
    from gateway.embedding import load_embedder

    ap = argparse.ArgumentParser(description="Fit the calibrated verifier.")
    add_set_arguments(ap, CALIBRATION)
    ap.add_argument("--l2", type=float, default=L2)
    args = ap.parse_args()
    sets = read_sets(args, ["train", "calib", *HELD_OUT], missing_ok=True)
    embedder = load_embedder(None, "cpu", "auto", Settings().embedding_cache_dir)
    model = train(sets, cosines_of(sets, embedder.encode), args.l2, progress=print)
    args.out.write_text(json.dumps(model.to_json(), indent=1) + "\n", encoding="utf-8")
    for name, m in model.card["sets"].items():
        print(f"{name:18} " + " ".join(f"{k}={v}" for k, v in m.items()))
    print("weights:", dict(zip(FEATURES, model.weights, strict=True)), "bias", model.bias)


if __name__ == "__main__":
    main()
