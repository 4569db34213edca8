"""A card for one unit: how well it separates each language, how it responds, and which sentences excite it.

Per-token activations come from one hooked forward pass over the few sentences shown (never from a cache of the
whole corpus), and are drawn twice: as coloured text in HTML, and as a token heatmap in the card's plotly figure.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from xlens.activations import Responses
from xlens.errors import NeuronCardError
from xlens.experts.sets import ExpertScores
from xlens.models.lens import ForwardBatch, LensModel
from xlens.viz.style import DIVERGING, TEMPLATE, language_color, nan_to_none, plotly_text

MAX_HEATMAP_TOKENS = 32  # per sentence in the card figure; the HTML version shows every token
_NEGATIVE = "#7F7F7F"


@dataclass
class ActivatedText:
    """A text with one unit's activation on each of its tokens (BOS left out: it carries no language)."""

    text: str
    tokens: list[str]
    values: np.ndarray
    language: str | None = None
    pooled: float | None = None

    def html(self, vmax: float | None = None) -> str:
        """The tokens as coloured spans: orange for positive activation, blue for negative, value on hover."""
        return token_html(self.tokens, self.values, vmax=vmax)


def token_html(tokens: Sequence[str], values: np.ndarray | Sequence[float], vmax: float | None = None) -> str:
    """Coloured ``<span>``s, one per token; opacity is |value| / ``vmax`` (default: the largest |value|)."""
    vals = np.asarray(values, dtype=float)
    if len(tokens) != len(vals):
        raise NeuronCardError(f"{len(tokens)} tokens but {len(vals)} values")
    scale = float(vmax) if vmax is not None else float(np.abs(vals).max(initial=0.0))
    scale = scale if scale > 0 else 1.0
    spans = []
    for token, value in zip(tokens, vals, strict=True):
        alpha = min(abs(value) / scale, 1.0)
        rgb = "230,85,13" if value >= 0 else "49,130,189"
        spans.append(
            f'<span class="xlens-token" title="{value:.4f}" style="background:rgba({rgb},{alpha:.3f});'
            f'white-space:pre-wrap;border-radius:2px;padding:0 1px">{html.escape(token)}</span>'
        )
    return '<span class="xlens-tokens">' + "".join(spans) + "</span>"


def unit_token_activations(
    model: LensModel,
    texts: Sequence[str],
    scores_or_units: ExpertScores | Any,
    unit: int,
    *,
    max_length: int | None = 128,
) -> list[ActivatedText]:
    """Activation of flat unit ``unit`` on every token of every text (one batched hooked forward pass)."""
    units = scores_or_units.units if isinstance(scores_or_units, ExpertScores) else scores_or_units
    hook, position = units.locate(int(unit))
    rows: list[tuple[list[int], list[float]]] = [([], [])] * len(texts)

    def read(act: Tensor, batch: ForwardBatch) -> None:
        values = act.reshape(act.shape[0], act.shape[1], -1)[:, :, position].float().cpu()
        for r, i in enumerate(batch.row_ids.tolist()):
            n = int(batch.lengths[r])
            rows[i] = (batch.tokens[r, :n].tolist(), values[r, :n].tolist())

    model.forward(list(texts), [(hook, read)], max_length=max_length, batch_size=len(texts))
    tok = model.tokenizer
    bos = tok.bos_token_id if model.prepend_bos else None
    out = []
    for text, (ids, values) in zip(texts, rows, strict=True):
        start = 1 if bos is not None and ids and ids[0] == bos else 0
        out.append(
            ActivatedText(
                text=text,
                tokens=display_tokens(tok, ids[start:]),
                values=np.asarray(values[start:], dtype=float),
            )
        )
    return out


CONTINUATION = "·"  # shown for the later tokens of a character split over several byte-level tokens


