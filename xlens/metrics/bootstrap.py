"""Paired bootstrap over evaluation sentences, and bootstrapped Pearson correlations.

Retrieval is scored per query sentence, so a difference between two conditions (an intervention and the baseline,
or an intervention and its random control) is a mean over the same queries of per-query differences. The paired
bootstrap resamples the queries with replacement: every resample is a vector of counts ``w`` (a multinomial
draw over the ``n`` sentences), and the resampled mean of every difference is ``D @ w / n``, one matrix product
for all pairs, layers and conditions. The same resamples serve every comparison of a run (seeded), so the
intervals of different conditions are drawn from the same resampled sentence sets. Intervals are percentile
intervals.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from xlens.errors import MetricInputError


def resample_counts(n: int, resamples: int, seed: int) -> Float[Tensor, "resample sentence"]:
    """How often each of ``n`` sentences is drawn in each resample (rows sum to ``n``), float64, seeded."""
    if n < 2 or resamples < 1:
        raise MetricInputError(f"a bootstrap needs at least 2 sentences and 1 resample, got {n} and {resamples}")
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(n, (resamples, n), generator=generator)
    counts = torch.zeros(resamples, n, dtype=torch.float64)
    return counts.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))


def paired_bootstrap(
    differences: Float[Tensor, "*rows sentence"], counts: Float[Tensor, "resample sentence"], confidence: float = 0.95
) -> tuple[Float[Tensor, " *rows"], Float[Tensor, " *rows"], Float[Tensor, " *rows"]]:
    """Mean of per-sentence ``differences`` and its percentile bootstrap interval, for every row at once.

    ``counts`` comes from :func:`resample_counts` (the same for every comparison that should be paired).
    Returns ``(mean, low, high)`` with the shape of ``differences`` without its last dimension.
    """
    if differences.shape[-1] != counts.shape[1]:
        raise MetricInputError(f"{differences.shape[-1]} sentences but resample counts over {counts.shape[1]}")
    if not 0 < confidence < 1:
        raise MetricInputError(f"confidence must lie in (0, 1), got {confidence}")
    shape, n = differences.shape[:-1], differences.shape[-1]
    flat = differences.reshape(-1, n).double()
    means = flat @ counts.T / n  # [rows, resample]
    tail = (1 - confidence) / 2
    low, high = _quantiles(means, (tail, 1 - tail))
    return flat.mean(dim=1).view(shape), low.view(shape), high.view(shape)


def _quantiles(values: Float[Tensor, "row resample"], qs: tuple[float, ...]) -> list[Float[Tensor, " row"]]:
    """numpy's default (linear) quantiles along the last dimension, for any number of rows (torch.quantile
    refuses large inputs)."""
    ordered = values.sort(dim=-1).values
    last = ordered.shape[-1] - 1
    out = []
    for q in qs:
        position = q * last
        lo = int(position)
        hi = min(lo + 1, last)
        fraction = position - lo
        out.append(ordered[..., lo] + (ordered[..., hi] - ordered[..., lo]) * fraction)
    return out


def pearson(x: Float[Tensor, " point"], y: Float[Tensor, " point"]) -> float:
    """Pearson's r of two samples (NaN when either is constant)."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denominator = (x.square().sum() * y.square().sum()).sqrt()
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")


def _weighted_r(
    x: Float[Tensor, "resample point"], y: Float[Tensor, "resample point"], counts: Float[Tensor, "resample point"]
) -> Float[Tensor, " kept"]:
    """Pearson's r of every resample (points weighted by how often they are drawn); resamples in which x or y is
    constant are left out."""
    total = counts.sum(dim=1, keepdim=True)
    cx = x - (counts * x).sum(dim=1, keepdim=True) / total
    cy = y - (counts * y).sum(dim=1, keepdim=True) / total
    cov = (counts * cx * cy).sum(dim=1)
    scale = ((counts * cx.square()).sum(dim=1) * (counts * cy.square()).sum(dim=1)).sqrt()
    keep = scale > 1e-12 * total.squeeze(1) ** 2
    return cov[keep] / scale[keep]


def _interval(values: Tensor, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    if values.numel() == 0:
        return float("nan"), float("nan")
    low, high = _quantiles(values, (tail, 1 - tail))
    return float(low), float(high)


def _check_sample(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape or x.ndim != 1 or x.shape[0] < 3:
        raise MetricInputError(f"a correlation needs two 1-D samples of the same length >= 3, got {x.shape}, {y.shape}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise MetricInputError("a correlation needs finite values (NaN or inf found)")


def average_ranks(
    x: Float[Tensor, " point"], counts: Float[Tensor, "resample point"]
) -> Float[Tensor, "resample point"]:
    """Each point's rank (1-based, ties averaged) within every resample, a point drawn w times counting w times:
    what ``scipy.stats.rankdata`` gives the resampled values."""
    xd = x.double()
    below = (xd[None, :] < xd[:, None]).double()  # [i, j]: x_j < x_i
    equal = (xd[None, :] == xd[:, None]).double()
    return counts @ below.T + (counts @ equal.T + 1) / 2


def spearman(x: Float[Tensor, " point"], y: Float[Tensor, " point"]) -> float:
    """Spearman's rho: Pearson's r of the average ranks (NaN when either sample is constant)."""
    ones = torch.ones(1, x.shape[0], dtype=torch.float64)
    return pearson(average_ranks(x, ones)[0], average_ranks(y, ones)[0])


def bootstrap_correlation(
    x: Float[Tensor, " point"],
    y: Float[Tensor, " point"],
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    method: str = "pearson",
) -> tuple[float, float, float]:
    """Pearson's r (``method="pearson"``) or Spearman's rho (``"spearman"``: ranks taken within each resample) of
    paired samples and its percentile bootstrap interval (points resampled with replacement, all resamples at
    once, the same resamples for both methods with the same seed). Resamples whose x or y is constant are left
    out of the interval."""
    _check_sample(x, y)
    if method not in ("pearson", "spearman"):
        raise MetricInputError(f"method = {method!r}: 'pearson' or 'spearman'")
    counts = resample_counts(x.shape[0], resamples, seed)
    if method == "pearson":
        xs, ys = x.double()[None].expand_as(counts), y.double()[None].expand_as(counts)
        return (pearson(x, y), *_interval(_weighted_r(xs, ys, counts), confidence))
    rho = _weighted_r(average_ranks(x, counts), average_ranks(y, counts), counts)
    return (spearman(x, y), *_interval(rho, confidence))
