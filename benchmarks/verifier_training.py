"""The learned verifier's training runs (``gateway.tools.train_verifier`` on the GPU machine)
beside the cosine frontier, from the summaries those runs wrote to ``benchmarks/results/``.
Writes the `verifier_training` section of docs/BENCHMARKS.md.

    python benchmarks/verifier_training.py

Reproduce a run: ``python -m gateway.tools.verifier_data``-style sets (``verifier_data.build``,
seed 13) in a folder, then on a GPU ``python -m gateway.tools.train_verifier --data DIR --out DIR
--variant NAME:KEY=VALUE,...`` with the variants named in each summary's ``config``.
"""

from __future__ import annotations

import json
from pathlib import Path

from _report import write_section

RESULTS = Path(__file__).parent / "results"
SETS = [("paws_wiki_test", "PAWS-Wiki test"), ("stackfaq_dev", "StackFAQ dev"),
        ("stackfaq_train", "StackFAQ train"), ("stsb_devtest", "STS-B dev+test"),
        ("disflqa_devtest", "Disfl-QA dev+test + mined")]


def cell(cos: float | None, ours: float | None) -> str:
    if ours is None or cos is None:
        return "-"
    mark = "**" if ours > cos else ""
    return f"{mark}{ours:.3f}{mark}"


def main() -> None:
    lines = [
        "## Learned verifier: training runs against the cosine frontier", "",
        "_Runs 2026-12-02 on one NVIDIA H200 (torch 2.11, bf16 autocast), seed 13; summaries in "
        "`benchmarks/results/verifier_training_run*.json`._", "",
        "The packaged MiniLM read as a cross-encoder (`gateway/cache/verifier/model.py`: "
        "[CLS] a [SEP] b [SEP], head over [CLS] + mean), LoRA on every encoder linear layer "
        "(rank r) unless *full*, trained on *train* of `gateway.tools.verifier_data` (PAWS-Wiki "
        "dev, STS-B train, Disfl-QA train positives, mined Disfl-QA negatives, synthetic one-edit "
        "pairs, the project's dev set: 21,958 pairs), calibrated (logistic over its logit and the "
        "cosine) on *calib* (3,874 pairs of the same sources it never saw). *residual*: the "
        "logit is a learned correction added to a logistic fit of the cosine. Figures: the best "
        "precision at recall 0.6 among pairs with cosine ≥ 0.5, on sets never trained or tuned "
        "on; the first row is the cosine frontier; bold: above it. `+stackfaq` variants "
        "trained on StackFAQ train too — a research measure only (its README forbids training "
        "anything shipped on it), and their StackFAQ-train figure is not a held-out one.", "",
        "| variant | " + " | ".join(t for _, t in SETS) + " |",
        "|---|" + "---|" * len(SETS),
    ]
    cosine: dict[str, float | None] = {}
    rows = []
    for path in sorted(RESULTS.glob("verifier_training_run*.json")):
        summary = json.loads(path.read_text())
        cosine = {k: summary["cosine"][k]["p@r0.6"] for k, _ in SETS}
        for name, v in summary["variants"].items():
            cfg = v["config"]
            desc = ("full" if cfg.get("full") else f"LoRA r{cfg['rank']}") + \
                f", {cfg['epochs']} ep, lr {cfg['lr']:g}" + \
                (", residual" if cfg.get("residual", 0) else "") + \
                (f", without {cfg['drop']}" if cfg["drop"] else "") + \
                (f", +{cfg['extra'].replace('_train', '')}" if cfg.get("extra") else "")
            rows.append(f"| {name}: {desc} | " + " | ".join(
                cell(cosine[k], v["sets"][k]["calibrated"]["p@r0.6"]) for k, _ in SETS) + " |")
    lines.append("| cosine frontier | " + " | ".join(
        f"{cosine[k]:.3f}" if cosine[k] is not None else "-" for k, _ in SETS) + " |")
    lines += rows
    lines += [
        "",
        "Read: no variant that may be shipped is above the frontier on both StackFAQ splits; "
        "PAWS-Wiki test stays near 0.55 (goal 0.80) — 8k PAWS dev pairs do not teach this "
        "6-layer model word order; Disfl-QA is easy for every variant (its negatives are mined "
        "the same way as the training negatives). Trained on in-style question pairs "
        "(`+stackfaq`), the same LoRA model rises well above the frontier on StackFAQ dev "
        "(0.969 at recall 0.6 vs 0.907): the architecture learns questions when it is given "
        "their style; what the public training data lacks is question rephrasings. No learned "
        "verifier is shipped.",
    ]
    write_section("verifier_training", "\n".join(lines))


if __name__ == "__main__":
    main()
