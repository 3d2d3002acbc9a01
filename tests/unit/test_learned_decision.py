"""The learned verifier in the decision: asked only by categories that opt in, refusing when it
cannot be read, and the packaged cross-encoder telling a word swap from a paraphrase where the
cosine cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from gateway.cache.verifier.calibrated import decide, load_calibrator, uses_learned
from gateway.cache.verifier.learned import Combination, Gate, LearnedVerifier, load_learned, overlap
from gateway.categories import Category, Verification
from gateway.embedding import SentenceTransformerEmbedder


def _cat(name: str, **verification: object) -> Category:
    return Category(name=name, description="d", exemplars=[f"q{i}" for i in range(15)],
                    threshold=0.8, ttl_seconds=60, quota=10,
                    verification=Verification(**verification))  # type: ignore[arg-type]


GATE_POINTS = Gate(refuse_below=4.0, overrule_from=6.0, never_overruled=(), card={})


class Fixed:
    """A scorer that says one probability and counts its calls."""

    def __init__(self, p: float):
        self.p, self.calls = p, 0

    def probability(self, query: str, candidate: str, cosine: float) -> float:
        self.calls += 1
        return self.p


def test_learned_without_an_operating_point_is_a_clear_error() -> None:
    with pytest.raises(ValidationError, match="learned needs an operating point"):
        Verification(learned=True)
    assert Verification(learned=True, max_wrong_rate=0.05).learned


def test_only_a_category_that_opts_in_is_decided_by_the_learned_verifier() -> None:
    q, c = "Is Paris bigger than Lyon?", "Is Lyon bigger than Paris?"
    learned_cat = _cat("a", learned=True, min_probability=0.9)
    plain_cat = _cat("b", min_probability=0.9)
    yes, no = Fixed(0.95), Fixed(0.10)
    assert decide(q, c, 0.97, learned_cat, learned_cat, load_calibrator(), yes).ok
    refused = decide(q, c, 0.97, learned_cat, learned_cat, load_calibrator(), no)
    assert not refused.ok and refused.reason == "probability" and refused.probability == 0.1
    # a plain category asks the calibrated verifier, never the learned one
    calibrated = Fixed(0.95)
    assert decide(q, c, 0.97, plain_cat, plain_cat, calibrated, no).ok  # type: ignore[arg-type]
    assert no.calls == 1 and calibrated.calls == 1
    # either category asking is enough; the stricter operating point still applies
    assert not decide(q, c, 0.97, plain_cat, learned_cat, calibrated, no).ok  # type: ignore[arg-type]
    assert uses_learned(plain_cat, learned_cat) and not uses_learned(plain_cat)
    # no learned model to read: refused, never served unverified
    assert not decide(q, c, 0.97, learned_cat, learned_cat, load_calibrator(), None).ok
    assert decide(q, q, 0.2, learned_cat, learned_cat, load_calibrator(), no).ok  # exact repeat


def test_the_model_is_not_run_where_the_texts_share_few_words() -> None:
    class Counting:
        calls = 0

        def logits(self, pairs: list[tuple[str, str]]) -> list[float]:
            Counting.calls += 1
            return [-50.0 for _ in pairs]

        def same_tokens(self, a: str, b: str) -> bool:
            return a.lower() == b.lower()

    comb = Combination(weight=0.01, scale=10.0, bias=-8.0, min_overlap=0.25, card={})
    v = LearnedVerifier(Counting(), comb, GATE_POINTS)  # type: ignore[arg-type]
    far = ("Strikethrough with GitHub Markdown", "how to cross out text on github")
    assert overlap(*far) < 0.25
    assert v.probability(*far, 0.9) == pytest.approx(comb.probability(0.9))
    assert Counting.calls == 0
    near = ("Is Paris bigger than Lyon?", "Is Lyon bigger than Paris?")
    assert overlap(*near) == 1.0
    assert v.probability(*near, 0.9) < comb.probability(0.9)
    assert Counting.calls == 1


def test_a_lookups_candidates_go_through_the_model_in_one_batch() -> None:
    batches: list[int] = []

    class Recording:
        def logits(self, pairs: list[tuple[str, str]]) -> list[float]:
            batches.append(len(pairs))
            return [float(len(b)) - 40.0 for _, b in pairs]  # any score that differs per pair

        def same_tokens(self, a: str, b: str) -> bool:
            return a.lower() == b.lower()

    comb = Combination(weight=0.01, scale=10.0, bias=-8.0, min_overlap=0.25, card={})
    primed = LearnedVerifier(Recording(), comb, GATE_POINTS)  # type: ignore[arg-type]
    cold = LearnedVerifier(Recording(), comb, GATE_POINTS)  # type: ignore[arg-type]
    q = "Is Paris bigger than Lyon?"
    cands = ["Is Lyon bigger than Paris?", "Is Paris larger than Lyon?",
             "Is Paris bigger than Lyon today?", "How do birds fly south?"]  # the last: no overlap
    primed.prime(q, cands)
    assert batches == [3]
    got = [primed.probability(q, c, 0.9) for c in cands]
    assert batches == [3]  # read from the batch, not run again
    batches.clear()
    assert got == [cold.probability(q, c, 0.9) for c in cands]  # the same, pair by pair
    assert batches == [1, 1, 1]


SWAPS = [  # (original, the same meaning reworded, the same words in an order that changes it)
    ("The company that bought Acme was founded by Jane Smith.",
     "Jane Smith founded the company that bought Acme.",
     "The company that Jane Smith bought was founded by Acme."),
    ("Tom sold his old car to his brother in 2019.",
     "In 2019 Tom sold his old car to his brother.",
     "In 2019 his brother sold his old car to Tom."),
    ("The river flows from the lake into the sea.",
     "From the lake, the river flows into the sea.",
     "The river flows from the sea into the lake."),
    ("Who was the teacher of Aristotle?", "Who taught Aristotle?",
     "Who was Aristotle the teacher of?"),
    ("Is a kilogram of iron heavier than a kilogram of feathers?",
     "Is a kilogram of iron heavier than a kilogram of feathers or not?",
     "Is a kilogram of feathers heavier than a kilogram of iron?"),
    ("How do I convert a string to an int in Python?",
     "How can I convert a string into an int in Python?",
     "How do I convert an int to a string in Python?"),
    ("Does the train leave Boston for Chicago at noon?",
     "At noon, does the train leave Boston for Chicago?",
     "Does the train leave Chicago for Boston at noon?"),
]


def test_the_packaged_cross_encoder_tells_a_swap_from_a_paraphrase(
        tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    """Sentences written for this test (from no training set): does the reworded text get a
    higher score than the reordered one? The cosine sees nearly the same words in both and
    mostly prefers the swap; the learned probability, at the same cosines, mostly does not."""
    pytest.importorskip("torch")
    learned = load_learned(tmp_path)
    by_cosine = by_learned = 0
    for original, paraphrase, swap in SWAPS:
        v = embedder.encode([original, paraphrase, swap])
        cos_p, cos_s = float(v[0] @ v[1]), float(v[0] @ v[2])
        by_cosine += cos_p > cos_s
        by_learned += learned.probability(original, paraphrase, cos_p) > \
            learned.probability(original, swap, cos_s)
    assert by_learned >= 5 and by_learned >= by_cosine + 2, (by_learned, by_cosine)
    # the ONNX export is cached: a second load does not export again
    files = sorted(p.name for p in tmp_path.iterdir())
    load_learned(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == files


def test_an_export_that_computes_otherwise_than_its_model_is_refused_and_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    from gateway.cache.verifier import learned

    real = learned.PairModel._export

    def off_by_one(self: learned.PairModel, adapter: Path, path: Path) -> object:
        return real(self, adapter, path) + 1.0  # as if the graph lost a bias

    monkeypatch.setattr(learned.PairModel, "_export", off_by_one)
    with pytest.raises(ValueError, match="ONNX export differs"):
        learned.PairModel(learned.ADAPTER, tmp_path)
    assert not list(tmp_path.glob("*.onnx"))  # not left for the next start to trust
    monkeypatch.setattr(learned.PairModel, "_export", real)
    assert learned.PairModel(learned.ADAPTER, tmp_path).logits([("a", "b")]).shape == (1,)


def test_the_gateway_runs_the_cross_encoder_in_int8_ranking_pairs_as_fp32_does(
        tmp_path: Path) -> None:
    """What runs is the export with int8 weights (cached beside the fp32 one): on the probes its
    logits stray from fp32's within the tolerance, and it orders pairs written for this test
    (rewordings, swapped order) as fp32 does, most of them a few tenths of a logit apart."""
    pytest.importorskip("torch")
    from gateway.cache.verifier import learned

    model = learned.PairModel(learned.ADAPTER, tmp_path)
    exact = learned.PairModel(learned.ADAPTER, tmp_path, int8=False)
    assert model.int8 and len(list(tmp_path.glob("crossencoder-*-int8-*.onnx"))) == 1
    assert "MatMulInteger" in _ops(model.path) and "MatMulInteger" not in _ops(exact.path)
    probes = model.logits(learned.PROBES) - exact.logits(learned.PROBES)
    assert float(abs(probes).max()) <= learned.INT8_TOLERANCE
    pairs = [(a, b) for a, b, _ in SWAPS] + [(a, s) for a, _, s in SWAPS]
    got, want = model.logits(pairs), exact.logits(pairs)
    assert float(np.median(abs(got - want))) < 0.75  # a pair now and then strays further
    order_got, order_want = got.argsort().argsort(), want.argsort().argsort()
    n = len(pairs)  # Spearman's rank correlation
    rho = 1 - 6 * float(((order_got - order_want) ** 2).sum()) / (n * (n * n - 1))
    assert rho > 0.9, rho


def test_a_quantization_that_strays_too_far_is_not_cached_and_fp32_runs_instead(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen on an Intel Xeon with ONNX Runtime 1.30: int8 3.81 from fp32 on the probes. The
    verifier used to fail to load there, and every category with it served no semantic hit."""
    pytest.importorskip("torch")
    from gateway.cache.verifier import learned

    monkeypatch.setattr(learned, "INT8_TOLERANCE", 0.0)  # any int8 model strays a little
    strayed = learned.PairModel(learned.ADAPTER, tmp_path)
    assert not strayed.int8 and not list(tmp_path.glob("*int8*"))
    exact = learned.PairModel(learned.ADAPTER, tmp_path, int8=False)
    assert strayed.path == exact.path and "MatMulInteger" not in _ops(strayed.path)
    assert np.array_equal(strayed.logits(learned.PROBES), exact.logits(learned.PROBES))
    monkeypatch.setattr(learned, "INT8_TOLERANCE", 2.5)
    assert learned.PairModel(learned.ADAPTER, tmp_path).int8


