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
        ("disflqa_devtest", "Disfl-QA dev+test + mined"),
        ("disflqa_reparandum_devtest", "Disfl-QA dev+test + taken-back"),
        ("disflqa_one_word_devtest", "Disfl-QA dev+test + one word apart"),
        ("probe_attributes", "attribute probes (50)")]


def pair(v: tuple[float | None, float | None]) -> str:
    return "-" if v[0] is None or v[1] is None else f"{v[0]:.3f} / {v[1]:.3f}"


def cell(cos: float | None, ours: float | None) -> str:
    if ours is None or cos is None:
        return "-"
    mark = "**" if ours > cos else ""
    return f"{mark}{ours:.3f}{mark}"


def main() -> None:
    lines = [
        "## Learned verifier: training runs against the cosine frontier", "",
        "_Runs 2026-12-02 (run1–3) and 2026-12-04 (run4–9) on one NVIDIA H200, 2026-12-07 "
        "(run10–18) on one NVIDIA H100 (torch 2.11, bf16 autocast), seed 13 unless stated; "
        "summaries in "
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
    first: dict[str, tuple[float, float]] = {}  # the frontier of the first run: the header row
    rows = []
    for path in sorted(RESULTS.glob("verifier_training_run*.json"),
                       key=lambda p: int(p.stem.removeprefix("verifier_training_run"))):
        summary = json.loads(path.read_text())
        run = path.stem.removeprefix("verifier_training_")
        was, cosine = cosine, {k: (summary["cosine"][k]["p@r0.5"], summary["cosine"][k]["p@r0.6"])
                               if k in summary["cosine"] else (None, None) for k, _ in SETS}
        if was and was != cosine:  # another base copy (run10: fp16): its own frontier row
            rows.append(f"| cosine frontier from {run} on | " + " | ".join(
                pair(cosine[k]) for k, _ in SETS) + " |")
        first = first or cosine
        for name, v in summary["variants"].items():
            cfg = v["config"]
            desc = ("full" if cfg.get("full") else f"LoRA r{cfg['rank']}") + \
                (f", first {cfg['layers']} layers" if cfg.get("layers") else "") + \
                (f", split at layer {cfg['split']}" if cfg.get("split") else "") + \
                f", {cfg['epochs']} ep, lr {cfg['lr']:g}" + \
                (", both orders" if cfg.get("both") else "") + \
                (f", from {Path(cfg['init']).stem}" if cfg.get("init") else "") + \
                (", residual" if cfg.get("residual", 0) else "") + \
                (f", without {cfg['drop']}" if cfg["drop"] else "") + \
                (f", keep {cfg['keep'].replace(',', ' + ')}" if cfg.get("keep") else "") + \
                (f", +{cfg['extra'].replace('_train', '')}" if cfg.get("extra") else "")
            got = {k: (v["sets"][k]["calibrated"]["p@r0.5"], v["sets"][k]["calibrated"]["p@r0.6"])
                   if k in v["sets"] else (None, None) for k, _ in SETS}
            rows.append(f"| {run} {name}: {desc} | " + " | ".join(
                f"{cell(cosine[k][0], got[k][0])} / {cell(cosine[k][1], got[k][1])}"
                for k, _ in SETS) + " |")
    lines.append("| cosine frontier | " + " | ".join(pair(first[k]) for k, _ in SETS) + " |")
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
        "what learns word order. Run10 (`benchmarks/h200_train_verifier.sh`, from an fp16 copy "
        "of the packaged weights, hence its own frontier row): run8's model scores a question "
        "against its own spacing at logit −10.6 and refuses most retypings (calib: 0.26 of the "
        "case / question-mark / contraction / polite-prefix positives and 0.02 of the "
        "moved-phrase ones kept at logit ≥ 3) — every pair it trained on differed in some word, "
        "the negatives by one edit. Run10 adds verifier_data's `synthetic:typing` (2,051) and "
        "`synthetic:moved` (444) positives to run8's sources (`both orders`: each pair both ways "
        "every epoch). Every variant then keeps ≥ 0.99 of both kinds on calib, refuses ≥ 0.98 "
        "of the one-edit negatives, and the best reach 0.86–0.88 on PAWS-Wiki test — but **none "
        "is shipped**: all six call \"What is the capital of Australia?\" / \"What is the largest "
        "city in Australia?\" the same (logit 6.1 to 11.3; run8: −1.2; the gateway test that "
        "asks it failed). Shown that two texts in one frame with a word or two changed are the "
        "same question, and never a negative that changes an attribute word (\"capital\" → "
        "\"largest city\"; run8 already calls \"the population of France\" / \"the area of "
        "France\" the same, at 10.9), the model takes a changed attribute for a retyping. The "
        "retypings it gets wrong are for the gateway to leave to the rules where the model reads "
        "the same word pieces (case, spacing: `PairModel.same_tokens`); the rest wait for "
        "attribute-swap negatives in the training set. Run11–13 add those negatives from real "
        "speech: verifier_data's `disflqa:reparandum` (1,569), the question a Disfl-QA speaker "
        "began and took back (\"what is the capital, no, the largest city …\": the words taken "
        "back make a different question), beside a set only ever measured, "
        "`benchmarks/data/probe_attribute_pairs.jsonl` (30 hand-written attribute swaps such as "
        "capital / largest city, population / area, install / uninstall, and 20 paraphrases; "
        "its own frontier columns from run11 on). *nr*: not residual (run8's objective); "
        "*s7*/*7*: seed 7. With the taken-back negatives every variant refuses the probes' "
        "capital / largest city (logit −0.4 to −10.6; run10: 6.1 to 11.3) and population / "
        "area (−4 to −10.6; run8: 10.9), and keeps the retypings (0.96–0.99 of calib's at "
        "logit ≥ 3). Adding STS-B train (`+ stsb`, run12–13) lifts the share of STS-B's "
        "held-out true pairs kept at logit ≥ 3 from 0.1–0.2 to 0.9: trained on one-edit pairs "
        "alone, the model read every real rewording as a different question. Mined negatives "
        "(`r11_full20nrm`) cost PAWS-Wiki and StackFAQ; both orders cost PAWS-Wiki. The best on "
        "tuning sets only (calib by source and StackFAQ train: the highest mean precision at "
        "recall 0.5 / 0.6), `r13_full30nrs_r64`, was refitted and measured as the gateway runs "
        "it (weight 0.04, gate 7 / 9): above the frontier on every public set (PAWS-Wiki test "
        "0.843 at recall 0.5, StackFAQ dev 0.968, STS-B 0.995), and beside the rules it served "
        "STS-B at 0.987 / 0.576 (run8: 0.985 / 0.325) and the taken-back slice at 0.988 / 0.818 "
        "(15 wrong; run8: 52) — but **it is not shipped**: it takes one-word swaps of short "
        "requests for the same request and overrules the rules' veto on them (logit 9.3 to "
        "11.6: \"descending\" / \"ascending\", \"encode\" / \"decode\", \"even\" / "
        "\"odd\", \"sad\" / \"happy\", \"gold\" / \"silver\", \"car\" / \"bike\"; run8: "
        "−7.3 to 5.2), which brought the project's held-out sets from 1.000 to 0.904 and 0.839 "
        "with the cross-encoder on. Its training shows no one-word swap of a common word that "
        "changes the request, and its tuning sets hold none either (the gate overruled 18 "
        "contrast vetoes there, all rightly), so neither could see it. A tuning set of such "
        "pairs, written for it and never trained on (`benchmarks/data/swap_tuning_pairs.jsonl`: "
        "40 short requests with one common word changed, 30 rewordings; none of the held-out "
        "sets' texts), shows the trade every run makes (negatives served at logit ≥ 7 / "
        "rewordings kept at ≥ 7, of 40 / 30): run8 2 / 19, r11_full20nr 3 / 20, r12_full25nr "
        "7 / 20, with STS-B (r12_full20nrs, r13_full25nrs, r13_full30nrs) 7–10 / 26–27. "
        "STS-B teaches the model to keep real rewordings and, with them, one-word swaps. "
        "Refitted with that set among fit_gate's tuning sets, r11_full20nr (no STS-B) needs a "
        "gate of 9 / 11 and keeps 0.04 of calib's STS-B pairs and 0.08 of StackFAQ train's: "
        "worse than run8. The next run needs negatives that change one common word (a "
        "co-hyponym: gold / silver, car / bike) in training and calib, beside STS-B's "
        "rewordings. Run14 adds them from human text: verifier_data's `disflqa:one_word` "
        "(803 train, 141 calib, split on their own so that every other source keeps the split "
        "run8–13 used — run14 trained on a first placement that re-split the pool; a held-out "
        "slice of 310 from dev+test), two SQuAD questions "
        "with different answers one word apart (\"… to defend Louisbourg?\" / \"… to attack "
        "Louisbourg?\": SQuAD 2.0's annotators made its unanswerable questions by such "
        "edits). On the swap tuning set `r14_full20nr_r64` (no STS-B) serves 3 of 40 negatives "
        "at logit ≥ 7 and keeps 24 of 30 rewordings (run8: 2 / 19); with STS-B "
        "(`r14_full25nrs`) 8 / 26; the 30-epoch variant ran out of the call's time. Refitted "
        "(gate 5 / 11 with the swap set among the tuning sets; weight 0.0025) and measured "
        "beside the rules on the held-out sets (`benchmarks/results/"
        "verifier_gate_run14_full20nr.txt`), it serves fewer wrong hits than run8 everywhere "
        "(PAWS-Wiki test 472 vs 687, Disfl-QA + mined 106 vs 176, taken-back 6 vs 52) at "
        "less recall (PAWS-Wiki 0.516 vs 0.626, STS-B 0.203 vs 0.325, StackFAQ dev 0.120 vs "
        "0.138), STS-B 0.001 under the frontier — and its weight of 0.0025 leaves the "
        "`learned` probability nearly the cosine's, so a `learned` category serves a swapped "
        "order again (three of the project's tests fail). Not shipped either.",
        "",
        "Read (run16): a cheaper cross-encoder by splitting it (`model.SplitScorer`, "
        "`split=K`): each text alone through MiniLM's first K layers, frozen — the embedding "
        "pass's own states, which a lookup has for the query and could keep for a stored "
        "entry — and only the 6 − K layers above read the pair together. Run15's chosen recipe "
        "(`r15_full30nrs`: same sources, 30 epochs, lr 5e-5, not residual) at K = 2, 3, 4. "
        "The joint part would cost 0.63–0.75×, 0.54–0.64× and 0.32–0.38× of the full model on "
        "this CPU, 1–2 threads (`verifier_split` section). It does not learn word order: "
        "PAWS-Wiki test at recall 0.5 falls from 0.871 (run15, the same recipe unsplit) to "
        "0.806 at K = 2, 0.572 at K = 3 "
        "(the cosine frontier: 0.550) and 0.535 at K = 4 (under it); the attribute probes from "
        "1.000 to 1.000 / 0.833 / 0.700; StackFAQ dev falls under the frontier at every K "
        "(0.923 / 0.903 / 0.915 vs 0.938). Its training loss ends at 0.058, 0.177 and 0.228 "
        "(K = 2, 3, 4): with the lower layers reading each text alone, the model cannot even "
        "fit its training pairs — which text's word sits where is decided in the first layers "
        "(run9 found the same from the other side: a cross-encoder of only the first 3 layers "
        "reached 0.76). Only the easy sets (Disfl-QA's three slices: ≥ 0.998) do not notice. "
        "No split model is shipped, and splitting is not the way to the issue's 3 ms. "
        "Run17: the other way to a cheaper model, run15's recipe on MiniLM's first 3 layers "
        "only, all of them reading the pair together (`layers=3`; its 4-layer and 45-epoch "
        "variants ran out of the call's time): PAWS-Wiki test 0.744 at recall 0.5, StackFAQ "
        "dev 0.905 (under the frontier) — as run9 found with run8's recipe. What ships instead "
        "is the full model with its weights in int8 (`verifier_gate` section).",
        "",
        "Read (run18): run15's model refused \"What language is spoken in Brazil?\" / \"Which "
        "language ...\" (logit −3.1; the gate refuses below 7) and, with a word order changed "
        "too, \"What is the largest ocean on Earth?\" / \"Which ocean is the largest ...\" "
        "(−5.9): verifier_data's question-word swap had made \"which\" into \"what\" and "
        "labelled the pair different, and nothing showed the two as one. Run18 trains on "
        "verifier_data with that swap fixed (`r18_full30nrs`, otherwise run15's recipe) and "
        "with a positive kind of its own, \"what\" / \"which\" before a noun "
        "(`synthetic:which_what`, 1,020 pairs; `nrsw`), at seeds 13 and 7. The new positives "
        "lift PAWS-Wiki test and StackFAQ dev at once (rank-64 adapters, recall 0.5: 0.874 / "
        "0.962 at seed 13, 0.860 / 0.977 at seed 7; run15: 0.862 / 0.945; StackFAQ dev at "
        "recall 0.6: 0.939 and 0.964, the issue asks 0.97). Chosen on tuning sets only (calib "
        "by source: tied, 0.9808 / 0.9807; StackFAQ train: 0.900 / 0.890 vs 0.880 / 0.879): "
        "`r18_full30nrsw_s7_r64`, shipped.",
    ]
    write_section("verifier_training", "\n".join(lines))


if __name__ == "__main__":
    main()
