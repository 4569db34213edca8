"""Bitext mining (margin scoring, BUCC threshold and F1) against a transcription of the LASER reference, and the
mining and pivot-pair data: BUCC files, mining sets built from FLORES-200, Tatoeba-style pivot pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xlens.data import ParallelCorpus, load_flores
from xlens.data.mining import MiningSet, load_bucc, mining_set, write_bucc
from xlens.data.pivot import load_pivot_pairs
from xlens.errors import CorpusError
from xlens.metrics.alignment import MetricInputError
from xlens.metrics.mining import Candidates, best_threshold, knn, mine, mining_scores

# --- the reference: facebookresearch/LASER source/mine_bitexts.py and tasks/bucc/bucc.py, transcribed ----------


def laser_mine(x: np.ndarray, y: np.ndarray, k: int, retrieval: str) -> list[tuple[int, int, float]]:
    """mine_bitexts.py with --mode mine --margin ratio, brute force (full similarity matrices, double loops)."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    sim = x @ y.T
    x2y_ind = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    y2x_ind = np.argsort(-sim.T, axis=1, kind="stable")[:, :k]
    x2y_mean = np.take_along_axis(sim, x2y_ind, 1).mean(1)
    y2x_mean = np.take_along_axis(sim.T, y2x_ind, 1).mean(1)

    def score_candidates(a, b, inds, fwd_mean, bwd_mean):  # the reference's own signature
        scores = np.zeros(inds.shape)
        for i in range(scores.shape[0]):
            for j in range(scores.shape[1]):
                m = inds[i, j]
                scores[i, j] = a[i].dot(b[m]) / ((fwd_mean[i] + bwd_mean[m]) / 2)
        return scores

    fwd_scores = score_candidates(x, y, x2y_ind, x2y_mean, y2x_mean)
    bwd_scores = score_candidates(y, x, y2x_ind, y2x_mean, x2y_mean)
    fwd_best = x2y_ind[np.arange(x.shape[0]), fwd_scores.argmax(axis=1)]
    bwd_best = y2x_ind[np.arange(y.shape[0]), bwd_scores.argmax(axis=1)]
    if retrieval == "intersect":
        out = [(i, int(fwd_best[i]), fwd_scores[i].max()) for i in range(x.shape[0]) if bwd_best[fwd_best[i]] == i]
        return sorted(out, key=lambda t: -t[2])
    indices = np.stack(
        (np.concatenate((np.arange(x.shape[0]), bwd_best)), np.concatenate((fwd_best, np.arange(y.shape[0])))), 1
    )
    scores = np.concatenate((fwd_scores.max(axis=1), bwd_scores.max(axis=1)))
    seen_src, seen_trg, out = set(), set(), []
    for i in np.argsort(-scores, kind="stable"):
        src_ind, trg_ind = indices[i]
        if src_ind not in seen_src and trg_ind not in seen_trg:
            seen_src.add(src_ind)
            seen_trg.add(trg_ind)
            out.append((int(src_ind), int(trg_ind), float(scores[i])))
    return out


def bucc_optimize(candidates: list[tuple[int, int, float]], gold: set[tuple[int, int]]) -> float:
    """bucc.py's BuccOptimize: the threshold of the best F1 over the candidates sorted by score."""
    items = sorted(candidates, key=lambda t: -t[2])
    ncorrect = 0
    threshold, best_f1 = 0.0, 0.0
    for i in range(len(items)):
        nextract = i + 1
        if (items[i][0], items[i][1]) in gold:
            ncorrect += 1
        if ncorrect > 0:
            precision, recall = ncorrect / nextract, ncorrect / len(gold)
            f1 = 2 * precision * recall / (precision + recall)
            if f1 > best_f1:
                best_f1 = f1
                threshold = (items[i][2] + items[i + 1][2]) / 2 if i + 1 < len(items) else items[i][2]
    return threshold


