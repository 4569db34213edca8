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


def bootstrap_pearson(
    x: Float[Tensor, " point"],
    y: Float[Tensor, " point"],
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Pearson's r of paired samples and its percentile bootstrap interval (points resampled with replacement,
    all resamples at once). Resamples whose x or y is constant are left out of the interval."""
    if x.shape != y.shape or x.ndim != 1 or x.shape[0] < 3:
        raise MetricInputError(f"a correlation needs two 1-D samples of the same length >= 3, got {x.shape}, {y.shape}")
    counts = resample_counts(x.shape[0], resamples, seed)
    total = counts.sum(dim=1, keepdim=True)
    xd, yd = x.double(), y.double()
    mx, my = counts @ xd / total.squeeze(1), counts @ yd / total.squeeze(1)
    cx, cy = xd[None] - mx[:, None], yd[None] - my[:, None]
    cov = (counts * cx * cy).sum(dim=1)
    scale = ((counts * cx.square()).sum(dim=1) * (counts * cy.square()).sum(dim=1)).sqrt()
    rs = cov[scale > 0] / scale[scale > 0]
    tail = (1 - confidence) / 2
    if rs.numel() == 0:
        return pearson(x, y), float("nan"), float("nan")
    low, high = _quantiles(rs, (tail, 1 - tail))
    return pearson(x, y), float(low), float(high)
