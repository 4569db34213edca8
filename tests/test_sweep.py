"""Sweeps: the grid, its controls, the paired bootstrap and the correlation, each against an independent reference."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import patch_everywhere
from typer.testing import CliRunner

from xlens.activations import collect_corpus_responses
from xlens.cli import app
from xlens.comparisons import Counts, centroid_correlation, condition_differences
from xlens.conditions import Condition
from xlens.config import ExperimentConfig, InterveneConfig
from xlens.data import load_builtin
from xlens.errors import ConfigError, ExpertInputError, InterventionError, MetricInputError
from xlens.evaluation.base import ItemScores, hits_and_reciprocal
from xlens.evaluation.retrieval import mixed_retrieval
from xlens.experts.sets import ExpertScores
from xlens.interventions import Aura, DiffMean, Force, ScaleUnits, SetUnits
from xlens.metrics.alignment import medoid_distances
from xlens.metrics.bootstrap import bootstrap_correlation, paired_bootstrap, pearson, resample_counts
from xlens.metrics.retrieval import retrieval, retrieval_ranks
from xlens.models import LensModel
from xlens.runs.results import RunResults, tidy
from xlens.runs.study import grid_conditions, run_experiment

runner = CliRunner()
SWEEP = {
    "model": "tiny-gpt2",
    "languages": ["en", "es", "ja"],
    "find": {"sentences": 16},
    "intervene": {"method": ["force", "det0", "diffmean"], "k": [4, 8], "value": ["on_p50", "on_mean"]},
    "controls": {"random": True, "mixed": True, "seeds": 2},
    "evaluate": {"sentences": 12},
    "stats": {"resamples": 300},
    "runtime": {"batch_size": 8},
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> RunResults:
    return run_experiment(ExperimentConfig.from_dict(SWEEP), tmp_path_factory.mktemp("sweep"), progress=False)


@pytest.fixture(scope="module")
def scores(tiny_gpt2: LensModel) -> ExpertScores:
    corpus = load_builtin(["en", "es", "ja"]).head(12)
    responses = collect_corpus_responses(tiny_gpt2, corpus, progress=False)
    return ExpertScores.from_responses(responses)


# --- the grid ----------------------------------------------------------------------------------------------


def test_the_grid_expands_each_methods_own_settings() -> None:
    grid = InterveneConfig.from_dict(
        {"method": ["force", "det0", "diffmean"], "value": ["on_p50", "on_mean"], "alpha": [1.0, 2.0], "k": [4]}
    )
    assert [s.label() for s in grid.specs] == [
        "force",
        "force(value=on_mean)",
        "det0",
        "diffmean",
        "diffmean(alpha=2.0)",
    ]
    assert grid.ks(grid.specs[0]) == [4] and grid.ks(grid.specs[-1]) == [None]
    # A list where the setting takes a list is a value; a list of lists is an axis.
    assert [s.source for s in InterveneConfig.from_dict({"method": "diffmean", "source": ["en"]}).specs] == [["en"]]  # type: ignore[attr-defined]
    axis = InterveneConfig.from_dict({"method": "diffmean", "source": [["en"], ["es"]]})
    assert [s.source for s in axis.specs] == [["en"], ["es"]]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"method": []}, r"intervene.method = \[\]: must be a method name or a non-empty list"),
        ({"method": ["force", "force"]}, r"a method is listed twice"),
        (
            {"method": "aura", "value": "on_mean"},
            r"unknown key\(s\) \['value'\] in \[intervene\]: no method of the grid",
        ),
        ({"method": "force", "value": []}, r"intervene.value = \[\]: an axis needs distinct values"),
        ({"method": "force", "value": ["on_p50", "on_p50"]}, r"an axis needs distinct values"),
        ({"method": "force", "value": ["median"]}, r"intervene.value = 'median': must be a number"),
        ({"method": "diffmean", "k": [4]}, r"intervene.k = \[4\]: no method of the grid takes k"),
        ({"method": "force", "selection": "best"}, r"intervene.selection = 'best': must be one of top, per-block"),
        ({"method": "force", "rank_by": "f1"}, r"intervene.rank_by = 'f1': must be one of ap, auroc"),
        ({"method": "force", "selection": "threshold"}, r"selection 'threshold' needs one in \[0, 1\]"),
        ({"method": "diffmean", "control": "random"}, r"intervene.control: controls are asked for in \[controls\]"),
        ({"method": "force", "seed": [0, 1]}, r"intervene.seed: controls are asked for in \[controls\]"),
    ],
)
def test_bad_grids_are_one_config_error(grid: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        InterveneConfig.from_dict(grid)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"intervene": {"method": "aura"}, "controls": {"neutral": True}}, r"controls.neutral = true: no method"),
        (
            {"intervene": {"method": "diffmean"}, "controls": {"random_per_block": True}},
            r"controls.random_per_block = true: no method of the grid \(diffmean\) has this control",
        ),
        ({"controls": {"seeds": 0}}, r"controls.seeds = 0: must be >= 1"),
        (
            {"intervene": {"method": "lape", "top_rate": [0.1, 0.2]}},
            r"intervene.top_rate = \[0.1, 0.2\]: a run ranks its units by LAPE once",
        ),
        ({"intervene": {"languages": ["ko"]}}, r"intervene.languages = \['ko'\]: \['kor_Hang'\] are not among"),
        ({"stats": {"confidence": 1.5}}, r"stats.confidence = 1.5: must lie in \(0, 1\)"),
    ],
)
def test_bad_controls_and_languages_are_one_config_error(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.from_dict(data)


def test_selections_that_cannot_fit_fail_before_any_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xlens.models import loading

    patch_everywhere(
        monkeypatch, loading, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded"))
    )
    base = ExperimentConfig.from_dict({"model": "tiny-gpt2", "languages": ["en", "es"]})
    per_block = base.override({"intervene.selection": "per-block", "intervene.k": [65]})
    with pytest.raises(ConfigError, match=r"k must be <= 64 \(selection 'per-block' takes k from each block"):
        run_experiment(per_block, tmp_path, progress=False)
    top_bottom = base.override({"intervene.selection": "top-bottom", "intervene.bottom_k": 100, "intervene.k": [40]})
    with pytest.raises(ConfigError, match=r"k must be <= 28 \(top-bottom takes k \+ bottom_k"):
        run_experiment(top_bottom, tmp_path, progress=False)


def test_a_threshold_that_yields_fewer_than_k_fails_before_anything_is_embedded(tmp_path: Path) -> None:
    config = ExperimentConfig.from_dict(
        {
            "model": "tiny-gpt2",
            "languages": ["en", "es"],
            "find": {"sentences": 10},
            "intervene": {"selection": "threshold", "threshold": 0.99, "k": [100]},
        }
    )
    with pytest.raises(
        ExpertInputError, match=r"condition force\(selection=threshold, threshold=0.99\) eng_Latn k=100: "
    ):
        run_experiment(config, tmp_path, progress=False)
    assert list((tmp_path / "cache").glob("embeddings-*")) == []


def test_the_conditions_of_a_grid_with_controls(sweep: RunResults) -> None:
    labels = [c.label for c in sweep.conditions]
    assert labels[:4] == [
        "baseline",
        "force eng_Latn k=4",
        "force(control=random) eng_Latn k=4",
        "force(control=random, seed=1) eng_Latn k=4",
    ]
    assert "diffmean(control=random, seed=1) jpn_Jpan" in labels
    # baseline + (force x 2 values + det0) x 3 languages x 2 k x (1 + 2 seeds) + diffmean x 3 languages x 3
    assert len(labels) == 1 + 3 * 3 * 2 * 3 + 3 * 3 == len(set(labels))
    config = ExperimentConfig.from_dict({**SWEEP, "controls": {"neutral": True, "random_per_block": True}})
    neutral = [c.label for c in grid_conditions(config)]
    assert "force(value=all_p50) spa_Latn k=8" in neutral
    assert "force(control=random-per-block, value=all_p50) spa_Latn k=8" in neutral
    assert "det0(value=all_p50) spa_Latn k=8" not in neutral  # det0 has no value to neutralise


# --- controls ------------------------------------------------------------------------------------------------


def test_random_controls_draw_as_many_units_uniformly_or_per_block(scores: ExpertScores) -> None:
    experts = scores.select("es", 24)
    random = Force(control="random", seed=3).experts(scores, "es", 24)
    assert len(random) == 24 and len(set(random.units.tolist())) == 24
    assert set(random.units.tolist()) != set(experts.units.tolist())
    # Each random unit is forced to its own median on the language, as the experts are.
    built = Force(control="random", seed=3).build(scores, "es", 24)
    assert isinstance(built, SetUnits)
    li = scores.lang_index("es")
    got = {
        scores.units.unit(h, int(p)): float(v)
        for h, pos in built.units.items()
        for p, v in zip(pos, built.values[h], strict=True)
    }
    assert got == pytest.approx({int(u): float(scores.stats["on_p50"][li, u]) for u in random.units})
    # Seeded: the same seed, language and k draw the same units; another seed or language draws others.
    assert torch.equal(Force(control="random", seed=3).experts(scores, "es", 24).units, random.units)
    assert not torch.equal(Force(control="random", seed=4).experts(scores, "es", 24).units, random.units)
    assert not torch.equal(Force(control="random", seed=3).experts(scores, "ja", 24).units, random.units)
    matched = Force(control="random-per-block", seed=0).experts(scores, "es", 24)
    assert matched.counts_per_block() == experts.counts_per_block()
    with pytest.raises(InterventionError, match="draws from all units: it needs ExpertScores"):
        Force(control="random").experts(experts, "es", 10)


def test_random_units_are_uniform_over_all_units(scores: ExpertScores) -> None:
    hits = torch.zeros(scores.units.n_units)
    for seed in range(400):
        hits[Force(control="random", seed=seed).experts(scores, "en", 16).units] += 1
    expected = 400 * 16 / scores.units.n_units  # 50 draws per unit on average
    chi2 = float(((hits - expected) ** 2 / expected).sum())
    assert chi2 < 200  # 127 degrees of freedom: p < 1e-5 above this


def test_the_neutral_value_is_the_median_over_all_sentences(tiny_gpt2: LensModel) -> None:
    corpus = load_builtin(["en", "es", "ja"]).head(11)
    responses = collect_corpus_responses(tiny_gpt2, corpus, progress=False)
    for negatives in (None, ["en"]):
        scores = ExpertScores.from_responses(responses, negatives=negatives)
        expected = np.median(responses["mean"].double().numpy(), axis=0)
        for li in range(3):
            np.testing.assert_allclose(scores.stats["all_p50"][li].numpy(), expected, rtol=1e-6, atol=1e-7)
        built = Force(value="all_p50").build(scores, "ja", 5)
        assert isinstance(built, SetUnits)
        chosen = scores.select("ja", 5).units
        values = torch.cat([built.values[h] for h in built.units])
        units = torch.cat([torch.tensor([scores.units.unit(h, int(p)) for p in built.units[h]]) for h in built.units])
        assert {int(u): float(v) for u, v in zip(units, values, strict=True)} == pytest.approx(
            {int(u): float(expected[u]) for u in chosen}, abs=1e-6
        )


def test_the_diffmean_control_is_a_random_direction_of_the_same_norm(tiny_gpt2: LensModel) -> None:
    corpus = load_builtin(["en", "es"]).head(6)
    real = DiffMean().build(language="es", model=tiny_gpt2, corpus=corpus)
    fake = DiffMean(control="random", seed=1).build(language="es", model=tiny_gpt2, corpus=corpus)
    again = DiffMean(control="random", seed=1).build(language="es", model=tiny_gpt2, corpus=corpus)
    assert torch.allclose(fake.vector.norm(), real.vector.norm())  # type: ignore[attr-defined]
    cosine = torch.nn.functional.cosine_similarity(fake.vector, real.vector, dim=0)  # type: ignore[attr-defined]
    assert abs(float(cosine)) < 0.9 and torch.equal(fake.vector, again.vector)  # type: ignore[attr-defined]


def test_ranking_by_auroc(scores: ExpertScores) -> None:
    li = scores.lang_index("es")
    expected = torch.argsort(scores.auroc[li], descending=True, stable=True)[:10]
    assert scores.select("es", 10, by="auroc").units.tolist() == expected.tolist()
    built = Aura(rank_by="auroc").build(scores, "es", 10)
    assert isinstance(built, ScaleUnits) and built.n_units == int((scores.auroc[li, expected] > 0.5).sum())


# --- statistics ----------------------------------------------------------------------------------------------


def test_paired_bootstrap_matches_a_loop_over_resamples() -> None:
    generator = torch.Generator().manual_seed(0)
    diffs = torch.randn(3, 4, 30, generator=generator, dtype=torch.float64)
    counts = resample_counts(30, 500, seed=7)
    assert torch.equal(counts.sum(dim=1), torch.full((500,), 30.0, dtype=torch.float64))
    mean, low, high = paired_bootstrap(diffs, counts, 0.9)
    flat = diffs.reshape(-1, 30).numpy()
    # The same resamples, expanded into index lists, one at a time.
    index = [np.repeat(np.arange(30), c.astype(int)) for c in counts.numpy()]
    loop = np.array([[row[i].mean() for i in index] for row in flat])
    np.testing.assert_allclose(mean.reshape(-1).numpy(), flat.mean(axis=1))
    np.testing.assert_allclose(low.reshape(-1).numpy(), np.quantile(loop, 0.05, axis=1), rtol=1e-12)
    np.testing.assert_allclose(high.reshape(-1).numpy(), np.quantile(loop, 0.95, axis=1), rtol=1e-12)
    # A constant difference has a zero-width interval at that value.
    _, lo, hi = paired_bootstrap(torch.full((1, 30), 0.25), counts)
    assert float(lo) == float(hi) == 0.25


def test_pearson_and_its_bootstrap_match_numpy() -> None:
    generator = np.random.default_rng(0)
    x = generator.normal(size=40)
    y = 0.6 * x + generator.normal(size=40)
    r, low, high = bootstrap_correlation(torch.tensor(x), torch.tensor(y), resamples=400, seed=3)
    assert (
        r
        == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
        == pytest.approx(pearson(torch.tensor(x), torch.tensor(y)))
    )
    counts = resample_counts(40, 400, seed=3).numpy().astype(int)
    loop = [np.corrcoef(np.repeat(x, c), np.repeat(y, c))[0, 1] for c in counts]
    assert (low, high) == pytest.approx((np.quantile(loop, 0.025), np.quantile(loop, 0.975)), abs=1e-9)
    assert low < r < high
    assert np.isnan(pearson(torch.ones(5), torch.arange(5.0)))


def test_medoid_distances_match_a_loop() -> None:
    E = torch.randn(5, 9, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    means = E.mean(dim=1).numpy()
    unit = means / np.linalg.norm(means, axis=1, keepdims=True)
    distance = 1 - unit @ unit.T
    medoid = int(np.argmin(distance.sum(axis=1)))
    got, index = medoid_distances(E)
    assert index == medoid
    np.testing.assert_allclose(got.numpy(), distance[:, medoid], atol=1e-12)


def test_mixed_retrieval_matches_direct_retrieval() -> None:
    generator = torch.Generator().manual_seed(5)
    before, after = torch.randn(2, 10, 2, 6, generator=generator), torch.randn(2, 10, 2, 6, generator=generator)
    rows, ranks = mixed_retrieval(before, after, ["a", "b"], [3, 7], "cosine", False, 10)
    assert len(rows) == 2 * 2 * 2  # layers x ordered pairs x modes
    assert torch.equal(ranks["queries-baseline"][1, 0, 1], retrieval_ranks(before[0, :, 1], after[1, :, 1]).int())
    assert torch.equal(ranks["candidates-baseline"][0, 1, 0], retrieval_ranks(after[1, :, 0], before[0, :, 0]).int())
    assert (ranks["queries-baseline"][:, [0, 1], [0, 1]] == 0).all()  # no pair of a language with itself
    row = next(r for r in rows if (r["layer"], r["src"], r["tgt"], r["mode"]) == (7, "b", "a", "candidates-baseline"))
    assert row["top1"] == retrieval(after[1, :, 1], before[0, :, 1]).top1
    row = next(r for r in rows if (r["layer"], r["src"], r["tgt"], r["mode"]) == (3, "a", "b", "queries-baseline"))
    assert row["mrr"] == pytest.approx(retrieval(before[0, :, 0], after[1, :, 0]).mrr)


def test_the_differences_are_means_of_the_retrieval_table(sweep: RunResults) -> None:
    diffs, ret = sweep.differences, sweep.retrieval
    assert set(zip(diffs["subject"], diffs["against"], strict=True)) == {
        ("condition", "baseline"),
        ("condition", "random"),
        ("random", "baseline"),
    }
    assert np.allclose(diffs["diff"], diffs["subject_mean"] - diffs["against_mean"], atol=1e-12)
    assert ((diffs["low"] <= diffs["diff"] + 1e-12) & (diffs["diff"] <= diffs["high"] + 1e-12)).all()
    both = ret[ret["mode"] == "both"]
    label = "force(value=on_mean) spa_Latn k=8"
    row = diffs[
        (diffs["condition"] == label) & (diffs["against"] == "random") & (diffs["metric"] == "top1")
        & (diffs["layer"] == 2) & (diffs["src"] == "mean")
    ].iloc[0]  # fmt: skip
    mine = both[(both["condition"] == label) & (both["layer"] == 2)]["top1"].mean()
    seeds = [
        "force(control=random, value=on_mean) spa_Latn k=8",
        "force(control=random, seed=1, value=on_mean) spa_Latn k=8",
    ]
    control = both[both["condition"].isin(seeds) & (both["layer"] == 2)]["top1"].mean()
    assert (row["subject_mean"], row["against_mean"]) == pytest.approx((mine, control), abs=1e-6)
    pair = diffs[
        (diffs["condition"] == label) & (diffs["against"] == "baseline") & (diffs["metric"] == "mrr")
        & (diffs["layer"] == 1) & (diffs["src"] == "eng_Latn") & (diffs["tgt"] == "jpn_Jpan")
    ].iloc[0]  # fmt: skip
    at = (both["layer"] == 1) & (both["src"] == "eng_Latn") & (both["tgt"] == "jpn_Jpan")
    assert pair["subject_mean"] == pytest.approx(both[at & (both["condition"] == label)]["mrr"].iloc[0], abs=1e-6)
    assert pair["against_mean"] == pytest.approx(both[at & (both["condition"] == "baseline")]["mrr"].iloc[0], abs=1e-6)
    # Mixed modes: the condition's mixed rows against the baseline (mixing it with itself changes nothing) and
    # against its controls' mixed rows.
    assert set(diffs["mode"]) == {"both", "queries-baseline", "candidates-baseline"}
    mixed = ret[(ret["mode"] == "queries-baseline") & (ret["layer"] == 2)]
    for against, reference in (
        ("baseline", both[(both["condition"] == "baseline") & (both["layer"] == 2)]["top1"].mean()),
        ("random", mixed[mixed["condition"].isin(seeds)]["top1"].mean()),
    ):
        row = diffs[
            (diffs["condition"] == label) & (diffs["mode"] == "queries-baseline") & (diffs["against"] == against)
            & (diffs["metric"] == "top1") & (diffs["layer"] == 2) & (diffs["src"] == "mean")
        ].iloc[0]  # fmt: skip
        assert row["subject_mean"] == pytest.approx(mixed[mixed["condition"] == label]["top1"].mean(), abs=1e-6)
        assert row["against_mean"] == pytest.approx(reference, abs=1e-6)
        assert row["value"] == "on_mean"  # the condition's settings are columns too
    # Layer 0 is read before any block: nothing an intervention does reaches it, so no difference there.
    layer0 = diffs[(diffs["layer"] == 0) & (diffs["intervention"] != "diffmean")]
    assert (layer0["diff"] == 0).all() and not layer0["significant"].any()


def test_the_comparison_table_and_the_correlation(sweep: RunResults) -> None:
    table = sweep.comparison()
    h = sweep.headline()
    assert set(table["layer"]) == {h["best_layer"], h["last_layer"]}
    assert len(table) == len([c for c in sweep.interventions if c.control == "none"]) * table["layer"].nunique()
    row = table[(table["condition"] == "det0 jpn_Jpan k=4") & (table["layer"] == h["last_layer"])].iloc[0]
    assert row["value"] == pytest.approx(
        next(c["top1_last_layer"] for c in h["conditions"] if c["condition"] == "det0 jpn_Jpan k=4"), abs=1e-6
    )
    ret = sweep.retrieval[sweep.retrieval["mode"] == "both"]
    per_seed = [
        ret[(ret["condition"] == f"det0(control=random{s}) jpn_Jpan k=4") & (ret["layer"] == h["last_layer"])][
            "top1"
        ].mean()
        for s in ("", ", seed=1")
    ]
    assert row["random_mean"] == pytest.approx(np.mean(per_seed), abs=1e-6)
    assert row["random_spread"] == pytest.approx(np.std(per_seed), abs=1e-6)
    assert row["significant_vs_random"] == (row["low_vs_random"] > 0 or row["high_vs_random"] < 0)
    ali, cents = sweep.alignment, sweep.centroids
    for column, table, value in (
        ("centroid_spread", ali, "centroid_cosine_distance"),
        ("to_medoid", cents, "to_medoid"),
    ):
        at = table["layer"] == h["last_layer"]
        assert row[column] == pytest.approx(table[at & (table["condition"] == "det0 jpn_Jpan k=4")][value].mean())
        assert row[f"baseline_{column}"] == pytest.approx(table[at & (table["condition"] == "baseline")][value].mean())
    main = [c.label for c in sweep.interventions if c.control == "none"]
    again = centroid_correlation(sweep.retrieval, sweep.alignment, main, 300, 0, 0.95)
    pd.testing.assert_frame_equal(pd.DataFrame(again), sweep.correlation, check_dtype=False)
    layer = sweep.correlation[sweep.correlation["layer"] == 2].iloc[0]
    assert layer["points"] == len(main) * 3  # conditions x unordered pairs
    ali = sweep.alignment
    one = ali[(ali["condition"] == main[0]) & (ali["layer"] == 2)]["centroid_cosine_distance"]
    assert len(one) == 3 and one.between(0, 2).all()


def test_the_headline_is_each_conditions_change_against_as_many_random_units(sweep: RunResults) -> None:
    """The headline of every intervention: its change against the baseline and against its random control (mean
    over seeds) at the best and last layer, with the paired bootstrap intervals of the differences table, and a
    verdict that follows the interval; the summary leads with them, the largest pair comes last."""
    h = sweep.headline()
    assert h["controlled"]
    diffs: Any = sweep.differences
    mean = diffs[(diffs["task"] == "retrieval") & (diffs["metric"] == "top1") & (diffs["src"] == "mean")]
    mean = mean[mean["mode"] == "both"]
    main = [e for e in h["conditions"] if e["control"] == "none"]
    assert main and all("verdict" in e for e in main)
    assert not any("verdict" in e for e in h["conditions"] if e["control"] != "none")
    verdicts = set()
    for entry in main:
        for name in ("best", "last"):
            layer = h[f"{name}_layer"]
            mine = mean[(mean["condition"] == entry["condition"]) & (mean["layer"] == layer)].set_index("against")
            vs_base, vs_random = mine.loc["baseline"], mine.loc["random"]
            vs_base = vs_base[vs_base["subject"] == "condition"].iloc[0] if vs_base.ndim == 2 else vs_base
            assert entry[f"change_{name}_layer"] == pytest.approx(vs_base["diff"])
            assert (entry[f"change_{name}_layer_low"], entry[f"change_{name}_layer_high"]) == pytest.approx(
                (vs_base["low"], vs_base["high"])
            )
            assert entry[f"vs_random_{name}_layer"] == pytest.approx(vs_random["diff"])
            low, high = vs_random["low"], vs_random["high"]
            assert (entry[f"vs_random_{name}_layer_low"], entry[f"vs_random_{name}_layer_high"]) == pytest.approx(
                (low, high)
            )
            said = "beats" if low > 0 else "is beaten by" if high < 0 else "is not distinguishable from"
            shown = (
                f"layer {layer}: top-1 {entry[f'baseline_top1_{name}_layer']:.3f} -> {entry[f'top1_{name}_layer']:.3f}"
            )
            assert shown in entry["verdict"]
            vs = f"vs random units (2 draws) {entry[f'vs_random_{name}_layer']:+.3f} [{low:+.3f}, {high:+.3f}]"
            assert f"{vs}: {said}" in entry["verdict"]  # the draws are named: the interval resamples sentences
            verdicts.add(said)
    assert len(verdicts) >= 2  # the grid has conditions the interval separates from random and others it does not
    text = sweep.summary()
    first = text.splitlines()
    assert first[0].startswith("retrieval top-1, mean over 6 ordered language pairs")
    assert first[1 : 1 + len(main)] == [e["verdict"] for e in main]
    assert "no random control" not in text
    assert text.index("largest pair gain of") > text.index("baseline top-1 per pair")


def test_the_best_condition_and_pair_are_never_controls(sweep: RunResults) -> None:
    h = sweep.headline()
    entries = {e["condition"]: e for e in h["conditions"]}
    assert {e["control"] for e in entries.values()} == {"none", "random"}
    main = [e for e in entries.values() if e["control"] == "none"]
    best = sweep.best_condition()
    assert best is not None and best.label == max(main, key=lambda e: e["best_ratio"])["condition"]
    for key in ("best_pair_ratio", "best_pair_gain"):
        assert entries[h[key]["condition"]]["control"] == "none"


def test_a_column_of_text_and_numbers_is_stored_as_text(tmp_path: Path) -> None:
    frame = tidy(pd.DataFrame({"value": ["on_mean", 0.5, None], "k": [4, 8, None], "alpha": [1.0, None, 2.0]}))
    assert frame["value"].tolist() == ["on_mean", "0.5", None]
    assert frame["alpha"].tolist()[0] == 1.0 and frame["k"].tolist()[:2] == [4, 8]
    frame.to_parquet(tmp_path / "t.parquet")
    back = pd.read_parquet(tmp_path / "t.parquet")["value"]
    assert back.tolist()[:2] == ["on_mean", "0.5"] and back.isna().tolist() == [False, False, True]


def test_mixed_rows_and_centroids_are_in_the_tables(sweep: RunResults) -> None:
    ret = sweep.retrieval
    assert set(ret["mode"]) == {"both", "queries-baseline", "candidates-baseline"}
    assert set(ret[ret["condition"] == "baseline"]["mode"]) == {"both"}
    cents = sweep.centroids
    assert len(cents) == len(sweep.conditions) * len(sweep.layers) * 3
    own = cents[(cents["condition"] == "force eng_Latn k=4") & (cents["lang"] == "eng_Latn")]
    assert (own["to_expert_lang"].abs() < 1e-9).all()  # a language's mean is at distance 0 from itself
    assert cents[cents["condition"] == "baseline"]["to_expert_lang"].isna().all()


def test_a_sweep_resumes_identically_and_reloads(sweep: RunResults) -> None:
    assert sweep.folder is not None
    files = {p: p.stat().st_mtime_ns for p in (sweep.folder / "cache").glob("embeddings-*/tensors.safetensors")}
    again = run_experiment(sweep.config, sweep.folder, progress=False)
    assert {p: p.stat().st_mtime_ns for p in files} == files  # nothing embedded again
    for name, frame in sweep.tables().items():
        pd.testing.assert_frame_equal(again.tables()[name], frame, check_exact=True)
        pd.testing.assert_frame_equal(RunResults.load(sweep.folder).tables()[name], frame, check_exact=True)


def test_hits_and_reciprocal_ranks() -> None:
    scores = hits_and_reciprocal(torch.tensor([1, 2, 0, 4], dtype=torch.int32))
    assert scores["top1"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert scores["mrr"].tolist() == pytest.approx([1.0, 0.5, 0.0, 0.25])


def test_condition_differences_average_a_controls_seeds_item_by_item() -> None:
    """Against a brute-force loop: the control's seeds averaged per item, then the paired bootstrap percentile
    interval of the mean difference over the same resampled items."""
    generator = torch.Generator().manual_seed(3)
    spec = Force()
    conditions = [
        Condition.baseline(),
        Condition.of(spec, "es", 4),
        *(Condition.of(dataclasses.replace(spec, control="random", seed=s), "es", 4) for s in range(2)),
    ]
    groups = [{"layer": 1, "target": "x"}, {"layer": 2, "target": "x"}]
    scores = {c: torch.rand(2, 30, generator=generator) for c in conditions}
    items = {c: [ItemScores(groups, {"accuracy": v})] for c, v in scores.items()}
    rows = condition_differences(conditions, items.__getitem__, Counts(500, 7), 0.9)
    table = pd.DataFrame(rows)
    assert len(table) == 3 * 2  # condition vs baseline, vs random, random vs baseline; two groups
    control = (scores[conditions[2]] + scores[conditions[3]]) / 2
    counts = resample_counts(30, 500, 7).numpy()
    for g, layer in enumerate((1, 2)):
        diff = (scores[conditions[1]][g] - control[g]).double().numpy()
        resampled = counts @ diff / 30
        row = table[(table["subject"] == "condition") & (table["against"] == "random") & (table["layer"] == layer)]
        assert row["diff"].item() == pytest.approx(diff.mean(), abs=1e-6)
        assert row["against_mean"].item() == pytest.approx(control[g].double().mean().item(), abs=1e-6)
        low, high = np.quantile(resampled, [0.05, 0.95])
        assert row["low"].item() == pytest.approx(low, abs=1e-6) and row["high"].item() == pytest.approx(high, abs=1e-6)


# --- command line and benchmark ------------------------------------------------------------------------------


def test_the_sweep_command(tmp_path: Path) -> None:
    config = ExperimentConfig.from_dict({**SWEEP, "intervene": {"method": ["force", "det0"], "k": [4]}})
    path = config.save(tmp_path / "grid.toml")
    result = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "out"), "--no-figures"])
    assert result.exit_code == 0, result.output
    assert "det0 spa_Latn k=4" in result.output and "retrieval · top1" in result.output
    assert "from random" in result.output or "above random" in result.output or "below random" in result.output
    assert {p.name for p in (tmp_path / "out").glob("*.parquet")} == {
        "retrieval.parquet",
        "alignment.parquet",
        "centroids.parquet",
        "differences.parquet",
        "correlation.parquet",
    }
    bad = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "out"), "--set", "controls.seeds=5"])
    assert bad.exit_code == 2 and "controls.seeds: 2 -> 5" in bad.output


def test_bench_sweep_json(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    args = ["bench", "sweep", "--json", str(out), "--languages", "3", "--layers", "2", "--interventions", "4"]
    result = runner.invoke(app, [*args, "--seeds", "2", "--sentences", "20", "--resamples", "50"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    # interventions x (vs baseline, vs random, random vs baseline) x metrics x layers x (pairs + mean)
    assert report["bootstrap_rows"] == 4 * 3 * 2 * 2 * (3 * 2 + 1)
    assert report["correlation_layers"] == 2 and report["shape"]["conditions"] == 1 + 4 * 3


def test_dataclass_replace_keeps_controls_valid() -> None:
    with pytest.raises(ConfigError, match=r"intervene\.control = 'shuffled'"):
        dataclasses.replace(Force(), control="shuffled")
    with pytest.raises(ConfigError, match=r"method 'diffmean' has the controls none, random"):
        DiffMean(control="random-per-block")


@pytest.mark.integration
def test_the_paper_protocol_preset_loads(shared_data: Path) -> None:
    from xlens.runs.study import check_config

    config = ExperimentConfig.load(Path(__file__).resolve().parents[1] / "configs" / "paper-protocol.toml")
    splits = check_config(config)
    assert config.find_languages[-1] == "zho_Hans" and len(config.eval_languages) >= 20
    assert config.expert_languages == ["eng_Latn", "spa_Latn", "deu_Latn", "fra_Latn", "jpn_Jpan"]
    spec = config.intervene.spec
    assert (spec.rank_by, spec.value, config.intervene.k_values) == ("auroc", "on_mean", [100, 2000])  # type: ignore[attr-defined]
    assert config.controls.random and config.evaluate.layers == [18]
    assert splits.provenance()["overlapping_rows"] == 0
    assert len(grid_conditions(config)) == 1 + 5 * 2 * 4


def test_bootstrap_spearman_matches_scipy_and_a_resampling_loop() -> None:
    from scipy.stats import spearmanr

    generator = torch.Generator().manual_seed(1)
    x = torch.randint(0, 5, (30,), generator=generator).double()  # ties within the sample and in every resample
    y = x + torch.randn(30, generator=generator, dtype=torch.float64)
    rho, low, high = bootstrap_correlation(x, y, resamples=200, seed=0, method="spearman")
    assert rho == pytest.approx(spearmanr(x, y).statistic)
    loop = []
    for row in resample_counts(30, 200, 0):
        drawn = np.repeat(np.arange(30), row.int().numpy())
        if np.ptp(x.numpy()[drawn]) > 0 and np.ptp(y.numpy()[drawn]) > 0:
            loop.append(spearmanr(x.numpy()[drawn], y.numpy()[drawn]).statistic)
    assert (low, high) == pytest.approx(tuple(np.quantile(loop, [0.025, 0.975])), abs=1e-9)
    with pytest.raises(MetricInputError, match="finite"):
        bootstrap_correlation(torch.tensor([1.0, float("nan"), 2.0]), torch.ones(3), method="spearman")
