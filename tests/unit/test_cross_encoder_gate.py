"""The cross-encoder beside the slot rules (``verification.cross_encoder``): it refuses what it
judges different although no rule fired, overrules a rule's veto where it is sure — never for
the kinds it must not overrule — leaves pairs it cannot judge to the rules, and refuses when
there is no model to read."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cache.verifier.calibrated import decide, load_calibrator, needs_learned
from gateway.cache.verifier.learned import GATE, Gate, load_gate
from gateway.categories import Category, Verification, load_categories
from gateway.resources import categories_dir

GATE_POINTS = Gate(refuse_below=4.0, overrule_from=6.0, never_overruled=("numbers",), card={})


def _cat(name: str = "c", **verification: object) -> Category:
    return Category(name=name, description="d", exemplars=[f"q{i}" for i in range(15)],
                    threshold=0.8, ttl_seconds=60, quota=10,
                    verification=Verification(**verification))  # type: ignore[arg-type]


class Judge:
    """A cross-encoder that says one logit (None: it cannot judge the pair) and counts calls."""

    gate = GATE_POINTS

    def __init__(self, logit: float | None):
        self.value, self.calls = logit, 0

    def logit(self, query: str, candidate: str) -> float | None:
        self.calls += 1
        return self.value

    def probability(self, query: str, candidate: str, cosine: float) -> float:
        raise AssertionError("the gate beside the rules reads the logit, not a probability")


GATED = _cat(cross_encoder=True)
PLAIN = _cat("plain")
# the rules see nothing wrong here; the two ask different things
SAME_WORDS = ("What is the capital of Australia?", "What is the largest city in Australia?")
# the rules veto this paraphrase (entities: "US" taken for a name the other side lacks)
VETOED = ("Name the first US president", "Who was the first president of the United States?")
# a changed unit: the rules veto it, and no confidence of the model overrules that
UNIT = ("How many seconds are in 2 hours?", "How many minutes are in 2 hours?")


def _decide(pair: tuple[str, str], judge: Judge | None, cat: Category = GATED) -> tuple[bool, str | None]:
    v = decide(*pair, 0.9, cat, cat, load_calibrator(), judge)  # type: ignore[arg-type]
    return v.ok, v.reason


def test_below_its_gate_the_cross_encoder_refuses_what_the_rules_let_through() -> None:
    assert _decide(SAME_WORDS, Judge(None), PLAIN) == (True, None)   # the rules alone serve it
    assert _decide(SAME_WORDS, Judge(-1.2)) == (False, "cross_encoder")
    assert _decide(SAME_WORDS, Judge(4.0)) == (True, None)          # at the gate: served


def test_a_sure_cross_encoder_overrules_a_veto_and_an_unsure_one_does_not() -> None:
    assert _decide(VETOED, Judge(None), PLAIN) == (False, "entities")
    assert _decide(VETOED, Judge(9.0)) == (True, None)
    assert _decide(VETOED, Judge(5.0)) == (False, "entities")       # between the points
    assert _decide(VETOED, Judge(-3.0)) == (False, "entities")      # both refuse: the rule's reason


def test_a_kind_it_never_overrules_keeps_its_veto_however_sure_it_is() -> None:
    # its answer could not change the verdict there: the model is not run at all
    judge = Judge(12.0)
    assert _decide(UNIT, judge) == (False, "numbers") and judge.calls == 0
    judge = Judge(-3.0)
    assert _decide(VETOED, judge) == (False, "entities") and judge.calls == 1  # it could have
    # the kind counts even where another kind is the reason reported first
    both = ("Is 5 bigger than 3 or not?", "Is 5 bigger than 4?")
    assert _decide(both, Judge(12.0), _cat(cross_encoder=True, slots=["negation", "numbers"]))[0] \
        is False


def test_a_gate_can_hold_the_substitution_part_of_entities_and_overrule_the_rest() -> None:
    """``substitution`` (one content word put in place of another, the sentence kept) is held
    apart from the names the other side does not mention: a model that reads "copper" / "iron"
    as a rewording is not let overrule that, and still overrules the veto on "US"."""
    swapped = ("What is the melting point of copper?", "What is the melting point of iron?")
    holding = Gate(refuse_below=4.0, overrule_from=6.0,
                   never_overruled=("numbers", "substitution"), card={})
    sure = Judge(12.0)
    assert _decide(swapped, sure) == (True, None)       # the shipped points overrule both
    sure.gate = holding
    assert _decide(swapped, sure) == (False, "entities")
    assert _decide(VETOED, sure) == (True, None)
    # a category that does not check entities has no such veto to hold
    assert _decide(swapped, sure, _cat(cross_encoder=True, slots=["numbers"])) == (True, None)


def test_a_gate_that_holds_an_unknown_kind_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "gate.json"
    bad.write_text('{"refuse_below": 2, "overrule_from": 5, "never_overruled": ["substitutions"]}')
    with pytest.raises(ValueError, match="not a slot kind or a part of one"):
        load_gate(bad)


def test_a_pair_it_cannot_judge_keeps_the_rules_verdict() -> None:
    assert _decide(SAME_WORDS, Judge(None)) == (True, None)
    assert _decide(VETOED, Judge(None)) == (False, "entities")


def test_no_model_to_read_refuses_and_other_categories_never_ask() -> None:
    assert _decide(SAME_WORDS, None) == (False, "cross_encoder")
    judge = Judge(-5.0)
    assert _decide(SAME_WORDS, judge, PLAIN) == (True, None) and judge.calls == 0
    assert _decide((SAME_WORDS[0], SAME_WORDS[0]), judge) == (True, None)  # exact repeat
    assert judge.calls == 0
    # a category verifying by a probability: the gate steps aside, the probability decides
    pointed = _cat(cross_encoder=True, min_probability=0.5)
    assert not needs_learned(pointed) and needs_learned(GATED) and not needs_learned(PLAIN)
    disabled = _cat(cross_encoder=True, enabled=False)
    assert not needs_learned(disabled) and _decide(SAME_WORDS, judge, disabled) == (True, None)


def test_the_shipped_gate_and_categories() -> None:
    gate = load_gate()
    assert gate.refuse_below <= gate.overrule_from and "numbers" in gate.never_overruled
    assert gate.card["chosen_on"].startswith("calib by source")
    # on in every shipped category that serves semantic hits: the rules alone lie under the
    # cosine frontier on public pairs (verifier_gate), the rules with it nowhere
    shipped = load_categories(categories_dir())
    served = [c for c in shipped.values() if c.cacheable and c.verification.enabled]
    assert served and all(c.verification.cross_encoder for c in served)


def test_a_gate_whose_points_cross_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "gate.json"
    bad.write_text('{"refuse_below": 5, "overrule_from": 2}')
    with pytest.raises(ValueError, match="below refuse_below"):
        load_gate(bad)
    assert GATE.exists()
