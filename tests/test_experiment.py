"""The experiment runner on a tiny model: schema, content-disjoint splits, resume, determinism, results objects."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from xlens._io import load_tensors, save_tensors
from xlens.conditions import Condition
from xlens.config import ExperimentConfig
from xlens.data.splits import load_splits
from xlens.errors import ConfigError
from xlens.metrics.alignment import linear_cka
from xlens.metrics.retrieval import retrieval
from xlens.models import LensModel
from xlens.runs import results as results_module
from xlens.runs.results import RunResults
from xlens.runs.study import TruncationWarning, run_experiment

CONFIG = ExperimentConfig.from_dict(
    {
        "model": "tiny-gpt2",
        "languages": ["en", "es", "ja"],
        "find": {"sentences": 12},
        "intervene": {"k": [4, 16]},
        "controls": {"random": False},  # the controlled headline is tested on the sweep's (tests/test_sweep.py)
        "evaluate": {"sentences": 10},
        "runtime": {"batch_size": 8},
    }
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunResults]:
    out = tmp_path_factory.mktemp("run")
    return out, run_experiment(CONFIG, out, progress=False)


def test_schema_and_row_counts(run: tuple[Path, RunResults]) -> None:
    out, results = run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["schema_version"] == results_module.SCHEMA_VERSION == 4
    assert on_disk["retrieval"] == results.to_dict()["retrieval"]
    assert on_disk["retrieval"][0]["expert_lang"] is None  # the baseline's, as JSON null
    assert "NaN" not in (out / "results.json").read_text()
    ret = pd.read_parquet(out / "retrieval.parquet")
    ali = pd.read_parquet(out / "alignment.parquet")
    n_layers, n_conditions = 3, 1 + 3 * 2  # baseline + 3 languages x 2 k
    assert len(ret) == n_conditions * n_layers * 6  # ordered pairs
    assert len(ali) == n_conditions * n_layers * 3  # unordered pairs
    assert set(ret.columns) >= {"intervention", "expert_lang", "k", "layer", "src", "tgt", "top1", "top5", "mrr"}
    assert set(ali.columns) >= {"lang_a", "lang_b", "cosine_parallel", "cosine_random", "cka", "centroid_distance"}
    base = ret[ret["intervention"] == "none"]
    assert set(base["k"]) == {0} and base["expert_lang"].isna().all()
    assert set(ret[ret["intervention"] == "force"]["k"]) == {4, 16}
    assert ret[["top1", "top5", "mrr"]].stack().between(0, 1).all()
    assert (ret["top5"] >= ret["top1"]).all()
    prov = results.provenance
    assert prov["model"]["name"] == "tiny-gpt2" and prov["numerics"] == {"dtype": "float32", "device": "cpu"}
    assert prov["splits"] == {
        "how": "split",
        "eval_rows_removed_for_overlap": 0,
        "overlapping_rows": 0,
        "same_sentence": "NFKC, whitespace collapsed",
    }
    assert prov["eval_corpus"]["sentences"] == 10
    assert all("sha256" in v for v in prov["find_corpus"]["files"].values())
    assert [c.label for c in results.conditions][:3] == ["baseline", "force eng_Latn k=4", "force eng_Latn k=16"]
    assert results.layers == [0, 1, 2] and results.languages == ["eng_Latn", "spa_Latn", "jpn_Jpan"]


def test_results_load_back_equal_and_display_compactly(run: tuple[Path, RunResults]) -> None:
    out, results = run
    back = RunResults.load(out)
    assert back.config == results.config == CONFIG
    assert back.conditions == results.conditions
    pd.testing.assert_frame_equal(back.retrieval, results.retrieval)
    pd.testing.assert_frame_equal(back.alignment, results.alignment)
    assert back.scores is not None and torch.equal(back.scores.ap, results.scores.ap)  # type: ignore[union-attr]
    assert back.find_texts is not None and len(back.find_texts) == 3 * 12
    assert back.eval_corpus is not None and len(back.eval_corpus) == 10
    html = back._repr_html_()
    assert "RunResults" in html and "force spa_Latn k=16" in html and len(html) < 5000
    assert repr(back).startswith("RunResults(tiny-gpt2, 3 languages, 6 interventions + baseline, 3 layers")


def test_metrics_equal_direct_computation(run: tuple[Path, RunResults]) -> None:
    _, results = run
    emb = results.embeddings(None)  # the cached baseline embeddings
    assert emb is not None
    emb = emb.view(3, 10, 3, -1)
    ret = results.table("retrieval")
    row = ret[(ret["layer"] == 2) & (ret["src"] == "eng_Latn") & (ret["tgt"] == "jpn_Jpan")].iloc[0]
    got = retrieval(emb[0, :, 2].double(), emb[2, :, 2].double())
    assert (got.top1, got.top5, got.mrr) == pytest.approx((row["top1"], row["top5"], row["mrr"]), abs=1e-12)
    ali = results.table("alignment")
    cka = ali[(ali["layer"] == 2) & (ali["lang_a"] == "eng_Latn") & (ali["lang_b"] == "spa_Latn")]["cka"].iloc[0]
    assert abs(linear_cka(emb[0, :, 2].double(), emb[1, :, 2].double()) - cka) < 1e-9
    forced = results.embeddings("force spa_Latn k=16")
    assert forced is not None and not torch.equal(forced, results.embeddings(None))  # type: ignore[arg-type]


def test_splits_are_disjoint() -> None:
    splits = load_splits(CONFIG)
    assert len(splits.find) == 12 and len(splits.eval) == 10
    assert not set(splits.find.ids) & set(splits.eval.ids)
    assert not set(splits.find["en"]) & set(splits.eval["en"])


def test_disjointness_is_decided_on_content_not_on_spec_strings(tmp_path: Path) -> None:
    """`builtin` against `dir:` on the same files used to sample both splits with one seed: every eval sentence
    was also a find sentence. The same content is now one corpus, split into disjoint parts."""
    from importlib.resources import files

    folder = str(files("xlens.data").joinpath("builtin"))
    same = CONFIG.override({"evaluate.corpus": f"dir:{folder}", "find.sentences": 50, "evaluate.sentences": 50})
    splits = load_splits(same)
    assert splits.how == "split"
    assert not set(splits.find["en"]) & set(splits.eval["en"])
    # A corpus that shares only some rows with the find split: those rows leave the evaluation pool.
    builtin = load_splits(same).find
    shared = tmp_path / "partly"
    shared.mkdir()
    for lang, code in (("eng_Latn", "en"), ("spa_Latn", "es"), ("jpn_Jpan", "ja")):
        rows = builtin[lang][:5] + [f"{code} sentence number {i}" for i in range(40)]
        (shared / f"{code}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    partly = same.override({"evaluate.corpus": f"dir:{shared}", "evaluate.sentences": 40})
    splits = load_splits(partly)
    assert splits.how == "separate" and splits.eval_rows_removed == 5
    assert splits.provenance()["overlapping_rows"] == 0
    assert not set(splits.find["en"]) & set(splits.eval["en"])
    with pytest.raises(ConfigError, match="45 rows, 5 of them sharing a sentence with the find split, so 40 are left"):
        load_splits(partly.override({"evaluate.sentences": 41}))
    results = run_experiment(partly.override({"intervene.k": [4]}), tmp_path / "run", progress=False)
    assert results.provenance["splits"] == {
        "how": "separate",
        "eval_rows_removed_for_overlap": 5,
        "overlapping_rows": 0,
        "same_sentence": "NFKC, whitespace collapsed",
    }


def test_resume_uses_cache_and_rerun_is_identical(run: tuple[Path, RunResults], tmp_path: Path) -> None:
    _, results = run
    # A fresh run elsewhere reproduces the results exactly (CPU, same seed).
    fresh = run_experiment(CONFIG, tmp_path, progress=False)
    pd.testing.assert_frame_equal(fresh.retrieval, results.retrieval, check_exact=True)
    pd.testing.assert_frame_equal(fresh.alignment, results.alignment, check_exact=True)
    # Resuming reads each condition's cached measurements: poison the baseline's and see it come back.
    measured = sorted((tmp_path / "cache").glob("measured-*"))
    assert len(measured) == len(results.conditions)
    baseline = next(m for m in measured if '"condition": "baseline"' in (m / "measured.json").read_text())
    text = (baseline / "measured.json").read_text()
    (baseline / "measured.json").write_text(text.replace('"top1": ', '"top1": 7', 1))
    resumed = run_experiment(CONFIG, tmp_path, progress=False)
    assert resumed.retrieval["top1"].max() > 7
    # Without them, it measures the cached embeddings again: poison one and see that come back too.
    for folder in measured:
        shutil.rmtree(folder)
    victim = tmp_path / fresh.embedding_files[Condition.baseline()]
    emb = load_tensors(victim)["embeddings"]
    save_tensors(victim, {"embeddings": emb.flip(0)})  # rows no longer aligned
    resumed = run_experiment(CONFIG, tmp_path, progress=False)
    assert not resumed.table("retrieval").equals(results.table("retrieval"))
    assert resumed.retrieval["top1"].max() <= 1


def test_the_dtype_is_part_of_every_cache_key(tmp_path: Path) -> None:
    """A bfloat16 rerun into a float32 run's folder used to recompute nothing and record bfloat16."""
    small = CONFIG.override({"languages": ["en", "es"], "intervene.k": [4]})
    first = run_experiment(small, tmp_path, progress=False)
    half = small.override({"runtime.dtype": "bfloat16"})
    second = run_experiment(half, tmp_path, progress=False, force=True)
    assert second.provenance["numerics"]["dtype"] == "bfloat16"
    assert set(first.embedding_files.values()).isdisjoint(second.embedding_files.values())
    assert not second.retrieval.equals(first.retrieval) or not second.alignment.equals(first.alignment)
    responses = sorted(p.name for p in (tmp_path / "cache").glob("responses-*"))
    assert len(responses) == 2  # recomputed, not reused