def display_tokens(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """One readable string per token. Byte-level BPE (GPT-2, Bloom) splits a CJK character into tokens that each
    decode to U+FFFD alone: such a run is decoded together, the character shown on its first token and
    :data:`CONTINUATION` on the others, so every token keeps its own cell and value."""
    out: list[str] = []
    i = 0
    while i < len(ids):
        end, text = i + 1, tokenizer.decode([ids[i]])
        if "\ufffd" in text:  # a UTF-8 character has at most 4 bytes: look at most 3 tokens ahead for the rest
            for stop in range(i + 2, min(len(ids), i + 4) + 1):
                joined = tokenizer.decode(list(ids[i:stop]))
                if "\ufffd" not in joined:
                    end, text = stop, joined
                    break
        out.extend([text] + [CONTINUATION] * (end - i - 1))
        i = end
    return out


@dataclass
class NeuronCard:
    """Everything shown about one unit; :meth:`figure` draws it with plotly, :meth:`html` as a small page part."""

    unit: int
    label: str
    hook: str
    position: int
    language: str
    languages: list[str]
    ap: np.ndarray
    auroc: np.ndarray
    pooling: str
    positives: np.ndarray | None = None
    negatives: np.ndarray | None = None
    top: list[ActivatedText] = field(default_factory=list)

    @property
    def title(self) -> str:
        li = self.languages.index(self.language)
        return f"{self.label}: {self.language} expert? AP {self.ap[li]:.3f}, AUROC {self.auroc[li]:.3f}"

    def figure(self, height: int = 780) -> go.Figure:
        fig = make_subplots(
            rows=2,
            cols=2,
            specs=[[{}, {}], [{"colspan": 2}, None]],
            row_heights=[0.42, 0.58],
            vertical_spacing=0.16,
            subplot_titles=(
                "AP (bars) and AUROC (◆), one vs rest",
                f"{self.pooling}-pooled response: {self.language} vs rest",
                "top-activating sentences, activation per token",
            ),
        )
        colors = [language_color(lang) for lang in self.languages]
        fig.add_trace(
            go.Bar(x=self.languages, y=self.ap, name="AP", marker_color=colors, showlegend=False), row=1, col=1
        )
        fig.add_trace(
            go.Scatter(
                x=self.languages,
                y=self.auroc,
                name="AUROC",
                mode="markers",
                marker={"symbol": "diamond", "size": 11, "color": "#222"},
            ),
            row=1,
            col=1,
        )
        fig.update_yaxes(range=[-0.03, 1.08], row=1, col=1)
        if self.positives is not None and self.negatives is not None:
            self._add_histograms(fig)
        if self.top and any(t.tokens for t in self.top):
            self._add_token_heatmap(fig)
        elif self.top:
            fig.add_trace(
                go.Scatter(
                    x=[t.pooled for t in self.top],
                    y=[f"{i + 1}. {t.language}" for i, t in enumerate(self.top)],
                    mode="markers+text",
                    text=[plotly_text(t.text[:80]) for t in self.top],
                    textposition="middle right",
                    showlegend=False,
                ),
                row=2,
                col=1,
            )
            fig.update_yaxes(autorange="reversed", row=2, col=1)
        fig.update_layout(template=TEMPLATE, title=self.title, height=height, margin={"t": 100})
        return fig

    def _add_histograms(self, fig: go.Figure) -> None:
        assert self.positives is not None and self.negatives is not None
        both = np.concatenate([self.positives, self.negatives])
        edges = np.histogram_bin_edges(both, bins=30)
        for values, name, color in (
            (self.negatives, "rest", _NEGATIVE),
            (self.positives, self.language, language_color(self.language)),
        ):
            density, _ = np.histogram(values, bins=edges, density=True)
            # A step line per group keeps the figure small and lets grouped bars elsewhere keep their barmode.
            fig.add_trace(
                go.Scatter(
                    x=np.repeat(edges, 2)[1:-1],
                    y=np.repeat(density, 2),
                    mode="lines",
                    fill="tozeroy",
                    name=f"{name} (n={len(values)})",
                    line={"color": color, "width": 1.5},
                    opacity=0.6,
                ),
                row=1,
                col=2,
            )
        fig.update_xaxes(title_text="pooled activation", row=1, col=2)
        fig.update_yaxes(title_text="density", row=1, col=2)

    def _add_token_heatmap(self, fig: go.Figure) -> None:
        width = min(MAX_HEATMAP_TOKENS, max(len(t.tokens) for t in self.top))
        z = np.full((len(self.top), width), np.nan)
        text = np.full((len(self.top), width), "", dtype=object)
        for r, item in enumerate(self.top):
            n = min(width, len(item.tokens))
            z[r, :n] = item.values[:n]
            text[r, :n] = [plotly_text(t.strip() or "␣") for t in item.tokens[:n]]
        vmax = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
        rows = [f"{i + 1}. {t.language or ''} ({t.pooled or 0:.3g})" for i, t in enumerate(self.top)]
        fig.add_trace(
            go.Heatmap(
                z=nan_to_none(z),
                y=rows,
                text=text,
                texttemplate="%{text}",
                textfont={"size": 10},
                colorscale=DIVERGING,
                zmid=0,
                zmin=-vmax,
                zmax=vmax,
                colorbar={"title": "act.", "len": 0.5, "y": 0.25},
                hovertemplate="%{y}<br>token %{x}: %{text} = %{z:.3f}<extra></extra>",
                xgap=1,
                ygap=2,
            ),
            row=2,
            col=1,
        )
        fig.update_yaxes(autorange="reversed", type="category", row=2, col=1)
        fig.update_xaxes(title_text="token", row=2, col=1)

    def __repr__(self) -> str:
        return f"NeuronCard({self.title}; {len(self.top)} top sentences)"

    def _repr_html_(self) -> str:
        return self.html()

    def html(self) -> str:
        """A header and the top sentences as coloured tokens (HTML; no figure)."""
        li = self.languages.index(self.language)
        head = (
            f"<h4>{html.escape(self.label)} <small>({html.escape(self.hook)}[{self.position}])</small></h4>"
            f"<p>{html.escape(self.language)}: AP {self.ap[li]:.3f}, AUROC {self.auroc[li]:.3f}</p>"
        )
        if not self.top:
            return head
        vmax = max((float(np.abs(t.values).max(initial=0.0)) for t in self.top), default=0.0) or None
        items = []
        for t in self.top:
            body = t.html(vmax=vmax) if t.tokens else html.escape(t.text)
            items.append(f"<li><code>{html.escape(t.language or '')}</code> {t.pooled or 0:.3f}: {body}</li>")
        return head + '<ol class="xlens-top">' + "".join(items) + "</ol>"


def neuron_card(
    scores: ExpertScores,
    unit: int,
    *,
    language: str | None = None,
    responses: Responses | None = None,
    texts: Sequence[str] | None = None,
    model: LensModel | None = None,
    top: int = 5,
    pooling: str | None = None,
    max_length: int | None = 128,
) -> NeuronCard:
    """The card of flat unit ``unit``.

    Args:
        language: whose positives the histogram shows (default: the language this unit has the best AP for).
        responses: pooled responses the scores were computed from (histograms and top sentences need them).
        texts: the sentences of ``responses``, in its row order (top sentences need them).
        model: runs the few top sentences again to get per-token activations.
        pooling: which pooled response to show (default: the one the scores were computed with).
    """
    n_units = scores.ap.shape[1]
    if not 0 <= int(unit) < n_units:
        raise NeuronCardError(f"unit {unit} out of range: the scores have {n_units} units (0..{n_units - 1})")
    unit = int(unit)
    li = scores.lang_index(language) if language is not None else int(scores.ap[:, unit].argmax())
    lang = scores.languages[li]
    pooling = pooling or str(scores.meta.get("scored_pooling", "mean"))
    card = _scores_card(scores, unit, lang, pooling)
    if responses is None:
        return card
    _check_responses(scores, responses)
    assert responses.lang_ids is not None
    values = responses[pooling][:, unit].float()
    is_pos = responses.lang_ids == responses.languages.index(lang)
    card.positives, card.negatives = values[is_pos].numpy(), values[~is_pos].numpy()
    if texts is None:
        return card
    if len(texts) != responses.n_sentences:
        raise NeuronCardError(f"{len(texts)} texts for {responses.n_sentences} responses: pass the responses' texts")
    card.top = _top_sentences(scores, unit, responses, values, texts, model, top, max_length)
    return card


def _scores_card(scores: ExpertScores, unit: int, language: str, pooling: str) -> NeuronCard:
    """The card of ``unit`` with its scores only (no responses, no sentences)."""
    hook, position = scores.units.locate(unit)
    return NeuronCard(
        unit=unit,
        label=scores.units.labels([unit])[0],
        hook=hook,
        position=position,
        language=language,
        languages=list(scores.languages),
        ap=scores.ap[:, unit].numpy().astype(float),
        auroc=scores.auroc[:, unit].numpy().astype(float),
        pooling=pooling,
    )


def _top_sentences(
    scores: ExpertScores,
    unit: int,
    responses: Responses,
    values: Tensor,
    texts: Sequence[str],
    model: LensModel | None,
    top: int,
    max_length: int | None,
) -> list[ActivatedText]:
    """The ``top`` sentences with the highest response ``values``, each with its language and response, and with
    per-token activations when ``model`` is given."""
    assert responses.lang_ids is not None
    order = torch.argsort(values, descending=True, stable=True)[:top].tolist()
    chosen = [str(texts[int(i)]) for i in order]
    if model is not None:
        items = unit_token_activations(model, chosen, scores.units, unit, max_length=max_length)
    else:
        items = [ActivatedText(text=t, tokens=[], values=np.zeros(0)) for t in chosen]
    for item, i in zip(items, order, strict=True):
        item.language = responses.languages[int(responses.lang_ids[i])]
        item.pooled = float(values[i])
    return items


def _check_responses(scores: ExpertScores, responses: Responses) -> None:
    if responses.units != scores.units:
        raise NeuronCardError("the responses were collected on other units than the scores: use the run's responses")
    if responses.lang_ids is None or list(responses.languages) != list(scores.languages):
        raise NeuronCardError(
            f"the responses' languages {responses.languages} differ from the scores' {scores.languages}"
        )
