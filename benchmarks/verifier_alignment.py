"""The other learned verifier the issue names: a trained head over the token-level alignment of
the embedding model's own token vectors (no second model; the query's token vectors come out
of the embedding pass it already makes). Measured against the cosine frontier on held-out sets.

    python -m gateway.tools.verifier_data --out /tmp/vd
    python benchmarks/verifier_alignment.py --data /tmp/vd [--train-pairs 8000]

Features of a pair (a, b), from the packaged MiniLM's last hidden states (per token, [CLS] and
[SEP] dropped, unit length): the pooled cosine; for each side, the mean, minimum and 10th
percentile of each token's best match on the other side and the share of its tokens with no
match over 0.6; the order agreement of the strong matches (Kendall's tau of their positions:
a swapped relation keeps every word but not their order); the length ratio. A logistic model
on verifier_data's *train* (sampled; StackFAQ never), judged on sets it never saw: precision at
recall r among pairs with cosine ≥ 0.5, beside the cosine alone. Writes the
`verifier_alignment` section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _report import stamp, write_section
from scipy.stats import kendalltau
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from gateway.embedding import SentenceTransformerEmbedder
from gateway.tools.curves import precision_at
from gateway.tools.verifier_data import read

GATE = 0.5
RECALLS = (0.5, 0.55, 0.6)
HELD_OUT = ("paws_wiki_test", "stsb_devtest", "disflqa_devtest", "stackfaq_dev", "stackfaq_train")
NAMES = ("cosine", "a_mean", "a_min", "a_p10", "a_unmatched", "b_mean", "b_min", "b_p10",
         "b_unmatched", "order_tau", "length_ratio")


def token_vectors(model: object, texts: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    st = model.model  # type: ignore[attr-defined]
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    uniq = list(dict.fromkeys(texts))
    toks = st.encode(uniq, output_value="token_embeddings", batch_size=64,
                     convert_to_numpy=False, show_progress_bar=False)
    pooled = st.encode(uniq, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    for text, t, p in zip(uniq, toks, pooled, strict=True):
        v = t.float().numpy()[1:-1]
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)
        out[text] = (v if len(v) else np.zeros((1, v.shape[1])), p)  # no token: no match
    return out


def side(sim: np.ndarray) -> list[float]:
    best = sim.max(axis=1)
    return [float(best.mean()), float(best.min()), float(np.percentile(best, 10)),
            float((best < 0.6).mean())]


def features(va: np.ndarray, vb: np.ndarray, pa: np.ndarray, pb: np.ndarray) -> list[float]:
    sim = va @ vb.T
    j = sim.argmax(axis=1)
    strong = sim.max(axis=1) > 0.8
    tau = 1.0
    if strong.sum() >= 3:
        t = kendalltau(np.arange(len(j))[strong], j[strong]).statistic
        tau = 1.0 if np.isnan(t) else float(t)
    return [float(pa @ pb), *side(sim), *side(sim.T), tau,
            min(len(va), len(vb)) / max(len(va), len(vb))]


def matrix(rows: list[dict], vecs: dict) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([features(vecs[r["a"]][0], vecs[r["b"]][0], vecs[r["a"]][1], vecs[r["b"]][1])
                  for r in rows])
    return x, np.array([bool(r["same"]) for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--train-pairs", type=int, default=8000)
    ap.add_argument("--held-out-pairs", type=int, default=3000, help="per set, sampled")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    train = read(args.data / "train.jsonl")
    train = rng.sample(train, min(args.train_pairs, len(train)))
    held = {}
    for name in HELD_OUT:
        rows = read(args.data / f"{name}.jsonl")
        held[name] = rng.sample(rows, min(args.held_out_pairs, len(rows)))
    model = SentenceTransformerEmbedder(device="cpu")
    texts = [t for rows in (train, *held.values()) for r in rows for t in (r["a"], r["b"])]
    start = time.perf_counter()
    vecs = token_vectors(model, texts)
    embed_s = time.perf_counter() - start
    x, y = matrix(train, vecs)
    keep = x[:, 0] >= GATE
    scaler = StandardScaler().fit(x[keep])
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(scaler.transform(x[keep]), y[keep])
    start = time.perf_counter()
    probe = [features(vecs[r["a"]][0], vecs[r["b"]][0], vecs[r["a"]][1], vecs[r["b"]][1])
             for r in train[:500]]
    feat_us = (time.perf_counter() - start) / len(probe) * 1e6
    lines = [
        "## Token-alignment head on public pairs (`benchmarks/verifier_alignment.py`)", "",
        stamp(), "",
        f"A logistic head over {len(NAMES)} alignment features of the packaged MiniLM's own token "
        f"vectors ({', '.join(NAMES)}), fitted on {int(keep.sum())} pairs of verifier_data "
        f"*train* with cosine ≥ {GATE} (a seeded sample of {len(train)}: PAWS-Wiki dev, STS-B "
        "train, Disfl-QA train ± mined, synthetic one-edit pairs, the project's dev set; never "
        f"StackFAQ). Held-out sets never fitted on, {args.held_out_pairs} pairs sampled per set "
        f"at most. Precision at recall r of the head / of the cosine alone (the frontier), on "
        f"pairs over cosine {GATE}; bold: above the frontier.", "",
        "| set | pairs | " + " | ".join(f"P@R{r} head / cos" for r in RECALLS) + " |",
        "|---|---:|" + "---|" * len(RECALLS),
    ]
    for name, rows in held.items():
        hx, hy = matrix(rows, vecs)
        m = hx[:, 0] >= GATE
        p = clf.predict_proba(scaler.transform(hx[m]))[:, 1]
        cells = []
        for r in RECALLS:
            a, b = precision_at(p, hy[m], r), precision_at(hx[m, 0], hy[m], r)
            cell = f"{a} / {b}"
            cells.append(f"**{cell}**" if a is not None and b is not None and a > b else cell)
        lines.append(f"| {name} | {int(m.sum())} | " + " | ".join(cells) + " |")
    weights = ", ".join(f"{n} {w:+.2f}" for n, w in zip(NAMES, clf.coef_[0], strict=True))
    lines += ["", f"Weights (standardised features): {weights}.", "",
              f"Cost: token vectors for {len(set(texts))} texts in {embed_s:.0f} s (this CPU, "
              f"batches of 64); the features {feat_us:.0f} µs per pair (numpy, one thread)."]
    text = "\n".join(lines)
    print(text)
    write_section("verifier_alignment", text)


if __name__ == "__main__":
    main()
