"""Cross-lingual transfer on SIB-200: the loader against pandas, the probe and its bootstrap against scikit-learn and a
brute-force bootstrap, and the study of the transfer task alone (``xlens transfer``) end to end: caching,
ownership, provenance, checks before the model loads."""

from __future__ import annotations

import csv
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import pytest
from conftest import patch_everywhere
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

import xlens.embeddings
import xlens.runs.executors
import xlens.runs.study
from xlens.cli import app
from xlens.conditions import Condition
from xlens.config import ExperimentConfig
from xlens.data.loaders import resolve_spec_paths
from xlens.data.sib200 import SIB200_LABELS, load_sib200, sib200_languages
from xlens.errors import (
    ConfigError,
    CorpusError,
    HubError,
    MissingDependencyError,
    RunFolderError,
    UnknownLanguageError,
)
from xlens.evaluation.transfer import TransferPlan, fit_probe, majority_rate, plan_transfer, score_predictions
from xlens.metrics.bootstrap import resample_counts
from xlens.models import LensModel
from xlens.runs.results import RunResults
from xlens.runs.study import check_config, run_experiment

runner = CliRunner()
SPLITS = ("train", "dev", "test")


@pytest.fixture(scope="module")
def sib(shared_data: Path) -> Path:
    return shared_data / "sib200"


def _pandas(folder: Path, lang: str, split: str) -> pd.DataFrame:
    """The reference reader: pandas' CSV parser with tab separators (quotes handled as in the release)."""
    return pd.read_csv(folder / lang / f"{split}.tsv", sep="\t", dtype={"index_id": int, "category": str, "text": str})


# --- the loader ------------------------------------------------------------------------------------------------


def test_the_loader_reads_every_split_as_pandas_does(sib: Path) -> None:
    data = load_sib200(f"sib200:{sib}", ["en", "es", "ja"])
    assert data.languages == ["eng_Latn", "spa_Latn", "jpn_Jpan"]
    labels = (sib / "eng_Latn" / "labels.txt").read_text(encoding="utf-8").split()
    assert data.labels == labels == list(SIB200_LABELS) and len(labels) == 7
    for split, size in zip(SPLITS, (701, 99, 204), strict=True):
        reference = {lang: _pandas(sib, lang, split) for lang in data.languages}
        assert len(data.ids_of(split)) == len(data.labels_of(split)) == size
        for lang, frame in reference.items():
            assert data.texts(lang, split) == [t.strip() for t in frame["text"]]
            # The same sentence ids and topics in every language, as the loader claims.
            assert data.ids_of(split) == frame["index_id"].tolist()
            assert [labels[i] for i in data.labels_of(split)] == frame["category"].tolist()


def test_quoted_fields_keep_their_quotes(sib: Path) -> None:
    data = load_sib200(sib, "eng_Latn")  # a plain folder reads as sib200:PATH
    raw = (sib / "eng_Latn" / "test.tsv").read_text(encoding="utf-8").split("\n")
    quoted = next(line for line in raw[1:] if '""' in line)
    row = data.ids_of("test").index(int(quoted.split("\t")[0]))
    text = data.texts("en", "test")[row]
    # The file doubles the quotes inside a quoted field; the sentence has them once, and no outer quotes.
    assert quoted.split("\t", 2)[2] == '"' + text.replace('"', '""') + '"'
    assert '"' in text and not text.startswith('"')
    assert text == str(_pandas(sib, "eng_Latn", "test")["text"].iloc[row]).strip()


@pytest.mark.parametrize("code", ["en", "eng", "eng_Latn", "English"])
def test_languages_in_any_accepted_form(sib: Path, code: str) -> None:
    data = load_sib200(f"sib200:{sib}", [code, "es"])
    assert data.languages == ["eng_Latn", "spa_Latn"]
    assert (
        data.texts(code, "dev")
        == data.texts("eng_Latn", "dev")
        == [t.strip() for t in _pandas(sib, "eng_Latn", "dev")["text"]]
    )
    assert load_sib200(f"sib200:{sib}", "en, es").languages == ["eng_Latn", "spa_Latn"]


