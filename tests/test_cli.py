"""The command line on tiny models: outputs on disk, JSON benchmarks, one clear error line for bad input."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from xlens.cli import app
from xlens.experts.sets import ExpertScores, ExpertSet

runner = CliRunner()


def test_info() -> None:
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "builtin_corpus" in result.output and "jpn_Jpan" in result.output


def test_info_check_runs_the_model() -> None:
    result = runner.invoke(app, ["info", "--check", "--model", "tiny-gpt2"])
    assert result.exit_code == 0, result.output
    assert "tiny-gpt2" in result.output and "corpus batch" in result.output


def test_experts_writes_sets_and_summary(tmp_path: Path) -> None:
    args = ["experts", "--model", "tiny-gpt2", "--out", str(tmp_path), "--langs", "en,es,ja", "--per-lang", "20"]
    result = runner.invoke(app, [*args, "--k", "10", "--lape"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [row["language"] for row in summary["languages"]] == ["eng_Latn", "spa_Latn", "jpn_Jpan"]
    assert summary["sentences_per_language"] == 20
    assert sum(summary["experts_per_layer"]["spa_Latn"].values()) == 10
    spanish = ExpertSet.load(tmp_path / "experts" / "spa_Latn")
    scores = ExpertScores.load(tmp_path / "scores")
    assert spanish.units.tolist() == scores.select("es", 10).units.tolist()
    assert set(summary["lape_units"]) == {"eng_Latn", "spa_Latn", "jpn_Jpan"}


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["experts", "--model", "tiny-gpt2", "--out", str(tmp_path), "--langs", "en,klingon"])
    assert result.exit_code == 2
    assert "error:" in result.output and "klingon" in result.output and "Traceback" not in result.output
    too_many = runner.invoke(
        app, ["experts", "--model", "tiny-gpt2", "--out", str(tmp_path), "--per-lang", "5", "--k", "100000"]
    )
    assert too_many.exit_code == 2
    assert "k=100000 is larger than the number of units (128)" in too_many.output


def test_bench_experts_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = runner.invoke(
        app, ["bench", "experts", "--json", str(out), "--model", "tiny-gpt2", "--per-lang", "10", "--langs", "en,es"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["units"] == 128 and report["sentences"] == 20
    assert report["scoring"]["max_abs_diff_vs_sklearn"] <= 1e-6
    assert report["scoring"]["sklearn_loop_units_timed"] == 128
    assert report["scoring"]["sklearn_loop_full_is_extrapolated"] is False