def planted(n_pairs: int, n_x: int, n_y: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, set]:
    """Random embeddings where x[i] and y[perm[i]] translate each other for the first n_pairs rows."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_x, 16))
    y = rng.normal(size=(n_y, 16))
    perm = rng.permutation(n_y)[:n_pairs]
    y[perm] = x[:n_pairs] + noise * rng.normal(size=(n_pairs, 16))
    return x, y, {(i, int(perm[i])) for i in range(n_pairs)}


def as_tuples(c: Candidates) -> list[tuple[int, int, float]]:
    return list(zip(c.src.tolist(), c.tgt.tolist(), c.score.tolist(), strict=True))


# --- the metric ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", [1, 3, 4096])
def test_knn_in_blocks_equals_the_full_matrix(block: int) -> None:
    x, y, _ = planted(5, 11, 9, 0.1, 0)
    sim, ids = knn(torch.tensor(x), torch.tensor(y), 4, block=block)
    xn, yn = x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True)
    full = xn @ yn.T
    want = -np.sort(-full, axis=1)[:, :4]
    np.testing.assert_allclose(sim.numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(np.take_along_axis(full, ids.numpy(), 1), want, rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    n_pairs=st.integers(1, 12),
    extra_x=st.integers(0, 10),
    extra_y=st.integers(0, 10),
    k=st.integers(2, 5),  # k = 1 makes every margin exactly 1: ties that rounding orders
    noise=st.sampled_from([0.05, 0.5, 2.0]),
    seed=st.integers(0, 10_000),
    retrieval=st.sampled_from(["max", "intersect"]),
)
def test_mine_equals_the_laser_reference(
    n_pairs: int, extra_x: int, extra_y: int, k: int, noise: float, seed: int, retrieval: str
) -> None:
    x, y, _ = planted(n_pairs, n_pairs + extra_x, n_pairs + extra_y, noise, seed)
    k = min(k, x.shape[0], y.shape[0])
    got = as_tuples(mine(torch.tensor(x), torch.tensor(y), k=k, retrieval=retrieval, block=4))  # type: ignore[arg-type]
    want = laser_mine(x, y, k, retrieval)
    assert [(s, t) for s, t, _ in got] == [(s, t) for s, t, _ in want]
    np.testing.assert_allclose([s for *_, s in got], [s for *_, s in want], rtol=1e-5)


def test_mining_finds_planted_pairs_and_the_threshold_separates_distractors() -> None:
    x, y, gold = planted(40, 60, 70, 0.05, 1)
    candidates = mine(torch.tensor(x), torch.tensor(y), k=4)
    threshold = best_threshold(candidates, gold)
    scores = mining_scores(candidates, gold, threshold)
    assert scores.f1 == 1.0 and scores.mined == 40 and scores.gold == 40


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), noise=st.sampled_from([0.3, 1.0, 3.0]))
def test_best_threshold_equals_bucc_optimize_and_maximises_f1(seed: int, noise: float) -> None:
    x, y, gold = planted(15, 25, 25, noise, seed)
    candidates = mine(torch.tensor(x), torch.tensor(y), k=3)
    threshold = best_threshold(candidates, gold)
    assert threshold == pytest.approx(bucc_optimize(as_tuples(candidates), gold), rel=1e-6)
    # Brute force: no cut of the candidates gives a better F1 than the chosen threshold.
    f1s = [mining_scores(candidates, gold, t).f1 for t in candidates.score.tolist()]
    assert mining_scores(candidates, gold, threshold).f1 == pytest.approx(max(f1s))


def test_mining_scores_against_set_arithmetic() -> None:
    candidates = Candidates(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 2, 1, 3]), torch.tensor([4.0, 3.0, 2.0, 1.0]))
    gold = {(0, 0), (2, 1), (3, 3), (4, 4)}
    s = mining_scores(candidates, gold, 2.0)  # keeps (0,0) (1,2) (2,1): 2 of 3 correct, 2 of 4 gold
    assert (s.precision, s.recall, s.mined) == (pytest.approx(2 / 3), 0.5, 3)
    assert s.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert mining_scores(candidates, gold, 10.0).f1 == 0.0


def test_mining_refuses_bad_input() -> None:
    x = torch.randn(5, 4)
    with pytest.raises(MetricInputError, match="k=6"):
        mine(x, torch.randn(7, 4), k=6)
    with pytest.raises(MetricInputError, match="width"):
        mine(x, torch.randn(5, 3))
    with pytest.raises(MetricInputError, match="retrieval"):
        mine(x, x, retrieval="union")  # type: ignore[arg-type]
    with pytest.raises(MetricInputError, match="all-zero row"):
        mine(torch.zeros(3, 4), x, k=2)
    with pytest.raises(MetricInputError, match="no gold"):
        best_threshold(mine(x, x), set())


# --- the data ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flores(shared_data: Path) -> ParallelCorpus:
    return load_flores(shared_data / "flores200" / "devtest", langs=["eng_Latn", "spa_Latn", "jpn_Jpan"])


@pytest.mark.integration
def test_a_mining_set_from_flores_hides_its_pairs_among_distractors(flores: ParallelCorpus, tmp_path: Path) -> None:
    part = mining_set(flores, "es", "en", gold=100, distractors=150, seed=3)
    assert len(part.src_texts) == len(part.tgt_texts) == 250 and len(part.gold) == 100
    eng, spa = flores["eng_Latn"], flores["spa_Latn"]
    for s, t in part.gold:  # a gold pair is the same FLORES row on both sides
        assert eng.index(part.tgt_texts[part.tgt_ids.index(t)]) == spa.index(part.src_texts[part.src_ids.index(s)])
    gold_src = {s for s, _ in part.gold}
    distractor_rows = {spa.index(t) for i, t in zip(part.src_ids, part.src_texts, strict=True) if i not in gold_src}
    tgt_rows = {eng.index(t) for t in part.tgt_texts}
    assert not distractor_rows & tgt_rows  # a source distractor's translation is not on the target side
    back = load_bucc(write_bucc(part, tmp_path, "training"), "es", "training")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "es-en.training.en",
        "es-en.training.es",
        "es-en.training.gold",
    ]
    assert (back.src_texts, back.tgt_ids, back.gold, back.gold_indices()) == (
        part.src_texts,
        part.tgt_ids,
        part.gold,
        part.gold_indices(),
    )


@pytest.mark.integration
def test_mining_flores_with_a_character_ngram_baseline(flores: ParallelCorpus) -> None:
    """End to end on real text: a threshold chosen on a train part mines a disjoint test part; a shuffled target
    side (no translations left) mines nothing correct."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    train = mining_set(flores.head(500), "es", "en", gold=150, distractors=150, seed=0)
    test = mining_set(flores.subset(range(500, len(flores))), "es", "en", gold=150, distractors=150, seed=1)
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)).fit(train.src_texts + train.tgt_texts)

    def embed(texts: list[str]) -> torch.Tensor:
        return torch.tensor(vec.transform(texts).toarray(), dtype=torch.float32)

    threshold = best_threshold(mine(embed(train.src_texts), embed(train.tgt_texts)), train.gold_indices())
    scores = mining_scores(mine(embed(test.src_texts), embed(test.tgt_texts)), test.gold_indices(), threshold)
    assert scores.f1 > 0.6
    unrelated = mining_set(flores.subset(range(500, len(flores))), "es", "en", gold=1, distractors=150, seed=1)
    found = mine(embed(unrelated.src_texts), embed(unrelated.tgt_texts))
    assert mining_scores(found, unrelated.gold_indices(), threshold).precision < 0.05


