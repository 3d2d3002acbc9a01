"""The learned verifier (``gateway/cache/verifier/learned.py``) on public pairs against the cosine
frontier, from its data card, and its cost per candidate on this CPU. Writes the
`verifier_learned` section of docs/BENCHMARKS.md.

    python -m gateway.tools.fit_learned --sets DIR --extra benchmarks/data/holdout*_pairs.jsonl
    python benchmarks/verifier_learned.py --sets DIR

The card's figures were measured by ``fit_learned`` with the model run as the gateway runs it
(ONNX Runtime, CPU): the combination's weight chosen on the tuning sets, every other set held
out. The cost is measured here: one candidate at a time (as a lookup verifies its best
candidate), pairs from StackFAQ dev and PAWS-Wiki test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import stamp, write_section
from gateway.cache.verifier.calibrated import load_calibrator
from gateway.cache.verifier.learned import CARD, load_learned, overlap
from gateway.config import Settings
from gateway.tools.verifier_data import read

TUNING = ("stackfaq_train",)
NAMES = {"paws_wiki_test": "PAWS-Wiki test", "stackfaq_dev": "StackFAQ dev",
         "stsb_devtest": "STS-B dev+test", "disflqa_devtest": "Disfl-QA dev+test + mined",
         "stackfaq_train": "StackFAQ train (tuning)", "holdout_pairs": "project held-out",
         "holdout2_pairs": "project held-out 2"}


def cell(ours: float | None, cos: float | None) -> str:
    if ours is None or cos is None:
        return "-"
    mark = "**" if ours > cos + 1e-9 else ""
    return f"{mark}{ours:.3f}{mark} / {cos:.3f}"


def cost(sets: Path, threads: int) -> tuple[float, float, float, float]:
    learned = load_learned(Settings().embedding_cache_dir, threads=threads)
    calibrator = load_calibrator()
    rows = read(sets / "stackfaq_dev.jsonl")[:150] + read(sets / "paws_wiki_test.jsonl")[:150]
    times, rule_times, ran = [], [], 0
    for r in rows * 2:
        start = time.perf_counter()
        learned.probability(r["a"], r["b"], 0.9)
        times.append(time.perf_counter() - start)
        ran += overlap(r["a"], r["b"]) >= learned.combination.min_overlap
        start = time.perf_counter()
        calibrator.probability(r["a"], r["b"], 0.9)
        rule_times.append(time.perf_counter() - start)
    times.sort()
    return (statistics.median(times) * 1e3, times[int(len(times) * 0.99)] * 1e3,
            ran / len(times), statistics.median(rule_times) * 1e3)


def main() -> None:
    import json

    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", type=Path, required=True, help="verifier_data's output folder")
    args = ap.parse_args()
    doc = json.loads(CARD.read_text())
    card = doc["card"]
    lines = [
        "## Learned verifier on public pairs (`benchmarks/verifier_learned.py`)", "",
        stamp(), "",
        f"The shipped cross-encoder (`gateway/cache/verifier/crossencoder.npz`): "
        f"{card['trained_on']}. Combined with the cosine as "
        f"`s = cosine + {doc['weight']} · overlap² · logit` (overlap: Jaccard of the two texts' "
        f"words; not run below {doc['min_overlap']}), `P = σ({doc['scale']:.2f} · s "
        f"{doc['bias']:+.2f})`. The weight was chosen among {list(card['weights_tried'])} on "
        f"{card['chosen_on']}: the largest mean gain with no tuning set below the frontier by "
        "more than 0.002 (worst / mean gain per weight: "
        + ", ".join(f"{w}: {v['worst']:+.3f} / {v['mean']:+.3f}"
                    for w, v in card["weights_tried"].items())
        + "). Figures measured by `gateway.tools.fit_learned` (fitted "
        f"{card['fitted']}) with the model run as the gateway runs it (ONNX Runtime, CPU), on "
        "pairs over cosine 0.5: precision at recall r of the learned probability / of the cosine "
        "alone (the frontier); bold: above it. Every set but the tuning one is held out.", "",
        "| set | pairs | P@R0.5 | P@R0.55 | P@R0.6 | AUC / cosine | ECE |",
        "|---|---:|---|---|---|---|---:|",
    ]
    for name, m in card["sets"].items():
        lines.append(
            f"| {NAMES.get(name, name)} | {m['pairs']} | "
            + " | ".join(cell(m[f"p@r{r}"], m[f"cosine_p@r{r}"]) for r in (0.5, 0.55, 0.6))
            + f" | {m['auc']:.3f} / {m['cosine_auc']:.3f} | {m['ece']:.3f} |")
    rows = []
    for threads in (1, 2):
        p50, p99, share, rule = cost(args.sets, threads)
        rows.append(f"{threads} thread{'s' if threads > 1 else ''}: p50 {p50:.2f} ms, p99 "
                    f"{p99:.2f} ms")
    lines += ["", "Cost per candidate on this CPU (ONNX Runtime, the int8 model the gateway runs, "
              f"one candidate at a time, 300 pairs of StackFAQ dev and PAWS-Wiki test, "
              f"{share:.0%} of them sharing enough words to run the model): " + "; ".join(rows)
              + f". The calibrated verifier: p50 {rule:.3f} ms."]
    write_section("verifier_learned", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
