"""Does alignment predict downstream performance? One point per language: a task metric against another under one
condition at one layer, with Pearson's r and Spearman's rho and their bootstrap intervals (from
:meth:`xlens.runs.results.RunResults.validity`) in the title."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from xlens.errors import ResultsError
from xlens.runs.results import RunResults
from xlens.viz.style import TEMPLATE


def validity_scatter(
    results: RunResults,
    x: str = "retrieval.top1",
    y: str = "transfer.accuracy",
    *,
    layer: int | None = None,
    condition: str = "baseline",
) -> go.Figure:
    """Per-language ``x`` against ``y`` under ``condition`` at ``layer`` (default: the last of the run's
    layers), each point a language (hover: its code), titled with r and rho and their intervals."""
    chosen = layer if layer is not None else max(results.layers)
    table = results.validity(x, y, layers=[chosen])
    row: Any = table[(table["condition"] == condition) & (table["layer"] == chosen)]
    if row.empty:
        raise ResultsError(f"no correlation of {x} and {y} for {condition!r} at layer {chosen}")
    points: Any = results.paired_values(x, y, [chosen])
    points = points[(points["condition"] == condition) & (points["layer"] == chosen)]
    r = row.iloc[0]
    title = (
        f"{x} vs {y}, {condition}, layer {chosen}: {r['points']} languages, "
        f"Pearson r {r['pearson']:.2f} [{r['pearson_low']:.2f}, {r['pearson_high']:.2f}], "
        f"Spearman rho {r['spearman']:.2f} [{r['spearman_low']:.2f}, {r['spearman_high']:.2f}]"
    )
    fig = go.Figure(
        go.Scatter(
            x=points["x"],
            y=points["y"],
            mode="markers",
            text=points["language"],
            hovertemplate="%{text}<br>" + x + " %{x:.3f}<br>" + y + " %{y:.3f}<extra></extra>",
            marker={"size": 7, "opacity": 0.75},
        )
    )
    fig.update_layout(template=TEMPLATE, title={"text": title, "font": {"size": 13}}, xaxis_title=x, yaxis_title=y)
    return fig