def test_headline_and_summary(run: tuple[Path, RunResults]) -> None:
    _, results = run
    h = results.headline()
    ret = results.retrieval
    base = ret[ret["intervention"] == "none"].groupby("layer")["top1"].mean()
    assert h["best_layer"] == int(base.idxmax()) and h["last_layer"] == 2
    assert len(h["conditions"]) == 6
    spa = next(c for c in h["conditions"] if c["condition"] == "force spa_Latn k=16")
    cond = ret[(ret["expert_lang"] == "spa_Latn") & (ret["k"] == 16)].groupby("layer")["top1"].mean()
    assert spa["top1_last_layer"] == pytest.approx(cond.loc[2])
    ratio = cond / base
    assert spa["best_ratio"] == pytest.approx(ratio.max())
    # Per-pair extremes against a direct scan of every (condition, layer, pair) row.
    merged = ret[ret["intervention"] != "none"].merge(
        ret[ret["intervention"] == "none"][["layer", "src", "tgt", "top1"]],
        on=["layer", "src", "tgt"],
        suffixes=("", "_0"),
    )
    gain = merged["top1"] - merged["top1_0"]
    top = merged.loc[gain.idxmax()]
    g = h["best_pair_gain"]
    assert g["gain"] == pytest.approx(gain.max()) and g["after"] - g["before"] == pytest.approx(gain.max())
    assert (g["src"], g["tgt"], g["layer"]) == (top["src"], top["tgt"], top["layer"])
    positive = merged[merged["top1_0"] > 0]
    ratios = positive["top1"] / positive["top1_0"]
    r = h["best_pair_ratio"]
    assert r["ratio"] == pytest.approx(ratios.max()) and r["after"] / r["before"] == pytest.approx(r["ratio"])
    text = results.summary()
    assert "baseline top-1 per pair" in text and "force spa_Latn k=16" in text
    n = 6 * 3 * 6  # conditions x layers x ordered pairs
    assert h["comparisons"] == n and not h["controlled"]
    assert (
        f"largest pair gain of {n} pair comparisons (a maximum, no interval): +{g['gain']:.3f}, "
        f"top-1 {g['before']:.3f} -> {g['after']:.3f}"
    ) in text
    # No control ran: the summary leads with the changes against the baseline and says so.
    assert text.index("no random control was run") < text.index("baseline top-1 per pair")
    assert "vs random" not in spa["verdict"] and "no random control" in spa["verdict"]
    best = results.best_condition()
    assert best is not None and best.label == max(h["conditions"], key=lambda c: c["best_ratio"])["condition"]


