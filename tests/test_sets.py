"""Expert scores and sets: selection vs brute force, statistics carried along, save/load, model checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score

from xlens.activations import Responses, UnitIndex
from xlens.data.corpus import ParallelCorpus
from xlens.errors import ArtifactError, ModelMismatchError
from xlens.experts.sets import ExpertScores, ExpertSet, find_experts
from xlens.models import LensModel

LANGS = ["eng_Latn", "spa_Latn", "jpn_Jpan"]


def synthetic_responses(seed: int = 0, per_lang: int = 20) -> Responses:
    """Three languages; units 0-2 are planted experts for language 0, 1, 2; two hooks in layers 0 and 1."""
    gen = torch.Generator().manual_seed(seed)
    lang_ids = torch.arange(3).repeat_interleave(per_lang)
    values = torch.randn(3 * per_lang, 10, generator=gen)
    for lang in range(3):
        values[lang_ids == lang, lang] += 4.0
    index = UnitIndex(("blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"), (5, 5))
    model = {"name": "synthetic", "revision": None, "architecture": "X", "n_layers": 2, "d_model": 4, "d_mlp": 5}
    return Responses({"mean": values}, index, torch.full((3 * per_lang,), 7), lang_ids, LANGS, {"model": model})


@pytest.fixture
def scores() -> ExpertScores:
    return ExpertScores.from_responses(synthetic_responses())


def test_scores_equal_sklearn(scores: ExpertScores) -> None:
    res = synthetic_responses()
    values, ids = res["mean"].numpy(), res.lang_ids.numpy()  # type: ignore[union-attr]
    for li in range(3):
        expected = [average_precision_score(ids == li, values[:, u]) for u in range(10)]
        np.testing.assert_allclose(scores.ap[li].numpy(), expected, atol=1e-6)
        np.testing.assert_allclose(scores.stats["on_p50"][li].numpy(), np.median(values[ids == li], axis=0), atol=1e-6)
        np.testing.assert_allclose(scores.stats["off_mean"][li].numpy(), values[ids != li].mean(0), atol=1e-5)


def test_top_selection_is_the_argsort(scores: ExpertScores) -> None:
    spanish = scores.select("es", 4)
    assert spanish.language == "spa_Latn"
    assert spanish.units[0].item() == 1  # the planted Spanish expert
    expected = np.argsort(-scores.ap[1].numpy(), kind="stable")[:4]
    assert spanish.units.tolist() == expected.tolist()
    assert torch.equal(spanish.ap, scores.ap[1, spanish.units])
    assert torch.equal(spanish.stats["on_p50"], scores.stats["on_p50"][1, spanish.units])
    assert spanish.sign.tolist() == [1, 1, 1, 1]


def test_per_block_top_bottom_threshold(scores: ExpertScores) -> None:
    per_block = scores.select("ja", 2, method="per-block")
    assert sorted(per_block.counts_per_block().items()) == [(0, 2), (1, 2)]
    order = np.argsort(-scores.ap[2].numpy(), kind="stable").tolist()
    for cols in (range(5), range(5, 10)):
        best = [u for u in order if u in cols][:2]
        assert set(best) <= set(per_block.units.tolist())
    tb = scores.select("en", 2, method="top-bottom", bottom_k=3)
    assert len(tb) == 5
    assert tb.sign.tolist() == [1, 1, -1, -1, -1]
    order = np.argsort(-scores.ap[0].numpy(), kind="stable")
    assert tb.units[:2].tolist() == order[:2].tolist()
    assert set(tb.units[2:].tolist()) == set(order[-3:].tolist())
    th = scores.select("en", method="threshold", threshold=0.9)
    assert (th.ap >= 0.9).all() and int((scores.ap[0] >= 0.9).sum()) == len(th)


def test_selection_errors(scores: ExpertScores) -> None:
    with pytest.raises(ValueError, match="k=11 is larger than the number of units"):
        scores.select("en", 11)
    with pytest.raises(ValueError, match="larger than the number of units in block"):
        scores.select("en", 6, method="per-block")
    with pytest.raises(ValueError, match="needs threshold"):
        scores.select("en", method="threshold")
    with pytest.raises(ValueError, match=r"0 units have AP >= 1\.01 for .*: none; lower the threshold"):
        scores.select("en", method="threshold", threshold=1.01)
    with pytest.raises(ValueError, match="was not scored"):
        scores.select("de", 2)
    with pytest.raises(ValueError, match="needs k >= 1"):
        scores.select("en", 0)


def test_need_two_languages() -> None:
    res = synthetic_responses()
    res.languages = ["eng_Latn"]
    with pytest.raises(ValueError, match="at least two languages"):
        ExpertScores.from_responses(res)


def test_save_load_round_trip(scores: ExpertScores, tmp_path: Path) -> None:
    expert_set = scores.select("es", 5, method="top-bottom", bottom_k=2)
    expert_set.save(tmp_path / "es")
    loaded = ExpertSet.load(tmp_path / "es")
    assert loaded.language == "spa_Latn" and loaded.method == "top-bottom"
    for name in ("units", "ap", "auroc", "sign"):
        assert torch.equal(getattr(loaded, name), getattr(expert_set, name))
    assert loaded.stats.keys() == expert_set.stats.keys()
    assert loaded.unit_index == expert_set.unit_index
    scores.save(tmp_path / "scores")
    back = ExpertScores.load(tmp_path / "scores")
    assert torch.equal(back.ap, scores.ap) and back.languages == scores.languages
    # A folder holding another kind of artefact under the expected file names is refused by kind.
    (tmp_path / "scores" / "experts.json").write_text((tmp_path / "scores" / "scores.json").read_text())
    with pytest.raises(ArtifactError, match=r"holds a 'xlens\.ExpertScores', not a xlens\.ExpertSet"):
        ExpertSet.load(tmp_path / "scores")


def test_saving_again_commits_a_whole_new_pair_and_a_kill_keeps_the_old(scores: ExpertScores, tmp_path: Path) -> None:
    first = scores.select("es", 5)
    first.save(tmp_path / "es")
    (old_tensors,) = (tmp_path / "es").glob("experts-*.safetensors")
    second = scores.select("es", 7)
    second.save(tmp_path / "es")
    assert len(ExpertSet.load(tmp_path / "es")) == 7
    assert not old_tensors.exists()  # the replaced pair's tensors are gone, the new ones are named in the header
    assert len(list((tmp_path / "es").glob("experts-*.safetensors"))) == 1
    # A kill after the new tensors were written but before the header: the old pair still loads, whole.
    from xlens import _io

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    original = _io.write_json
    _io.write_json = killed  # type: ignore[assignment]
    try:
        with pytest.raises(KeyboardInterrupt):
            scores.select("es", 3).save(tmp_path / "es")
    finally:
        _io.write_json = original
    assert len(ExpertSet.load(tmp_path / "es")) == 7


def test_table_and_head(scores: ExpertScores) -> None:
    es = scores.select("es", 6)
    table = es.to_pandas()
    assert list(table["unit"]) == es.units.tolist()
    assert table.loc[0, "label"] == "L0.mlp#1"
    assert table.loc[0, "hook"] == "blocks.0.mlp.hook_post"
    head = es.head(3)
    assert head.units.tolist() == es.units[:3].tolist()
    with pytest.raises(ValueError, match="k=7 is larger"):
        es.head(7)
    groups = es.by_hook()
    assert sum(len(v) for v in groups.values()) == 6
    summary = scores.summary()
    assert list(summary["language"]) == LANGS
    assert summary.loc[1, "best_unit"] == "L0.mlp#1"


def test_refuses_another_model(tiny_gpt2: LensModel, tmp_path: Path) -> None:
    corpus = ParallelCorpus({"en": ["the cat", "a dog runs", "birds fly"], "es": ["el gato", "un perro", "pájaros"]})
    found = find_experts(tiny_gpt2, corpus, progress=False)
    assert found.ap.shape == (2, tiny_gpt2.n_layers * tiny_gpt2.d_mlp)
    found.select("en", 3).save(tmp_path / "en")
    assert len(ExpertSet.load(tmp_path / "en", model=tiny_gpt2)) == 3
    from xlens.models import load_model

    other = load_model("tiny-cohere", device="cpu")
    with pytest.raises(ModelMismatchError, match="was made with model 'tiny-gpt2', not with 'tiny-cohere'"):
        ExpertSet.load(tmp_path / "en", model=other)
    found.save(tmp_path / "scores")
    with pytest.raises(ModelMismatchError, match=r"expert scores in .* made with model 'tiny-gpt2'"):
        ExpertScores.load(tmp_path / "scores", model=other)


def test_lape_sets_find_planted_units() -> None:
    res = synthetic_responses(per_lang=30)
    lang_ids = res.lang_ids
    assert lang_ids is not None
    tokens = torch.full((90,), 10)
    active = torch.full((90, 10), 3.0)  # every unit active on 30% of tokens in every language...
    for lang, unit in ((0, 7), (1, 8), (2, 9)):
        active[:, unit] = torch.where(lang_ids == lang, 9.0, 0.0)  # ...but units 7, 8, 9 only in one language
    res.pooled["gate_active"] = active  # the reference's counts (on these synthetic units, any counts)
    res.token_counts = tokens
    scores = ExpertScores.from_responses(res)
    ranked = scores.with_lape(res, top_rate=0.3, filter_quantile=0.5, activation_quantile=0.5)
    sets = ranked.lape_sets()
    assert {lang: s.units.tolist() for lang, s in sets.items()} == {"eng_Latn": [7], "spa_Latn": [8], "jpn_Jpan": [9]}
    assert sets["spa_Latn"].method == "lape"
    assert torch.equal(sets["spa_Latn"].ap, scores.ap[1, [8]])
    assert ranked.lape is not None
    assert sets["spa_Latn"].entropy.tolist() == pytest.approx([float(ranked.lape.entropy[8])])  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="no LAPE ranking"):
        scores.lape_set("es")
    with pytest.raises(ValueError, match="counts = 'post' needs responses collected with the 'active' pooling"):
        scores.with_lape(res, counts="post")
    del res.pooled["gate_active"]
    with pytest.raises(ValueError, match="'gate_active'"):
        scores.with_lape(res)


def test_lape_ranking_and_sets_survive_saving(tmp_path: Path) -> None:
    res = synthetic_responses(per_lang=30)
    res.pooled["active"] = (res["mean"] > 0).float() * 5
    res.token_counts = torch.full((90,), 10)
    ranked = ExpertScores.from_responses(res).with_lape(res, top_rate=0.5, filter_quantile=0.2, counts="post")
    ranked.save(tmp_path / "scores")
    back = ExpertScores.load(tmp_path / "scores")
    assert back.lape is not None and ranked.lape is not None
    torch.testing.assert_close(back.lape.entropy, ranked.lape.entropy, equal_nan=True)
    assert back.lape.top_rate == 0.5 and torch.equal(back.lape.assignment, ranked.lape.assignment)
    assert back.lape.counts == "post"  # the definition travels with the ranking
    for lang in ranked.languages:
        expert_set = ranked.lape_set(lang)
        entropy = expert_set.entropy
        assert entropy is not None and bool((entropy[1:] >= entropy[:-1]).all())  # lowest entropy first
        expert_set.save(tmp_path / lang)
        loaded = ExpertSet.load(tmp_path / lang)
        assert loaded.units.tolist() == expert_set.units.tolist() == back.lape_set(lang).units.tolist()
        assert torch.equal(loaded.entropy, entropy)  # type: ignore[arg-type]


def test_scoring_against_chosen_negatives() -> None:
    res = synthetic_responses()
    values, ids = res["mean"].numpy(), res.lang_ids.numpy()  # type: ignore[union-attr]
    scores = ExpertScores.from_responses(res, negatives=["en"])
    assert scores.meta["negatives"] == ["eng_Latn"]
    for li, against in ((1, [0]), (2, [0]), (0, [1, 2])):  # English itself falls back to all the others
        rows = np.isin(ids, [li, *against])
        expected = [average_precision_score(ids[rows] == li, values[rows, u]) for u in range(10)]
        np.testing.assert_allclose(scores.ap[li].numpy(), expected, atol=1e-6)
        off = values[np.isin(ids, against)]
        np.testing.assert_allclose(scores.stats["off_p50"][li].numpy(), np.median(off, axis=0), atol=1e-6)
        np.testing.assert_allclose(scores.stats["on_mean"][li].numpy(), values[ids == li].mean(0), atol=1e-5)
    # Against every other language it is exactly one vs the rest.
    everyone = ExpertScores.from_responses(res, negatives=["en", "es", "ja"])
    torch.testing.assert_close(everyone.ap, ExpertScores.from_responses(res).ap)
    with pytest.raises(ValueError, match="not among the collected languages"):
        ExpertScores.from_responses(res, negatives=["de"])
    with pytest.raises(ValueError, match="negatives is empty"):
        ExpertScores.from_responses(res, negatives=[])


def _lang_neuron_limited(ap: np.ndarray, threshold: int) -> tuple[list[int], list[int]]:
    """kojima-takeshi188/lang_neuron, scripts/make_limited_expert.py, restated: the top threshold/2 units by AP
    (descending) and the bottom threshold/2 (ascending); its N ("threshold") is the two together."""
    frame = pd.DataFrame({"unit": np.arange(len(ap)), "ap": ap})
    top = frame.sort_values("ap", ascending=False).head(int(threshold / 2))
    bottom = frame.sort_values("ap", ascending=True).head(int(threshold / 2))
    return top["unit"].tolist(), bottom["unit"].tolist()


def test_top_bottom_is_lang_neurons_selection_with_k_the_top_count(scores: ExpertScores) -> None:
    ap = scores.ap[scores.lang_index("es")].numpy()
    assert len(set(ap.tolist())) == len(ap)  # no ties: the reference's unstable sort is then well defined
    top, bottom = _lang_neuron_limited(ap, 8)  # the reference's N = 8: 4 top and 4 bottom
    chosen = scores.select("es", 4, method="top-bottom", bottom_k=4)  # xlens's k is the top count
    units, sign = chosen.units.tolist(), chosen.sign.tolist()
    assert [u for u, s in zip(units, sign, strict=True) if s == 1] == top
    assert sorted(u for u, s in zip(units, sign, strict=True) if s == -1) == sorted(bottom)
