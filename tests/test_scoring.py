from typing import Literal

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import average_precision_score, roc_auc_score

from xlens.experts.scoring import (
    ExpertInputError,
    auroc,
    average_precision,
    one_vs_rest,
    unit_statistics,
)

TOL = 1e-6
SKLEARN = {"ap": average_precision_score, "auroc": roc_auc_score}
METRICS: tuple[Literal["ap", "auroc"], ...] = ("ap", "auroc")


@st.composite
def scored_data(draw, max_langs: int = 5):
    """Responses (random floats, tiny integers = heavy ties, or float16) and lang ids using every language."""
    n_langs = draw(st.integers(2, max_langs))
    n_sentences = draw(st.integers(n_langs, 30))
    n_units = draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["float32", "ties", "float16"]))
    shape = (n_sentences, n_units)
    if kind == "ties":
        values = draw(arrays(np.int64, shape, elements=st.integers(0, 3))).astype(np.float32)
    elif kind == "float16":
        values = draw(arrays(np.float16, shape, elements=st.floats(-100, 100, width=16)))
    else:
        values = draw(arrays(np.float32, shape, elements=st.floats(-100, 100, width=32)))
    extra = draw(arrays(np.int64, n_sentences - n_langs, elements=st.integers(0, n_langs - 1)))
    perm = draw(st.permutations(range(n_sentences)))
    lang_ids = np.concatenate([np.arange(n_langs), extra])[list(perm)]
    return torch.from_numpy(values), torch.from_numpy(lang_ids), n_langs


def _sklearn_scores(metric: str, responses: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    x = responses.float().numpy()
    return np.array([SKLEARN[metric](labels.numpy(), x[:, u]) for u in range(x.shape[1])])


@settings(max_examples=60, deadline=None)
@given(scored_data(max_langs=2))
def test_binary_scores_match_sklearn(data):
    responses, lang_ids, _ = data
    labels = lang_ids == 1
    for metric, fn in (("ap", average_precision), ("auroc", auroc)):
        ours = fn(responses, labels).numpy()
        np.testing.assert_allclose(ours, _sklearn_scores(metric, responses, labels), rtol=0, atol=TOL)


@settings(max_examples=40, deadline=None)
@given(scored_data(), st.sampled_from([None, 1, 3]))
def test_one_vs_rest_matches_sklearn_per_language(data, chunk_units):
    responses, lang_ids, n_langs = data
    for metric in METRICS:
        ours = one_vs_rest(responses, lang_ids, n_langs, metric, chunk_units=chunk_units)
        assert ours.shape == (n_langs, responses.shape[1])
        for lang in range(n_langs):
            expected = _sklearn_scores(metric, responses, lang_ids == lang)
            np.testing.assert_allclose(ours[lang].numpy(), expected, rtol=0, atol=TOL)


@settings(max_examples=30, deadline=None)
@given(scored_data())
def test_one_vs_rest_equals_looped_binary_scores(data):
    responses, lang_ids, n_langs = data
    for metric, fn in zip(METRICS, (average_precision, auroc), strict=True):
        looped = torch.stack([fn(responses, lang_ids == lang) for lang in range(n_langs)])
        torch.testing.assert_close(one_vs_rest(responses, lang_ids, n_langs, metric), looped, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.int64, torch.bfloat16])
def test_other_dtypes_match_sklearn(dtype):
    gen = torch.Generator().manual_seed(1)
    responses = torch.randint(-2, 3, (50, 6), generator=gen).to(dtype)
    responses[:, 0] = torch.randn(50, generator=gen).to(dtype)
    lang_ids = torch.arange(50) % 3
    for metric in METRICS:
        ours = one_vs_rest(responses, lang_ids, 3, metric)
        for lang in range(3):
            expected = _sklearn_scores(metric, responses, lang_ids == lang)
            np.testing.assert_allclose(ours[lang].numpy(), expected, rtol=0, atol=TOL)


