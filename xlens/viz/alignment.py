"""Figures of a run's results: alignment heatmaps, retrieval per layer, and the before/after summary.

Every function takes the :class:`xlens.runs.results.RunResults` of :func:`xlens.run_experiment` (or
``RunResults.load(folder)``). A condition is given as a :class:`xlens.runs.results.Condition` or its label
(``"force spa_Latn k=200"``); the default is the condition with the best mean top-1 improvement ratio.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from xlens.conditions import Condition
from xlens.errors import ResultsError
from xlens.runs.results import RunResults
from xlens.viz.style import DIVERGING, SEQUENTIAL, TEMPLATE, language_color, layer_slider, nan_to_none

ALIGNMENT_METRICS = ("cosine_parallel", "cosine_random", "cosine_gap", "cka", "cka_debiased", "centroid_distance")
RETRIEVAL_METRICS = ("top1", "top5", "mrr")


def _resolve(results: RunResults, condition: Condition | str | None) -> Condition | None:
    """The condition asked for, or the best one when None (None again for a baseline-only run)."""
    return results.best_condition() if condition is None else results.condition(condition)


def alignment_matrices(
    results: RunResults, metric: str = "cka", condition: Condition | str | None = None
) -> tuple[list[str], list[int], np.ndarray]:
    """``(languages, layers, values [layer, lang, lang])`` of one alignment metric under one condition
    (``None``: the baseline). The matrices are symmetric with a NaN diagonal (pairs of distinct languages only)."""
    if metric not in ALIGNMENT_METRICS:
        raise ResultsError(f"unknown alignment metric {metric!r}; use one of {ALIGNMENT_METRICS}")
    table = results.table("alignment", condition)
    if table.empty:
        raise ResultsError(f"no alignment rows for {results.condition(condition).label}")
    langs = results.languages
    layers = sorted(int(x) for x in table["layer"].unique())
    pos = {lang: i for i, lang in enumerate(langs)}
    slot = {layer: s for s, layer in enumerate(layers)}
    values = np.full((len(layers), len(langs), len(langs)), np.nan)
    for row in table.itertuples():
        a, b, s = pos[row.lang_a], pos[row.lang_b], slot[int(row.layer)]  # type: ignore[arg-type]
        values[s, a, b] = values[s, b, a] = getattr(row, metric)
    return langs, layers, values


def similarity_heatmaps(
    results: RunResults, metric: str = "cka", condition: Condition | str | None = None, layer: int | None = None
) -> go.Figure:
    """Language x language heatmaps of ``metric`` before, after ``condition`` and their difference, with a layer
    slider (default: the best condition, starting at the last layer)."""
    cond = _resolve(results, condition)
    langs, layers, before = alignment_matrices(results, metric, None)
    panels: list[tuple[str, np.ndarray]] = [("before", before)]
    if cond is not None:
        _, after_layers, after = alignment_matrices(results, metric, cond)
        if after_layers != layers:
            raise ResultsError(f"baseline layers {layers} differ from the intervention's {after_layers}")
        panels += [(f"after ({cond.label})", after), ("after − before", after - before)]
    finite = np.concatenate([p[np.isfinite(p)] for _, p in panels[:2]])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    diff = panels[2][1] if len(panels) == 3 else None
    diff_max = float(np.nanmax(np.abs(diff))) if diff is not None and np.isfinite(diff).any() else 1.0
    start = len(layers) - 1 if layer is None else layers.index(layer)
    fig = make_subplots(
        rows=1, cols=len(panels), subplot_titles=[t for t, _ in panels], horizontal_spacing=0.13, shared_yaxes=True
    )
    # Before and after share one colour scale (bar right of "after"); the difference has its own, centred on 0.
    shared_bar_x = _domain_end(fig, "xaxis2" if len(panels) > 1 else "xaxis") + 0.01

    def heatmaps(slot: int, with_style: bool) -> list[go.Heatmap]:
        out = []
        for col, (_, values) in enumerate(panels, start=1):
            trace: dict[str, Any] = {"z": nan_to_none(values[slot])}
            if with_style:
                is_diff = col == 3
                trace.update(
                    x=langs,
                    y=langs,
                    texttemplate="%{z:+.3f}" if is_diff else "%{z:.2f}",
                    colorscale=DIVERGING if is_diff else SEQUENTIAL,
                    zmin=-diff_max if is_diff else lo,
                    zmax=diff_max if is_diff else hi,
                    showscale=col != 1 or len(panels) == 1,
                    colorbar={"x": 1.01 if is_diff else shared_bar_x, "xanchor": "left", "thickness": 12, "len": 0.9},
                    hovertemplate=f"%{{y}} – %{{x}}: {metric} %{{z:.4f}}<extra></extra>",
                )
            out.append(go.Heatmap(**trace))
        return out

    for col, trace in enumerate(heatmaps(start, with_style=True), start=1):
        fig.add_trace(trace, row=1, col=col)
    fig.frames = [go.Frame(name=str(layer), data=heatmaps(s, with_style=False)) for s, layer in enumerate(layers)]
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    fig.update_layout(
        template=TEMPLATE,
        title=f"{metric} between languages per layer",
        height=460,
        sliders=[layer_slider(layers, start)],
    )
    return fig


def _domain_end(fig: go.Figure, axis: str) -> float:
    layout: Any = fig.layout  # plotly's dynamic attributes are untyped
    return float(layout[axis].domain[1])


def retrieval_curves(results: RunResults, condition: Condition | str | None = None, metric: str = "top1") -> go.Figure:
    """Retrieval ``metric`` per layer for every ordered pair: one panel per source language, one colour per target
    language, dotted before and solid after ``condition`` (default: the best one)."""
    if metric not in RETRIEVAL_METRICS:
        raise ResultsError(f"unknown retrieval metric {metric!r}; use one of {RETRIEVAL_METRICS}")
    cond = _resolve(results, condition)
    langs = results.languages
    cols = min(len(langs), 3)
    rows = -(-len(langs) // cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        shared_yaxes=True,
        subplot_titles=[f"from {lang}" for lang in langs],
        vertical_spacing=0.12,
    )
    parts = [("before", results.table("retrieval"), "dot")]
    if cond is not None:
        parts.append((f"after ({cond.label})", results.table("retrieval", cond), "solid"))
    in_legend: set[str] = set()
    for i, src in enumerate(langs):
        r, c = divmod(i, cols)
        for tgt in langs:
            if tgt == src:
                continue
            for name, part, dash in parts:
                rows_ = part.loc[(part["src"] == src) & (part["tgt"] == tgt)].sort_values(by="layer")
                fig.add_trace(
                    go.Scatter(
                        x=rows_["layer"],
                        y=rows_[metric],
                        mode="lines",
                        name=f"→ {tgt}",
                        legendgroup=tgt,
                        showlegend=tgt not in in_legend,
                        line={"color": language_color(tgt), "dash": dash, "width": 2},
                        hovertemplate=f"{src}→{tgt} {name}<br>layer %{{x}}: {metric} %{{y:.3f}}<extra></extra>",
                    ),
                    row=r + 1,
                    col=c + 1,
                )
                in_legend.add(tgt)  # one legend entry per target; the title explains the dash styles
    subtitle = "dotted: before" + (f", solid: after {cond.label}" if cond else "")
    fig.update_layout(
        template=TEMPLATE,
        title=f"Retrieval {metric} per layer ({subtitle})",
        height=320 * rows + 80,
        legend={"title": "target"},
    )
    fig.update_yaxes(range=[0, 1.02] if metric != "mrr" else None)
    n_layers = len(results.layers)
    fig.update_xaxes(dtick=max(1, -(-n_layers // 10)))  # whole layers only
    fig.update_xaxes(title_text="layer", row=rows)
    return fig


def improvement_bars(results: RunResults) -> go.Figure:
    """Mean top-1 over pairs at the best and the last layer, baseline vs every condition, each condition annotated
    with its best improvement ratio (x after/before at its best layer)."""
    h = results.headline()
    base = h["baseline_mean_top1_by_layer"]
    best, last = h["best_layer"], h["last_layer"]
    labels = ["baseline"] + [c["condition"] for c in h["conditions"]]
    at_best = [base[best]] + [c["top1_best_layer"] for c in h["conditions"]]
    at_last = [base[last]] + [c["top1_last_layer"] for c in h["conditions"]]
    fig = go.Figure(
        [
            go.Bar(x=labels, y=at_best, name=f"best layer ({best})", marker_color="#0072B2"),
            go.Bar(x=labels, y=at_last, name=f"last layer ({last})", marker_color="#56B4E9"),
        ]
    )
    for label, c in zip(labels[1:], h["conditions"], strict=True):
        fig.add_annotation(
            x=label,
            y=max(c["top1_best_layer"], c["top1_last_layer"]),
            text=f"×{c['best_ratio']:.2f} (L{c['best_ratio_layer']})",
            showarrow=False,
            textangle=-90,  # upright labels collide once there are more than a handful of conditions
            yanchor="bottom",
            yshift=4,
            font={"size": 11},
        )
    fig.update_layout(
        template=TEMPLATE,
        title="Mean top-1 retrieval over language pairs: before vs after (× = best improvement ratio)",
        barmode="group",
        yaxis={"title": "mean top-1", "range": [0, 1.3]},
        xaxis={"title": "condition", "type": "category"},
    )
    return fig


def condition_gains(
    results: RunResults,
    metric: str = "top1",
    layers: list[int] | None = None,
    task: str = "retrieval",
    where: dict[str, Any] | None = None,
) -> go.Figure:
    """The change of ``task``'s ``metric`` (retrieval: the mean over language pairs; see
    :meth:`RunResults.comparison` for the others and for ``where``) under every intervention of a grid, with its
    bootstrap interval, one panel per layer (default: the best baseline layer and the last one). Conditions are
    grouped by method, settings and k along x, one colour per expert language, each beside its random controls
    (hollow, mean over seeds: circles for random units, diamonds for random units matched per block) where the run
    has them."""
    table = results.comparison(metric, layers, task=task, where=where)
    if table.empty:
        raise ResultsError(f"no intervention of these results measured {task} {metric}")
    per = ["condition", "layer"] if "layer" in table else ["condition"]
    if table.duplicated(per).any():
        extra = [c for c in ("target", "language", "direction", "src") if c in table]
        raise ResultsError(f"several rows per condition ({', '.join(extra)}): choose one with where={{...}}")
    chosen = list(dict.fromkeys(table["layer"])) if "layer" in table else [None]
    groups = [
        label.replace(f" {lang}", "") for label, lang in zip(table["condition"], table["expert_lang"], strict=True)
    ]
    table = table.assign(group=groups)
    order = list(dict.fromkeys(groups))
    titles = [f"layer {x}" if x is not None else task for x in chosen]
    fig = make_subplots(rows=1, cols=len(chosen), shared_yaxes=True, subplot_titles=titles)
    for col, layer in enumerate(chosen, start=1):
        at_layer = table if layer is None else table[table["layer"] == layer]
        _gain_traces(fig, at_layer, order, metric, col)
        fig.add_hline(y=0, line={"color": "#888", "width": 1}, row=1, col=col)  # type: ignore[arg-type]
    fig.update_xaxes(tickvals=list(range(len(order))), ticktext=order, tickangle=-45)
    fig.update_layout(
        template=TEMPLATE,
        title=f"{task}: change of {metric} vs baseline with {results.config.stats.confidence:.0%} intervals "
        "(hollow: random-unit controls, mean over seeds; diamonds: matched per block)",
        height=480,
        yaxis={"title": f"Δ {metric}"},
    )
    return fig


_CONTROL_MARKERS = (
    ("random", "random units", "circle-open", 0.3),
    ("random-per-block", "random per block", "diamond-open", 0.6),
)


def _gain_traces(fig: go.Figure, table: Any, order: list[str], metric: str, col: int) -> None:
    """One panel's markers: each expert language's interventions and, shifted beside them, their controls."""
    langs = list(dict.fromkeys(table["expert_lang"]))
    step = 0.8 / max(len(langs), 1)
    sides = [("", "experts", "circle", 0.0)]
    sides += [(f"{k}_", title, symbol, step * shift) for k, title, symbol, shift in _CONTROL_MARKERS
              if f"diff_{k}_vs_baseline" in table]  # fmt: skip
    for j, lang in enumerate(langs):
        rows = table[table["expert_lang"] == lang]
        base_x = [order.index(g) + (j - (len(langs) - 1) / 2) * step for g in rows["group"]]
        for side, title, symbol, shift in sides:
            diff, low, high = (rows[f"{name}_{side}vs_baseline"] for name in ("diff", "low", "high"))
            name = f"{lang} {title}" if not side else f"{title} ({lang})"
            error = {"type": "data", "array": (high - diff).tolist(), "arrayminus": (diff - low).tolist()}
            fig.add_trace(
                go.Scatter(
                    x=[x + shift for x in base_x],
                    y=diff,
                    customdata=rows["group"],
                    error_y=error | {"thickness": 1.2, "width": 3},
                    mode="markers",
                    marker={"symbol": symbol, "size": 8, "color": language_color(str(lang))},
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    hovertemplate=f"{name}, %{{customdata}}: Δ{metric} %{{y:+.3f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
