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
