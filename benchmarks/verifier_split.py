"""What a split cross-encoder (``model.SplitScorer``) would cost a lookup on this CPU, beside the
shipped full one, in one run. Writes the `verifier_split` section of docs/BENCHMARKS.md.

    python benchmarks/verifier_split.py [--models DIR] [--n 200]

A split model reads each text alone through the embedder's first K layers and the pair together
only above them. A lookup already has the query's states below K (the embedding pass computes
them) and can keep a stored entry's; what it must run is the joint part. Timed here for K = 2,
3, 4 (the joint layers' weights do not change the cost: with ``--models``, the trained ones from
``train_verifier ... split=K,save=1`` are exported and checked against torch), and, for
comparison, the same joint part with the lower states recomputed for both texts, and the full
cross-encoder the gateway ships. ONNX Runtime, fp32, p50 of ``--n`` runs, 1 and 2 threads.
Quality of the split models: the `verifier_training` section (run16).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import onnxruntime as ort
import torch
from _report import stamp, write_section

from gateway.cache.verifier.learned import ADAPTER, PairModel
from gateway.cache.verifier.model import SplitScorer, load_base
from gateway.config import Settings

PAIRS = [("How big is the population of Japan?", "How large is the population of Japan?"),
         ("How do I sort a list in descending order in Python?",
          "How do I sort a list in ascending order in Python?"),
         ("What is the capital of Australia?", "Which city is the capital of Australia?"),
         ("Who wrote the novel War and Peace?", "War and Peace was written by whom?")]


class Joint(torch.nn.Module):
    def __init__(self, model: SplitScorer):
        super().__init__()
        self.model = model

    def forward(self, a: Any, a_mask: Any, b: Any, b_mask: Any) -> Any:
        return self.model.joint(a, a_mask, b, b_mask)


class Recomputed(torch.nn.Module):
    """The joint part with both texts' lower states computed in the same call."""

    def __init__(self, model: SplitScorer):
        super().__init__()
        self.model = model

    def forward(self, a_ids: Any, a_mask: Any, b_ids: Any, b_mask: Any) -> Any:
        m = self.model
        return m.joint(m.lower(a_ids, a_mask), a_mask, m.lower(b_ids, b_mask), b_mask)


def session(path: Path, threads: int) -> ort.InferenceSession:
    o = ort.SessionOptions()
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.intra_op_num_threads = threads
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def export(module: torch.nn.Module, args: tuple[Any, ...], names: list[str], path: Path) -> None:
    axes = {n: {0: "batch", 1: f"{n[0]}_tokens"} for n in names}  # a's length is not b's
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), input_names=names,
                          output_names=["logit"], opset_version=17, dynamo=False,
                          dynamic_axes={**axes, "logit": {0: "batch"}})


