"""`semcache eval` on the project's own labeled development set."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from gateway.cli import app

DEV = Path(__file__).parents[2] / "benchmarks" / "data" / "dev_pairs.jsonl"


def test_eval_reports_verifier_gain_on_dev_set(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["eval", str(DEV), "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["pairs"] >= 300
    cats = {c["name"]: c for c in report["categories"]}
    assert {"code", "math", "factual", "conversation", "finance_news", "creative",
            "general"} <= set(cats)
    # the verifier's job: precision ≥ 0.95 in every category, overall recall ≥ 0.6
    for name, c in cats.items():
        assert c["verified"]["precision"] >= 0.95, (name, c["verified"])
    assert report["overall_verified"]["recall"] >= 0.6
    assert report["overall_verified"]["precision"] > report["overall_similarity_only"]["precision"]
    assert len(cats["code"]["sweep"]) > 10


def test_eval_rejects_bad_pairs_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": "x"}\n')
    result = CliRunner().invoke(app, ["eval", str(bad)])
    assert result.exit_code != 0
    assert "bad.jsonl:1" in result.output


def test_eval_writes_plots(tmp_path: Path) -> None:
    plots = tmp_path / "plots"
    result = CliRunner().invoke(app, ["eval", str(DEV), "--out", str(tmp_path / "r.json"),
                                      "--plots", str(plots)])
    assert result.exit_code == 0, result.output
    pngs = sorted(p.name for p in plots.glob("*.png"))
    assert pngs == ["hit_rate_vs_threshold.png", "precision_recall.png"]
    assert all((plots / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_tune_writes_an_overlay_that_reaches_the_target(tmp_path: Path) -> None:
    from gateway.categories import load_categories
    from gateway.resources import categories_dir

    overlay = tmp_path / "overlay.yaml"
    result = CliRunner().invoke(app, ["tune", str(DEV), "--target-precision", "0.97",
                                      "--out", str(overlay)])
    assert result.exit_code == 0, result.output
    tuned = load_categories(categories_dir(), overlay)
    shipped = load_categories(categories_dir())
    assert any(tuned[n].threshold != shipped[n].threshold for n in shipped)
    # evaluating with the overlay reaches the target wherever tune said it did
    out = tmp_path / "after.json"
    result = CliRunner().invoke(app, ["eval", str(DEV), "--out", str(out), "--plots", "",
                                      "--overlay", str(overlay)])
    assert result.exit_code == 0, result.output
    for c in json.loads(out.read_text())["categories"]:
        assert c["verified"]["precision"] >= 0.97, c


def test_replay_in_process_reports_hits_and_precision(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    lines = []
    groups = [["What is the capital of Australia?", "Which city is the capital of Australia?"],
              ["How does photosynthesis work?", "Explain how photosynthesis works"],
              ["What is the capital of Austria?"]]
    for label, group in enumerate(groups):
        for q in group:
            lines.append(json.dumps({"query": q, "label": str(label)}))
    lines.append(json.dumps({"query": "Explain how photosynthesis works", "stream": True,
                             "label": "1"}))
    trace.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["replay", str(trace)])
    assert result.exit_code == 0, result.output
    all_row = next(line for line in result.output.splitlines() if line.startswith("all"))
    assert all_row.split()[-1] == "1.000"  # precision
    assert "50.0%" in all_row  # 3 hits (2 semantic, 1 exact streamed) of 6
    assert "errors: 0" in result.output


def test_replay_rejects_bad_trace(tmp_path: Path) -> None:
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"nothing": 1}\n')
    result = CliRunner().invoke(app, ["replay", str(bad)])
    assert result.exit_code != 0 and "t.jsonl:1" in result.output


def _pairs(tmp_path: Path, rows: list[dict[str, object]]) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_survives_many_thresholds_reaching_the_precision_target(tmp_path: Path) -> None:
    """Regression: with two thresholds at precision ≥ 0.95 and different scores the old
    code compared two Scores objects and crashed (TypeError) — README's public-data recipe."""
    rows = [{"a": a, "b": b, "same": True} for a, b in [
        ("How do I reverse a list in Python?", "How can I reverse a Python list?"),
        ("What is the capital of France?", "Which city is the capital of France?"),
        ("How do I boil an egg?", "What is the way to boil an egg?"),
        ("Why is the sky blue?", "Why does the sky look blue?"),
        ("How tall is Mount Everest?", "What is the height of Mount Everest?"),
    ]] + [{"a": "How do I boil an egg?", "b": "How do I fry an egg?", "same": False}]
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["eval", str(_pairs(tmp_path, rows)), "--out", str(out),
                                      "--plots", ""])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["best_global_threshold"]["threshold_for_p95"] >= 0.5
    lo, hi = report["overall_verified"]["precision_ci"]
    assert 0 <= lo <= report["overall_verified"]["precision"] <= hi <= 1
    assert "frontier" in result.output