def test_missing_languages_and_bad_specs_are_clear_errors(sib: Path, tmp_path: Path) -> None:
    assert len(sib200_languages(f"sib200:{sib}")) == 205
    # srp_Latn is in the language table (NTREX-128 has it) but not in SIB-200.
    with pytest.raises(CorpusError, match=r"no SIB-200 data for 'srp_Latn'.* it has 205 languages; list them with "):
        load_sib200(f"sib200:{sib}", ["en", "srp_Latn"])
    with pytest.raises(UnknownLanguageError, match="unknown language 'xx'"):
        load_sib200(f"sib200:{sib}", ["xx"])
    with pytest.raises(CorpusError, match=r"unknown SIB-200 spec 'flores:.*accepted forms:\n  sib200:PATH"):
        load_sib200(f"flores:{sib}")
    with pytest.raises(CorpusError, match="needs a path or dataset after 'sib200:'"):
        load_sib200("sib200:")
    with pytest.raises(CorpusError, match="SIB-200 folder not found"):
        load_sib200(f"sib200:{tmp_path / 'nowhere'}")
    data = load_sib200(f"sib200:{sib}", ["en"])
    with pytest.raises(CorpusError, match="spa_Latn is not loaded"):
        data.texts("es", "test")


def _copy_language(sib: Path, root: Path, lang: str, splits: tuple[str, ...] = SPLITS) -> Path:
    (root / lang).mkdir(parents=True)
    for name in (*(f"{s}.tsv" for s in splits), "labels.txt"):
        shutil.copy(sib / lang / name, root / lang / name)
    return root / lang


def test_rows_that_do_not_align_across_languages_are_named(sib: Path, tmp_path: Path) -> None:
    _copy_language(sib, tmp_path, "eng_Latn")
    spanish = _copy_language(sib, tmp_path, "spa_Latn")
    with (spanish / "dev.tsv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    rows[5][1] = "travel" if rows[5][1] != "travel" else "sports"
    with (spanish / "dev.tsv").open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter="\t", lineterminator="\n").writerows(rows)
    with pytest.raises(CorpusError, match=r"dev row 5 is sentence \d+ \(.+\) in eng_Latn but \d+ \(.+\) in spa_Latn"):
        load_sib200(f"sib200:{tmp_path}", ["en", "es"])
    # Each language alone is fine: the changed topic is read as written.
    assert load_sib200(f"sib200:{tmp_path}", ["es"]).labels_of("dev")[4] == SIB200_LABELS.index(rows[5][1])


def test_relative_sib200_paths_resolve_against_the_config(tmp_path: Path, sib: Path) -> None:
    assert resolve_spec_paths("sib200:data/sib", tmp_path) == f"sib200:{tmp_path / 'data' / 'sib'}"
    (tmp_path / "configs").mkdir()
    file = tmp_path / "configs" / "t.toml"
    file.write_text(f'[evaluate.transfer]\ncorpus = "sib200:{os.path.relpath(sib, file.parent)}"\n', encoding="utf-8")
    corpus = ExperimentConfig.load(file).transfer.corpus
    assert corpus is not None and Path(corpus.removeprefix("sib200:")).resolve() == sib.resolve()


def _hf_copy(sib: Path, root: Path, langs: list[str], class_label: bool = False) -> Path:
    """One save_to_disk DatasetDict per language, as the hub's Davlan/sib200 configs are (validation, not dev)."""
    for lang in langs:
        splits = {}
        for split, name in zip(SPLITS, ("train", "validation", "test"), strict=True):
            frame = _pandas(sib, lang, split)
            ds = datasets.Dataset.from_pandas(frame, preserve_index=False)
            if class_label:
                ds = ds.cast_column("category", datasets.ClassLabel(names=list(SIB200_LABELS)))
            splits[name] = ds
        datasets.DatasetDict(splits).save_to_disk(str(root / lang))
    return root


def _same(a: Any, b: Any) -> None:
    assert a.languages == b.languages and a.labels == b.labels
    for split in SPLITS:
        assert a.ids_of(split) == b.ids_of(split) and a.labels_of(split) == b.labels_of(split)
        for lang in a.languages:
            assert a.texts(lang, split) == b.texts(lang, split)


