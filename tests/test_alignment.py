"""Alignment metrics against direct numpy implementations (loops, Gram-matrix CKA, Song's unbiased HSIC)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cosine as scipy_cosine_distance
from scipy.stats import special_ortho_group

import xlens.metrics.alignment as alignment
from xlens.metrics import (
    AlignmentScores,
    MetricInputError,
    alignment_scores,
    centroid_distance,
    centroid_distance_matrix,
    cka_matrix,
    cosine_parallel,
    cosine_parallel_matrix,
    cosine_random,
    cosine_random_matrix,
    linear_cka,
    mean_center,
)

# ---- numpy references -------------------------------------------------------------------------------------


def ref_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def ref_cosine_parallel(X: np.ndarray, Y: np.ndarray) -> float:
    return float(np.mean([ref_cos(X[i], Y[i]) for i in range(len(X))]))


def ref_cosine_random(X: np.ndarray, Y: np.ndarray) -> float:
    n = len(X)
    return float(np.mean([ref_cos(X[i], Y[j]) for i in range(n) for j in range(n) if i != j]))


def ref_hsic_biased(K: np.ndarray, L: np.ndarray) -> float:
    n = len(K)
    H = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(K @ H @ L @ H)) / (n - 1) ** 2


def ref_hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. 2012, eq. 5, on the raw (uncentred) Gram matrices: the estimator is shift-invariant."""
    n = len(K)
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    return float(
        np.trace(Kt @ Lt)
        + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ Kt @ Lt @ one)
    ) / (n * (n - 3))


def ref_cka(X: np.ndarray, Y: np.ndarray, debiased: bool = False) -> float:
    hsic = ref_hsic_unbiased if debiased else ref_hsic_biased
    K, L = X @ X.T, Y @ Y.T
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def pair(n: int, d: int, seed: int, noise: float = 1.0, d_y: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Correlated X, Y with a language offset, like two languages' embeddings of the same sentences."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) + rng.normal(size=d)
    W = rng.normal(size=(d, d_y or d))
    Y = X @ W + noise * rng.normal(size=(n, d_y or d)) + rng.normal(size=d_y or d)
    return X, Y


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a)


shapes = st.tuples(st.integers(4, 14), st.integers(1, 10), st.integers(0, 2**32 - 1))


