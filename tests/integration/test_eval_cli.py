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
