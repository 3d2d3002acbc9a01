"""The slot rules with the cross-encoder beside them (``verification.cross_encoder``, points in
``crossencoder_gate.json``) against the rules alone (what ships) and the similarity threshold
alone, on sets never trained or tuned on,
each decided by the gateway's own code (``semcache eval``'s ``evaluate``). Writes the
`verifier_gate` section of docs/BENCHMARKS.md.

    python -m gateway.tools.verifier_data --out /tmp/vsets   # only for the calib split's sources
    python benchmarks/verifier_gate.py [--pairs ../shared/data/pairs]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _report import stamp, write_section
from slot_kinds import PAIRS, public_sets

from gateway.cache.verifier.learned import ADAPTER, GATE, PairModel, load_learned
from gateway.config import Settings
from gateway.tools.evaluation import Pair, Report, embed_pairs, load_shipped, with_verification
from gateway.tools.verifier_data import read

SHORT = [("How do I reverse a list in Python?", "How can I reverse a Python list?"),
         ("What is the capital of Australia?", "What is the largest city in Australia?"),
         ("Is Pakistan more beautiful than India?", "Is Pakistan more beautiful than India or not?")]


def _row(name: str, r: Report) -> str:
    v = r.overall_verified
    gap = v.precision - r.overall_frontier_precision if r.overall_frontier_precision else 0.0
    lo, hi = v.precision_ci
    return (f"| {name} | {v.precision:.3f} ({lo:.2f}–{hi:.2f}) | {v.recall:.3f} | {v.hits} | "
            f"{v.wrong_hits} | {gap:+.3f} |")


def _cost(rounds: int = 12, repeats: int = 20) -> dict[tuple[str, int], tuple[float, ...]]:
    """p50 ms of the int8 model the gateway runs and of its fp32 export, on 1 and 2 threads,
    their rounds interleaved (this VM's speed drifts): one short pair; five candidates of one
    lookup in one batch; a long pair."""
    long = ("The company that bought Acme in 2019 was founded by Jane Smith in Boston, where it "
            "still has its head office and most of its engineers.",
            "Jane Smith founded the company that bought Acme in 2019 in Boston, where most of its "
            "engineers and its head office still are.")
    cases = (SHORT[:1], [SHORT[0]] * 5, [long])
    models = {(kind, threads): PairModel(ADAPTER, Settings().embedding_cache_dir, threads,
                                         int8=kind == "int8")
              for threads in (1, 2) for kind in ("int8", "fp32")}
    times: dict[tuple[str, int], list[list[float]]] = {k: [[], [], []] for k in models}
    for _ in range(rounds):
        for key, model in models.items():
            for i, pairs in enumerate(cases):
                model.logits(pairs)  # warm
                for _ in range(repeats):
                    t = time.perf_counter()
                    model.logits(pairs)
                    times[key][i].append((time.perf_counter() - t) * 1e3)
    return {k: tuple(float(np.median(t)) for t in v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=Path, default=PAIRS)
    args = ap.parse_args()
    shipped = load_shipped()
    learned = load_learned(Settings().embedding_cache_dir, threads=2)
    gate = learned.gate
    sets = public_sets(args.pairs, shipped.embedder.encode)
    sets.pop("StackFAQ (both splits)")
    stack = read(args.pairs / "stackfaq.jsonl")
    for split in ("dev", "train"):
        sets[f"StackFAQ {split}" + (" (tuning)" if split == "train" else "")] = [
            Pair(r["a"], r["b"], bool(r["same"])) for r in stack if r["split"] == split]
    cats = shipped.categories
    variants = {"threshold alone": with_verification(cats, enabled=False),
                "rules alone (`cross_encoder: false`)": with_verification(cats, cross_encoder=False),
                "**rules + cross-encoder** (shipped)":
                    with_verification(cats, cross_encoder=True)}
    lines = [
        "## Slot rules with the cross-encoder beside them (`benchmarks/verifier_gate.py`)", "",
        stamp(), "",
        f"With `verification.cross_encoder: true` (on in every shipped category): over the category's "
        f"threshold, a candidate the cross-encoder (the learned verifier's model, "
        f"`crossencoder.npz`) judges different (logit < {gate.refuse_below:g}) is refused although "
        f"no slot rule fired, and a slot rule's veto is overruled where it is sure the two ask "
        f"the same (logit ≥ {gate.overrule_from:g}), except for "
        f"{', '.join(gate.never_overruled) or 'no kind'}; pairs sharing under a quarter of their "
        f"words are left to the rules. The points and kinds were chosen by "
        f"`gateway.tools.fit_gate` on tuning splits only ({gate.card.get('chosen_on')}; "
        f"{gate.card.get('rule')}), written to `{GATE.name}`. Each row: the gateway's decision "
        "(`semcache eval`'s code), shipped thresholds, categories and slot kinds; precision with its 95% "
        "Wilson interval; *vs frontier*: precision minus the best precision a similarity "
        "threshold alone reaches at the same recall (negative: raising the threshold does "
        "better). Every set but StackFAQ train is held out (never trained or tuned on).", ""]
    for title, pairs in sets.items():
        embedded = embed_pairs(pairs, shipped.embedder)
        pos = sum(p.same for p in pairs)
        lines += [f"### {title}: {len(pairs)} pairs ({pos} same)", "",
                  "| verification | precision (95% CI) | recall | served | wrong | vs frontier |",
                  "|---|---|---|---|---|---|"]
        for name, variant in variants.items():
            started = time.perf_counter()
            r = shipped.evaluate(pairs, variant, embedded=embedded, learned=learned)
            lines.append(_row(name, r))
            print(f"{title:40} {name:36} P {r.overall_verified.precision:.3f} "
                  f"R {r.overall_verified.recall:.3f} ({time.perf_counter() - started:.0f} s)",
                  flush=True)
        lines.append("")
    cost = _cost()
    lines += [
        "Cost of the cross-encoder on this CPU (ONNX Runtime; *int8*: what the gateway runs, "
        "its weights quantized per channel; *fp32*: the export it was quantized from; p50 ms, "
        "the kinds' rounds interleaved):", "",
        "| model | threads | one short pair | a lookup's five candidates, one batch | one long "
        "pair (two 25-word sentences) |", "|---|---:|---:|---:|---:|",
        *(f"| {kind} | {threads} | {c[0]:.2f} | {c[1]:.2f} | {c[2]:.2f} |"
          for (kind, threads), c in cost.items()), "",
        "int8 / fp32, one short pair: " + ", ".join(
            f"{cost[('int8', t)][0] / cost[('fp32', t)][0]:.2f} on {t} thread{'s' * (t > 1)}"
            for t in (1, 2)) + ". Beside the rules it runs candidate "
        "by candidate (best first, stopping at the first served) for candidates over their "
        "category's threshold sharing a quarter of their words and not read as the same word "
        "pieces; a miss without one, and an exact repeat, never run it.", ""]
    write_section("verifier_gate", "\n".join(lines))


if __name__ == "__main__":
    main()
