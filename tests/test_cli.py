"""The command line on tiny models: outputs on disk, JSON benchmarks, one clear error line for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import patch_everywhere
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
    assert sum(summary["experts_per_block"]["spa_Latn"].values()) == 10
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
    assert "--k 100000 is larger than the number of mlp units (128: 2 blocks); choose k <= 128" in too_many.output


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
    unknown = runner.invoke(app, ["steer", "--experts", str(experts_dir), "--method", "magic"])
    assert unknown.exit_code == 2 and "unknown intervention method 'magic'; registered: force" in unknown.output
    setting = runner.invoke(app, ["steer", "--experts", str(experts_dir), "--set", "alpha=2"])
    assert setting.exit_code == 2 and "unknown key(s) ['alpha'] in [intervene]" in setting.output
    no_run = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert no_run.exit_code == 2 and "error:" in no_run.output


def test_experts_against_chosen_negatives(tmp_path: Path) -> None:
    args = ["experts", "--model", "tiny-gpt2", "--out", str(tmp_path), "--langs", "en,es,ja", "--per-lang", "10"]
    result = runner.invoke(app, [*args, "--k", "5", "--negatives", "en"])
    assert result.exit_code == 0, result.output
    scores = ExpertScores.load(tmp_path / "scores")
    assert scores.meta["negatives"] == ["eng_Latn"]
    assert json.loads((tmp_path / "summary.json").read_text())["settings"]["negatives"] == ["eng_Latn"]
    other = runner.invoke(app, [*args, "--k", "6"])  # another job into the same folder
    assert other.exit_code == 2 and "another config: k: 5 -> 6" in other.output and "--force" in other.output
    assert runner.invoke(app, [*args, "--k", "6", "--force"]).exit_code == 0


def _count_model_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from xlens.models import loading

    real, names = loading.load_model, []

    def counting(name: object = None, **kwargs: object) -> object:
        names.append(str(name))
        return real(name, **kwargs)  # type: ignore[arg-type]

    patch_everywhere(monkeypatch, loading, "load_model", counting)
    return names


def test_run_fails_at_once_on_a_default_k_that_does_not_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bare `xlens run --model tiny-gpt2` used to fail after 31 s: default k 1000 > the 128 units."""
    loads = _count_model_loads(monkeypatch)
    result = runner.invoke(app, ["run", "--model", "tiny-gpt2", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "intervene.k = [200]: k must be <= 128 (the number of mlp units: 2 blocks x 64)" in result.output
    assert loads == [] and not (tmp_path / "r" / "run.json").exists()
    bad = runner.invoke(app, ["run", "--model", "tiny-gpt2", "--k", "4,x", "--out", str(tmp_path / "r")])
    assert bad.exit_code == 2 and "--k must be comma-separated ints, got '4,x'" in bad.output
    typo = runner.invoke(app, ["run", "--model", "tiny-gpt2", "--set", "evaluate.retrieval=dot", "--k", "4"])
    assert typo.exit_code == 2 and "evaluate.retrieval = 'dot': must be one of cosine, csls, margin" in typo.output
    assert loads == []


def test_run_loads_the_model_once_and_refuses_another_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads = _count_model_loads(monkeypatch)
    args = ["run", "--model", "tiny-gpt2", "--langs", "en,es", "--k", "4", "--find-sentences", "10"]
    args += ["--eval-sentences", "8", "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, "--set", "intervene.value=on_mean"])
    assert result.exit_code == 0, result.output
    assert loads == ["tiny-gpt2"]  # the report's neuron cards use the run's model
    assert (tmp_path / "report.html").is_file() and "force(value=on_mean) spa_Latn k=4" in result.output
    again = runner.invoke(app, [*args, "--set", "intervene.value=on_p50"])
    assert again.exit_code == 2
    assert "another config: intervene.value: 'on_mean' -> 'on_p50'" in again.output and "--force" in again.output


def test_steer_checks_everything_before_loading_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = runner.invoke(
        app,
        [
            "experts",
            "--model",
            "tiny-gpt2",
            "--out",
            str(tmp_path / "e"),
            "--langs",
            "en,es",
            "--per-lang",
            "8",
            "--k",
            "10",
        ],
    )
    assert made.exit_code == 0, made.output
    loads = _count_model_loads(monkeypatch)
    base = ["steer", "--model", "tiny-gpt2", "--experts", str(tmp_path / "e"), "--lang", "es"]
    too_many = runner.invoke(app, [*base, "--k", "0,500"])
    assert too_many.exit_code == 2 and "k=500 is larger than the number of units (128)" in too_many.output
    no_prompts = runner.invoke(app, [*base, "--k", "0,4", "--prompts", str(tmp_path / "missing.txt")])
    assert no_prompts.exit_code == 2 and "missing.txt is not a file" in no_prompts.output
    unscored = runner.invoke(app, [*base[:-1], "ja", "--k", "0,4", "--eval-langs", "en"])
    assert unscored.exit_code == 2 and "jpn_Jpan was not scored" in unscored.output
    existing = tmp_path / "steer.json"
    existing.write_text("{}")
    refused = runner.invoke(app, [*base, "--k", "0,4", "--json", str(existing)])
    assert refused.exit_code == 2 and "steer.json exists: pass --force" in refused.output
    assert loads == [] and existing.read_text() == "{}"


@pytest.mark.parametrize(
    ("command", "text"),
    [(["sweep", "--help"], "[intervene] settings"), (["bench", "study", "--help"], "[evaluate] tasks")],
)
def test_help_keeps_config_section_names_in_brackets(command: list[str], text: str) -> None:
    result = runner.invoke(app, command)
    assert result.exit_code == 0
    assert text in " ".join(result.output.split())