@pytest.mark.parametrize("method", ["aura", "det0", "damp", "diffmean", "lape"])
def test_other_methods_run(method: str, tmp_path: Path) -> None:
    # A tiny model has 128 units: keep 30% of them as LAPE units (1% would be one unit for all languages).
    settings: dict = {"intervene.method": method, "languages": ["en", "ja"]}
    if method == "lape":
        settings.update({"intervene.top_rate": 0.3, "intervene.k": [2]})
    elif method != "diffmean":
        settings["intervene.k"] = [8]
    results = run_experiment(CONFIG.override(settings), tmp_path, progress=False)
    ret = results.retrieval
    assert set(ret["intervention"]) == {"none", method}
    assert set(ret[ret["intervention"] == method]["k"]) == (
        {0} if method == "diffmean" else {settings["intervene.k"][0]}
    )
    assert len(results.interventions) == 2 and results.interventions[0].params == results.interventions[1].params


def test_negatives_reach_the_expert_scores(tmp_path: Path) -> None:
    from xlens.activations import Responses
    from xlens.experts.scoring import average_precision

    cfg = CONFIG.override({"find.negatives": ["en"], "intervene.k": [4]})
    results = run_experiment(cfg, tmp_path, progress=False)
    scores = results.scores
    assert scores is not None and scores.meta["negatives"] == ["eng_Latn"]
    # Spanish was scored against English alone: equal to scoring the two-language responses directly.
    res = results.responses
    assert isinstance(res, Responses) and res.lang_ids is not None
    two = (res.lang_ids == 0) | (res.lang_ids == 1)
    expected = average_precision(res["mean"][two], res.lang_ids[two] == 1)
    torch.testing.assert_close(scores.ap[1], expected.float())