def test_many_languages_span_several_count_words():
    # 30 sentences need 5-bit counts, 12 per int64 word: 14 languages exercise the multi-word path.
    gen = torch.Generator().manual_seed(2)
    responses = torch.randint(0, 4, (30, 5), generator=gen).float()
    lang_ids = torch.cat([torch.arange(14), torch.randint(0, 14, (16,), generator=gen)])
    ours = one_vs_rest(responses, lang_ids, 14, "ap")
    for lang in range(14):
        expected = _sklearn_scores("ap", responses, lang_ids == lang)
        np.testing.assert_allclose(ours[lang].numpy(), expected, rtol=0, atol=TOL)


def test_realistic_size_with_ties_matches_sklearn():
    gen = torch.Generator().manual_seed(3)
    responses = torch.randn(1100, 6, generator=gen).half()  # float16: many ties among 1100 values
    responses[:, 1] = torch.relu(responses[:, 1])  # a block of tied zeros
    lang_ids = torch.randint(0, 5, (1100,), generator=gen)
    for metric in METRICS:
        ours = one_vs_rest(responses, lang_ids, 5, metric, chunk_units=4)
        for lang in range(5):
            expected = _sklearn_scores(metric, responses, lang_ids == lang)
            np.testing.assert_allclose(ours[lang].numpy(), expected, rtol=0, atol=TOL)


def test_negative_zero_ties_with_zero():
    responses = torch.tensor([[-0.0], [0.0], [0.0], [-0.0], [1.0], [-1.0]])
    labels = torch.tensor([True, False, False, True, False, True])
    assert average_precision(responses, labels).item() == pytest.approx(
        average_precision_score(labels.numpy(), responses[:, 0].numpy()), abs=1e-12
    )
    assert auroc(responses, labels).item() == pytest.approx(
        roc_auc_score(labels.numpy(), responses[:, 0].numpy()), abs=1e-12
    )


def test_constant_units_score_prevalence_and_half():
    responses = torch.full((10, 3), 2.5)
    lang_ids = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    ap = one_vs_rest(responses, lang_ids, 3, "ap")
    prevalence = torch.tensor([0.3, 0.4, 0.3], dtype=torch.float64)
    torch.testing.assert_close(ap, prevalence[:, None].expand(3, 3), rtol=0, atol=1e-12)
    torch.testing.assert_close(one_vs_rest(responses, lang_ids, 3, "auroc"), torch.full((3, 3), 0.5).double())
    labels = (lang_ids == 1).numpy()
    assert average_precision_score(labels, responses[:, 0].numpy()) == pytest.approx(0.4)
    assert roc_auc_score(labels, responses[:, 0].numpy()) == pytest.approx(0.5)


def test_perfect_and_inverted_detectors():
    responses = torch.tensor([[3.0, -3.0], [2.0, -2.0], [1.0, -1.0], [0.0, 0.0]])
    labels = torch.tensor([True, True, False, False])
    torch.testing.assert_close(average_precision(responses, labels), torch.tensor([1.0, 5 / 12]).double())
    torch.testing.assert_close(auroc(responses, labels), torch.tensor([1.0, 0.0]).double())


@settings(max_examples=40, deadline=None)
@given(scored_data())
def test_unit_statistics_match_numpy(data):
    responses, lang_ids, n_langs = data
    stats = unit_statistics(responses, lang_ids, n_langs, chunk_units=2)
    x = responses.double().numpy()
    ids = lang_ids.numpy()
    for lang in range(n_langs):
        on, off = x[ids == lang], x[ids != lang]
        expected = {
            "on_p50": np.median(on, axis=0),
            "on_mean": on.mean(axis=0),
            "off_p50": np.median(off, axis=0),
            "off_mean": off.mean(axis=0),
            "on_p90": np.percentile(on, 90, axis=0),
            "all_p50": np.median(x, axis=0),
            "all_mean": x.mean(axis=0),
        }
        for name, value in expected.items():
            np.testing.assert_allclose(getattr(stats, name)[lang].numpy(), value, rtol=1e-12, atol=1e-9)