def test_mining_sets_refuse_inconsistent_gold(tmp_path: Path) -> None:
    good = MiningSet("spa_Latn", "eng_Latn", ["s1", "s2"], ["uno", "dos"], ["e1", "e2"], ["one", "two"], [("s1", "e1")])
    write_bucc(good, tmp_path, "sample")
    (tmp_path / "es-en.sample.gold").write_text("s1\te1\ns3\te2\n")
    with pytest.raises(CorpusError, match=r"1 gold pair\(s\) name ids that are not among the sentences"):
        load_bucc(tmp_path, "es", "sample")
    (tmp_path / "es-en.sample.gold").write_text("s1\te1\ns2\te1\n")
    with pytest.raises(CorpusError, match="more than one gold pair"):
        load_bucc(tmp_path, "es", "sample")
    (tmp_path / "es-en.sample.es").write_text("s1 uno\n")
    with pytest.raises(CorpusError, match="line 1: expected 2 tab-separated fields"):
        load_bucc(tmp_path, "es", "sample")
    with pytest.raises(CorpusError, match="mining file not found"):
        load_bucc(tmp_path, "de", "sample")
    with pytest.raises(CorpusError, match="ids repeat"):
        MiningSet("spa_Latn", "eng_Latn", ["s1", "s1"], ["a", "b"], ["e1"], ["one"], [])