@pytest.mark.integration
@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml")), ids=lambda p: p.name
)
def test_shipped_configs_load_their_corpora_from_anywhere(
    path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # corpus paths are relative to the config file, not to the working directory
    config = ExperimentConfig.load(path)
    splits = load_splits(config)
    assert len(splits.find) == config.find.sentences and len(splits.eval) == config.evaluate.sentences
    assert splits.provenance()["overlapping_rows"] == 0
    # Each split holds the languages its section asks for, in the config's order.
    assert list(splits.find.languages) == config.find_languages
    assert list(splits.eval.languages) == config.eval_languages


def test_truncation_is_stated_in_the_results_and_warned_once(tmp_path: Path, tiny_gpt2: LensModel) -> None:
    config = CONFIG.override({"intervene.k": [4], "runtime.max_length": 12})
    with pytest.warns(TruncationWarning) as caught:
        results = run_experiment(config, tmp_path / "cut", model=tiny_gpt2, progress=False)
    assert len([w for w in caught if issubclass(w.category, TruncationWarning)]) == 1
    recorded = results.provenance["truncation"]
    splits = load_splits(config)
    for name, part in (("find", splits.find), ("eval", splits.eval)):
        for lang in part.languages:
            lengths = [len(tiny_gpt2.tokenize([s]).tokens[0]) for s in part[lang]]  # one sentence, untruncated
            assert recorded[name][lang] == {"cut": sum(n > 12 for n in lengths), "longest": max(lengths)}
    assert recorded["max_length"] == 12 and any(e["cut"] for e in recorded["eval"].values())
    assert str(max(e["longest"] for e in recorded["eval"].values())) in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)
        whole = run_experiment(config.override({"runtime.max_length": 256}), tmp_path / "whole", model=tiny_gpt2,
                               progress=False)  # fmt: skip
    assert all(e["cut"] == 0 for e in whole.provenance["truncation"]["eval"].values())


def test_an_intervention_that_collapses_the_space_is_flagged(tmp_path: Path, tiny_gpt2: LensModel) -> None:
    """Every MLP unit forced to one huge value: every sentence lands near one point after block 0, which the
    results flag; the spread is checked against a direct computation on the run's own embeddings."""
    config = CONFIG.override(
        {"intervene.k": [128], "intervene.value": 1e4, "languages": ["en", "es"], "controls.random": False}
    )
    results = run_experiment(config, tmp_path / "run", model=tiny_gpt2, progress=False)
    found = results.collapsed()
    label = results.interventions[0].label
    assert set(found["condition"]) == {c.label for c in results.interventions}  # both languages' forcing
    assert set(found[found["condition"] == label]["layer"]) == {1, 2}
    emb = results.embeddings(results.interventions[0])
    assert emb is not None
    for layer in (1, 2):
        e = emb[:, layer].double()
        n = len(e) // 2  # two languages, sentences in config order
        parts = [e[i * n : (i + 1) * n] for i in range(2)]
        spread = [((p - e.mean(0)) ** 2).sum(-1).mean() / (p**2).sum(-1).mean() for p in parts]
        row = found[(found["layer"] == layer) & (found["condition"] == label)].iloc[0]
        assert row["spread"] == pytest.approx(float(sum(spread) / 2), rel=1e-6)
    assert f"warning: {label} collapses the embedding space at layer(s) 1, 2" in results.summary()
    assert results.collapsed(threshold=1e-12).empty  # not below any ratio at all: the flag follows the threshold