def test_the_hub_path_offline(sib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xlens import hub

    folder = load_sib200(f"sib200:{sib}", ["en", "es"])
    local = _hf_copy(sib, tmp_path / "hf", ["eng_Latn", "spa_Latn"])
    _same(load_sib200(f"hf:{local}", ["en", "es"]), folder)
    labelled = _hf_copy(sib, tmp_path / "hf-classlabel", ["eng_Latn", "spa_Latn"], class_label=True)
    _same(load_sib200(f"hf:{labelled}", ["en", "es"]), folder)

    # The hub id: datasets is faked with the local copies; the connectivity probe answers.
    asked: list[tuple[str, str]] = []

    def load_dataset(name: str, config: str, **kwargs: Any) -> Any:
        asked.append((name, config))
        return datasets.load_from_disk(str(local / config))

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_last", None)
    monkeypatch.setattr(hub, "_connects", lambda host, port, timeout: True)
    monkeypatch.setattr(datasets, "get_dataset_config_names", lambda name: ["eng_Latn", "spa_Latn", "default"])
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    _same(load_sib200("hf:Davlan/sib200", ["en", "es"]), folder)
    assert asked == [("Davlan/sib200", "eng_Latn"), ("Davlan/sib200", "spa_Latn")]
    assert sib200_languages("hf:Davlan/sib200") == ["eng_Latn", "spa_Latn"]
    with pytest.raises(CorpusError, match=r"no SIB-200 data for 'ja' \(jpn_Jpan\) in Davlan/sib200 configs: it has 2"):
        load_sib200("hf:Davlan/sib200", ["en", "ja"])
    with pytest.raises(CorpusError, match="one config per language: pass langs"):
        load_sib200("hf:Davlan/sib200")

    monkeypatch.setattr(hub, "_last", None)
    monkeypatch.setattr(hub, "_connects", lambda host, port, timeout: False)
    with pytest.raises(HubError, match="SIB-200 dataset 'Davlan/sib200' needs the Hugging Face hub"):
        load_sib200("hf:Davlan/sib200", ["en"])


# --- the probe and its bootstrap ---------------------------------------------------------------------------------


def test_a_probe_on_noise_scores_no_better_than_the_majority_class(sib: Path) -> None:
    data = load_sib200(f"sib200:{sib}", ["en"])
    rng = np.random.default_rng(0)
    train_y, dev_y = np.array(data.labels_of("train")), np.array(data.labels_of("dev"))
    test_y = np.repeat(np.array(data.labels_of("test")), 10)  # 2040 sentences with the test split's topic shares
    counts = resample_counts(len(test_y), 500, 0)
    accuracies = []
    for _ in range(5):
        probe = fit_probe(
            rng.normal(size=(len(train_y), 16)), train_y, rng.normal(size=(len(dev_y), 16)), dev_y, [0.01, 1.0]
        )
        scores = score_predictions(test_y, probe.predict(rng.normal(size=(len(test_y), 16))), counts)
        assert scores["accuracy_low"] <= majority_rate(test_y)
        accuracies.append(scores["accuracy"])
    assert majority_rate(test_y) == pytest.approx(51 / 204)  # science/technology: 51 of the 204 test sentences
    assert np.mean(accuracies) <= majority_rate(test_y) + 0.01


def test_the_probe_picks_c_on_dev_and_ties_go_to_the_smaller_c() -> None:
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), 50)
    centres = rng.normal(size=(4, 8)) * 10
    separable = centres[y] + rng.normal(size=(len(y), 8))
    # Every C separates these: the tie goes to the smallest.
    probe = fit_probe(separable, y, separable, y, [10.0, 0.1, 1.0])
    assert (probe.c, probe.dev_accuracy) == (0.1, 1.0)
    # A weak signal: C = 1e-6 shrinks every weight to ~0 (chance on balanced classes); C = 1 learns it.
    weak = centres[y] / 10 + rng.normal(size=(len(y), 8))
    probe = fit_probe(weak, y, weak, y, [1e-6, 1.0])
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000)).fit(weak, y)
    assert probe.c == 1.0 and probe.dev_accuracy == pytest.approx(float(np.mean(reference.predict(weak) == y)))
    with pytest.raises(CorpusError, match="it needs at least 2"):
        fit_probe(weak, np.zeros(len(y), dtype=int), weak, y, [1.0])