def test_unit_statistics_median_averages_middle_values():
    responses = torch.tensor([[1.0], [4.0], [10.0], [20.0], [0.0], [0.0]])
    lang_ids = torch.tensor([0, 0, 0, 0, 1, 1])
    stats = unit_statistics(responses, lang_ids, 2)
    assert stats.on_p50[0, 0].item() == 7.0  # torch.median would give 4
    assert stats.on_p90[0, 0].item() == pytest.approx(17.0)  # index 2.7 between 10 and 20
    assert stats.off_mean[0, 0].item() == 0.0
    assert stats.on_mean[1, 0].item() == 0.0
    assert stats.off_p50[1, 0].item() == 7.0
    assert stats.all_p50[0, 0].item() == stats.all_p50[1, 0].item() == 2.5  # the same in every row


@pytest.mark.parametrize(
    ("lang_ids", "message"),
    [
        (torch.tensor([0, 0, 2, 2]), "language 1 has no sentences"),
        (torch.tensor([1, 1, 1, 1]), "language 0 has no sentences"),
        (torch.tensor([0, 3, 1, 2]), r"lang_ids must lie in \[0, n_langs=3\)"),
        (torch.tensor([0, 1, 2]), "one id per sentence"),
    ],
)
def test_bad_lang_ids_raise(lang_ids, message):
    with pytest.raises(ExpertInputError, match=message):
        one_vs_rest(torch.zeros(4, 2), lang_ids, 3)
    with pytest.raises(ExpertInputError, match=message):
        unit_statistics(torch.zeros(4, 2), lang_ids, 3)


def test_language_with_all_sentences_raises():
    with pytest.raises(ExpertInputError, match="language 0 has all 4 sentences"):
        one_vs_rest(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), 1)


@pytest.mark.parametrize("labels", [torch.zeros(4, dtype=torch.bool), torch.ones(4, dtype=torch.bool)])
def test_single_class_labels_raise(labels):
    with pytest.raises(ExpertInputError, match="labels have no"):
        average_precision(torch.randn(4, 2), labels)
    with pytest.raises(ExpertInputError, match="labels have no"):
        auroc(torch.randn(4, 2), labels)


def test_non_finite_responses_raise_with_count_and_units():
    responses = torch.randn(6, 5)
    responses[0, 1] = torch.nan
    responses[3, 1] = torch.inf
    responses[2, 4] = -torch.inf
    with pytest.raises(ExpertInputError, match=r"3 NaN/inf values in 2 units \(1, 4\)"):
        one_vs_rest(responses, torch.tensor([0, 1, 0, 1, 0, 1]), 2)


@pytest.mark.parametrize(("dtype", "big"), [(torch.float16, 60000.0), (torch.float32, 3e38)])
def test_overflowing_column_sum_is_not_mistaken_for_inf(dtype, big):
    responses = torch.full((8, 2), big, dtype=dtype)  # the column sums overflow in dtype
    responses[0, 0] = 1.0
    labels = torch.tensor([True] + [False] * 7)
    torch.testing.assert_close(average_precision(responses, labels), torch.tensor([1 / 8, 1 / 8]).double())


def test_bad_metric_and_chunk_raise():
    lang_ids = torch.tensor([0, 1, 0, 1])
    with pytest.raises(ExpertInputError, match="metric"):
        one_vs_rest(torch.zeros(4, 2), lang_ids, 2, "f1")  # type: ignore[arg-type]
    with pytest.raises(ExpertInputError, match="chunk_units"):
        one_vs_rest(torch.zeros(4, 2), lang_ids, 2, chunk_units=0)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(4)
    responses = torch.randint(0, 5, (200, 64), generator=gen).float()
    lang_ids = torch.randint(0, 4, (200,), generator=gen)
    for metric in METRICS:
        cpu = one_vs_rest(responses, lang_ids, 4, metric)
        cuda = one_vs_rest(responses.cuda(), lang_ids.cuda(), 4, metric)
        assert cuda.device.type == "cuda"
        torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=1e-12)
