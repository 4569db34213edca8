"""Embedding-space alignment between languages (Sundar et al. 2025): cosine, linear CKA, centroid distance.

Every function takes sentence embeddings of two languages, ``X`` and ``Y`` of shape ``[sentence, d_model]``, where
row ``i`` of ``X`` and row ``i`` of ``Y`` embed translations of the same sentence. The ``*_matrix`` helpers take a
stack ``E`` of shape ``[lang, sentence, d_model]`` and return ``[lang, lang]`` tables for heatmaps; entry
``[a, b]`` equals the pairwise metric of ``E[a]`` and ``E[b]``.

All metrics are computed in float64 on the input's device (the sums in CKA cancel heavily), whatever the input
dtype, and never loop over sentences or language pairs in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = [
    "AlignmentScores",
    "MetricInputError",
    "alignment_scores",
    "centroid_distance",
    "centroid_distance_matrix",
    "cka_matrix",
    "cosine_parallel",
    "cosine_parallel_matrix",
    "cosine_random",
    "cosine_random_matrix",
    "linear_cka",
    "mean_center",
    "medoid_distances",
]

CentroidMetric = Literal["euclidean", "cosine"]

# Bytes one chunk of stacked Gram rows may take in cka_matrix.
_CKA_CHUNK_BYTES = 256 * 2**20


class MetricInputError(ValueError):
    """Embeddings that a metric cannot score: wrong shape or dtype, NaN/inf, too few rows, zero rows."""


@dataclass(frozen=True)
class AlignmentScores:
    """Alignment of two languages' embeddings of the same sentences.

    ``cosine_gap = cosine_parallel - cosine_random``: how much closer translations are than unrelated sentences.
    ``cka`` / ``cka_debiased``: linear CKA with the biased / unbiased HSIC estimator.
    ``centroid_distance``: euclidean distance between the two languages' mean embeddings (of the raw inputs).
    """

    cosine_parallel: float
    cosine_random: float
    cosine_gap: float
    cka: float
    cka_debiased: float
    centroid_distance: float


def _check(X: Tensor, name: str, ndim: int, min_rows: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Validate one embedding tensor and return it detached, as ``dtype``."""
    shape = "[sentence, d_model]" if ndim == 2 else "[lang, sentence, d_model]"
    if not isinstance(X, Tensor) or X.ndim != ndim:
        got = tuple(X.shape) if isinstance(X, Tensor) else type(X).__name__
        raise MetricInputError(f"{name} must be a {ndim}-D tensor {shape}, got {got}")
    if not X.is_floating_point():
        raise MetricInputError(f"{name} must be a floating-point tensor, got {X.dtype}; cast it with .float()")
    if X.shape[-2] < min_rows or X.shape[-1] < 1:
        raise MetricInputError(
            f"{name} has shape {tuple(X.shape)}; this metric needs at least {min_rows} sentences and one feature"
        )
    if ndim == 3 and X.shape[0] < 1:
        raise MetricInputError(f"{name} has no languages")
    if not torch.isfinite(X).all():
        raise MetricInputError(f"{name} contains NaN or inf; clean the embeddings first")
    return X.detach().to(dtype)


