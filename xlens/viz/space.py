"""The embedding space in 2-D: sentences coloured by language, before and after an intervention, per layer.

Each layer's projection is fitted on the baseline embeddings and the intervened ones are projected into the same
basis, so a point that moves between the two panels moved in the model, not in the projection. PCA is exact and
cheap; UMAP (the paper's view, ``umap-learn``) is seeded and its coordinates are cached on disk, keyed by the
embeddings' bytes, the seed, the parameters and umap's version, so a rerun draws the identical figure at once.
"""

from __future__ import annotations

import hashlib
import io
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import plotly.graph_objects as go
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

from xlens._io import atomic_write, content_key
from xlens.errors import ProjectionError
from xlens.models.loading import cache_dir
from xlens.viz.style import TEMPLATE, language_color, layer_slider, plotly_text

Projection = Literal["pca", "umap"]


def pca_fit(X: np.ndarray, n_components: int = 2, max_iter: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the top principal axes (``[n_components, d]``, signs fixed) of ``X``.

    Orthogonal (subspace) iteration with Rayleigh-Ritz, from a deterministic start: only matrix products and QRs
    of thin matrices. A full SVD gives the same axes, but LAPACK's SVD/eigh can run 30x slower than usual when
    the CPU is shared with other jobs, and every layer of every report needs one. A flat spectrum (no dominant
    directions, nothing to see in 2-D either) stops after ``max_iter`` rounds with approximate axes.
    """
    mean = X.mean(axis=0)
    Xc = X - mean
    width = min(n_components + 8, *Xc.shape)  # oversampled: converges like (lambda_{width+1} / lambda_2)^iterations
    Q = np.linalg.qr(Xc[:width].T if Xc.shape[0] >= width else np.eye(Xc.shape[1], width))[0]
    for _ in range(max_iter):
        nxt = np.linalg.qr(Xc.T @ (Xc @ Q))[0]
        done = np.abs(np.abs((nxt[:, :n_components] * Q[:, :n_components]).sum(axis=0)) - 1).max() < 1e-10
        Q = nxt
        if done:
            break
    XQ = Xc @ Q
    _, vectors = np.linalg.eigh(XQ.T @ XQ)  # ascending eigenvalues
    axes = (Q @ vectors[:, ::-1][:, :n_components]).T
    # Axis signs are arbitrary: make each axis' largest loading positive so layers and reruns agree.
    flip = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
    return mean, axes * flip[:, None]


def project_2d(
    before: np.ndarray,
    after: np.ndarray | None = None,
    method: Projection = "pca",
    seed: int = 0,
    cache: Path | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """2-D coordinates of ``before`` and of ``after`` in the basis fitted on ``before``.

    ``cache`` (UMAP only; default :func:`projection_cache`): a folder of computed projections.
    """
    if method == "pca":
        mean, axes = pca_fit(before.astype(np.float64))
        return (before - mean) @ axes.T, None if after is None else (after - mean) @ axes.T
    if method == "umap":
        return _umap(before, after, seed, projection_cache() if cache is None else cache)
    raise ProjectionError(f"unknown projection {method!r}; use 'pca' or 'umap'")


def projection_cache() -> Path:
    """Where UMAP projections are kept: ``projections/`` in xlens' cache (``$XLENS_CACHE``)."""
    return cache_dir() / "projections"


def _umap(before: np.ndarray, after: np.ndarray | None, seed: int, cache: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        import umap  # type: ignore[import-not-found]
    except ImportError:
        raise ProjectionError("method='umap' needs umap-learn: pip install -e '.[umap]' (or use 'pca')") from None
    if before.shape[0] < 4:
        raise ProjectionError(f"UMAP needs at least 4 points, got {before.shape[0]}: use method='pca'")
    params = {
        "n_components": 2,
        "n_neighbors": min(15, before.shape[0] - 1),
        "min_dist": 0.1,
        "random_state": seed,
        "n_jobs": 1,
    }
    digests = [_digest(a) for a in (before, after) if a is not None]
    target = cache / f"umap-{content_key(params, umap.__version__, digests)}.npz"
    if target.is_file():
        try:
            with np.load(target) as saved:
                return saved["before"], saved["after"] if after is not None else None
        except (OSError, ValueError, KeyError) as err:
            raise ProjectionError(f"cached projection {target} is unreadable ({err}): delete it to recompute") from err
    reducer = umap.UMAP(**params).fit(before)
    coords = np.asarray(reducer.embedding_), None if after is None else np.asarray(reducer.transform(after))

    def write(tmp: Path) -> None:
        buffer = io.BytesIO()  # np.savez would append ".npz" to the temporary name
        arrays = {"before": coords[0]} if coords[1] is None else {"before": coords[0], "after": coords[1]}
        np.savez(buffer, allow_pickle=False, **arrays)
        tmp.write_bytes(buffer.getvalue())

    atomic_write(target, write)
    return coords


def _digest(array: np.ndarray) -> str:
    data = np.ascontiguousarray(array)
    return hashlib.sha256(f"{data.dtype}{data.shape}".encode() + data.tobytes()).hexdigest()


def embedding_space(
    before: Float[Tensor, "sentence layer d_model"],
    after: Float[Tensor, "sentence layer d_model"] | None = None,
    *,
    languages: Sequence[str],
    layers: Sequence[int],
    ids: Sequence[int] | None = None,
    texts: Sequence[str] | None = None,
    method: Projection = "pca",
    seed: int = 0,
    layer: int | None = None,
    after_label: str = "after intervention",
) -> go.Figure:
    """Scatter of sentence embeddings in 2-D, one colour per language, with a slider over ``layers``.

    Rows of ``before`` / ``after`` are grouped by language (``languages[0]``'s sentences first, as
    :func:`xlens.runs.study.run_experiment` embeds them); ``ids`` are the sentences' ids within a language
    (translations share one) and ``texts`` all rows' texts, both shown on hover. ``customdata`` of every point
    is its sentence id, which the HTML export uses to highlight a sentence's translations on hover.
    """
    B = before.detach().float().cpu().numpy()
    A = None if after is None else after.detach().float().cpu().numpy()
    sentence_ids = _sentence_ids(B, A, languages, layers, ids, texts, layer)
    start = len(layers) - 1 if layer is None else list(layers).index(layer)

    if method not in ("pca", "umap"):
        raise ProjectionError(f"unknown projection {method!r}; use 'pca' or 'umap'")
    coords = [project_2d(B[:, s], None if A is None else A[:, s], method, seed) for s in range(B.shape[1])]
    panels = [("before", 1)] + ([(after_label, 2)] if A is not None else [])
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p for p, _ in panels], horizontal_spacing=0.06)
    for col, trace in _scatter_traces(coords[start], panels, languages, sentence_ids, texts, with_style=True):
        fig.add_trace(trace, row=1, col=col)
    # Frames only carry coordinates: the hover texts live once in the base traces.
    fig.frames = [
        go.Frame(
            name=str(layer),
            data=[t for _, t in _scatter_traces(coords[s], panels, languages, sentence_ids, texts, with_style=False)],
        )
        for s, layer in enumerate(layers)
    ]
    # One empty trace per panel that the HTML export fills with the hovered sentence's translations.
    for _, col in panels:
        fig.add_trace(_link_trace(), row=1, col=col)
    _lay_out(fig, method, layers, start)
    return fig


