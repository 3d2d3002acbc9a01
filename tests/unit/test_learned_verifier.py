"""The learned verifier's tooling: training pairs made as documented, and an adapter that,
merged into the packaged base weights, scores exactly as the model it was trained as."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from gateway.tools import question_pairs as qp
from gateway.tools import verifier_data as vd

QUESTIONS = ["How many people lived in Warsaw in 1939?", "Who founded the Muslim Brotherhood?",
             "When did the Yuan dynasty end?", "What is the capital of Poland?",
             "Where did Genghis Khan die?", "Is Mount Everest in Nepal?"]


def test_synthetic_pairs_change_one_thing_and_are_labeled() -> None:
    rows = vd.synthetic(QUESTIONS, random.Random(1), per_kind=10)
    kinds = {r["kind"] for r in rows}
    assert {"synthetic:number", "synthetic:question_word", "synthetic:entity",
            "synthetic:typing"} <= kinds
    for r in rows:
        assert r["a"] != r["b"] and r["source"] == "synthetic"
        assert r["same"] == (r["kind"] in ("synthetic:typing", "synthetic:moved",
                                           "synthetic:which_what"))
        if r["kind"] == "synthetic:number":
            assert "1939" in r["a"] and "1939" not in r["b"]


def test_a_question_word_swap_never_labels_which_and_what_as_different_questions() -> None:
    """"Which language is spoken in Brazil?" and "What language ..." ask the same: a model shown
    the one as a negative of the other (run15's data) refused them at logit -3.1."""
    for seed in range(40):
        b = vd._wh_swap("Which language is spoken in Brazil?", random.Random(seed))
        assert b is not None and b.split()[0] in ("Who", "When", "Where"), b
    rows = vd.synthetic([*QUESTIONS, "Which city is the capital of Poland?"], random.Random(1),
                        per_kind=10)
    swaps = [r for r in rows if r["kind"] == "synthetic:question_word"]
    assert swaps and all({r["a"].split()[0].lower(), r["b"].split()[0].lower()}
                         != {"which", "what"} for r in swaps)
    same = [(r["a"], r["b"], r["same"]) for r in rows if r["kind"] == "synthetic:which_what"]
    assert same == [("Which city is the capital of Poland?", "What city is the capital of Poland?",
                     True)]
    assert vd._which_what("What is the capital of Poland?") is None  # no noun after it


def test_a_moved_phrase_is_a_closing_place_or_time_put_first() -> None:
    assert vd._moved_phrase("How many people lived in Warsaw in 1939?") == \
        "In 1939, how many people lived in Warsaw?"
    assert vd._moved_phrase("Where did Genghis Khan die?") is None  # no closing phrase
    # a phrase with a verb is a clause, and a common noun may belong to the verb: left alone
    assert vd._moved_phrase("Which theory suggested people in the tropics were civilized?") is None
    assert vd._moved_phrase("What did the fossils found in the Burgess Shale lack?") is None
    assert vd._moved_phrase("Is Mount Everest in Nepal?") is None  # not a wh-question
    moved = [r for r in vd.synthetic(QUESTIONS, random.Random(1), per_kind=10)
             if r["kind"] == "synthetic:moved"]
    assert [(r["a"], r["same"]) for r in moved] == [("How many people lived in Warsaw in 1939?",
                                                     True)]


def test_the_words_a_disfluent_speaker_took_back_make_a_different_question() -> None:
    q = qp._reparandum_question
    assert q("What is the median temperature in the winter?",
             "What is the median temperature in the summer uh winter?") == \
        "What is the median temperature in the summer?"
    assert q("What does the Islamic State lack from the international community?",
             "What does Iraq I mean the Islamic State lack from the international community?") \
        == "What does Iraq lack from the international community?"
    assert q("When was the first Sino-Japanese War?",
             "When was the second no wait the first Sino-Japanese War?") == \
        "When was the second Sino-Japanese War?"
    # a restart (no words kept before it), a question word, fillers: no question made
    assert q("What part of a uniform must you wear?", "What tool er what part of a uniform "
             "must you wear?") is None
    assert q("What other industry is centered in Los Angeles?",
             "Which no what other industry is centered in Los Angeles?") is None
    assert q("What processes occur above the earth?", "What processes occur above the earth?") \
        is None  # nothing taken back
    rows = [{"a": "What processes occur above the earth?",
             "b": "What processes occur above the magma er earth?"},
            {"a": "Where do clinical pharmacists work with patients?",
             "b": "Where do physicians no clinical pharmacists work with patients?"}]
    made = qp.reparandum_negatives(rows, random.Random(0), limit=10)
    assert {(r["b"], r["same"], r["kind"]) for r in made} == {
        ("What processes occur above the magma?", False, "reparandum"),
        ("Where do physicians pharmacists work with patients?", False, "reparandum")}


def test_two_questions_one_word_apart_with_other_answers_are_a_negative() -> None:
    questions = [("Who ordered Loudoun to defend Louisbourg?", "q1"),
                 ("Who ordered Loudoun to attack Louisbourg?", "q2"),
                 ("who ordered loudoun to defend louisbourg?", "q3"),   # case alone: not a pair
                 ("Who ordered Loudoun to defend Louisbourg ?", "q1"),  # same question id
                 ("Who ordered Loudoun to defend the fort?", "q4"),     # two words apart
                 ("When was the first fort built?", "q5"),
                 ("When was the second fort built?", "q6")]
    made = qp.one_word_negatives(questions, random.Random(0), limit=10)
    assert all(r["same"] is False and r["kind"] == "one_word" for r in made)
    assert {frozenset((r["a"], r["b"])) for r in made} == {
        frozenset(("Who ordered Loudoun to defend Louisbourg?",
                   "Who ordered Loudoun to attack Louisbourg?")),
        frozenset(("who ordered loudoun to defend louisbourg?",
                   "Who ordered Loudoun to attack Louisbourg?")),
        frozenset(("Who ordered Loudoun to defend Louisbourg ?",
                   "Who ordered Loudoun to attack Louisbourg?")),
        frozenset(("When was the first fort built?", "When was the second fort built?"))}
    assert len(qp.one_word_negatives(questions, random.Random(0), limit=2)) == 2


def test_both_orders_show_each_pair_twice_an_epoch() -> None:
    from gateway.tools.train_verifier import parse_variant, shown_in_epoch

    assert parse_variant("b:both=1,epochs=10")[1]["both"] == 1
    assert parse_variant("b:epochs=10")[1]["both"] == 0
    rows = [{"a": f"a{i}", "b": f"b{i}"} for i in range(20)]
    both = shown_in_epoch(rows, True, random.Random(3))
    assert sorted((r["a"], f) for r, f in both) == sorted(
        (r["a"], f) for r in rows for f in (False, True))  # each pair once each way
    one = shown_in_epoch(rows, False, random.Random(3))
    assert sorted(r["a"] for r, _ in one) == sorted(r["a"] for r in rows)  # each pair once
    assert 0 < sum(f for _, f in one) < len(rows)  # some flipped, some not


def test_a_continued_run_starts_from_the_adapter_it_names() -> None:
    from gateway.tools.train_verifier import parse_variant, train

    _, cfg = parse_variant("c:init=/x/crossencoder.npz,full=1,epochs=1")
    assert cfg["init"] == "/x/crossencoder.npz"
    with pytest.raises(ValueError, match="full=1"):  # an adapter over a merged start loses it
        train([], {**cfg, "full": 0}, None, "cpu")


def test_mined_negatives_skip_the_same_question_and_near_copies() -> None:
    qs = [("What is the capital of Poland?", "1"), ("What is the capital of Poland ?", "2"),
          ("What is the largest city of Poland?", "3"), ("Who wrote Hamlet?", "4")]
    vecs = {"What is the capital of Poland?": [1.0, 0.0], "What is the capital of Poland ?":
            [1.0, 0.0], "What is the largest city of Poland?": [0.8, 0.6],
            "Who wrote Hamlet?": [-0.6, 0.8]}

    def encode(texts: list[str]) -> np.ndarray:
        return np.array([vecs[t] for t in texts])

    rows = qp.mined_negatives(qs, encode, random.Random(0), limit=10)
    pairs = {frozenset((r["a"], r["b"])) for r in rows}
    # cosine 1.0 (a copy) is never a negative; 0.8 is; 0.0 (another topic) is not near
    assert frozenset(("What is the capital of Poland?", "What is the largest city of Poland?")) \
        in pairs
    assert all("Hamlet" not in r["a"] + r["b"] for r in rows)
    assert all(r["kind"] == "mined" and r["same"] is False for r in rows)


def test_adapter_merged_into_the_base_scores_as_trained(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from gateway.cache.verifier.model import (
        PairScorer,
        add_lora,
        apply_adapter,
        export_adapter,
        load_base,
    )

    torch.manual_seed(0)
    encoder, tok = load_base()
    model = PairScorer(encoder)
    names = add_lora(model, rank=4, alpha=8)
    with torch.no_grad():  # as if trained: every update non-zero
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.02)
        model.prior.weight.fill_(6.0)
        model.prior.bias.fill_(-4.0)
    model.eval()
    enc = tok(["How do I sort a list?", "What is the capital of France?"],
              ["How can I sort a list?", "Which city is France's capital?"],
              return_tensors="pt", padding=True)
    cos = torch.tensor([0.93, 0.88])
    with torch.no_grad():
        want = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], cos)
    path = tmp_path / "adapter.npz"
    export_adapter(model, names, {"format": 1}, path)
    merged, _, meta = apply_adapter(path)
    with torch.no_grad():
        got = merged(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], cos)
    assert meta == {"format": 1}
    assert path.stat().st_size < 2_000_000  # rank 4: a small file over the packaged base
    # fp16 factors: equal to a few thousandths of a logit
    assert torch.allclose(got, want, atol=5e-3), (got, want)
    base_only, _ = load_base()
    assert not torch.allclose(merged.encoder.encoder.layer[0].attention.self.query.weight,
                              base_only.encoder.layer[0].attention.self.query.weight)


