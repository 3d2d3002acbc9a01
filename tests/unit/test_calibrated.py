"""The calibrated verifier: its packaged model, its decision beside the rules, and the operating
points `semcache tune --max-wrong-rate` picks with a confidence bound."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.cache.verifier.calibrated import (
    FEATURES,
    Calibrator,
    decide,
    features,
    load_calibrator,
    min_probability,
)
from gateway.categories import Category, Verification
from gateway.tools.evaluation import CategoryReport, Report, Scores
from gateway.tools.tuning import choose_operating_points, needed_for


def _cat(name: str, **verification: object) -> Category:
    return Category(name=name, description="d", exemplars=[f"q{i}" for i in range(15)],
                    threshold=0.8, ttl_seconds=60, quota=10,
                    verification=Verification(**verification))  # type: ignore[arg-type]


def test_packaged_model_loads_with_its_data_card() -> None:
    model = load_calibrator()
    assert len(model.weights) == len(FEATURES)
    assert model.card["selected"][0] == "cosine"
    assert "paws_wiki_test" in model.card["sets"]


def test_probability_grows_with_the_cosine_and_a_swapped_relation_lowers_it() -> None:
    model = load_calibrator()
    a, b = "convert a string to an int in python", "convert an int to a string in python"
    assert features(a, b, 0.95)[FEATURES.index("relations")] == 1.0
    assert model.probability(a, "how do I convert a string into an int in python", 0.95) > \
        model.probability(a, b, 0.95)
    para = "how do I convert a string into an int in python"
    assert model.probability(a, para, 0.9) < model.probability(a, para, 0.97)
    assert model.probability(a, a, 0.2) == 1.0  # an exact repeat


def test_an_operating_point_decides_by_probability() -> None:
    model = load_calibrator()
    q, c = "how do I reverse a list in python", "how can I reverse a python list"
    p = model.probability(q, c, 0.93)
    cat_low, cat_high = _cat("a", min_probability=p - 0.01), _cat("b", min_probability=p + 0.01)
    assert decide(q, c, 0.93, cat_low, cat_low, model).ok
    refused = decide(q, c, 0.93, cat_high, cat_high, model)
    assert not refused.ok and refused.reason == "probability" and refused.probability == round(p, 6)
    assert not decide(q, c, 0.93, cat_low, cat_high, model).ok   # the stricter of the two
    assert not decide(q, c, 0.93, cat_low, cat_low, None).ok     # no model: never unverified


def test_rules_still_veto_for_a_category_without_an_operating_point() -> None:
    model = load_calibrator()
    q, c = "sort a list ascending in python", "sort a list descending in python"
    calibrated, ruled = _cat("a", min_probability=0.0), _cat("b")
    assert decide(q, c, 0.97, calibrated, calibrated, model).ok
    assert decide(q, c, 0.97, calibrated, ruled, model).reason == "contrast"
    assert decide(q, c, 0.97, _cat("c", enabled=False), _cat("c", enabled=False), model).ok


def test_max_wrong_rate_is_a_probability_floor_and_min_probability_wins() -> None:
    assert min_probability(_cat("a", max_wrong_rate=0.05), _cat("b")) == pytest.approx(0.95)
    assert min_probability(_cat("a", max_wrong_rate=0.05, min_probability=0.7),
                           _cat("a", max_wrong_rate=0.05, min_probability=0.7)) == 0.7
    assert min_probability(_cat("a"), _cat("b")) is None
    for bad in ({"max_wrong_rate": 0.0}, {"max_wrong_rate": 1.0}, {"min_probability": 1.5}):
        with pytest.raises(ValidationError):
            Verification(**bad)  # type: ignore[arg-type]


def test_a_model_of_other_features_is_refused(tmp_path: Path) -> None:
    data = load_calibrator().to_json()
    data["features"] = data["features"][:-1]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="train_calibrator"):
        Calibrator.from_json(json.loads(path.read_text()))


def _report(candidates: list[tuple[str, float, bool]], positives: int) -> Report:
    s = Scores(1.0, 1.0, 1.0, 0, 0)
    cat = CategoryReport("code", len(candidates), positives, 0.8, s, s)
    return Report(len(candidates), [cat], s, s, {}, 0.0, candidates=candidates)


def test_operating_point_is_bounded_with_confidence_not_the_point_estimate() -> None:
    assert needed_for(0.02) == 133
    # 100 right pairs: a perfect point estimate, yet not enough to promise 2%
    pt = choose_operating_points(_report([("code", 0.9, True)] * 100, 100), 0.02)[0]
    assert pt.min_probability is None and pt.needed == 133
    # 300 right pairs high, then wrong ones mixed in lower down: the cut-off stops above them
    cands = [("code", 0.9 - i * 0.001, True) for i in range(300)]
    cands += [("code", 0.5 - i * 0.001, i % 2 == 0) for i in range(100)]
    pt = choose_operating_points(_report(cands, 350), 0.02)[0]
    assert pt.min_probability is not None and pt.wrong_upper <= 0.02
    assert pt.min_probability > 0.45 and pt.served >= 300
    assert pt.recall == pytest.approx((pt.served - pt.wrong) / 350, abs=1e-4)
