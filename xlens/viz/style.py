"""One look for every xlens figure: a plotly template and a fixed, colour-blind-safe colour per language.

A language keeps its colour in every figure and every run, whatever other languages are shown: the ten languages
of the builtin corpus and the paper's models have hand-picked colours, any other FLORES code gets one from a larger
palette chosen by a stable hash of the code.
"""

from __future__ import annotations

import hashlib
import html
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from xlens.data.languages import UnknownLanguageError, flores_code

TEMPLATE = "xlens"
SEQUENTIAL = "Viridis"
DIVERGING = "RdBu_r"

# Colour-blind-safe: Okabe & Ito's palette for the paper's languages, then three of Paul Tol's "muted" colours chosen
# so that the ten builtin languages stay at least 15 CIE76 units apart under simulated protanopia, deuteranopia and
# tritanopia (tests/test_viz.py checks).
_FIXED = {
    "eng_Latn": "#0072B2",
    "spa_Latn": "#E69F00",
    "deu_Latn": "#009E73",
    "fra_Latn": "#D55E00",
    "jpn_Jpan": "#CC79A7",
    "zho_Hans": "#56B4E9",
    "arb_Arab": "#000000",
    "hin_Deva": "#882255",
    "kor_Hang": "#DDCC77",
    "rus_Cyrl": "#332288",
}
# Paul Tol's "muted" and "light" schemes, for every other language (past ten colours nothing stays distinct to all).
_FALLBACK = (
    "#88CCEE", "#117733", "#CC6677", "#AA4499", "#44AA99", "#999933", "#77AADD", "#EE8866",
    "#EEDD88", "#FFAABB", "#99DDFF", "#44BB99", "#BBCC33", "#AAAA00",
)  # fmt: skip


def _flores(code: str) -> str:
    try:
        return flores_code(code)
    except UnknownLanguageError:
        return code


def language_color(code: str) -> str:
    """The colour of a language (any accepted code: ``en``, ``eng``, ``eng_Latn``); unknown codes get one too."""
    flores = _flores(code)
    if flores in _FIXED:
        return _FIXED[flores]
    digest = hashlib.sha256(flores.encode()).digest()
    return _FALLBACK[int.from_bytes(digest[:4], "little") % len(_FALLBACK)]


def language_colors(codes: list[str]) -> dict[str, str]:
    return {code: language_color(code) for code in codes}


def plotly_text(text: str) -> str:
    """``text`` escaped for plotly's labels, which read a few HTML tags (``<b>``, ``<s>``...) and entities but
    show ``&quot;`` literally: only ``&``, ``<`` and ``>`` are escaped."""
    return html.escape(text, quote=False)


def nan_to_none(values: Any) -> list[Any]:
    """A numeric array as nested lists with None for NaN: plotly draws None as a gap, and unlike NaN it is valid
    JSON, which FigureWidget's messages to the browser must be."""
    array = np.asarray(values, dtype=float).astype(object)
    array[np.isnan(array.astype(float))] = None
    return array.tolist()


def layer_slider(layers: list[int], start: int) -> dict[str, Any]:
    """A slider over ``layers`` whose steps show the figure's frames named by layer number."""
    return {
        "active": start,
        "currentvalue": {"prefix": "layer "},
        "pad": {"t": 40},
        "steps": [
            {
                "label": str(layer),
                "method": "animate",
                "args": [[str(layer)], {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}],
            }
            for layer in layers
        ],
    }


def _register() -> None:
    base = pio.templates["plotly_white"]
    template = go.layout.Template(base)
    template.update(
        layout=dict(
            font={"family": "Inter, Helvetica Neue, Arial, sans-serif", "size": 13, "color": "#222"},
            title={"font": {"size": 16}, "x": 0.0, "xanchor": "left"},
            colorway=list(_FIXED.values()),
            margin={"l": 60, "r": 30, "t": 60, "b": 50},
            legend={"bgcolor": "rgba(255,255,255,0.8)"},
            hoverlabel={"namelength": -1},
        )
    )
    pio.templates[TEMPLATE] = template


_register()
