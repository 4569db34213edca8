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


def test_steer_and_report_commands(tmp_path: Path) -> None:
    experts_dir = tmp_path / "experts"
    made = runner.invoke(
        app,
        [
            "experts",
            "--model",
            "tiny-gpt2",
            "--out",
            str(experts_dir),
            "--langs",
            "en,es",
            "--per-lang",
            "20",
            "--k",
            "50",
        ],
    )
    assert made.exit_code == 0, made.output
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("My favourite food is\nTomorrow we will\n")
    out = tmp_path / "steer.json"
    args = ["steer", "--model", "tiny-gpt2", "--experts", str(experts_dir), "--lang", "es", "--k", "0,8"]
    result = runner.invoke(app, [*args, "--prompts", str(prompts), "--max-new-tokens", "3", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [run["k"] for run in report["runs"]] == [8]
    assert report["config"]["prompts"] == 2
    assert set(report["baseline"]["perplexity"]) == {"spa_Latn", "eng_Latn"}
    assert "target_rate" in result.output
    missing = runner.invoke(app, ["steer", "--model", "tiny-gpt2", "--lang", "es"])
    assert missing.exit_code == 2 and "needs --experts DIR" in missing.output
    no_run = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert no_run.exit_code == 2 and "error:" in no_run.output


def test_experts_against_chosen_negatives(tmp_path: Path) -> None:
    args = ["experts", "--model", "tiny-gpt2", "--out", str(tmp_path), "--langs", "en,es,ja", "--per-lang", "10"]
    result = runner.invoke(app, [*args, "--k", "5", "--negatives", "en"])
    assert result.exit_code == 0, result.output
    scores = ExpertScores.load(tmp_path / "scores")
    assert scores.meta["negatives"] == ["eng_Latn"]
    assert json.loads((tmp_path / "summary.json").read_text())["negatives"] == "en"
