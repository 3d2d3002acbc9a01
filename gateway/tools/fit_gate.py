"""Choose the cross-encoder's two points beside the slot rules and write
``crossencoder_gate.json`` (``learned.Gate``).

    python -m gateway.tools.verifier_data --out /tmp/vsets
    python -m gateway.tools.fit_gate --sets /tmp/vsets

On the tuning sets only — *calib* split by source (pairs of the training sources the
cross-encoder never saw) and StackFAQ train (its licence allows tuning) — every pair is decided
as the gateway decides it with the shipped categories: over the category's threshold, the slot
rules' verdict, and the cross-encoder's logit where the two texts share enough words. For each
(refuse_below, overrule_from) of ``GRID`` the served pairs' precision is compared with the
cosine frontier (the best precision a threshold alone reaches at the same recall). Chosen: the
best *worst* gap over the tuning sets, and within ``TOLERANCE`` of it the best mean gap (a
stricter point buys a few pairs of precision on one set at the cost of recall everywhere).

A slot kind — or a part of one (``verify.PARTS``: ``substitution``, the part of ``entities``
that reads one content word put in place of another) — is *never overruled* where the
cross-encoder's overrules of its vetoes were wrong more than ``HARD_SHARE`` of the time on the
tuning sets (at the unrestricted first choice), and
``numbers`` always: a changed value or unit is the plainest wrong answer a cache can serve, the
training data's number edits change values but never units, and the model was seen to call
"seconds in 2 hours" / "minutes in 2 hours" the same question. The points are then chosen again
with those kinds held. Held-out sets are measured by ``benchmarks/verifier_gate.py``, never here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import platform
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.cache.verifier.learned import ADAPTER, GATE, PairModel, load_combination, overlap
from gateway.cache.verifier.slots import extract
from gateway.cache.verifier.verify import GATE_KINDS, PARTS
from gateway.categories import ALL_SLOTS
from gateway.tools.curves import precision_at
from gateway.tools.evaluation import Pair, embed_pairs, load_shipped, with_verification
from gateway.tools.train_calibrator import add_set_arguments, read_sets
from gateway.tools.verifier_data import Row

GRID_REFUSE = (-99.0, -4.0, -2.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)
GRID_OVERRULE_STEPS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 99.0)  # overrule_from - refuse_below
TOLERANCE = 0.01  # about two wrong hits of the ~200 StackFAQ train serves: below, noise
HARD_SHARE = 0.1
ALWAYS_HARD = ("numbers",)


@dataclass(frozen=True)
class Decided:
    """One set's pairs as the gateway sees them: cosine, label, served by the threshold alone,
    served by the slot rules, the cross-encoder's logit (NaN where it does not judge)."""

    cos: np.ndarray
    same: np.ndarray
    threshold: np.ndarray
    rules: np.ndarray
    logit: np.ndarray
    vetoed: dict[str, np.ndarray]  # per slot kind (and part of one): the pairs it alone refuses

    def served(self, refuse_below: float, overrule_from: float, hard: tuple[str, ...] = ()
               ) -> np.ndarray:
        judged = ~np.isnan(self.logit)
        logit = np.where(judged, self.logit, 0.0)
        held = np.zeros(len(self.same), dtype=bool)
        for kind in hard:
            held |= self.vetoed[kind]
        return (self.threshold & (~judged | (logit >= refuse_below))
                & (self.rules | (judged & (logit >= overrule_from) & ~held)))

    def overrules(self, overrule_from: float) -> dict[str, tuple[int, int]]:
        """Per slot kind, the vetoes the cross-encoder overrules: (labelled same, different)."""
        over = self.threshold & ~self.rules & (np.nan_to_num(self.logit, nan=-1e9) >= overrule_from)
        return {k: (int((over & v & self.same).sum()), int((over & v & ~self.same).sum()))
                for k, v in self.vetoed.items()}

    def gap(self, served: np.ndarray) -> tuple[float, float, float]:
        """Precision minus the cosine frontier at the same recall; precision; recall."""
        tp, n = int((served & self.same).sum()), int(served.sum())
        p, r = (tp / n if n else 1.0), tp / max(int(self.same.sum()), 1)
        frontier = precision_at(self.cos, self.same, r) if r > 0 else None
        return p - (frontier if frontier is not None else p), p, r


