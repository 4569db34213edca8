"""Figures of expert scores: where the experts are (block x language), how AP is distributed, how sets overlap."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from torch import Tensor

from xlens.experts.sets import ExpertScores
from xlens.viz.style import SEQUENTIAL, TEMPLATE, language_color


def _blocks(scores: ExpertScores) -> tuple[Int[Tensor, " unit"], list[int]]:
    unit_blocks = scores.units.blocks()
    return unit_blocks, sorted(unit_blocks.unique().tolist())


def expert_counts_per_block(scores: ExpertScores, threshold: float = 0.95) -> Int[Tensor, "lang block"]:
    """Units with AP >= ``threshold`` per language and block (blocks in ascending order, -1 first if any)."""
    unit_blocks, blocks = _blocks(scores)
    above = scores.ap >= threshold
    return torch.stack([above[:, unit_blocks == block].sum(dim=1) for block in blocks], dim=1)


def expert_counts(scores: ExpertScores, threshold: float = 0.95) -> go.Figure:
    """Heatmap block x language of the number of units whose AP is at least ``threshold``."""
    counts = expert_counts_per_block(scores, threshold)
    _, layers = _blocks(scores)
    z = counts.T.numpy()
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(scores.languages),
            y=layers,
            text=z,
            texttemplate="%{text}",
            colorscale=SEQUENTIAL,
            colorbar={"title": "units"},
            hovertemplate="%{x} block %{y}: %{z} units<extra></extra>",
        )
    )
    fig.update_layout(
        template=TEMPLATE,
        title=f"Experts per block (units with AP ≥ {threshold:g})",
        xaxis={"title": "language", "type": "category"},
        yaxis={"title": "block", "type": "category"},
    )
    return fig


def expert_counts_bar(scores: ExpertScores, language: str, k: int, block: int | None = None) -> go.Figure:
    """Bars per block of how many of ``language``'s top-``k`` experts (by AP) lie there; ``block`` is drawn in
    the language's colour and the others in grey (the neuron inspector marks the selected unit's block)."""
    lang = scores.languages[scores.lang_index(language)]
    k = min(int(k), scores.ap.shape[1])
    per_block = scores.select(lang, k).counts_per_block()
    _, blocks = _blocks(scores)
    counts = [per_block.get(b, 0) for b in blocks]
    colors = [language_color(lang) if b == block else "#BBBBBB" for b in blocks]
    fig = go.Figure(
        go.Bar(
            x=blocks,
            y=counts,
            marker_color=colors,
            hovertemplate=f"block %{{x}}: %{{y}} of the top {k} {lang} experts<extra></extra>",
        )
    )
    fig.update_layout(
        template=TEMPLATE,
        title=f"Top-{k} {lang} experts per block",
        xaxis={"title": "block", "type": "category"},
        yaxis={"title": "experts"},
    )
    return fig


def block_best_ap(scores: ExpertScores) -> tuple[Float[Tensor, "lang block"], Int[Tensor, "lang block"], list[int]]:
    """Best AP of each language in each block, the flat index of the unit that has it, and the blocks."""
    unit_blocks, blocks = _blocks(scores)
    best = torch.empty(len(scores.languages), len(blocks))
    where = torch.empty(len(scores.languages), len(blocks), dtype=torch.long)
    for j, block in enumerate(blocks):
        members = (unit_blocks == block).nonzero().squeeze(1)
        values, rows = scores.ap[:, members].max(dim=1)
        best[:, j], where[:, j] = values, members[rows]
    return best, where, blocks


def best_ap_heatmap(scores: ExpertScores) -> go.Figure:
    """Heatmap block x language of the best unit's AP; hover names the unit (click it in the inspector)."""
    best, where, layers = block_best_ap(scores)
    labels = np.array([scores.units.labels(row) for row in where.T])
    fig = go.Figure(
        go.Heatmap(
            z=best.T.numpy(),
            x=list(scores.languages),
            y=layers,
            zmin=0.0,
            zmax=1.0,
            colorscale=SEQUENTIAL,
            colorbar={"title": "AP"},
            customdata=labels,
            hovertemplate="%{x} block %{y}: best AP %{z:.3f} (%{customdata})<extra></extra>",
        )
    )
    fig.update_layout(
        template=TEMPLATE,
        title="Best AP per block (click a cell to inspect its unit)",
        xaxis={"title": "language", "type": "category"},
        yaxis={"title": "block", "type": "category"},
    )
    return fig


def ap_survival(scores: ExpertScores, grid: int = 201) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of units with AP >= x for x on an even grid of [0, 1]: ``(x [grid], fraction [lang, grid])``.

    A fixed grid keeps the figure small however many units the model has (millions on 7B models).
    """
    x = np.linspace(0.0, 1.0, grid)
    ap = np.sort(scores.ap.numpy(), axis=1)
    n = ap.shape[1]
    below = np.stack([np.searchsorted(row, x, side="left") for row in ap])
    return x, (n - below) / n


def ap_distribution(scores: ExpertScores, grid: int = 201) -> go.Figure:
    """Per language, the fraction of units whose AP is at least x (log scale: the experts are the far tail)."""
    x, frac = ap_survival(scores, grid)
    n = scores.ap.shape[1]
    fig = go.Figure()
    for li, lang in enumerate(scores.languages):
        # Zero fractions cannot be drawn on a log axis: end each curve at its last non-empty grid point.
        keep = frac[li] > 0
        fig.add_trace(
            go.Scatter(
                x=x[keep],
                y=frac[li][keep],
                mode="lines",
                name=lang,
                line={"color": language_color(lang), "width": 2},
                customdata=np.round(frac[li][keep] * n).astype(int),
                hovertemplate=f"{lang}: %{{customdata}} units with AP ≥ %{{x:.3f}}<extra></extra>",
            )
        )
    fig.update_layout(
        template=TEMPLATE,
        title="AP distribution: fraction of units with AP ≥ x",
        xaxis={"title": "AP", "range": [0, 1]},
        yaxis={"title": "fraction of units", "type": "log", "exponentformat": "power", "dtick": 1},
    )
    return fig


def jaccard_matrix(scores: ExpertScores, k: int) -> Float[Tensor, "lang lang"]:
    """Jaccard index |A ∩ B| / |A ∪ B| of the top-``k`` expert sets of every pair of languages."""
    sets = torch.zeros(len(scores.languages), scores.ap.shape[1])
    for li, lang in enumerate(scores.languages):
        sets[li, scores.select(lang, k).units] = 1.0
    inter = sets @ sets.T
    sizes = sets.sum(dim=1)
    return inter / (sizes[:, None] + sizes[None, :] - inter)


def expert_overlap(scores: ExpertScores, k: int) -> go.Figure:
    """Heatmap language x language of the Jaccard overlap of the top-``k`` expert sets."""
    jac = jaccard_matrix(scores, k).numpy()
    labels = list(scores.languages)
    fig = go.Figure(
        go.Heatmap(
            z=jac,
            x=labels,
            y=labels,
            zmin=0.0,
            zmax=1.0,
            text=np.round(jac, 2),
            texttemplate="%{text}",
            colorscale=SEQUENTIAL,
            colorbar={"title": "Jaccard"},
            hovertemplate="%{y} ∩ %{x}: Jaccard %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        template=TEMPLATE,
        title=f"Overlap of the top-{k} expert sets (Jaccard)",
        xaxis={"title": "language", "type": "category"},
        yaxis={"title": "language", "type": "category", "autorange": "reversed"},
    )
    return fig