def test_eval_counts_unreadable_texts_as_the_gateway_serves_them(tmp_path: Path) -> None:
    """'Is 🍕 healthy?' / 'Is 🍔 healthy?' embed identically (both emoji are [UNK]): the
    gateway serves such queries exact repeats only, so eval must not count a hit."""
    rows = [{"a": "Is 🍕 healthy?", "b": "Is 🍔 healthy?", "same": False, "category": "general"},
            {"a": "Is 🍕 healthy?", "b": "Is 🍕 healthy?", "same": True, "category": "general"}]
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["eval", str(_pairs(tmp_path, rows)), "--out", str(out),
                                      "--plots", ""])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["overall_verified"]["wrong_hits"] == 0
    assert report["overall_similarity_only"]["wrong_hits"] == 0
    assert report["overall_verified"]["hits"] == 1  # the exact repeat
    assert report["exact_only"] == 1


def test_eval_reports_the_cosine_frontier_beside_the_verifier(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["eval", str(DEV), "--out", str(out), "--plots", ""])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["overall_verified"]["recall"] > 0
    assert report["overall_frontier_precision"] is not None
    assert 0 < report["overall_frontier_precision"] <= 1
    points = report["frontier"]
    assert [p["recall"] for p in points] == sorted(p["recall"] for p in points)
    precisions = [p["precision"] for p in points if p["precision"] is not None]
    assert precisions == sorted(precisions, reverse=True)  # more recall never buys precision
    for c in report["categories"]:
        recall = c["verified"]["recall"]
        if recall == 0:
            assert c["frontier_precision"] is None
            continue
        # the frontier is the best any threshold does at that recall: at least every swept one
        swept = [s["precision"] for s in c["sweep"] if s["recall"] >= recall]
        assert c["frontier_precision"] >= max(swept, default=0.0), c["name"]
        assert c["frontier_precision"] <= 1
    assert all(w["a"] and w["b"] for w in report["wrong_hits_sample"])


def test_tune_max_wrong_rate_moves_categories_to_measured_operating_points(tmp_path: Path) -> None:
    from gateway.categories import load_categories
    from gateway.resources import categories_dir

    overlay = tmp_path / "overlay.yaml"
    result = CliRunner().invoke(app, ["tune", str(DEV), "--max-wrong-rate", "0.1",
                                      "--out", str(overlay)])
    assert result.exit_code == 0, result.output
    tuned = load_categories(categories_dir(), overlay)
    points = {n: c.verification.min_probability for n, c in tuned.items()
              if c.verification.min_probability is not None}
    assert points, result.output
    out = tmp_path / "after.json"
    result = CliRunner().invoke(app, ["eval", str(DEV), "--out", str(out), "--plots", "",
                                      "--overlay", str(overlay)])
    assert result.exit_code == 0, result.output
    for c in json.loads(out.read_text())["categories"]:
        if c["name"] in points:  # the bound is above the point estimate on the same pairs
            assert c["verified"]["precision"] >= 0.9, c


def test_tune_max_wrong_rate_says_when_a_category_has_too_few_pairs(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.yaml"
    # 2% with 95% confidence takes over a hundred served pairs without a wrong one; no category
    # of the ~60-pair-per-category dev set has them
    result = CliRunner().invoke(app, ["tune", str(DEV), "--max-wrong-rate", "0.02",
                                      "--out", str(overlay)])
    assert result.exit_code == 0, result.output
    assert "too few pairs: 133 served pairs" in result.output
    assert "min_probability" not in overlay.read_text()
