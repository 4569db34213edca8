"""The figure of ``xlens choose-k``: target-language rate and perplexity cost against k, the chosen k marked."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from xlens.viz.style import TEMPLATE, language_color


def choose_k_figure(report: dict[str, Any]) -> go.Figure:
    """Two panels over k (a :func:`xlens.runs.steer.choose_k` report): the target-language rate of the sampled
    continuations with its 95% interval and the rule's minimum, and the worst perplexity ratio with its bound."""
    rows, rule, chosen = report["rows"], report["rule"], report["chosen_k"]
    ks = [str(row["k"]) for row in rows]  # categorical: k values are far apart and include 0
    rate = [row["target_rate"] for row in rows]
    low = [row["target_rate"] - row["target_rate_interval"][0] for row in rows]
    high = [row["target_rate_interval"][1] - row["target_rate"] for row in rows]
    color = language_color(report["lang"])
    fig = make_subplots(rows=1, cols=2, subplot_titles=("target-language rate", "perplexity ratio (worst language)"))
    fig.add_trace(
        go.Scatter(
            x=ks,
            y=rate,
            mode="lines+markers",
            line={"color": color},
            error_y={"type": "data", "symmetric": False, "array": high, "arrayminus": low},
            name="rate",
        ),
        row=1,
        col=1,
    )
    ratios = [row["worst_perplexity_ratio"] for row in rows]
    fig.add_trace(go.Scatter(x=ks, y=ratios, mode="lines+markers", line={"color": color}, name="ratio"), row=1, col=2)
    fig.add_hline(y=rule["min_rate"], line_dash="dot", row=1, col=1)  # type: ignore[arg-type]
    fig.add_hline(y=rule["max_perplexity_ratio"], line_dash="dot", row=1, col=2)  # type: ignore[arg-type]
    if chosen is not None:
        for col in (1, 2):
            fig.add_vline(x=ks.index(str(chosen)), line_color="#444", row=1, col=col)  # type: ignore[arg-type]
    verdict = f"chosen k = {chosen}" if chosen is not None else "no k meets the rule"
    fig.update_layout(
        template=TEMPLATE,
        title=f"Choosing k for {report['lang']}: {verdict}",
        showlegend=False,
        xaxis={"title": "k", "type": "category"},
        xaxis2={"title": "k", "type": "category"},
        yaxis={"range": [0, 1.02]},
    )
    return fig