def decided_sets(sets: dict[str, list[Row]], model: PairModel, min_overlap: float,
                 progress: Any = print) -> dict[str, Decided]:
    """Every set decided with the shipped categories (the gateway's code: ``evaluate``); the
    cross-encoder's logit where the gateway would read it (``min_overlap`` and not the same word
    pieces, as ``learned``)."""
    shipped = load_shipped()
    variants = {"alone": with_verification(shipped.categories, enabled=False),
                "rules": with_verification(shipped.categories, cross_encoder=False)}
    for kind in ALL_SLOTS:  # each kind's rule alone, where the category checks it
        variants[kind] = {n: c.model_copy(update={"verification": c.verification.model_copy(
            update={"cross_encoder": False,
                    "slots": [k for k in c.verification.slots if k == kind]})})
            for n, c in shipped.categories.items()}
    out = {}
    for name, rows in sets.items():
        pairs = [Pair(r["a"], r["b"], bool(r["same"])) for r in rows]
        embedded = embed_pairs(pairs, shipped.embedder)
        served = {}
        for variant, cats in variants.items():
            mask = np.zeros(len(pairs), dtype=bool)
            mask[shipped.evaluate(pairs, cats, embedded=embedded).served] = True
            served[variant] = mask
        logit = np.full(len(pairs), np.nan)
        run = [i for i in np.flatnonzero(served["alone"]) if pairs[i].a != pairs[i].b
               and overlap(pairs[i].a, pairs[i].b) >= min_overlap
               and not model.same_tokens(pairs[i].a, pairs[i].b)]
        progress(f"{name}: {len(run)} of {len(pairs)} pairs through the cross-encoder")
        for s in range(0, len(run), 32):
            idx = run[s:s + 32]
            logit[idx] = model.logits([(pairs[i].a, pairs[i].b) for i in idx])
        vetoed = {k: served["alone"] & ~served[k] for k in ALL_SLOTS}
        for part, (kind, differs) in PARTS.items():  # where the kind's veto is this part's
            vetoed[part] = vetoed[kind] & np.array(
                [differs(extract(p.a), extract(p.b)) for p in pairs], dtype=bool)
        out[name] = Decided(embedded[0], np.array([p.same for p in pairs], dtype=bool),
                            served["alone"], served["rules"], logit, vetoed)
    return out


def choose(tuning: dict[str, Decided], hard: tuple[str, ...] = ()
           ) -> tuple[tuple[float, float], list[dict[str, Any]]]:
    table = []
    for lo, step in itertools.product(GRID_REFUSE, GRID_OVERRULE_STEPS):
        hi = min(lo + step, 99.0)
        gaps = {n: d.gap(d.served(lo, hi, hard))[0] for n, d in tuning.items()}
        table.append({"refuse_below": lo, "overrule_from": hi,
                      "worst": round(min(gaps.values()), 4),
                      "mean": round(float(np.mean(list(gaps.values()))), 4)})
    best_worst = max(t["worst"] for t in table)
    pick = max((t for t in table if t["worst"] >= best_worst - TOLERANCE),
               key=lambda t: (t["mean"], t["worst"]))
    table.sort(key=lambda t: (t["worst"], t["mean"]), reverse=True)
    return (pick["refuse_below"], pick["overrule_from"]), table


def main() -> None:
    from gateway.config import Settings
    from gateway.tools.train_calibrator import by_source

    ap = argparse.ArgumentParser(description="Choose the cross-encoder's points beside the rules.")
    add_set_arguments(ap, GATE)
    args = ap.parse_args()
    sets = read_sets(args, ["calib", "stackfaq_train"])
    calib = sets.pop("calib")
    index = np.arange(len(calib))
    for name, (rows_at,) in by_source(calib, index).items():
        sets[name] = [calib[i] for i in rows_at]
    model = PairModel(ADAPTER, Settings().embedding_cache_dir)
    tuning = decided_sets(sets, model, load_combination().min_overlap)
    (_, first_hi), _ = choose(tuning)
    overruled: dict[str, list[int]] = {}
    for d in tuning.values():
        for kind, (right, wrong) in d.overrules(first_hi).items():
            total = overruled.setdefault(kind, [0, 0])
            total[0], total[1] = total[0] + right, total[1] + wrong
    hard = tuple(k for k in GATE_KINDS if k in ALWAYS_HARD
                 or (sum(overruled[k]) and overruled[k][1] / sum(overruled[k]) > HARD_SHARE))
    (lo, hi), table = choose(tuning, hard)
    measured = {}
    for name, d in tuning.items():
        g, p, r = d.gap(d.served(lo, hi, hard))
        rg, rp, rr = d.gap(d.rules)
        measured[name] = {"gap": round(g, 4), "precision": round(p, 4), "recall": round(r, 4),
                          "rules_gap": round(rg, 4), "rules_precision": round(rp, 4),
                          "rules_recall": round(rr, 4)}
    doc = {"refuse_below": lo, "overrule_from": hi, "never_overruled": list(hard), "card": {
        "overrules_at_first_choice": {"overrule_from": first_hi, "by_kind_same_different":
                                      overruled, "hard_share": HARD_SHARE,
                                      "always_hard": list(ALWAYS_HARD)},
        "chosen_on": "calib by source + stackfaq_train (tuning only), shipped categories",
        "rule": f"best worst gap to the cosine frontier; within {TOLERANCE} of it the best mean",
        "fitted": str(dt.date.today()), "machine": platform.processor() or platform.machine(),
        "tuning": measured, "grid_top": table[:10]}}
    args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print("refuse_below", lo, "overrule_from", hi, "never_overruled", hard, overruled)
    for name, m in measured.items():
        print(f"{name:18} " + " ".join(f"{k}={v}" for k, v in m.items()))


if __name__ == "__main__":
    main()