# ---- pairwise metrics vs references -----------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(shapes)
def test_cosines_match_loops(shape: tuple[int, int, int]) -> None:
    X, Y = pair(*shape)
    assert cosine_parallel(t(X), t(Y)) == pytest.approx(ref_cosine_parallel(X, Y), abs=1e-12)
    assert cosine_random(t(X), t(Y)) == pytest.approx(ref_cosine_random(X, Y), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(shapes, st.integers(1, 12), st.booleans())
def test_linear_cka_matches_gram_formula(shape: tuple[int, int, int], d_y: int, debiased: bool) -> None:
    # n is both above and below the widths, so both the feature-space and the Gram branch are checked.
    X, Y = pair(*shape, d_y=d_y)
    assert linear_cka(t(X), t(Y), debiased=debiased) == pytest.approx(ref_cka(X, Y, debiased), abs=1e-9)


def test_linear_cka_branches_agree_on_a_known_value() -> None:
    X, Y = pair(30, 5, seed=1)
    feature = linear_cka(t(X), t(Y))  # n > d: feature space
    gram = linear_cka(t(X[:5]), t(Y[:5]))  # n <= d: Gram matrices
    assert feature == pytest.approx(ref_cka(X, Y), abs=1e-12)
    assert gram == pytest.approx(ref_cka(X[:5], Y[:5]), abs=1e-12)
    assert 0 < feature < 1


@settings(max_examples=30, deadline=None)
@given(shapes)
def test_centroid_distance_matches_scipy(shape: tuple[int, int, int]) -> None:
    X, Y = pair(*shape)
    mx, my = X.mean(0), Y.mean(0)
    assert centroid_distance(t(X), t(Y)) == pytest.approx(np.linalg.norm(mx - my), abs=1e-12)
    assert centroid_distance(t(X), t(Y), "cosine") == pytest.approx(scipy_cosine_distance(mx, my), abs=1e-12)


# ---- properties -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("n", [6, 40])
def test_cka_invariances(debiased: bool, n: int) -> None:
    X, Y = pair(n, 8, seed=n, noise=2.0)
    base = linear_cka(t(X), t(Y), debiased)
    Q = special_ortho_group.rvs(8, random_state=0)
    assert linear_cka(t(X), t(X), debiased) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(t(Y), t(X), debiased) == pytest.approx(base, abs=1e-12)
    assert linear_cka(t(X @ Q), t(Y), debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(t(3.5 * X + 7), t(Y * 0.01), debiased) == pytest.approx(base, abs=1e-10)
    # Anisotropic scaling is not an invariance: the value must move.
    assert abs(linear_cka(t(X * np.arange(1, 9) ** 2), t(Y), debiased) - base) > 1e-3


def test_cosine_properties() -> None:
    X, Y = pair(20, 6, seed=3)
    assert cosine_parallel(t(X), t(2 * X)) == pytest.approx(1.0, abs=1e-12)
    # Antipodal translations: parallel cosine -1; unrelated pairs keep the same mean magnitude, sign flipped.
    assert cosine_parallel(t(X), t(-X)) == pytest.approx(-1.0, abs=1e-12)
    assert cosine_random(t(X), t(-Y)) == pytest.approx(-cosine_random(t(X), t(Y)), abs=1e-12)


def test_mean_center_per_language() -> None:
    E = torch.randn(3, 7, 4, dtype=torch.float64) + torch.arange(3.0, dtype=torch.float64)[:, None, None]
    C = mean_center(E)
    assert torch.allclose(C.mean(1), torch.zeros(3, 4, dtype=torch.float64), atol=1e-12)
    assert torch.equal(C[1], mean_center(E[1]))
    assert torch.allclose(E[1] - C[1], E[1].mean(0).expand(7, 4))


def test_alignment_scores_fields() -> None:
    X, Y = pair(25, 6, seed=4)
    s = alignment_scores(t(X), t(Y))
    assert isinstance(s, AlignmentScores)
    assert s.cosine_parallel == pytest.approx(ref_cosine_parallel(X, Y), abs=1e-12)
    assert s.cosine_random == pytest.approx(ref_cosine_random(X, Y), abs=1e-12)
    assert s.cosine_gap == pytest.approx(s.cosine_parallel - s.cosine_random, abs=1e-15)
    assert s.cka == pytest.approx(ref_cka(X, Y), abs=1e-12)
    assert s.cka_debiased == pytest.approx(ref_cka(X, Y, True), abs=1e-12)
    assert s.centroid_distance == pytest.approx(np.linalg.norm(X.mean(0) - Y.mean(0)), abs=1e-12)
    c = alignment_scores(t(X), t(Y), center=True)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    assert c.cosine_parallel == pytest.approx(ref_cosine_parallel(Xc, Yc), abs=1e-12)
    assert c.cosine_random == pytest.approx(ref_cosine_random(Xc, Yc), abs=1e-12)
    assert c.cosine_parallel != pytest.approx(s.cosine_parallel, abs=1e-3)
    assert (c.cka, c.cka_debiased, c.centroid_distance) == (s.cka, s.cka_debiased, s.centroid_distance)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_inputs_are_scored_in_float64(dtype: torch.dtype) -> None:
    X, Y = pair(30, 8, seed=5)
    x, y = t(X).to(dtype), t(Y).to(dtype)
    x64, y64 = x.double().numpy(), y.double().numpy()  # the values the metric actually sees
    assert cosine_parallel(x, y) == pytest.approx(ref_cosine_parallel(x64, y64), abs=1e-12)
    assert linear_cka(x, y, debiased=True) == pytest.approx(ref_cka(x64, y64, True), abs=1e-10)


# ---- [lang, lang] matrices --------------------------------------------------------------------------------


def stack(n_lang: int = 4, n: int = 9, d: int = 5) -> torch.Tensor:
    X, _ = pair(n, d, seed=11)
    rng = np.random.default_rng(12)
    return t(np.stack([X @ rng.normal(size=(d, d)) + rng.normal(size=(n, d)) for _ in range(n_lang)]))


def pairwise(fn: Callable[[torch.Tensor, torch.Tensor], float], E: torch.Tensor) -> torch.Tensor:
    return torch.tensor([[fn(E[a], E[b]) for b in range(len(E))] for a in range(len(E))], dtype=torch.float64)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_matrix_equals_pairwise(debiased: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    E = stack()
    # 4 Gram rows per chunk: 9 sentences take three chunks, the last one partial.
    monkeypatch.setattr(alignment, "_CKA_CHUNK_BYTES", 8 * 4 * 9 * 4)
    M = cka_matrix(E, debiased)
    assert torch.allclose(M, pairwise(lambda a, b: linear_cka(a, b, debiased), E), atol=1e-12)
    assert torch.allclose(M.diagonal(), torch.ones(4, dtype=torch.float64), atol=1e-12)


def test_cosine_and_centroid_matrices_equal_pairwise() -> None:
    E = stack().float()
    assert torch.allclose(cosine_parallel_matrix(E), pairwise(cosine_parallel, E), atol=1e-12)
    assert torch.allclose(cosine_random_matrix(E), pairwise(cosine_random, E), atol=1e-12)
    for metric in ("euclidean", "cosine"):
        got = centroid_distance_matrix(E, metric)
        assert torch.allclose(got, pairwise(lambda a, b, m=metric: centroid_distance(a, b, m), E), atol=1e-12)
    assert centroid_distance_matrix(E).diagonal().abs().max() == 0


# ---- bad input --------------------------------------------------------------------------------------------


def test_bad_inputs_raise_one_clear_error() -> None:
    X = torch.randn(6, 3, dtype=torch.float64)
    X[0, 0] = 5.0  # so the NaN case below has a NaN
    cases = [
        (lambda: cosine_parallel(X[0], X), "2-D"),
        (lambda: cosine_parallel(X, X[:5]), "same shape"),
        (lambda: cosine_parallel(X.long(), X), "floating-point"),
        (lambda: cosine_parallel(X, torch.where(X > 1, torch.nan, X)), "NaN"),
        (lambda: cosine_parallel(X, torch.cat([X[:5], torch.zeros(1, 3)])), "all-zero row"),
        (lambda: cosine_random(X[:1], X[:1]), "at least 2"),
        (lambda: linear_cka(X[:3], X[:3], debiased=True), "at least 4"),
        (lambda: linear_cka(torch.ones(6, 3), X), "no variance"),
        (lambda: centroid_distance(X, X, "manhattan"), "unknown centroid metric"),  # type: ignore[arg-type]
        (lambda: cka_matrix(X), "3-D"),
    ]
    for call, message in cases:
        with pytest.raises(MetricInputError, match=message):
            call()
    assert issubclass(MetricInputError, ValueError)


@pytest.mark.cuda
def test_cuda_matches_cpu() -> None:
    E = stack()
    for fn in (cka_matrix, cosine_parallel_matrix, cosine_random_matrix, centroid_distance_matrix):
        got = fn(E.cuda())
        assert got.device.type == "cuda"
        assert torch.allclose(got.cpu(), fn(E), atol=1e-10)
    assert linear_cka(E[0].cuda(), E[1].cuda(), True) == pytest.approx(linear_cka(E[0], E[1], True), abs=1e-10)