def test_the_bootstrap_intervals_match_a_brute_force_percentile_bootstrap() -> None:
    rng = np.random.default_rng(2)
    n = 60
    y_true = rng.integers(0, 6, n)
    y_true[0] = 6  # a topic seen once: absent from many resamples, which macro-F1 then leaves out
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, 7, n))
    counts = resample_counts(n, 400, 3)
    reference = np.where(rng.random(n) < 0.3, y_true, y_pred)  # right more often: a positive change
    scores = score_predictions(y_true, y_pred, counts, confidence=0.9, reference=reference)
    accuracy, f1, change = [], [], []
    for row in counts.numpy().astype(int):
        drawn = np.repeat(np.arange(n), row)
        accuracy.append(accuracy_score(y_true[drawn], y_pred[drawn]))
        f1.append(f1_score(y_true[drawn], y_pred[drawn], average="macro", zero_division=0))  # type: ignore[arg-type]
        change.append(accuracy[-1] - accuracy_score(y_true[drawn], reference[drawn]))
    assert scores["accuracy_change"] == pytest.approx(
        accuracy_score(y_true, y_pred) - accuracy_score(y_true, reference)
    )
    expected = np.percentile(change, [5, 95])
    assert [scores["accuracy_change_low"], scores["accuracy_change_high"]] == pytest.approx(expected, abs=1e-12)
    assert scores["accuracy_change"] < 0 and scores["accuracy_change_high"] < 0  # the reference is better here
    assert "accuracy_change" not in score_predictions(y_true, y_pred, counts)
    assert scores["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    assert scores["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"), abs=1e-12)
    assert [scores["accuracy_low"], scores["accuracy_high"]] == pytest.approx(np.percentile(accuracy, [5, 95]))
    assert [scores["macro_f1_low"], scores["macro_f1_high"]] == pytest.approx(np.percentile(f1, [5, 95]), abs=1e-12)
    assert scores["macro_f1_low"] < scores["macro_f1"] < scores["macro_f1_high"]


# --- the transfer study end to end on a tiny model ------------------------------------------------------------


def _check(config: ExperimentConfig) -> TransferPlan:
    return plan_transfer(config, check_config(config))


def _run(config: ExperimentConfig, out: Path, **kwargs: Any) -> RunResults:
    """The study of the transfer task alone, as ``xlens transfer`` runs it."""
    return run_experiment(config.override({"evaluate.tasks": ["transfer"]}), out, progress=False, **kwargs)


def _table(results: RunResults) -> pd.DataFrame:
    return results.task_tables["transfer"]


def _tiny(sib: Path, **transfer: Any) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {
            "model": "tiny-gpt2",
            "languages": ["en", "es", "ja"],
            "find": {"sentences": 12},
            "intervene": {"method": "force", "k": [8], "languages": ["es"]},
            "controls": {"random": True, "seeds": 1},
            "evaluate": {
                "sentences": 10,
                "transfer": {"corpus": f"sib200:{sib}", "sentences": 40, "c_values": [0.1, 1.0], **transfer},
            },
            "stats": {"resamples": 200},
            "runtime": {"batch_size": 40},  # one batch per split: the bridge's per-batch cost dominates here
        }
    )


