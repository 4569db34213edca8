"""Tasks as plug-ins of one study: the registry, a toy task added as one file, the built-in mining and pivot-pair
retrieval against brute-force references, one forward pass shared by tasks, validity, and bad input named before
any model loads."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import patch_everywhere
from scipy.stats import pearsonr, spearmanr
from toy_task import Norms
from typer.testing import CliRunner

import xlens
import xlens.runs.executors
from xlens.cli import app
from xlens.comparisons import Counts
from xlens.config import ExperimentConfig
from xlens.data.mining import load_bucc, mining_set, write_bucc
from xlens.data.splits import load_splits
from xlens.embeddings import sentence_embeddings
from xlens.errors import ConfigError, CorpusError, InputError, ResultsError
from xlens.evaluation import Task, register_task, task_class
from xlens.metrics.mining import best_threshold, mine, mining_scores
from xlens.metrics.retrieval import retrieval_ranks
from xlens.models import LensModel
from xlens.runs.results import RunResults
from xlens.runs.study import run_experiment

runner = CliRunner()
BASE: dict[str, Any] = {
    "model": "tiny-gpt2",
    "languages": ["en", "es", "de"],
    "find": {"sentences": 16},
    "intervene": {"method": "force", "k": [8]},
    "controls": {"random": True, "seeds": 2},
    "evaluate": {"sentences": 30},
    "stats": {"resamples": 200},
}


def _config(**evaluate: Any) -> ExperimentConfig:
    return ExperimentConfig.from_dict({**BASE, "evaluate": {**BASE["evaluate"], **evaluate}})


def _no_model(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a model was loaded before the bad input was named")


# --- the registry ---------------------------------------------------------------------------------------------


def test_the_builtin_tasks_and_a_toy_task_are_listed() -> None:
    assert xlens.tasks()[:5] == ("retrieval", "mining", "transfer", "translation", "fidelity")
    assert "norms" in xlens.tasks() and task_class("norms") is Norms
    for name in xlens.tasks():
        assert task_class(name).name == name


def test_a_plugin_cannot_take_a_builtin_or_registered_name() -> None:
    with pytest.raises(InputError, match="task 'mining' is built into xlens"):
        register_task(type("Mining", (Task,), {"name": "mining", "__module__": "mine"}))
    with pytest.raises(InputError, match=r"task 'norms' is already registered by toy_task\.Norms"):
        register_task(type("Other", (Task,), {"name": "norms", "__module__": "elsewhere"}))


def test_the_toy_task_runs_in_a_study_with_its_settings_and_controls(tiny_gpt2: LensModel, tmp_path: Path) -> None:
    config = _config(tasks=["retrieval", "norms"], norms={"scale": 2.0}, layers=[1, 2])
    results = run_experiment(config, tmp_path / "run", model=tiny_gpt2, progress=False)
    norms = results.task_tables["norms"]
    assert len(norms) == len(results.conditions) * 2
    # The table's norms are those of the run's own embeddings, scaled as the sub-table says.
    emb = results.embeddings(results.interventions[0])
    assert emb is not None
    want = emb.norm(dim=-1).mean(dim=0) * 2.0
    got = norms[norms["condition"] == results.interventions[0].label]["norm"].to_numpy()
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5)
    table = results.comparison(metric="norm", task="norms", layers=[1, 2])
    assert set(table["layer"]) == {1, 2} and "diff_vs_random" in table
    for row in table.itertuples():
        assert row.diff_vs_baseline == pytest.approx(row.value - row.baseline, abs=1e-5)
    assert set(results.differences["task"]) == {"retrieval", "norms"}


def test_a_stray_sub_table_and_a_task_without_settings_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patch_everywhere(monkeypatch, xlens.runs.executors, "load", _no_model)
    with pytest.raises(ConfigError, match=r"\[evaluate.norms\] is no sub-table of a task of evaluate.tasks"):
        run_experiment(_config(norms={"scale": 2.0}), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match=r"unknown task 'nope' in evaluate\.tasks; tasks: retrieval, mining"):
        run_experiment(_config(tasks=["retrieval", "nope"]), tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['shots'\] in \[evaluate.mining\]; allowed: corpus"):
        _config(tasks=["mining"], mining={"shots": 3})
    with pytest.raises(ConfigError, match=r"task settings are sub-tables of \[evaluate\] now: \[transfer\]"):
        ExperimentConfig.from_dict({"transfer": {"source": "en"}})
    with pytest.raises(ConfigError, match=r"evaluate\.tasks = \[\]"):
        _config(tasks=[])


# --- mining and pivot pairs against brute force ---------------------------------------------------------------


def test_mining_built_from_the_evaluation_split_matches_a_brute_force_run(tiny_gpt2: LensModel, tmp_path: Path) -> None:
    config = _config(tasks=["retrieval", "mining"], layers=[2], mining={"gold": 8, "distractors": 3, "k": 3})
    results = run_experiment(config, tmp_path / "run", model=tiny_gpt2, progress=False)
    table = results.table("mining")
    assert set(table["src"]) == {"spa_Latn", "deu_Latn"} and set(table["tgt"]) == {"eng_Latn"}
    splits = load_splits(config)
    task = task_class("mining")(config.evaluate.mining)
    task.prepare(config, splits)
    for lang in ("spa_Latn", "deu_Latn"):
        train, test = task.parts[lang]["train"], task.parts[lang]["test"]
        assert len(test.gold) == 8 and len(test.src_texts) == 11 and not set(train.src_texts) & set(test.src_texts)

        def embed(texts: list[str]) -> torch.Tensor:
            return sentence_embeddings(tiny_gpt2, texts, layers=[2], progress=False)[:, 0]

        threshold = best_threshold(mine(embed(train.src_texts), embed(train.tgt_texts), 3), train.gold_indices())
        got = mining_scores(mine(embed(test.src_texts), embed(test.tgt_texts), 3), test.gold_indices(), threshold)
        row = table[table["src"] == lang].iloc[0]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((got.precision, got.recall, got.f1))
        assert row["margin_threshold"] == pytest.approx(threshold)
    assert {"decision"} == set(results.differences.query("task == 'mining'")["metric"])


def test_mining_reads_a_bucc_folder_and_names_a_bad_gold_file(
    tiny_gpt2: LensModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = load_splits(_config()).eval
    bucc = tmp_path / "bucc"
    for split, seed in (("sample", 0), ("training", 1)):
        write_bucc(mining_set(corpus, "es", "en", 10, 3, seed=seed), bucc, split)
    config = _config(tasks=["mining"], layers=[1], mining={"corpus": f"bucc:{bucc}", "languages": ["es"]})
    results = run_experiment(config, tmp_path / "run", model=tiny_gpt2, progress=False)
    assert results.table("mining")["gold"].tolist() == [10]
    gold = bucc / "es-en.training.gold"
    gold.write_text(gold.read_text(encoding="utf-8") + "es-999999\ten-999999\n", encoding="utf-8")
    with pytest.raises(CorpusError):
        load_bucc(bucc, "es", "training")
    patch_everywhere(monkeypatch, xlens.runs.executors, "load", _no_model)
    with pytest.raises(CorpusError, match="gold pair"):
        run_experiment(config, tmp_path / "bad", progress=False)
    with pytest.raises(ConfigError, match="gold \\+ 2 x distractors = 40 sentences per part"):
        run_experiment(
            _config(tasks=["mining"], mining={"gold": 20, "distractors": 10}), tmp_path / "c", progress=False
        )


def _pivot_folder(corpus: Any, where: Path, shuffle: bool = False) -> Path:
    """A Tatoeba-layout folder: spa-eng and deu-eng, each with its own English side (reversed when shuffled)."""
    where.mkdir()
    for lang, iso in (("spa_Latn", "spa"), ("deu_Latn", "deu")):
        own = list(corpus[lang])[:12]
        english = list(corpus["eng_Latn"])[:12]
        if shuffle:
            english = english[::-1]
        (where / f"tatoeba.{iso}-eng.{iso}").write_text("\n".join(own) + "\n", encoding="utf-8")
        (where / f"tatoeba.{iso}-eng.eng").write_text("\n".join(english) + "\n", encoding="utf-8")
    return where


def test_pivot_pair_retrieval_matches_brute_force_and_a_shuffled_pivot_fails(
    tiny_gpt2: LensModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = load_splits(_config()).eval
    for shuffle in (False, True):
        folder = _pivot_folder(corpus, tmp_path / f"pivot-{shuffle}", shuffle)
        config = _config(layers=[2], pivot_pairs=str(folder))
        results = run_experiment(config, tmp_path / f"run-{shuffle}", model=tiny_gpt2, progress=False)
        pivot = results.table("pivot")
        assert len(pivot) == 4  # two pairs, both directions
        for lang in ("spa_Latn", "deu_Latn"):
            own = sentence_embeddings(tiny_gpt2, list(corpus[lang])[:12], layers=[2], progress=False)[:, 0]
            english = list(corpus["eng_Latn"])[:12]
            eng = sentence_embeddings(tiny_gpt2, english[::-1] if shuffle else english, layers=[2], progress=False)
            ranks = retrieval_ranks(own.double(), eng[:, 0].double())
            row = pivot[(pivot["src"] == lang) & (pivot["tgt"] == "eng_Latn")].iloc[0]
            assert row["top1"] == pytest.approx(float((ranks == 1).double().mean()))
        if shuffle:  # the pivot side no longer translates its pair: only the middle row can still match
            assert pivot["top1"].max() <= 1 / 12 + 1e-9
    shutil.rmtree(tmp_path / "pivot-True")
    (tmp_path / "lonely").mkdir()
    (tmp_path / "lonely" / "tatoeba.spa-eng.spa").write_text("hola\n", encoding="utf-8")
    patch_everywhere(monkeypatch, xlens.runs.executors, "load", _no_model)
    with pytest.raises(CorpusError):
        run_experiment(_config(pivot_pairs=str(tmp_path / "lonely")), tmp_path / "bad", progress=False)


# --- one forward pass, caching, validity ------------------------------------------------------------------------


def test_a_task_added_to_a_study_reuses_what_was_measured(tiny_gpt2: LensModel, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = run_experiment(_config(layers=[2]), out, model=tiny_gpt2, progress=False)
    kept = {p: p.stat().st_mtime_ns for p in (out / "cache").rglob("*") if p.is_file()}
    calls = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return sentence_embeddings(*args, **kwargs)

    import xlens.evaluation.base

    xlens.evaluation.base.sentence_embeddings = counted
    try:
        second = run_experiment(
            _config(layers=[2], tasks=["retrieval", "mining"], mining={"gold": 8, "distractors": 3}),
            out,
            model=tiny_gpt2,
            progress=False,
            force=True,
        )
    finally:
        xlens.evaluation.base.sentence_embeddings = sentence_embeddings
    assert calls == []  # mining read the retrieval task's embeddings of the evaluation split
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    pd.testing.assert_frame_equal(first.retrieval, second.retrieval)
    assert not second.table("mining").empty


def test_validity_matches_scipy_on_the_per_language_values(tiny_gpt2: LensModel, tmp_path: Path) -> None:
    config = _config(layers=[1, 2], tasks=["retrieval", "mining"], mining={"gold": 8, "distractors": 3})
    config = config.override({"languages": ["en", "es", "de", "fr", "ja"]})
    results = run_experiment(config, tmp_path / "run", model=tiny_gpt2, progress=False)
    table = results.validity("retrieval.mrr", "mining.f1", layers=[2])
    retrieval: Any = results.retrieval
    base = retrieval[(retrieval["condition"] == "baseline") & (retrieval["layer"] == 2) & (retrieval["mode"] == "both")]
    mining: Any = results.table("mining")
    mining = mining[mining["layer"] == 2].set_index("src")["f1"]
    langs = list(mining.index)
    x = [pd.concat([base[base["src"] == lang], base[base["tgt"] == lang]])["mrr"].mean() for lang in langs]
    row = table[table["condition"] == "baseline"].iloc[0]
    assert row["points"] == 4
    assert row["pearson"] == pytest.approx(pearsonr(x, mining.to_numpy()).statistic)
    assert row["spearman"] == pytest.approx(spearmanr(x, mining.to_numpy()).statistic)
    assert row["pearson_low"] <= row["pearson"] <= row["pearson_high"]
    with pytest.raises(ResultsError, match=r"'transfer\.accuracy': write task\.metric with a task of this run"):
        results.validity("retrieval.top1", "transfer.accuracy")
    with pytest.raises(ResultsError, match="retrieval has no metric 'bleu'"):
        results.validity("retrieval.bleu", "mining.f1")
    assert RunResults.load(results.folder).validity("retrieval.mrr", "mining.f1", layers=[2]).equals(table)


def test_the_sweep_command_takes_a_plugin_task(tmp_path: Path) -> None:
    config = _config(tasks=["retrieval", "norms"], layers=[2])
    path = config.save(tmp_path / "study.toml")
    done = runner.invoke(
        app, ["--plugin", "toy_task", "sweep", str(path), "--out", str(tmp_path / "out"), "--no-figures"]
    )
    assert done.exit_code == 0, done.output
    assert not RunResults.load(tmp_path / "out").task_tables["norms"].empty


def test_the_study_summary_gives_each_tasks_verdicts_within_their_intervals(
    tiny_gpt2: LensModel, tmp_path: Path
) -> None:
    results = run_experiment(
        _config(layers=[2], tasks=["retrieval", "norms"]), tmp_path / "run", model=tiny_gpt2, progress=False
    )
    text = results.study_summary()
    assert "retrieval · top1" in text and "norms · norm" in text and "no random control" not in text
    table = results.comparison(metric="norm", task="norms")
    for row in table.itertuples():
        verdict = (
            "above random"
            if row.low_vs_random > 0
            else "below random"
            if row.high_vs_random < 0
            else "not distinguishable"
        )
        block = next(b for b in text.split("\n\n") if b.startswith("norms · norm"))
        line = next(line for line in block.splitlines() if line.startswith(row.condition))
        assert verdict in line
    plain = run_experiment(
        _config(layers=[2]).override({"controls.random": False}), tmp_path / "plain", model=tiny_gpt2, progress=False
    )
    assert "no random control was run" in plain.study_summary()


def test_the_validity_figure_shows_one_point_per_language(tiny_gpt2: LensModel, tmp_path: Path) -> None:
    from xlens.viz import validity_scatter

    config = _config(layers=[2], tasks=["retrieval", "mining"], mining={"gold": 8, "distractors": 3})
    config = config.override({"languages": ["en", "es", "de", "fr", "ja"]})
    results = run_experiment(config, tmp_path / "run", model=tiny_gpt2, progress=False)
    fig = validity_scatter(results, "retrieval.top1", "mining.f1")
    assert sorted(fig.data[0].text) == sorted(["spa_Latn", "deu_Latn", "fra_Latn", "jpn_Jpan"])
    assert "Pearson r" in fig.layout.title.text and "4 languages" in fig.layout.title.text


def test_condition_gains_draws_any_tasks_changes_with_their_intervals(tiny_gpt2: LensModel, tmp_path: Path) -> None:
    from xlens.viz import condition_gains

    config = _config(layers=[1, 2], tasks=["retrieval", "norms"])
    results = run_experiment(config, tmp_path / "run", model=tiny_gpt2, progress=False)
    fig = condition_gains(results, "norm", layers=[1, 2], task="norms")
    table = results.comparison("norm", layers=[1, 2], task="norms")
    experts = [t for t in fig.data if t.name.endswith(" experts") and t.xaxis in ("x", "x1")]
    shown = sorted(y for t in experts for y in t.y)
    assert shown == pytest.approx(sorted(table[table["layer"] == 1]["diff_vs_baseline"]))
    assert any(t.name.startswith("random units") for t in fig.data)
    with pytest.raises(ResultsError, match="these results measured no 'mining'"):
        condition_gains(results, "decision", task="mining")


def test_fidelity_matches_generation_and_perplexity_computed_directly(tiny_gpt2: LensModel, tmp_path: Path) -> None:
    from xlens.generation import generate, language_id, load_prompts, perplexity

    config = _config(layers=[2], tasks=["fidelity"], fidelity={"held_out": 4, "max_new_tokens": 4})
    results = run_experiment(config, tmp_path / "run", model=tiny_gpt2, progress=False)
    table = results.table("fidelity")
    prompts = load_prompts("builtin")
    written = generate(tiny_gpt2, prompts, 4)
    found = language_id(written)
    splits = load_splits(config)
    for lang in config.expert_languages:
        share = table[(table["measure"] == "in_language") & (table["language"] == lang)]["score"].item()
        assert share == pytest.approx(sum(code == lang for code in found) / len(found))
        held = list(splits.eval[lang])[:4]
        ppl = table[(table["measure"] == "perplexity") & (table["language"] == lang)]["score"].item()
        assert ppl == pytest.approx(perplexity(tiny_gpt2, held), rel=1e-6)
    rows: Any = results.differences
    rows = rows[(rows["task"] == "fidelity") & (rows["metric"] == "log_perplexity") & (rows["against"] == "baseline")]
    assert set(rows["language"]) == {*config.eval_languages, "mean"}


def test_item_groups_must_pair_and_one_item_gives_no_interval() -> None:
    from xlens.comparisons import _by_group, differences
    from xlens.errors import MetricInputError

    one = _by_group([ItemScoresOf({"layer": 1}, [1.0, 0.0, 1.0])])
    other = _by_group([ItemScoresOf({"layer": 2}, [1.0, 1.0, 1.0])])
    with pytest.raises(MetricInputError, match="no counterpart under the other"):
        differences(one, other, Counts(10, 0), 0.95)
    single = differences(
        _by_group([ItemScoresOf({"layer": 1}, [1.0])]),
        _by_group([ItemScoresOf({"layer": 1}, [0.0])]),
        Counts(10, 0),
        0.9,
    )
    assert single[0]["diff"] == 1.0 and np.isnan(single[0]["low"]) and not single[0]["significant"]


def ItemScoresOf(group: dict[str, Any], values: list[float]) -> Any:
    from xlens.evaluation import ItemScores

    return ItemScores([group], {"m": torch.tensor([values])})


def test_a_task_column_may_not_take_a_conditions_name_and_where_names_its_mistakes(
    tiny_gpt2: LensModel, tmp_path: Path
) -> None:
    from xlens.errors import ConditionsFailedError

    class Clashing(Norms):
        name = "clashing"

        def measure(self, ctx: Any, condition: Any) -> Any:
            out = super().measure(ctx, condition)
            out.tables["norms"] = [{**row, "value": 1.0} for row in out.tables["norms"]]
            return out

    register_task(Clashing)
    with pytest.raises(ConditionsFailedError, match=r"task 'clashing' writes columns \['value'\]"):
        run_experiment(_config(layers=[2], tasks=["clashing"]), tmp_path / "a", model=tiny_gpt2, progress=False)
    results = run_experiment(_config(layers=[2]), tmp_path / "b", model=tiny_gpt2, progress=False)
    with pytest.raises(ResultsError, match=r"have no column \['target'\]"):
        results.comparison(where={"target": "spa_Latn"})
    with pytest.raises(ResultsError, match="no retrieval row has tgt = 'spa_latn'"):
        results.comparison(where={"tgt": "spa_latn"})
    with pytest.raises(ConfigError, match="not the pivot"):
        from xlens.evaluation.mining import MiningTask

        config = _config(tasks=["mining"], mining={"languages": ["en", "es"]})
        MiningTask(config.evaluate.mining).prepare(config, load_splits(config))


def test_a_study_without_retrieval_summarises_its_tasks_everywhere(tiny_gpt2: LensModel, tmp_path: Path) -> None:
    """No retrieval, so no headline: the summary, the notebook card and the CLI give the tasks' comparisons."""
    results = run_experiment(_config(tasks=["norms"]), tmp_path / "run", model=tiny_gpt2, progress=False)
    assert results.summary() == results.study_summary() and "norms · norm" in results.summary()
    assert results.best_condition() is None and "norms · norm" in results._repr_html_()
    with pytest.raises(ResultsError, match="measured no retrieval"):
        results.headline()
    path = _config(tasks=["norms"]).save(tmp_path / "c.toml")
    done = CliRunner().invoke(app, ["--plugin", "toy_task", "run", str(path), "--out", str(tmp_path / "cli"),
                                    "--model", "tiny-gpt2"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "norms · norm" in done.output