def test_pivot_pairs_in_both_layouts(tmp_path: Path) -> None:
    (tmp_path / "tatoeba.spa-eng.spa").write_text("hola\nadiós\ngracias\n")
    (tmp_path / "tatoeba.spa-eng.eng").write_text("hello\ngoodbye\nthanks\n")
    (tmp_path / "jpn-eng.tsv").write_text("こんにちは\thello there\nありがとう\tthank you\n")
    (tmp_path / "README").write_text("not a pair\n")
    pairs = load_pivot_pairs(tmp_path)
    assert pairs.pivot == "eng_Latn" and sorted(pairs) == ["jpn_Jpan", "spa_Latn"]
    assert pairs["es"].sentences == {
        "spa_Latn": ["hola", "adiós", "gracias"],
        "eng_Latn": ["hello", "goodbye", "thanks"],
    }
    assert pairs["ja"]["eng_Latn"] == ["hello there", "thank you"]  # each pair has its own pivot side
    assert load_pivot_pairs(tmp_path, langs="ja").languages == ["jpn_Jpan"]


def test_pivot_pairs_refuse_broken_folders(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="holds no pivot pair"):
        load_pivot_pairs(tmp_path)
    (tmp_path / "tatoeba.deu-eng.deu").write_text("hallo\n")
    with pytest.raises(CorpusError, match="has no eng_Latn side beside it"):
        load_pivot_pairs(tmp_path)
    (tmp_path / "tatoeba.deu-eng.eng").write_text("hello\nsurplus\n")
    with pytest.raises(CorpusError, match="not aligned"):
        load_pivot_pairs(tmp_path)
    (tmp_path / "tatoeba.deu-eng.eng").write_text("hello\n")
    (tmp_path / "fra-spa.tsv").write_text("bonjour\thola\n")
    with pytest.raises(CorpusError, match="several pivots"):
        load_pivot_pairs(tmp_path)
    (tmp_path / "fra-spa.tsv").unlink()
    (tmp_path / "ita-eng.tsv").write_text("ciao\n")
    with pytest.raises(CorpusError, match="line 1 has 1 tab-separated fields"):
        load_pivot_pairs(tmp_path)
    (tmp_path / "ita-eng.tsv").unlink()
    with pytest.raises(CorpusError, match="no fra_Latn-eng_Latn pair"):
        load_pivot_pairs(tmp_path, langs="fr")


def test_best_threshold_without_a_gold_candidate_is_laser_s_zero() -> None:
    """The case hypothesis found (seed 57, noise 3.0): no candidate is a gold pair, so no cut has F1 > 0; LASER's
    BuccOptimize then keeps its initial threshold, 0.0."""
    x, y, gold = planted(15, 25, 25, 3.0, 57)
    candidates = mine(torch.tensor(x), torch.tensor(y), k=3)
    assert not any((s, t) in gold for s, t in zip(candidates.src.tolist(), candidates.tgt.tolist(), strict=True))
    assert best_threshold(candidates, gold) == bucc_optimize(as_tuples(candidates), gold) == 0.0
