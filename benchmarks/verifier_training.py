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
        "_Runs 2026-12-02 (run1–3) and 2026-12-04 (run4–9) on one NVIDIA H200 (torch 2.11, "
        "bf16 autocast), seed 13; summaries in "
        "`benchmarks/results/verifier_training_run*.json`._", "",
        "The packaged MiniLM read as a cross-encoder (`gateway/cache/verifier/model.py`: "
        "[CLS] a [SEP] b [SEP], head over [CLS] + mean), LoRA on every encoder linear layer "
        "(rank r) unless *full*, trained on *train* of `gateway.tools.verifier_data` (PAWS-Wiki "
        "dev, STS-B train, Disfl-QA train positives, mined Disfl-QA negatives, synthetic one-edit "
        "pairs, the project's dev set: 21,958 pairs), calibrated (logistic over its logit and the "
        "cosine) on *calib* (3,874 pairs of the same sources it never saw). *residual*: the "
        "logit is a learned correction added to a logistic fit of the cosine. Figures: the best "
        "precision at recall 0.5 / 0.6 among pairs with cosine ≥ 0.5, on sets never trained or "
        "tuned on; the first row is the cosine frontier; bold: above it. *keep*: trained on these "
        "sources only (`disflqa:human`: Disfl-QA's positives without the mined negatives); "
        "`_r64`: the full fine-tune above it with each weight change truncated to rank 64 "
        "(`model.compress_full`: the shippable adapter, 5.4 MB). `+stackfaq` variants "
        "trained on StackFAQ train too — a research measure only (its README forbids training "
        "anything shipped on it), and their StackFAQ-train figure is not a held-out one.", "",
        "| variant | " + " | ".join(t for _, t in SETS) + " |",
        "|---|" + "---|" * len(SETS),
    ]
    cosine: dict[str, tuple[float, float]] = {}
    rows = []
    for path in sorted(RESULTS.glob("verifier_training_run*.json")):
        summary = json.loads(path.read_text())
        cosine = {k: (summary["cosine"][k]["p@r0.5"], summary["cosine"][k]["p@r0.6"])
                  for k, _ in SETS}
        for name, v in summary["variants"].items():
            cfg = v["config"]
            desc = ("full" if cfg.get("full") else f"LoRA r{cfg['rank']}") + \
                (f", first {cfg['layers']} layers" if cfg.get("layers") else "") + \
                f", {cfg['epochs']} ep, lr {cfg['lr']:g}" + \
                (", residual" if cfg.get("residual", 0) else "") + \
                (f", without {cfg['drop']}" if cfg["drop"] else "") + \
                (f", keep {cfg['keep'].replace(',', ' + ')}" if cfg.get("keep") else "") + \
                (f", +{cfg['extra'].replace('_train', '')}" if cfg.get("extra") else "")
            got = {k: (v["sets"][k]["calibrated"]["p@r0.5"], v["sets"][k]["calibrated"]["p@r0.6"])
                   for k, _ in SETS}
            rows.append(f"| {path.stem[-4:]} {name}: {desc} | " + " | ".join(
                f"{cell(cosine[k][0], got[k][0])} / {cell(cosine[k][1], got[k][1])}"
                for k, _ in SETS) + " |")
    lines.append("| cosine frontier | " + " | ".join(
        f"{cosine[k][0]:.3f} / {cosine[k][1]:.3f}" for k, _ in SETS) + " |")
    lines += rows
    lines += [
        "",
        "Read (run1–3): mixed with Disfl-QA's mined negatives and the synthetic pairs, no variant "
        "that may be shipped is above the frontier on both StackFAQ splits and PAWS-Wiki test "
        "stays near 0.55: in that mix the words two texts share tell most labels, and the model "
        "learns that instead of their order. Read (run4–7): trained on PAWS-Wiki dev alone — "
        "every pair the same bag of words, so only order and structure tell the label — a full "
        "fine-tune for 20 epochs reaches 0.859 at recall 0.5 on PAWS-Wiki test (goal 0.80) and "
        "rises above the frontier on StackFAQ dev, but falls below it on Disfl-QA (it never saw a "
        "self-correction); adding Disfl-QA's human positives (`pd_full20`) brings Disfl-QA back "
        "to the frontier and keeps PAWS-Wiki test at 0.83. Both stay below the frontier on "
        "StackFAQ train at this calibration (fitted on *calib*, whose sources weigh the learned "
        "score more than question rephrasings bear): the `verifier_learned` section shows how "
        "the shipped one is combined with the cosine instead. Run8 (`pdx_full20`) adds the "
        "synthetic one-edit negatives (a different entity, number, question word, an added negation) and the "
        "project's dev set: every training pair still shares most of its words, so nothing "
        "rewards word overlap itself; its rank-64 truncation is the shipped learned verifier "
        "(`verifier_learned` section: combined with the cosine in proportion to the words the "
        "two texts share, it is nowhere below the frontier). LoRA trained directly (r32–r64) "
        "learns far less than the full fine-tune; the rank-64 truncation of a full fine-tune "
        "loses almost nothing. Run9: the same recipe on the first 3 (2) of MiniLM's 6 layers, "
        "for a cheaper verifier: PAWS-Wiki test falls to 0.76 (0.59) at recall 0.5 — depth is "
        "what learns word order.",
    ]
    write_section("verifier_training", "\n".join(lines))


if __name__ == "__main__":
    main()