def _sentence_ids(
    B: np.ndarray,
    A: np.ndarray | None,
    languages: Sequence[str],
    layers: Sequence[int],
    ids: Sequence[int] | None,
    texts: Sequence[str] | None,
    layer: int | None,
) -> list[int]:
    """The sentence id of each row within its language, once the embeddings are checked against their labels."""
    n_rows, n_layers = B.shape[0], B.shape[1]
    if A is not None and A.shape != B.shape:
        raise ProjectionError(f"before {B.shape} and after {A.shape} embeddings differ in shape")
    if n_layers != len(layers):
        raise ProjectionError(f"embeddings hold {n_layers} layers but {len(layers)} layer numbers were given")
    if not languages or n_rows % len(languages):
        raise ProjectionError(f"{n_rows} rows cannot be split evenly into {len(languages)} languages")
    per_lang = n_rows // len(languages)
    sentence_ids = list(range(per_lang)) if ids is None else [int(i) for i in ids]
    if len(sentence_ids) != per_lang:
        raise ProjectionError(f"{len(sentence_ids)} ids for {per_lang} sentences per language")
    if texts is not None and len(texts) != n_rows:
        raise ProjectionError(f"{len(texts)} texts for {n_rows} embedded sentences")
    if layer is not None and layer not in layers:
        raise ProjectionError(f"layer {layer} is not among the embedded layers {list(layers)}")
    return sentence_ids