def p50(run: Any, n: int) -> float:
    for _ in range(10):
        run()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=Path, help="train_verifier outputs: <name>.pt with split=K")
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    trained: dict[int, tuple[str, dict[str, Any]]] = {}
    for pt in sorted(args.models.glob("*.pt")) if args.models else []:
        saved = torch.load(pt, map_location="cpu")
        if saved["meta"]["config"].get("split"):
            trained[int(saved["meta"]["config"]["split"])] = (pt.stem, saved["state"])
    _, tok = load_base()
    rows, drifts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in (2, 3, 4):
            encoder, _ = load_base()
            model = SplitScorer(encoder, k).eval()
            name = "base weights"
            if k in trained:
                name, state = trained[k]
                missing = model.load_state_dict({n: v.float() for n, v in state.items()},
                                                strict=False)
                assert not missing.unexpected_keys, missing.unexpected_keys
            ea = tok([a for a, _ in PAIRS], padding=True, return_tensors="pt")
            eb = tok([b for _, b in PAIRS], padding=True, return_tensors="pt")
            with torch.inference_mode():
                sa = model.lower(ea["input_ids"], ea["attention_mask"])
                sb = model.lower(eb["input_ids"], eb["attention_mask"])
                want = model.joint(sa, ea["attention_mask"], sb, eb["attention_mask"]).numpy()
            jpath, rpath = Path(tmp) / f"joint{k}.onnx", Path(tmp) / f"rec{k}.onnx"
            export(Joint(model), (sa, ea["attention_mask"], sb, eb["attention_mask"]),
                   ["a", "a_mask", "b", "b_mask"], jpath)
            export(Recomputed(model), (ea["input_ids"], ea["attention_mask"], eb["input_ids"],
                                       eb["attention_mask"]), ["a_ids", "a_mask", "b_ids", "b_mask"],
                   rpath)
            for threads in (1, 2):
                per: dict[str, list[float]] = {"joint": [], "recomputed": []}
                joint, rec = session(jpath, threads), session(rpath, threads)
                got = joint.run(None, {"a": sa.numpy(), "a_mask": ea["attention_mask"].numpy(),
                                       "b": sb.numpy(), "b_mask": eb["attention_mask"].numpy()})[0]
                drifts.append(float(np.abs(got - want).max()))
                for i in range(len(PAIRS)):
                    la, lb = int(ea["attention_mask"][i].sum()), int(eb["attention_mask"][i].sum())
                    one = {"a": sa[i:i + 1, :la].numpy(),
                           "a_mask": ea["attention_mask"][i:i + 1, :la].numpy(),
                           "b": sb[i:i + 1, :lb].numpy(),
                           "b_mask": eb["attention_mask"][i:i + 1, :lb].numpy()}
                    ids = {"a_ids": ea["input_ids"][i:i + 1, :la].numpy(),
                           "a_mask": one["a_mask"], "b_ids": eb["input_ids"][i:i + 1, :lb].numpy(),
                           "b_mask": one["b_mask"]}
                    per["joint"].append(p50(lambda o=one, s=joint: s.run(None, o), args.n // len(PAIRS)))
                    per["recomputed"].append(
                        p50(lambda o=ids, s=rec: s.run(None, o), args.n // len(PAIRS)))
                rows.append((k, threads, name, statistics.median(per["joint"]),
                             statistics.median(per["recomputed"])))
    full = {}
    for threads in (1, 2):
        model = PairModel(ADAPTER, Settings().embedding_cache_dir, threads=threads)
        full[threads] = statistics.median(
            p50(lambda p=p, m=model: m.logits([p]), args.n // len(PAIRS)) for p in PAIRS)
    lines = [
        "## Split cross-encoder: what a lookup would pay (`benchmarks/verifier_split.py`)", "",
        stamp(), "",
        "A split model (`model.SplitScorer`, `train_verifier ... split=K`) reads each text alone "
        "through the embedder's first K layers — frozen, so they are the embedding pass's own "
        "states — and the two together only in the layers above. A lookup has the query's "
        "states from its embedding and can keep a stored entry's: it runs the joint part alone. "
        f"ONNX Runtime fp32 on this CPU, p50 ms of one short question pair ({len(PAIRS)} pairs, "
        "8–13 word pieces a text, the median of their p50s). *recomputed*: the same joint part "
        "with both texts' lower layers run in the same call (what it costs without kept "
        "states). The full cross-encoder the gateway ships, in the same run: "
        f"{full[1]:.2f} ms on 1 thread, {full[2]:.2f} ms on 2.", "",
        "| split at K | joint layers | threads | weights | joint part | × shipped | recomputed |",
        "|---:|---:|---:|---|---:|---:|---:|",
    ]
    for k, threads, name, joint, rec in rows:
        lines.append(f"| {k} | {6 - k} | {threads} | {name} | {joint:.2f} | "
                     f"{joint / full[threads]:.2f} | {rec:.2f} |")
    lines += ["", f"Largest difference of an exported joint part from torch: {max(drifts):.1e}."]
    run = Path(__file__).parent / "results" / "verifier_training_run16.json"
    if run.exists():  # what the trained split models learned (the verifier_training section)
        summary = json.loads(run.read_text())
        paws = {int(v["config"]["split"]): v["sets"]["paws_wiki_test"]["calibrated"]["p@r0.5"]
                for v in summary["variants"].values() if v["config"].get("split")}
        lines += ["", "What they learned (run16, `verifier_training` section), PAWS-Wiki test "
                  "precision at recall 0.5: " + ", ".join(f"split at {k}: {p:.3f}" for k, p in
                                                           sorted(paws.items()))
                  + f"; the cosine frontier {summary['cosine']['paws_wiki_test']['p@r0.5']:.3f}"
                  "; the full model of the same recipe (run15) 0.871. None is worth its saving."]
    write_section("verifier_split", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
