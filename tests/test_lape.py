import math

import numpy as np
import pytest
import torch

from xlens.experts.lape import LapeResult, activation_probability, lape
from xlens.experts.scoring import ExpertInputError


def _random_counts(n_sentences: int, n_units: int, n_langs: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    token_counts = torch.randint(5, 30, (n_sentences,), generator=gen)
    lang_ids = torch.arange(n_sentences) % n_langs
    rates = torch.rand(n_langs, n_units, generator=gen) * 0.5
    active = torch.binomial(token_counts[:, None].float().expand(-1, n_units), rates[lang_ids], generator=gen)
    return active, token_counts, lang_ids


def _reference_probability_and_entropy(active, token_counts, lang_ids, n_langs):
    """Brute-force loops: count per language, normalise, entropy with 0 log 0 = 0."""
    n_sentences, n_units = active.shape
    active_sum = np.zeros((n_langs, n_units))
    tokens = np.zeros(n_langs)
    for s in range(n_sentences):
        tokens[lang_ids[s]] += token_counts[s]
        for u in range(n_units):
            active_sum[lang_ids[s], u] += active[s, u]
    prob = active_sum / tokens[:, None]
    entropy = np.zeros(n_units)
    for u in range(n_units):
        total = prob[:, u].sum()
        for lang in range(n_langs):
            q = prob[lang, u] / total
            if q > 0:
                entropy[u] -= q * math.log(q)
    return prob, entropy


def _reference_selection(prob, top_rate, filter_rate, bar_ratio):
    """RUCAIBox/Language-Specific-Neurons identify.py, restated in numpy (units on axis 1)."""
    flat = np.sort(prob.flatten())
    top_prob_value = flat[round(len(flat) * filter_rate) - 1]
    normed = prob / prob.sum(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(normed > 0, normed * np.log(normed), 0).sum(axis=0)
    entropy[(prob > top_prob_value).sum(axis=0) == 0] = np.inf
    index = np.argsort(entropy, kind="stable")[: round(len(entropy) * top_rate)]
    bar = flat[round(len(flat) * bar_ratio) - 1]
    return index, {lang: sorted(index[prob[lang, index] > bar].tolist()) for lang in range(prob.shape[0])}


def test_probability_and_entropy_match_brute_force():
    active, token_counts, lang_ids = _random_counts(24, 30, 3, seed=0)
    result = lape(active, token_counts, lang_ids, 3)
    prob, entropy = _reference_probability_and_entropy(active.numpy(), token_counts.numpy(), lang_ids.numpy(), 3)
    np.testing.assert_allclose(result.probability.numpy(), prob, rtol=1e-12)
    np.testing.assert_allclose(result.entropy.numpy(), entropy, rtol=1e-12)


@pytest.mark.parametrize(("top_rate", "quantile"), [(0.01, 0.95), (0.1, 0.9), (0.05, 0.5)])
def test_selection_matches_reference_code(top_rate, quantile):
    active, token_counts, lang_ids = _random_counts(40, 500, 4, seed=1)
    result = lape(active, token_counts, lang_ids, 4, top_rate, quantile, quantile)
    index, per_lang = _reference_selection(result.probability.numpy(), top_rate, quantile, quantile)
    assert result.selected.tolist() == index.tolist()
    for lang in range(4):
        assert result.units_for(lang).tolist() == per_lang[lang]


def test_planted_language_units_are_recovered_exactly():
    n_sentences, n_units, n_langs = 80, 400, 4
    gen = torch.Generator().manual_seed(2)
    token_counts = torch.randint(10, 30, (n_sentences,), generator=gen)
    lang_ids = torch.arange(n_sentences) % n_langs
    # Background units fire at the same rate in every language: high entropy.
    rates = (torch.rand(n_units, generator=gen) * 0.4).expand(n_langs, -1).clone()
    planted = {0: [5, 17, 123, 301], 1: [0, 44, 250, 399], 2: [9, 10, 11, 200], 3: [60, 61, 330, 331]}
    shared = [77, 78]  # specific to languages 0 and 1 together
    specific = [u for units in planted.values() for u in units] + shared
    rates[:, specific] = 0.0
    for lang, units in planted.items():
        rates[lang, units] = 0.9
    rates[:2, shared] = 0.9
    active = torch.binomial(token_counts[:, None].float().expand(-1, n_units), rates[lang_ids], generator=gen)

    result = lape(active, token_counts, lang_ids, n_langs, top_rate=18 / n_units)

    expected = {lang: sorted(units + (shared if lang < 2 else [])) for lang, units in planted.items()}
    assert sorted(result.selected.tolist()) == sorted(specific)
    for lang in range(n_langs):
        assert result.units_for(lang).tolist() == expected[lang]
    assert result.entropy[planted[0]].tolist() == [0.0] * 4
    assert result.entropy[shared].numpy() == pytest.approx(math.log(2), abs=0.05)


def test_never_active_unit_has_nan_entropy_and_is_never_selected():
    active, token_counts, lang_ids = _random_counts(12, 6, 2, seed=3)
    active[:, 2] = 0
    result = lape(active, token_counts, lang_ids, 2, top_rate=1.0, filter_quantile=0.0)
    assert torch.isnan(result.entropy[2])
    assert not torch.isnan(result.entropy[[0, 1, 3, 4, 5]]).any()
    assert 2 not in result.selected.tolist()
    assert result.selected.numel() == 5
    assert not result.assignment[:, 2].any()


def test_top_rate_is_capped_by_units_passing_the_filter():
    active, token_counts, lang_ids = _random_counts(20, 50, 2, seed=4)
    result = lape(active, token_counts, lang_ids, 2, top_rate=1.0)
    passing = (result.probability > result.filter_threshold).any(dim=0)
    assert sorted(result.selected.tolist()) == torch.nonzero(passing).flatten().tolist()
    assert 0 < len(result.selected) < 50
    entropies = result.entropy[result.selected]
    assert (entropies[1:] >= entropies[:-1]).all()  # lowest entropy first


def test_activation_probability_counts_tokens_per_language():
    active = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]])
    token_counts = torch.tensor([2, 4, 10])
    lang_ids = torch.tensor([0, 0, 1])
    expected = torch.tensor([[4 / 6, 2 / 6], [0.0, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(activation_probability(active, token_counts, lang_ids, 2), expected)


def test_language_without_tokens_raises():
    active = torch.zeros(4, 3)
    with pytest.raises(ExpertInputError, match=r"languages \[1\] have no tokens"):
        lape(active, torch.tensor([3, 0, 2, 0]), torch.tensor([0, 1, 0, 1]), 2)
    with pytest.raises(ExpertInputError, match=r"languages \[2\] have no tokens"):
        lape(active, torch.tensor([3, 1, 2, 1]), torch.tensor([0, 1, 0, 1]), 3)


@pytest.mark.parametrize(
    ("active", "token_counts", "message"),
    [
        (torch.tensor([[3.0], [1.0]]), torch.tensor([2, 2]), "exceed token_counts"),
        (torch.tensor([[-1.0], [1.0]]), torch.tensor([2, 2]), "finite and >= 0"),
        (torch.tensor([[torch.nan], [1.0]]), torch.tensor([2, 2]), "finite and >= 0"),
        (torch.tensor([[1.0], [1.0]]), torch.tensor([2, -2]), "token_counts must be >= 0"),
        (torch.tensor([[1.0], [1.0]]), torch.tensor([2.0, 2.0]), "must be an integer tensor"),
        (torch.tensor([[1.0], [1.0]]), torch.tensor([2, 2, 2]), "one entry per sentence"),
    ],
)
def test_bad_counts_raise(active, token_counts, message):
    with pytest.raises(ExpertInputError, match=message):
        lape(active, token_counts, torch.tensor([0, 1]), 2)


def test_bad_rates_and_language_index_raise():
    active, token_counts, lang_ids = _random_counts(6, 4, 2, seed=5)
    with pytest.raises(ExpertInputError, match="top_rate"):
        lape(active, token_counts, lang_ids, 2, top_rate=1.5)
    with pytest.raises(ExpertInputError, match="filter_quantile"):
        lape(active, token_counts, lang_ids, 2, filter_quantile=-0.1)
    result: LapeResult = lape(active, token_counts, lang_ids, 2)
    with pytest.raises(ExpertInputError, match="lang_index"):
        result.units_for(2)