def _scatter_traces(
    coords: tuple[np.ndarray, np.ndarray | None],
    panels: list[tuple[str, int]],
    languages: Sequence[str],
    sentence_ids: list[int],
    texts: Sequence[str] | None,
    with_style: bool,
) -> list[tuple[int, go.Scatter]]:
    """One scatter per panel and language at one layer, with the panel's column; ``with_style`` adds the looks."""
    per_lang = len(sentence_ids)
    out = []
    for panel, col in panels:
        xy = coords[0] if col == 1 else coords[1]
        assert xy is not None
        for li, lang in enumerate(languages):
            rows = slice(li * per_lang, (li + 1) * per_lang)
            trace: dict[str, Any] = {"x": xy[rows, 0], "y": xy[rows, 1]}
            if with_style:
                trace.update(_style(lang, col, panel, sentence_ids, texts, rows))
            out.append((col, go.Scatter(**trace)))
    return out


def _link_trace() -> go.Scatter:
    """An empty ``xlens-link`` trace, drawn as lines through open circles once the HTML export fills it."""
    return go.Scatter(
        x=[],
        y=[],
        mode="lines+markers",
        name="translations",
        showlegend=False,
        hoverinfo="skip",
        line={"color": "rgba(0,0,0,0.5)", "width": 1},
        marker={"size": 12, "symbol": "circle-open", "color": "black", "line": {"width": 2}},
        meta="xlens-link",
    )


def _lay_out(fig: go.Figure, method: Projection, layers: Sequence[int], start: int) -> None:
    """Title, size, hover mode, axis titles and the layer slider (at layer index ``start``) of the figure."""
    fig.update_layout(
        template=TEMPLATE,
        title=f"Sentence embeddings ({method.upper()} per layer, fitted on the baseline)",
        height=520,
        hovermode="closest",
        sliders=[layer_slider(list(layers), start)],
    )
    fig.update_xaxes(title_text="component 1")
    fig.update_yaxes(title_text="component 2", col=1)


def _style(lang: str, col: int, panel: str, ids: list[int], texts: Sequence[str] | None, rows: slice) -> dict[str, Any]:
    lang_texts = texts[rows] if texts is not None else [""] * len(ids)
    return {
        "mode": "markers",
        "name": lang,
        "legendgroup": lang,
        "showlegend": col == 1,
        "marker": {"color": language_color(lang), "size": 6, "opacity": 0.75 if col == 1 else 0.9},
        "customdata": ids,
        "hovertext": [f"{lang} #{i} ({panel})<br>{_wrap(t)}" for i, t in zip(ids, lang_texts, strict=True)],
        "hoverinfo": "text",
    }


def _wrap(text: str, width: int = 60) -> str:
    return "<br>".join(plotly_text(line) for line in textwrap.wrap(text, width))