def test_a_full_fine_tune_compressed_to_an_adapter_scores_as_its_truncation(
        tmp_path: Path) -> None:
    """compress_full: at full rank the adapter reproduces the fine-tuned scorer; at a low rank
    it differs (the truncation is real), and either file, merged by apply_adapter, scores as
    the compressed scorer it came with; the word embeddings are never stored."""
    torch = pytest.importorskip("torch")
    from gateway.cache.verifier.model import PairScorer, apply_adapter, compress_full, load_base

    torch.manual_seed(0)
    encoder, tok = load_base()
    model = PairScorer(encoder).eval()
    with torch.no_grad():  # as if fully fine-tuned: every weight moved but the word embeddings
        for name, p in model.named_parameters():
            if "word_embeddings" not in name:
                p.add_(torch.randn_like(p) * 0.01)
    enc = tok(["How do I sort a list?"], ["How can I sort a list?"], return_tensors="pt")
    cos = torch.tensor([0.93])

    def score(m: PairScorer) -> float:
        with torch.no_grad():
            return float(m(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], cos))

    full = score(model)
    for rank, close in ((384, True), (2, False)):
        small, arrays = compress_full(model, None, rank)
        assert not any("word_embeddings" in k for k in arrays)
        assert (abs(score(small) - full) < 5e-3) == close, (rank, score(small), full)
        arrays["meta"] = np.array('{"format": 1}')
        path = tmp_path / f"r{rank}.npz"
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
        merged, _, _ = apply_adapter(path)
        assert abs(score(merged) - score(small)) < 1e-4


