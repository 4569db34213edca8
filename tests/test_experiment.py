"""The experiment runner on a tiny model: schema, disjoint splits, resume from cache, determinism, configs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from xlens.experiment import ExperimentConfig, headline, load_splits, run_experiment, summarize
from xlens.metrics.alignment import linear_cka
from xlens.metrics.retrieval import retrieval

CONFIG = ExperimentConfig(
    model="tiny-gpt2", languages=["en", "es", "ja"], find_sentences=12, eval_sentences=10, k=[4, 16], batch_size=8
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run")
    return out, run_experiment(CONFIG, out, progress=False)


def test_schema_and_row_counts(run: tuple[Path, dict]) -> None:
    out, results = run
    assert results["schema_version"] == 1
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["retrieval"] == results["retrieval"]
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
    prov = results["provenance"]
    assert prov["model"]["name"] == "tiny-gpt2" and prov["disjoint_splits"] is True
    assert prov["eval_corpus"]["sentences"] == 10
    assert all("sha256" in v for v in prov["find_corpus"]["files"].values())


def test_metrics_equal_direct_computation(run: tuple[Path, dict]) -> None:
    out, results = run
    # The baseline embeddings are cached (results.json names the file): recompute one retrieval row and one CKA.
    assert len(list((out / "cache").glob("emb-*.safetensors"))) == 7
    (baseline,) = [f for f in results["embeddings"] if f["intervention"] == "none"]
    emb = load_file(str(out / baseline["file"]))["embeddings"].view(3, 10, 3, -1)
    ret = pd.DataFrame(results["retrieval"])
    ali = pd.DataFrame(results["alignment"])
    row = ret[(ret["intervention"] == "none") & (ret["layer"] == 2) & (ret["src"] == "eng_Latn")]
    row = row[row["tgt"] == "jpn_Jpan"].iloc[0]
    got = retrieval(emb[0, :, 2].double(), emb[2, :, 2].double())
    assert (got.top1, got.top5, got.mrr) == pytest.approx((row["top1"], row["top5"], row["mrr"]), abs=1e-12)
    cka = ali[(ali["intervention"] == "none") & (ali["layer"] == 2) & (ali["lang_a"] == "eng_Latn")]
    cka = cka[cka["lang_b"] == "spa_Latn"]["cka"].iloc[0]
    assert abs(linear_cka(emb[0, :, 2].double(), emb[1, :, 2].double()) - cka) < 1e-9


def test_splits_are_disjoint() -> None:
    find, evaluation = load_splits(CONFIG)
    assert len(find) == 12 and len(evaluation) == 10
    assert not set(find.ids) & set(evaluation.ids)
    assert not set(find["en"]) & set(evaluation["en"])


def test_resume_uses_cache_and_rerun_is_identical(run: tuple[Path, dict], tmp_path: Path) -> None:
    _, results = run
    # A fresh run elsewhere reproduces the results exactly (CPU, same seed).
    fresh = run_experiment(CONFIG, tmp_path, progress=False)
    assert fresh["retrieval"] == results["retrieval"] and fresh["alignment"] == results["alignment"]
    # Resuming reads cached embeddings: poison one and see it come back.
    victim = sorted((tmp_path / "cache").glob("emb-*.safetensors"))[0]
    emb = load_file(str(victim))["embeddings"]
    save_file({"embeddings": emb.flip(0).contiguous()}, str(victim))  # rows no longer aligned
    resumed = run_experiment(CONFIG, tmp_path, progress=False)
    assert resumed["retrieval"] != results["retrieval"]


def test_headline_and_summary(run: tuple[Path, dict]) -> None:
    _, results = run
    h = headline(results)
    ret = pd.DataFrame(results["retrieval"])
    base = ret[ret["intervention"] == "none"].groupby("layer")["top1"].mean()
    assert h["best_layer"] == int(base.idxmax()) and h["last_layer"] == 2
    assert len(h["conditions"]) == 6
    spa = next(c for c in h["conditions"] if c["expert_lang"] == "spa_Latn" and c["k"] == 16)
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
    text = summarize(results)
    assert "baseline top-1 per pair" in text and "spa_Latn" in text
    assert f"largest pair gain: +{g['gain']:.3f}, top-1 {g['before']:.3f} -> {g['after']:.3f}" in text


def test_config_files(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('model = "tiny-bloom"\nlanguages = ["en", "de"]\nk = [3]\nmethod = "aura"\n')
    cfg = ExperimentConfig.load(toml)
    assert (cfg.model, cfg.languages, cfg.k, cfg.method) == ("tiny-bloom", ["en", "de"], [3], "aura")
    yaml = tmp_path / "c.yaml"
    yaml.write_text("model: tiny-cohere\nseed: 7\n")
    assert ExperimentConfig.load(yaml).seed == 7
    assert cfg.replace(k=[1, 2], model=None).k == [1, 2]
    bad = tmp_path / "bad.toml"
    bad.write_text("modle = 'x'\n")
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['modle'\]"):
        ExperimentConfig.load(bad)
    with pytest.raises(ValueError, match="unknown method"):
        ExperimentConfig(method="magic")
    with pytest.raises(ValueError, match="k values must be >= 1"):
        ExperimentConfig(k=[0])
    with pytest.raises(FileNotFoundError, match="config file not found"):
        ExperimentConfig.load(tmp_path / "none.toml")


@pytest.mark.parametrize("method", ["aura", "det0", "diffmean", "lape"])
def test_other_methods_run(method: str, tmp_path: Path) -> None:
    # A tiny model has 128 units: keep 20% of them as LAPE units (1% would be one unit for all languages).
    cfg = CONFIG.replace(method=method, k=[8], languages=["en", "ja"], lape_top_rate=0.2)
    results = run_experiment(cfg, tmp_path, progress=False)
    ret = pd.DataFrame(results["retrieval"])
    assert set(ret["intervention"]) == {"none", method}
    assert set(ret[ret["intervention"] == method]["k"]) == ({0} if method == "diffmean" else {8})


def test_negatives_reach_the_expert_scores(tmp_path: Path) -> None:
    from xlens.experts.sets import ExpertScores

    cfg = CONFIG.replace(negatives=["en"], k=[4], languages=["en", "es", "ja"])
    run_experiment(cfg, tmp_path, progress=False)
    scores = ExpertScores.load(tmp_path / "experts" / "scores")
    assert scores.meta["negatives"] == ["eng_Latn"]
    # Spanish was scored against English alone: equal to scoring the two-language responses directly.
    responses = next((tmp_path / "cache").glob("responses-*"))
    from xlens.activations import Responses

    res = Responses.load(responses)
    two = (res.lang_ids == 0) | (res.lang_ids == 1)  # type: ignore[operator]
    from xlens.experts.scoring import average_precision

    expected = average_precision(res["mean"][two], res.lang_ids[two] == 1)  # type: ignore[index]
    torch.testing.assert_close(scores.ap[1], expected.float())


@pytest.mark.integration
@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml")), ids=lambda p: p.name
)
def test_shipped_configs_load_their_corpora(path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(path.parents[1])  # config paths are relative to the repository root
    config = ExperimentConfig.load(path)
    find, evaluation = load_splits(config)
    assert len(find) == config.find_sentences and len(evaluation) == config.eval_sentences
    assert (
        list(find.languages)
        == list(evaluation.languages)
        == ["eng_Latn", "spa_Latn", "deu_Latn", "fra_Latn", "jpn_Jpan"]
    )