def _check_pair(
    X: Tensor, Y: Tensor, min_rows: int, same_width: bool = True, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    x, y = _check(X, "X", 2, min_rows, dtype), _check(Y, "Y", 2, min_rows, dtype)
    if x.shape[0] != y.shape[0] or (same_width and x.shape[1] != y.shape[1]):
        raise MetricInputError(
            f"X {tuple(x.shape)} and Y {tuple(y.shape)} must have the same shape: row i of each embeds "
            "translations of sentence i"
        )
    if x.device != y.device:
        raise MetricInputError(f"X is on {x.device} but Y is on {y.device}; move both to one device")
    return x, y


def _unit_rows(X: Tensor, name: str) -> Tensor:
    """Rows scaled to unit L2 norm; a zero row has no direction, so cosine is undefined for it."""
    norms = torch.linalg.vector_norm(X, dim=-1, keepdim=True)
    if (norms == 0).any():
        raise MetricInputError(f"{name} has an all-zero row, whose cosine similarity is undefined")
    return X / norms


def mean_center(X: Float[Tensor, "*lang sentence d_model"]) -> Float[Tensor, "*lang sentence d_model"]:
    """Subtract each language's mean embedding (over its sentences); works on one language or a stack."""
    return X - X.mean(dim=-2, keepdim=True)


def cosine_parallel(X: Float[Tensor, "sentence d_model"], Y: Float[Tensor, "sentence d_model"]) -> float:
    """Mean cosine similarity of translation pairs ``(x_i, y_i)``."""
    x, y = _check_pair(X, Y, min_rows=1)
    return (_unit_rows(x, "X") * _unit_rows(y, "Y")).sum(-1).mean().item()


def cosine_random(X: Float[Tensor, "sentence d_model"], Y: Float[Tensor, "sentence d_model"]) -> float:
    """Mean cosine similarity over all ``n (n - 1)`` non-translation pairs ``(x_i, y_j)``, ``i != j``.

    Exact, in closed form: the sum over all pairs is ``(sum_i x̂_i) · (sum_j ŷ_j)``; removing the ``n`` parallel
    pairs leaves the non-translation pairs.
    """
    x, y = _check_pair(X, Y, min_rows=2)
    xn, yn = _unit_rows(x, "X"), _unit_rows(y, "Y")
    n = x.shape[0]
    all_pairs = xn.sum(0) @ yn.sum(0)
    return ((all_pairs - (xn * yn).sum()) / (n * (n - 1))).item()


def _debias(xty: Tensor, sq_x: Tensor, sq_y: Tensor, n: int) -> Tensor:
    """Unbiased HSIC (Song et al. 2012) of centred features, times ``n (n - 3)``, from the biased ``tr(KL)``.

    With centred features ``K 1 = 0``, so in Song's formula ``1ᵀK̃1 = -Σ_i K_ii`` and ``K̃1 = -diag(K)``; ``sq_x``
    holds ``diag(K)`` (squared row norms) along its last axis. Broadcasts over leading axes.
    """
    return xty - n / (n - 2) * (sq_x * sq_y).sum(-1) + sq_x.sum(-1) * sq_y.sum(-1) / ((n - 1) * (n - 2))


def _cka_ratio(hxy: Tensor, hxx: Tensor, hyy: Tensor) -> Tensor:
    if (hxx <= 0).any() or (hyy <= 0).any():
        raise MetricInputError(
            "CKA is undefined: an input has no variance left after centring (for the debiased estimator: "
            "its self-similarity estimate is not positive, e.g. too few sentences for its rank)"
        )
    return hxy / torch.sqrt(hxx * hyy)


def linear_cka(X: Float[Tensor, "sentence d_x"], Y: Float[Tensor, "sentence d_y"], debiased: bool = False) -> float:
    """Linear CKA (Kornblith et al. 2019) of column-centred ``X`` and ``Y``.

    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with linear Gram matrices ``K = XXᵀ``, ``L = YYᵀ``.
    ``debiased=True`` uses the unbiased HSIC estimator (Song et al. 2012; Nguyen et al. 2021), which needs
    ``n >= 4`` sentences and can be slightly negative. ``X`` and ``Y`` may have different widths. Uses
    ``tr(KL) = ||XᵀY||²_F`` (feature space) when there are more sentences than features, Gram matrices otherwise.
    """
    x, y = _check_pair(X, Y, min_rows=4 if debiased else 2, same_width=False)
    x, y = mean_center(x), mean_center(y)
    n = x.shape[0]
    if n > max(x.shape[1], y.shape[1]):
        hxy, hxx, hyy = (torch.linalg.matrix_norm(a.T @ b) ** 2 for a, b in ((x, y), (x, x), (y, y)))
    else:
        kx, ky = x @ x.T, y @ y.T
        hxy, hxx, hyy = (kx * ky).sum(), (kx * kx).sum(), (ky * ky).sum()
    if debiased:
        sq_x, sq_y = (x * x).sum(-1), (y * y).sum(-1)
        hxy, hxx, hyy = _debias(hxy, sq_x, sq_y, n), _debias(hxx, sq_x, sq_x, n), _debias(hyy, sq_y, sq_y, n)
    return _cka_ratio(hxy, hxx, hyy).item()


def _centroid_distance(mx: Tensor, my: Tensor, metric: CentroidMetric) -> Tensor:
    """Distance between centroids; ``mx``/``my`` broadcast against each other along leading axes."""
    if metric == "euclidean":
        return torch.linalg.vector_norm(mx - my, dim=-1)
    if metric == "cosine":
        return 1 - (_unit_rows(mx, "a centroid") * _unit_rows(my, "a centroid")).sum(-1)
    raise MetricInputError(f"unknown centroid metric {metric!r}; use 'euclidean' or 'cosine'")


def centroid_distance(
    X: Float[Tensor, "sentence d_model"],
    Y: Float[Tensor, "sentence d_model"],
    metric: CentroidMetric = "euclidean",
) -> float:
    """Distance between the two languages' mean embeddings: euclidean, or ``1 - cosine`` of the means."""
    x, y = _check_pair(X, Y, min_rows=1)
    return _centroid_distance(x.mean(0), y.mean(0), metric).item()


def alignment_scores(
    X: Float[Tensor, "sentence d_model"], Y: Float[Tensor, "sentence d_model"], center: bool = False
) -> AlignmentScores:
    """All alignment metrics of one language pair.

    ``center=True`` mean-centres each language first (removing the language-specific offset) for the cosine
    metrics; CKA centres internally anyway. ``centroid_distance`` is always euclidean on the raw inputs, since
    centring would make it zero: it reports the offset that centring removes. Needs ``n >= 4`` sentences (for the
    debiased CKA).
    """
    x, y = _check_pair(X, Y, min_rows=4)
    cx, cy = (mean_center(x), mean_center(y)) if center else (x, y)
    par, rand = cosine_parallel(cx, cy), cosine_random(cx, cy)
    return AlignmentScores(
        cosine_parallel=par,
        cosine_random=rand,
        cosine_gap=par - rand,
        cka=linear_cka(x, y),
        cka_debiased=linear_cka(x, y, debiased=True),
        centroid_distance=centroid_distance(x, y),
    )


def cosine_parallel_matrix(E: Float[Tensor, "lang sentence d_model"]) -> Float[Tensor, "lang lang"]:
    """``cosine_parallel(E[a], E[b])`` for every pair of languages (float64; the diagonal is 1)."""
    e = _unit_rows(_check(E, "E", 3, min_rows=1), "E")
    flat = e.reshape(e.shape[0], -1)  # sum_i x̂_ai · x̂_bi is one dot product of flattened languages
    return flat @ flat.T / e.shape[1]


def cosine_random_matrix(E: Float[Tensor, "lang sentence d_model"]) -> Float[Tensor, "lang lang"]:
    """``cosine_random(E[a], E[b])`` for every pair of languages (float64), in closed form as there."""
    e = _unit_rows(_check(E, "E", 3, min_rows=2), "E")
    n = e.shape[1]
    flat, sums = e.reshape(e.shape[0], -1), e.sum(1)
    return (sums @ sums.T - flat @ flat.T) / (n * (n - 1))


def centroid_distance_matrix(
    E: Float[Tensor, "lang sentence d_model"], metric: CentroidMetric = "euclidean"
) -> Float[Tensor, "lang lang"]:
    """``centroid_distance(E[a], E[b], metric)`` for every pair of languages (float64)."""
    means = _check(E, "E", 3, min_rows=1).mean(1)
    return _centroid_distance(means[:, None], means[None], metric)


def medoid_distances(
    E: Float[Tensor, "lang sentence d_model"], metric: CentroidMetric = "cosine"
) -> tuple[Float[Tensor, " lang"], int]:
    """Distance of every language's mean embedding to the medoid of all the means (the mean with the smallest sum
    of distances to the others; ties go to the first), and the medoid's index."""
    distances = centroid_distance_matrix(E, metric)
    medoid = int(distances.sum(dim=1).argmin())
    return distances[:, medoid], medoid


def cka_matrix(E: Float[Tensor, "lang sentence d_model"], debiased: bool = False) -> Float[Tensor, "lang lang"]:
    """``linear_cka(E[a], E[b], debiased)`` for every pair of languages (float64; the diagonal is 1).

    ``tr(K_a K_b)`` is the dot product of the flattened Gram matrices, so one ``[lang, lang]`` matmul over stacked
    Gram rows (built a chunk of sentences at a time) gives every pair: ``O(lang sentence² (d_model + lang))``.
    """
    e = mean_center(_check(E, "E", 3, min_rows=4 if debiased else 2))
    n_lang, n = e.shape[0], e.shape[1]
    rows = max(1, _CKA_CHUNK_BYTES // (8 * n_lang * n))
    hsic = torch.zeros(n_lang, n_lang, dtype=torch.float64, device=e.device)
    for start in range(0, n, rows):
        gram_rows = (e[:, start : start + rows] @ e.transpose(1, 2)).reshape(n_lang, -1)
        hsic += gram_rows @ gram_rows.T
    if debiased:
        sq = (e * e).sum(-1)
        hsic = _debias(hsic, sq[:, None], sq[None], n)
    diag = hsic.diagonal()
    return _cka_ratio(hsic, diag[:, None], diag[None])