def test_a_variant_keeps_only_the_sources_and_kinds_it_names() -> None:
    from gateway.tools.train_verifier import parse_variant

    name, cfg = parse_variant("pd:keep=paws_wiki+disflqa:human,full=1,epochs=20,compress=32+64")
    assert (name, cfg["keep"], cfg["full"], cfg["epochs"], cfg["compress"]) == \
        ("pd", "paws_wiki,disflqa:human", 1, 20, "32,64")


def test_a_shallower_cross_encoder_reloads_with_its_own_depth(tmp_path: Path) -> None:
    """layers=3 trains on MiniLM's first three layers; its adapter says so and apply_adapter
    builds the same three-layer scorer (not the six-layer base with a partial update)."""
    torch = pytest.importorskip("torch")
    import json

    from gateway.cache.verifier.model import PairScorer, apply_adapter, compress_full, load_base

    torch.manual_seed(0)
    encoder, tok = load_base(None, 3)
    model = PairScorer(encoder).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "word_embeddings" not in name:
                p.add_(torch.randn_like(p) * 0.01)
    small, arrays = compress_full(model, None, 16)
    arrays["meta"] = np.array(json.dumps({"config": {"layers": 3}}))
    path = tmp_path / "shallow.npz"
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    merged, _, _ = apply_adapter(path)
    assert len(merged.encoder.encoder.layer) == 3
    enc = tok(["What is X?"], ["What's X?"], return_tensors="pt")
    with torch.no_grad():
        args = (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], torch.tensor([0.8]))
        assert abs(float(merged(*args)) - float(small(*args))) < 1e-4


def test_a_split_scorer_reads_each_text_as_the_embedder_does_and_trains_only_the_joint_layers(
        ) -> None:
    """SplitScorer's premise: below ``split`` each text's states are the embedding model's own
    hidden states for that text alone (so a lookup can take them from the embedding pass and
    from the stored candidate), and training leaves those layers as packaged."""
    torch = pytest.importorskip("torch")
    from gateway.cache.verifier.model import SplitScorer, load_base

    torch.manual_seed(0)
    encoder, tok = load_base()
    model = SplitScorer(encoder, split=3)
    reference, _ = load_base()
    a = tok(["How do I sort a list?", "What is the capital of France?"], padding=True,
            return_tensors="pt")
    b = tok(["How can I sort a list in place?", "Which city is France's capital?"],
            padding=True, return_tensors="pt")
    with torch.no_grad():
        own = reference(**a, output_hidden_states=True).hidden_states[3]
        lower = model.lower(a["input_ids"], a["attention_mask"])
    keep = a["attention_mask"].bool()
    assert torch.allclose(lower[keep], own[keep], atol=1e-5)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("encoder.encoder.layer.2.") for n in frozen)
    assert not any(n.startswith("encoder.encoder.layer.3.") for n in frozen)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    cos = torch.tensor([0.9, 0.8])
    for _ in range(2):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(a["input_ids"], a["attention_mask"], b["input_ids"], b["attention_mask"], cos),
            torch.tensor([1.0, 0.0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in frozen.items())
    assert not torch.equal(after["encoder.encoder.layer.5.output.dense.weight"],
                           reference.encoder.layer[5].output.dense.weight)
    # b's states carry a segment vector, trained with the joint layers: the order can be told
    assert float(after["segment"].detach().abs().sum()) > 0
