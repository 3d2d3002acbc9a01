"""The cross-encoder's GPU path (torch, fp32, CUDA graphs) — run here eagerly on the CPU, the
same forward its graphs capture — against the ONNX exports the CPU path runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from gateway.cache.verifier.calibrated import decide
from gateway.cache.verifier.learned import (
    ADAPTER,
    INT8_TOLERANCE,
    PROBES,
    LearnedVerifier,
    PairModel,
    load_combination,
    load_gate,
)
from gateway.cache.verifier.torch_pairs import verifier_device
from gateway.categories import Category, Verification
from gateway.config import Settings

pytest.importorskip("torch")

PAIRS = [*PROBES,
         ("Which language is spoken in Brazil?", "What language is spoken in Brazil?"),
         ("What is the capital of Brazil?", "What is the largest city of Brazil?"),
         ("Is Paris bigger than Lyon?", "Is Lyon bigger than Paris?")]


def test_the_torch_path_scores_as_the_onnx_export_and_alone_as_in_a_batch(
        tmp_path: Path) -> None:
    from gateway.cache.verifier.torch_pairs import TorchPairModel

    on_torch = TorchPairModel(ADAPTER, "cpu")
    seen: list[int] = []
    on_torch.observe = lambda pairs, seconds: seen.append(pairs)
    got = on_torch.logits(PAIRS)
    assert seen == [len(PAIRS)]  # one batch, one run reported
    fp32 = PairModel(ADAPTER, tmp_path, int8=False).logits(PAIRS)
    assert np.abs(got - fp32).max() < 1e-3, (got, fp32)
    # the int8 model the gate was fitted on strays from it within the quantization's tolerance
    assert np.abs(got - PairModel(ADAPTER, tmp_path).logits(PAIRS)).max() < INT8_TOLERANCE
    assert on_torch.logits(PAIRS[-1:])[0] == pytest.approx(got[-1], abs=1e-4)  # float rounding
    assert on_torch.logits([]).shape == (0,)


def test_the_gate_reads_the_torch_path_as_it_reads_the_cpu_one() -> None:
    from gateway.cache.verifier.torch_pairs import TorchPairModel

    learned = LearnedVerifier(TorchPairModel(ADAPTER, "cpu"), load_combination(), load_gate())
    cat = Category(name="f", description="d", exemplars=[f"q{i}" for i in range(15)],
                   threshold=0.8, ttl_seconds=60, quota=10,
                   verification=Verification(cross_encoder=True))
    same = decide("Which language is spoken in Brazil?", "What language is spoken in Brazil?",
                  0.95, cat, cat, None, learned)
    other = decide("What is the capital of Brazil?", "What is the largest city of Brazil?",
                   0.9, cat, cat, None, learned)
    assert same.ok and not other.ok and other.reason == "cross_encoder"


def test_the_verifier_device_setting() -> None:
    import torch

    assert verifier_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert verifier_device("cuda:1") == "cuda:1"
    assert Settings(verifier_device="cuda:1").verifier_device == "cuda:1"
    with pytest.raises(ValidationError):
        Settings(verifier_device="gpu")
