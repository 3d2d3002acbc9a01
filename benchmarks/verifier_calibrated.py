"""The calibrated verifier on public pairs: ranking against the cosine frontier, calibration,
whether an operating point chosen on one split keeps its promise on another, and its cost.

    python benchmarks/verifier_calibrated.py [--pairs ../shared/data/pairs]

Sets come from ``gateway.tools.verifier_data`` (seeded). The packaged model
(``gateway/cache/verifier/calibration.json``) was fitted on *train* only; nothing here is
fitted. For each (tuning split → held-out split) the operating point for a wrong-hit rate R is
picked on the tuning split exactly as ``semcache tune --max-wrong-rate R`` does (one-sided 95%
Wilson bound), then the wrong-hit rate and recall it gives on the held-out split are measured.
Candidates are the pairs over cosine 0.80 (the shipped categories' thresholds lie at 0.80-0.93).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import stamp, write_section
from gateway.cache.verifier.calibrated import load_calibrator
from gateway.cache.verifier.slots import extract
from gateway.cache.verifier.verify import verify
from gateway.config import Settings
from gateway.embedding import load_embedder
from gateway.tools.curves import precision_at
from gateway.tools.train_calibrator import GATE, cosines_of, ece
from gateway.tools.tuning import operating_point
from gateway.tools.verifier_data import Row, build

CANDIDATE = 0.80
RATES = (0.02, 0.05, 0.10)
HELD = ("paws_wiki_test", "stsb_devtest", "disflqa_devtest", "stackfaq_dev", "stackfaq_train",
        "holdout", "holdout2")
# tuning split -> held-out split of the same source
TRANSFER = (("stackfaq_train", "stackfaq_dev"), ("calib:disflqa", "disflqa_devtest"),
            ("calib:paws_wiki", "paws_wiki_test"), ("calib:stsb", "stsb_devtest"))


def _fmt(x: float | None) -> str:
    return f"{x:.3f}" if x is not None else "-"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=Path, default=Path("../shared/data/pairs"))
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[1]
    embedder = load_embedder(None, "cpu", "auto", Settings().embedding_cache_dir)
    sets: dict[str, list[Row]] = build(args.pairs, root / "benchmarks/data/dev_pairs.jsonl",
                                       embedder.encode)
    for name in ("holdout", "holdout2"):
        from gateway.tools.verifier_data import read
        sets[name] = read(root / f"benchmarks/data/{name}_pairs.jsonl")
    for source in ("disflqa", "paws_wiki", "stsb"):
        sets[f"calib:{source}"] = [r for r in sets["calib"] if r["source"] == source]
    cos = cosines_of(sets, embedder.encode)
    model = load_calibrator()

    prob: dict[str, np.ndarray] = {}
    lab: dict[str, np.ndarray] = {}
    for name, rows in sets.items():
        prob[name] = np.array([model.probability(r["a"], r["b"], float(c))
                               for r, c in zip(rows, cos[name], strict=True)])
        lab[name] = np.array([r["same"] for r in rows], dtype=bool)

    lines = ["## Calibrated verifier on public pairs (`benchmarks/verifier_calibrated.py`)", "",
             stamp(), "",
             f"The packaged model: `{', '.join(model.card['selected'])}` selected (fitted on "
             "verifier_data *train*; features kept only where they are nowhere below the cosine "
             f"frontier on the tuning splits {', '.join(model.card['selected_on'])}). "
             "Held-out splits, never fitted or tuned on. Precision at recall r of the "
             "probability vs of the cosine alone (the frontier), on pairs over cosine "
             f"{GATE}; ECE: expected calibration error of the probability.", "",
             "| set | pairs | P@R0.5 cal / cos | P@R0.55 cal / cos | P@R0.6 cal / cos | ECE |",
             "|---|---:|---|---|---|---:|"]
    for name in HELD:
        m = cos[name] >= GATE
        p, y, c = prob[name][m], lab[name][m], cos[name][m]
        cells = [f"{_fmt(precision_at(p, y, r))} / {_fmt(precision_at(c, y, r))}"
                 for r in (0.5, 0.55, 0.6)]
        lines.append(f"| {name} | {int(m.sum())} | " + " | ".join(cells)
                     + f" | {ece(p, y.astype(float)):.3f} |")

    lines += ["", "Operating points: chosen on the tuning split as `semcache tune "
              "--max-wrong-rate R` does (95% one-sided bound), measured on the held-out split "
              f"(candidates: cosine ≥ {CANDIDATE}). `wrong` = share of served pairs labelled "
              "different; `-`: no operating point can be promised from the tuning split.", "",
              "| tuning → held out | R | min P | tuning served / bound | held-out wrong | "
              "held-out recall |", "|---|---:|---:|---|---:|---:|"]
    for tune_on, held in TRANSFER:
        mt = cos[tune_on] >= CANDIDATE
        for rate in RATES:
            pt = operating_point(tune_on, list(zip(prob[tune_on][mt], lab[tune_on][mt],
                                                   strict=True)), int(lab[tune_on].sum()), rate)
            if pt.min_probability is None:
                why = f"too few pairs (need {pt.needed})" if pt.needed else "no cut-off reaches R"
                lines.append(f"| {tune_on} → {held} | {rate} | - | {why} | - | - |")
                continue
            served = (cos[held] >= CANDIDATE) & (prob[held] >= pt.min_probability)
            wrong = int((served & ~lab[held]).sum())
            rec = (served & lab[held]).sum() / max(1, lab[held].sum())
            lines.append(f"| {tune_on} → {held} | {rate} | {pt.min_probability:.4f} | "
                         f"{pt.served} / {pt.wrong_upper:.3f} | "
                         f"{wrong / max(1, int(served.sum())):.3f} ({wrong}/{int(served.sum())})"
                         f" | {rec:.3f} |")

    rows = sets["stackfaq_dev"][:500]
    extract.cache_clear()
    t0 = time.perf_counter()
    for r in rows:
        model.probability(r["a"], r["b"], 0.9)
    t_cal = (time.perf_counter() - t0) / len(rows) * 1e6
    extract.cache_clear()
    t0 = time.perf_counter()
    for r in rows:
        verify(r["a"], r["b"])
    t_rules = (time.perf_counter() - t0) / len(rows) * 1e6
    lines += ["", f"Cost per candidate (this CPU, one thread, slot extraction not cached): "
              f"calibrated {t_cal:.0f} µs, rules {t_rules:.0f} µs."]
    write_section("verifier_calibrated", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
