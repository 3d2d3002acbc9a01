"""Which of the verifier's rule kinds pay, measured on public pairs the rules were not written
from (``../shared/data/pairs``) and on the project's two hand-written held-out sets. Writes the
`slot_kinds` section of docs/BENCHMARKS.md.

For every set, each slot kind is evaluated *alone* in every category (the gateway's decision
otherwise unchanged: `semcache eval`'s code): the true pairs it rejects (recall lost), the
different pairs it rejects (wrong hits prevented), and its precision beside the cosine frontier
at the recall it leaves (a kind below the frontier does worse than raising the threshold).

    python benchmarks/slot_kinds.py [--pairs ../shared/data/pairs]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import stamp, write_section

from gateway.categories import ALL_SLOTS
from gateway.tools.evaluation import (
    Pair,
    embed_pairs,
    load_pairs,
    load_shipped,
    with_verification,
)
from gateway.tools.question_pairs import mined_negatives, reparandum_negatives
from gateway.tools.verifier_data import read

DATA = Path(__file__).parent / "data"


def public_sets(root: Path, encode) -> dict[str, list[Pair]]:  # type: ignore[no-untyped-def]
    import random

    def pick(file: str, splits: tuple[str, ...]) -> list[Pair]:
        return [Pair(r["a"], r["b"], bool(r["same"])) for r in read(root / file)
                if r.get("split") in splits]

    disfl = [r for r in read(root / "disflqa.jsonl") if r["split"] in ("dev", "test")]
    questions = sorted({(r["a"], r["meta"]["squad_v2_id"]) for r in disfl})
    mined = mined_negatives(questions, encode, random.Random(14), limit=3000)
    # the question a disfluent speaker took back: one attribute, entity, date or verb changed
    taken_back = reparandum_negatives(disfl, random.Random(15), limit=1500)
    return {
        "PAWS-Wiki test": pick("paws_wiki.jsonl", ("test",)),
        "STS-B dev+test": pick("stsb.jsonl", ("dev", "test")),
        "StackFAQ (both splits)": pick("stackfaq.jsonl", ("train", "dev")),
        "Disfl-QA dev+test (+ mined negatives)": [Pair(r["a"], r["b"], True) for r in disfl[:3000]]
        + [Pair(r["a"], r["b"], False) for r in mined],
        "Disfl-QA dev+test (+ taken-back negatives)":
        [Pair(r["a"], r["b"], True) for r in disfl[3000:4500]]
        + [Pair(r["a"], r["b"], False) for r in taken_back],
        "project held-out": load_pairs(DATA / "holdout_pairs.jsonl"),
        "project held-out 2": load_pairs(DATA / "holdout2_pairs.jsonl"),
    }


# ../shared/data/pairs beside the project
PAIRS = Path(__file__).parents[1].parent / "shared" / "data" / "pairs"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=Path, default=PAIRS)
    args = ap.parse_args()
    gateway = load_shipped()
    shipped, embedder = gateway.categories, gateway.embedder
    sets = public_sets(args.pairs, embedder.encode)
    lines = [
        "## Rule kinds on data they were not written from", "", stamp(), "",
        "Each slot kind of the rule verifier alone in every category, shipped thresholds, the "
        "gateway's decision (`semcache eval`'s code). *true rejected*: pairs labeled same that it "
        "refuses (recall lost); *wrong prevented*: pairs labeled different that the threshold "
        "would have served and it refuses; *vs frontier*: its precision minus the best "
        "precision a similarity threshold alone reaches at the recall it leaves (negative: "
        "raising the threshold does better). `shipped` is every category's own kinds.", "",
    ]
    for title, pairs in sets.items():
        embedded = embed_pairs(pairs, embedder)
        base = gateway.evaluate(pairs, with_verification(shipped, enabled=False, slots=[]),
                                embedded=embedded)
        pos = sum(p.same for p in pairs)
        lines += [f"### {title}: {len(pairs)} pairs ({pos} same)", "",
                  f"Threshold alone: precision {base.overall_verified.precision:.3f}, recall "
                  f"{base.overall_verified.recall:.3f}.", "",
                  "| kinds | precision | recall | true rejected | wrong prevented | vs frontier |",
                  "|---|---|---|---|---|---|"]
        for kind in ["shipped", *ALL_SLOTS]:
            cats = shipped if kind == "shipped" else with_verification(shipped, enabled=True,
                                                                          slots=[kind])
            r = gateway.evaluate(pairs, cats, embedded=embedded)
            v, b = r.overall_verified, base.overall_verified
            true_rej = (b.hits - b.wrong_hits) - (v.hits - v.wrong_hits)
            wrong_prev = b.wrong_hits - v.wrong_hits
            gap = (v.precision - r.overall_frontier_precision
                   if r.overall_frontier_precision is not None else float("nan"))
            lines.append(f"| {kind} | {v.precision:.3f} | {v.recall:.3f} | {true_rej} | "
                         f"{wrong_prev} | {gap:+.3f} |")
            print(f"{title:40} {kind:12} P {v.precision:.3f} R {v.recall:.3f} true_rej {true_rej:5} "
                  f"wrong_prev {wrong_prev:5} vs frontier {gap:+.3f}", flush=True)
        lines.append("")
    write_section("slot_kinds", "\n".join(lines))


if __name__ == "__main__":
    main()