class _Forwards:
    """Counts the calls of sentence_embeddings (each is a forward pass over one language's split)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = xlens.embeddings.sentence_embeddings

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return real(*args, **kwargs)

        patch_everywhere(monkeypatch, xlens.embeddings, "sentence_embeddings", counted)


@pytest.fixture(scope="module")
def tiny_run(sib: Path, tiny_gpt2: LensModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, int]:
    out = tmp_path_factory.mktemp("transfer")
    with pytest.MonkeyPatch.context() as monkeypatch:
        forwards = _Forwards(monkeypatch)
        results = _run(_tiny(sib), out, model=tiny_gpt2)
    return results, out, forwards.calls


def test_the_run_scores_every_condition_mode_layer_and_target(tiny_run: tuple[Any, Path, int]) -> None:
    results, out, calls = tiny_run
    table = _table(results)
    recorded = results.provenance["tasks"]["transfer"]
    assert recorded["source"] == "eng_Latn" and recorded["targets"] == ["spa_Latn", "jpn_Jpan"]
    assert recorded["layers"] == [0, 1, 2] and {k: len(v) for k, v in recorded["rows"].items()} == dict.fromkeys(
        SPLITS, 40
    )
    labels = [c.label for c in results.conditions]
    assert labels == ["baseline", "force spa_Latn k=8", "force(control=random) spa_Latn k=8"]
    modes = table.groupby("condition", sort=False)["applied"].unique().map(list).to_dict()
    assert modes == {labels[0]: ["none"], labels[1]: ["target", "all"], labels[2]: ["target", "all"]}
    assert len(table) == 3 * 3 * (1 + 2 * 2)
    assert table.loc[table["condition"] == labels[2], "control"].unique().tolist() == ["random"]
    # One forward per (language, split, condition): the source's train and dev and every language's test, under
    # the baseline and both interventions (applied = "all" trains on intervened embeddings); shared by both modes.
    assert calls == 3 * (2 + 3)
    assert len(list((out / "cache").glob("embeddings-*"))) == calls
    assert ((table["accuracy_low"] <= table["accuracy"]) & (table["accuracy"] <= table["accuracy_high"])).all()
    # The change is paired with the baseline's predictions on the same sentences: its value is the difference of
    # the two accuracies, its interval holds it, and the baseline's own rows change by exactly 0.
    base = table[table["condition"] == "baseline"].set_index(["layer", "target"])["accuracy"]
    expected = (
        table["accuracy"].to_numpy() - base.loc[list(zip(table["layer"], table["target"], strict=True))].to_numpy()
    )
    assert table["accuracy_change"].to_numpy() == pytest.approx(expected, abs=1e-12)
    assert (table["accuracy_change_low"] <= table["accuracy_change"] + 1e-12).all()
    assert (table["accuracy_change"] <= table["accuracy_change_high"] + 1e-12).all()
    on_baseline = table.loc[table["condition"] == "baseline", ["accuracy_change_low", "accuracy_change_high"]]
    assert (on_baseline.to_numpy() == 0).all() and (table["accuracy_change"] != 0).any()
    shares = np.bincount(_check(results.config).labels("test")) / 40
    assert table["majority"].unique().tolist() == [pytest.approx(shares.max())]


def _sklearn_scores(
    x: dict[str, np.ndarray], labels: dict[str, list[int]], tests: dict[str, np.ndarray], layer: int
) -> tuple[float, float, dict[str, tuple[float, float]]]:
    """The probe the run should fit at ``layer``, by scikit-learn alone: C of (0.1, 1.0) best on dev (ties to the
    smaller), then (accuracy, macro-F1) on each test set."""
    fits = []
    for c in (0.1, 1.0):
        pipe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
        pipe.fit(x["train"][:, layer], labels["train"])
        fits.append((accuracy_score(labels["dev"], pipe.predict(x["dev"][:, layer])), -c, pipe))
    dev, minus_c, pipe = max(fits, key=lambda f: (f[0], f[1]))
    scores = {}
    for lang, test in tests.items():
        predicted = pipe.predict(test[:, layer])
        scores[lang] = (accuracy_score(labels["test"], predicted), f1_score(labels["test"], predicted, average="macro"))
    return -minus_c, dev, scores


def _embed(model: LensModel, config: ExperimentConfig, texts: list[str], interventions: list[Any]) -> np.ndarray:
    runtime = config.runtime
    kwargs = {"batch_size": runtime.batch_size, "max_tokens": runtime.max_tokens, "max_length": runtime.max_length}
    return xlens.embeddings.sentence_embeddings(
        model, texts, interventions=interventions, progress=False, **kwargs
    ).numpy()


def test_the_source_row_is_the_ordinary_held_out_score(
    tiny_run: tuple[Any, Path, int], tiny_gpt2: LensModel, sib: Path
) -> None:
    results = tiny_run[0]
    plan = _check(results.config)
    frames = {split: _pandas(sib, "eng_Latn", split) for split in SPLITS}
    # The sample: distinct rows in corpus order, several topics even though the test split is sorted by topic.
    for split, rows in plan.rows.items():
        assert rows == sorted(set(rows)) and len(rows) == 40
        assert plan.texts("en", split) == [str(frames[split]["text"].iloc[i]).strip() for i in rows]
    assert len(set(plan.labels("test").tolist())) >= 5
    texts = {split: [str(frames[split]["text"].iloc[i]).strip() for i in plan.rows[split]] for split in SPLITS}
    x = {split: _embed(tiny_gpt2, results.config, texts[split], []) for split in SPLITS}
    labels = {split: [SIB200_LABELS.index(c) for c in frames[split]["category"][plan.rows[split]]] for split in SPLITS}
    table = _table(results)
    baseline = table[(table["condition"] == "baseline") & (table["target"] == "eng_Latn")]
    for layer in plan.layers:
        c, dev, scores = _sklearn_scores(x, labels, {"eng_Latn": x["test"]}, layer)
        row = baseline[baseline["layer"] == layer].iloc[0]
        assert (row["c"], row["dev_accuracy"]) == (c, pytest.approx(dev))
        assert (row["accuracy"], row["macro_f1"]) == pytest.approx(scores["eng_Latn"])


def test_applied_all_is_a_probe_trained_and_tested_under_the_intervention(
    tiny_run: tuple[Any, Path, int], tiny_gpt2: LensModel
) -> None:
    """The rows of applied = "all": the Spanish experts found with the public API, forced while embedding the
    English train and dev splits and every test split, a probe fitted by scikit-learn on those."""
    results = tiny_run[0]
    config, plan = results.config, _check(results.config)
    scores = xlens.find_experts(tiny_gpt2, plan.splits.find, progress=False)
    force = [xlens.Force(value="on_p50").build(scores, "es", 8, model=tiny_gpt2)]
    x = {split: _embed(tiny_gpt2, config, plan.texts("en", split), force) for split in ("train", "dev")}
    tests = {lang: _embed(tiny_gpt2, config, plan.texts(lang, "test"), force) for lang in plan.languages}
    labels = {split: plan.labels(split).tolist() for split in SPLITS}
    table = _table(results)
    forced = table[(table["condition"] == "force spa_Latn k=8") & (table["applied"] == "all")]
    for layer in plan.layers:
        c, dev, expected = _sklearn_scores(x, labels, tests, layer)
        at = forced[forced["layer"] == layer].set_index("target")
        assert at["c"].unique().tolist() == [c] and at["dev_accuracy"].unique().tolist() == [pytest.approx(dev)]
        for lang, (accuracy, macro_f1) in expected.items():
            assert (at.loc[lang, "accuracy"], at.loc[lang, "macro_f1"]) == pytest.approx((accuracy, macro_f1)), lang


def test_applied_modes_share_the_baseline_probe_and_layer_zero_is_untouched(tiny_run: tuple[Any, Path, int]) -> None:
    table = _table(tiny_run[0])
    keys = ["layer", "target"]
    base = table[table["condition"] == "baseline"].set_index(keys)
    metrics = ["accuracy", "macro_f1", "accuracy_low", "accuracy_high", "c", "dev_accuracy"]
    for label in table.loc[table["condition"] != "baseline", "condition"].unique():
        mine = table[table["condition"] == label]
        target = mine[mine["applied"] == "target"].set_index(keys)
        # applied = "target": the baseline's probe (its C and dev accuracy), on intervened test inputs.
        pd.testing.assert_frame_equal(target[["c", "dev_accuracy"]], base[["c", "dev_accuracy"]])
        # Layer 0 is the input of block 0, before any MLP the intervention acts on: nothing changes there.
        for mode in ("target", "all"):
            at0 = mine[(mine["applied"] == mode) & (mine["layer"] == 0)].set_index(keys)[metrics]
            pd.testing.assert_frame_equal(at0, base.loc[at0.index, metrics])
    # Above layer 0 the forced experts do change the predictions somewhere (else the check above proves nothing).
    forced = table[(table["condition"] == "force spa_Latn k=8") & (table["applied"] == "target")].set_index(keys)
    assert (forced["accuracy"] != base.loc[forced.index, "accuracy"]).any()


def test_results_load_back_with_the_tasks_provenance_and_paired_differences(tiny_run: tuple[Any, Path, int]) -> None:
    results, out, _ = tiny_run
    loaded = RunResults.load(out)
    pd.testing.assert_frame_equal(_table(loaded), _table(results))
    assert loaded.conditions == results.conditions and loaded.config == results.config
    recorded = loaded.provenance["tasks"]["transfer"]
    plan = _check(results.config)
    assert recorded["rows"] == {split: list(rows) for split, rows in plan.rows.items()}
    assert recorded["labels"] == list(SIB200_LABELS) and "scikit-learn" in loaded.provenance["versions"]
    # SIB-200's sentences are FLORES-200's; the find split here is the built-in corpus: no shared sentence.
    assert recorded["rows_sharing_a_sentence_with_the_find_split"] == dict.fromkeys(SPLITS, 0)
    # The paired bootstrap of every condition against the baseline: its mean change is the table's.
    diffs: Any = loaded.differences
    row = diffs[(diffs["task"] == "transfer") & (diffs["against"] == "baseline") & (diffs["target"] == "spa_Latn")]
    row = row[(row["layer"] == 2) & (row["applied"] == "target")].iloc[0]
    table = _table(loaded)
    at = table[(table["condition"] == row["condition"]) & (table["layer"] == 2) & (table["target"] == "spa_Latn")]
    assert row["diff"] == pytest.approx(at[at["applied"] == "target"]["accuracy_change"].item())
    assert "transfer" in loaded.study_summary() and "accuracy" in loaded.study_summary()


def test_a_folder_of_the_retired_transfer_runner_is_named(tmp_path: Path) -> None:
    (tmp_path / "transfer.json").write_text("{}", encoding="utf-8")
    with pytest.raises(Exception, match=r"earlier `xlens transfer` \(transfer.json\).*rerun `xlens transfer CONFIG"):
        RunResults.load(tmp_path)
    with pytest.raises(AttributeError, match=r"xlens.run_transfer is retired.*evaluate.tasks"):
        _ = xlens.run_transfer  # type: ignore[attr-defined]


def test_a_rerun_reads_the_cache_and_another_config_needs_force(
    tiny_run: tuple[Any, Path, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_gpt2: LensModel, sib: Path
) -> None:
    results, out, _ = tiny_run
    folder = tmp_path / "copy"
    shutil.copytree(out, folder)
    forwards = _Forwards(monkeypatch)
    again = _run(results.config, folder, model=tiny_gpt2)
    pd.testing.assert_frame_equal(_table(again), _table(results))
    assert forwards.calls == 0

    def no_model(config: Any) -> Any:
        raise AssertionError("the model was loaded")

    patch_everywhere(monkeypatch, xlens.runs.executors, "load", no_model)
    other = _tiny(sib, applied=["target"])
    with pytest.raises(
        RunFolderError, match=r"belongs to another run .*evaluate.transfer.applied: \['target', 'all'\] -> "
    ):
        _run(other, folder)
    # With force: the baseline's rows and the applied = "target" rows are the same, from the cached embeddings.
    only_target = _run(other, folder, model=tiny_gpt2, force=True)
    assert forwards.calls == 0
    table = _table(results)
    expected = table[table["applied"] != "all"].reset_index(drop=True)
    pd.testing.assert_frame_equal(_table(only_target), expected)


def test_targets_all_is_every_other_sib200_language(sib: Path) -> None:
    """``targets = "all"`` resolves every language folder of the release (N'Ko, nqo_Nkoo, is in SIB-200 but not in
    FLORES-200 devtest), before any model loads."""
    plan = _check(_tiny(sib, targets="all"))
    folders = sorted(p.name for p in sib.iterdir() if p.is_dir())
    assert len(folders) == 205 and "nqo_Nkoo" in folders
    assert sorted(plan.targets) == [f for f in folders if f != "eng_Latn"]


@pytest.mark.parametrize(("sentences", "test_sentences"), [(None, 12), (40, 12), (40, None), (None, 500)])
def test_test_sentences_caps_only_the_test_split(sentences: int | None, test_sentences: int | None, sib: Path) -> None:
    """The same seeded rows in every split as with ``sentences`` alone, except the test split's cap."""
    plan = _check(_tiny(sib, sentences=sentences, test_sentences=test_sentences))
    full = {split: len(plan.data.ids_of(split)) for split in ("train", "dev", "test")}
    for split, cap in (("train", sentences), ("dev", sentences), ("test", test_sentences or sentences)):
        rows = plan.rows[split]
        assert len(rows) == min(cap or full[split], full[split]) and rows == sorted(set(rows))
        alone = _check(_tiny(sib, sentences=cap)).rows[split]
        assert rows == alone