def test_workers_starting_at_once_on_an_empty_cache_all_load_the_int8_model(
        tmp_path: Path) -> None:
    """`serve --workers 12` on a fresh machine: twelve processes exported and quantized at once,
    racing on the quantizer's intermediate file; each failed in its own way (a corrupt file, a
    missing one, a model without an ONNX domain)."""
    pytest.importorskip("torch")
    from concurrent.futures import ThreadPoolExecutor

    from gateway.cache.verifier import learned

    with ThreadPoolExecutor(3) as pool:
        models = list(pool.map(lambda _: learned.PairModel(learned.ADAPTER, tmp_path), range(3)))
    assert all(m.int8 for m in models)
    assert len({m.path for m in models}) == 1
    assert len(list(tmp_path.glob("*int8*.onnx"))) == 1
    want = models[0].logits(learned.PROBES)
    assert all(np.array_equal(m.logits(learned.PROBES), want) for m in models)


def _ops(path: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


# Questions written for this test (from no training set): each beside a text the model reads as
# the same word pieces (it is uncased and blind to spacing), and beside a different question.
RETYPED = [
    ("How many people lived in Lisbon in 1755?", "How many people lived in Lisbon in 1755 ?",
     "How many people lived in Lisbon in 1855?"),
    ("Who designed the Eiffel Tower in Paris?", "WHO DESIGNED THE EIFFEL TOWER IN PARIS?",
     "Who designed the Chrysler Building in New York?"),
    ("When did the Ottoman Empire capture Constantinople?",
     "when did the  ottoman empire capture constantinople ?",
     "Why did the Ottoman Empire capture Constantinople?"),
    ("What is the boiling point of water at sea level?",
     "What is the boiling point of water at sea level ?",
     "What is the freezing point of water at sea level?"),
]


def test_the_cross_encoder_does_not_judge_a_text_it_reads_as_the_same_word_pieces(
        tmp_path: Path) -> None:
    """The same question in other case or spacing is, to the model, the same word pieces: it
    has nothing to judge, and its logit there is noise (it never trained on such a pair; the
    shipped model scores "How many people lived in Lisbon in 1755?" against its own " ?" at
    −10.8). Beside the rules such a candidate is left to the rules — served — and a changed
    entity, number or question word is still refused."""
    pytest.importorskip("torch")
    learned = load_learned(tmp_path)
    cat = _cat("factual", cross_encoder=True)
    calibrator = load_calibrator()

    def served(q: str, c: str) -> bool:
        return decide(q, c, 0.9, cat, cat, calibrator, learned).ok

    for q, same, other in RETYPED:
        assert learned.model.same_tokens(q, same) and not learned.model.same_tokens(q, other)
        assert learned.logit(q, same) is None
        assert served(q, same), (q, same)
        assert not served(q, other), (q, other)
        assert learned.probability(q, same, 1.0) == 1.0


def test_fit_learned_scores_each_pair_as_the_gateway_does(tmp_path: Path) -> None:
    """The calibration is fitted and reported on what the gateway computes: a pair the model
    reads as the same word pieces has probability 1 there, so ``fit_learned`` neither runs
    the model on it nor fits on it, and reports it as served."""
    pytest.importorskip("torch")
    import numpy as np

    from gateway.tools.fit_learned import prepare, probabilities

    learned = load_learned(tmp_path)
    pairs = [(q, b, b == same) for q, same, other in RETYPED for b in (same, other)]
    rows = [{"a": a, "b": b, "same": s, "source": "t", "kind": "t"} for a, b, s in pairs]
    cosines = np.linspace(0.8, 0.95, len(rows))
    c, lg, j, _, same = prepare({"t": rows}, {"t": cosines}, learned.model, lambda _: None)["t"]
    assert same.tolist() == [learned.model.same_tokens(a, b) for a, b, _ in pairs]
    assert same.any() and not same.all()
    got = probabilities(learned.combination, c, lg, j, same)
    want = [learned.probability(a, b, float(x)) for (a, b, _), x in zip(pairs, cosines, strict=True)]
    assert np.allclose(got, want, atol=1e-4), (got, want)


WHICH_WHAT = [("What language is spoken in Brazil?", "Which language is spoken in Brazil?"),
              ("What ocean is the largest on Earth?", "Which ocean is the largest on Earth?"),
              ("What planet is closest to the Sun?", "Which planet is closest to the Sun?"),
              ("What team won the 1998 World Cup?", "Which team won the 1998 World Cup?")]


def test_the_packaged_cross_encoder_reads_which_and_what_as_the_same_question(
        tmp_path: Path) -> None:
    """Questions written for this test, asked with "what" and with "which", in both orders: the
    gate must not refuse them. Run15's model did (logit -3.1 to -2.0): its synthetic negatives
    had made "which" into "what" (verifier_data's question-word swap, fixed for run18). An
    attribute changed in the same frame is still refused."""
    pytest.importorskip("torch")
    learned = load_learned(tmp_path)
    pairs = WHICH_WHAT + [(b, a) for a, b in WHICH_WHAT]
    logits = learned.model.logits(pairs)
    assert float(logits.min()) >= learned.gate.refuse_below, logits
    other = learned.model.logits([("Which city is the capital of Brazil?",
                                   "Which city is the largest in Brazil?")])
    assert float(other[0]) < learned.gate.refuse_below, other