@pytest.mark.parametrize(
    ("transfer", "error", "message"),
    [
        ({"targets": ["srp_Latn"]}, CorpusError, r"no SIB-200 data for 'srp_Latn' .* it has 205 languages"),
        ({"corpus": "flores:/somewhere"}, CorpusError, "unknown SIB-200 spec"),
        ({"corpus": None}, ConfigError, "evaluate.transfer.corpus is not set"),
        (
            {"layers": [1, 3]},
            ConfigError,
            r"evaluate.transfer.layers = \[1, 3\]: \[3\] out of range; tiny-gpt2 has .* 0..2",
        ),
        ({"targets": ["en"]}, ConfigError, "no target language besides the source eng_Latn"),
        ({"test_sentences": 1}, ConfigError, "evaluate.transfer.test_sentences"),
    ],
)
def test_bad_inputs_fail_before_the_model_loads(
    transfer: dict[str, Any],
    error: type[Exception],
    message: str,
    sib: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_model(config: Any) -> Any:
        raise AssertionError("the model was loaded")

    patch_everywhere(monkeypatch, xlens.runs.executors, "load", no_model)
    with pytest.raises(error, match=message):
        _run(_tiny(sib, **transfer), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_source_without_a_train_split_and_a_missing_sklearn_fail_before_the_model(
    sib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_model(config: Any) -> Any:
        raise AssertionError("the model was loaded")

    patch_everywhere(monkeypatch, xlens.runs.executors, "load", no_model)
    _copy_language(sib, tmp_path / "sib", "eng_Latn", splits=("dev", "test"))
    _copy_language(sib, tmp_path / "sib", "spa_Latn")
    config = _tiny(sib).override(
        {"evaluate.transfer.corpus": f"sib200:{tmp_path / 'sib'}", "evaluate.transfer.targets": ["es"]}
    )
    with pytest.raises(CorpusError, match="the source language eng_Latn has no train split in sib200:"):
        _run(config, tmp_path / "out")
    monkeypatch.setitem(sys.modules, "sklearn", None)  # what an environment without scikit-learn imports
    with pytest.raises(MissingDependencyError, match=r"pip install -e '\.\[transfer\]'"):
        _run(_tiny(sib), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_cli(tiny_run: tuple[Any, Path, int], sib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results, out, _ = tiny_run
    file = tmp_path / "transfer.toml"
    results.config.override({"evaluate.tasks": ["retrieval"]}).save(file)  # the shortcut sets the task
    folder = tmp_path / "run"
    shutil.copytree(out, folder)
    forwards = _Forwards(monkeypatch)
    # --targets and --layer override the config: another config for the folder (so --force), the same embeddings.
    args = ["transfer", str(file), "--out", str(folder), "--targets", "es", "--layer", "0", "--layer", "1", "--force"]
    done = runner.invoke(app, [*args, "--layer", "2"])
    assert done.exit_code == 0, done.output
    assert "transfer" in done.output and "accuracy" in done.output and "wrote" in done.output
    assert forwards.calls == 0
    loaded = RunResults.load(folder)
    assert loaded.config.evaluate.tasks == ["transfer"]
    recorded = loaded.provenance["tasks"]["transfer"]
    assert recorded["targets"] == ["spa_Latn"] and recorded["layers"] == [0, 1, 2]
    table = _table(results)
    expected = table[table["target"] != "jpn_Jpan"].reset_index(drop=True)
    pd.testing.assert_frame_equal(_table(loaded), expected)
    bad = runner.invoke(app, ["transfer", str(file), "--out", str(tmp_path / "bad"), "--targets", "xx"])
    assert bad.exit_code == 2 and "error: evaluate.transfer.targets: unknown language 'xx'" in bad.output
    assert not (tmp_path / "bad").exists()


# --- the embedded model on real SIB-200 --------------------------------------------------------------------------


@pytest.mark.integration
def test_the_embedded_model_transfers_topics(
    embedded: LensModel, sib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Baseline only, to stay within a minute on two CPU cores: the grid's experts are left out here (the tiny runs
    # above cover them).
    monkeypatch.setattr(xlens.runs.study, "grid_conditions", lambda config: [Condition.baseline()])
    config = ExperimentConfig.from_dict(
        {
            "languages": ["en", "es"],
            "find": {"sentences": 8},
            "evaluate": {
                "transfer": {"corpus": f"sib200:{sib}", "sentences": 32, "layers": [6], "applied": ["target"]}
            },
        }
    )
    results = _run(config, tmp_path, model=embedded)
    table = _table(results).set_index("target")
    assert table.index.tolist() == ["eng_Latn", "spa_Latn"] and table["applied"].unique().tolist() == ["none"]
    majority = float(table["majority"].iloc[0])
    # Topic is in the embedded model's layer-6 embeddings, in English and, through the English probe, in Spanish.
    assert table.loc["eng_Latn", "accuracy"] > majority + 0.15
    assert table.loc["spa_Latn", "accuracy"] > majority + 0.1
