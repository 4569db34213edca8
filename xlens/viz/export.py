"""Write figures: HTML always (plotly.js inline, so the file opens offline), PNG/SVG/PDF through kaleido.

kaleido 1.x drives a Chrome or Chromium it finds on PATH (``chromium``, ``google-chrome``, ...) or at
``$BROWSER_PATH``; without one, image export raises :class:`FigureExportError` saying what to install.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import plotly.graph_objects as go
import plotly.io as pio

from xlens.errors import FigureExportError, InputError

IMAGE_FORMATS = ("png", "svg", "pdf", "jpeg", "webp")
PlotlyJs = Literal["inline", "directory", "cdn"]
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

# Hovering a point whose customdata is a sentence id rings that sentence in every language and panel and joins
# the translations with a line (the empty "xlens-link" traces of xlens.viz.space.embedding_space). Coordinates are
# read from _fullData: gd.data may hold them base64-encoded, _fullData always decoded.
LINK_TRANSLATIONS_JS = """
(function () {
  var gd = document.getElementById('{plot_id}');
  if (!gd || !gd.on) { return; }
  function links() {
    return gd._fullData.filter(function (t) { return t.meta === 'xlens-link'; });
  }
  if (!links().length) { return; }
  function idOf(c) { return Array.isArray(c) ? c[0] : c; }
  gd.on('plotly_hover', function (ev) {
    var id = idOf(ev.points[0].customdata);
    if (id === undefined || id === null) { return; }
    var targets = links(), xs = [], ys = [];
    targets.forEach(function (link) {
      var x = [], y = [];
      gd._fullData.forEach(function (t) {
        if (t.meta === 'xlens-link' || !t.customdata || t.xaxis !== link.xaxis) { return; }
        for (var j = 0; j < t.customdata.length; j++) {
          if (idOf(t.customdata[j]) === id) { x.push(t.x[j]); y.push(t.y[j]); }
        }
      });
      xs.push(x); ys.push(y);
    });
    Plotly.restyle(gd, {x: xs, y: ys}, targets.map(function (t) { return t.index; }));
  });
  gd.on('plotly_unhover', function () {
    var targets = links();
    var empty = targets.map(function () { return []; });
    Plotly.restyle(gd, {x: empty, y: empty}, targets.map(function (t) { return t.index; }));
  });
})();
"""


def find_browser() -> str | None:
    """Path of the Chrome/Chromium that kaleido (and the report checks) use: ``$BROWSER_PATH``, one on PATH, or
    one kaleido downloaded (``kaleido_get_chrome``)."""
    if env := os.environ.get("BROWSER_PATH"):
        return env if Path(env).is_file() else None
    try:
        from choreographer.browsers.chromium import Chromium

        # kaleido's own search: PATH, the usual install folders, and its downloaded Chrome for Testing.
        return Chromium.find_browser(skip_local=False)
    except ImportError:
        pass
    for name in BROWSER_NAMES:
        if path := shutil.which(name):
            return path
    return None


def image_export_available() -> bool:
    """Whether PNG/SVG export can work here: kaleido >= 1 importable and a Chrome/Chromium found."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return find_browser() is not None


def figure_div(fig: go.Figure, div_id: str | None = None) -> str:
    """A figure as an HTML ``<div>`` without plotly.js (the page includes it once), translation links wired."""
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        post_script=LINK_TRANSLATIONS_JS,
        config={"responsive": True, "displaylogo": False},
        auto_play=False,  # frames are layers to pick with the slider, not an animation to play on load
    )


# px before scaling, for figures that leave their size to the page
IMAGE_WIDTH = 1100
IMAGE_HEIGHT = 550
CSS_DPI = 96  # plotly's px are CSS px: 96 to the inch, and kaleido's PDF pages are 72 pt to 96 px
# Paper sizes (width, height) in inches: ACL's column (7.7 cm) and text width (16 cm).
PAPER_SIZES: dict[str, tuple[float, float]] = {"single": (3.03, 2.3), "double": (6.3, 2.8)}
PaperSize = Literal["single", "double"]


def paper_figure(fig: go.Figure, size: PaperSize, height: float | None = None) -> go.Figure:
    """A copy of ``fig`` laid out for a paper column (``single``) or the text width (``double``): the size in
    inches, 8-9 pt text, tight margins, no interactive controls. ``height`` in inches overrides the default."""
    if size not in PAPER_SIZES:
        raise InputError(f"unknown paper size {size!r}; use one of {', '.join(PAPER_SIZES)}")
    width_in, default_height = PAPER_SIZES[size]
    out = go.Figure(data=fig.data, layout=fig.layout)
    out.update_layout(
        width=round(width_in * CSS_DPI),
        height=round((height or default_height) * CSS_DPI),
        font={"size": 11},  # 11 px = 8.25 pt at 96 px to the inch
        title={"font": {"size": 12}},
        margin={"l": 45, "r": 10, "t": 30, "b": 35},
        sliders=[],
        updatemenus=[],
    )
    return out


def save_figure(
    fig: go.Figure,
    path: str | os.PathLike[str],
    *,
    scale: float = 2.0,
    plotlyjs: PlotlyJs = "inline",
    size: PaperSize | None = None,
    dpi: int = 300,
) -> Path:
    """Write ``fig`` to ``path``; the suffix picks the format: ``.html`` or an image format (``.png``, ``.svg``,
    ``.pdf``...).

    ``plotlyjs`` (HTML only): ``inline`` makes one self-contained file; ``directory`` writes ``plotly.min.js``
    once beside the files and refers to it (many figures, one copy, still offline); ``cdn`` needs the network.
    ``size``: ``single`` (one column) or ``double`` (text width) lays the figure out for a paper
    (:func:`paper_figure`): a PDF or SVG page of that size in inches, a PNG with ``dpi`` pixels to the inch
    (``scale`` is ignored).
    """
    if size is not None:
        raster = Path(path).suffix.lower() in (".png", ".jpeg", ".webp")
        # kaleido scales vector pages too: only a raster gets the extra pixels.
        return save_figures(
            [paper_figure(fig, size)], [path], scale=dpi / CSS_DPI if raster else 1.0, plotlyjs=plotlyjs
        )[0]
    return save_figures([fig], [path], scale=scale, plotlyjs=plotlyjs)[0]


def save_figures(
    figs: Sequence[go.Figure],
    paths: Sequence[str | os.PathLike[str]],
    *,
    scale: float = 2.0,
    plotlyjs: PlotlyJs = "inline",
) -> list[Path]:
    """Write each figure to its path (see :func:`save_figure`); images share one browser session, which is
    much faster than one kaleido call per figure."""
    if plotlyjs not in ("inline", "directory", "cdn"):
        raise InputError(f"plotlyjs must be 'inline', 'directory' or 'cdn', got {plotlyjs!r}")
    if len(figs) != len(paths):
        raise InputError(f"{len(figs)} figures for {len(paths)} paths")
    targets = [Path(p) for p in paths]
    formats = [check_figure_path(t) for t in targets]
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
    images = [(fig, t, f) for fig, t, f in zip(figs, targets, formats, strict=True) if f != "html"]
    if images:
        # A still image shows the first frame; the other frames would only slow kaleido down.
        stills = [go.Figure(data=fig.data, layout=fig.layout) for fig, _, _ in images]
        layouts: list[Any] = [fig.layout for fig in stills]  # plotly's dynamic attributes are untyped
        try:
            pio.write_images(
                stills,
                [t for _, t, _ in images],
                format=[f for _, _, f in images],
                scale=scale,
                width=[layout.width or IMAGE_WIDTH for layout in layouts],
                height=[layout.height or IMAGE_HEIGHT for layout in layouts],
            )
        except Exception as err:
            raise FigureExportError(f"kaleido could not write the images: {type(err).__name__}: {err}") from err
    for fig, target, fmt in zip(figs, targets, formats, strict=True):
        if fmt == "html":
            fig.write_html(
                target,
                include_plotlyjs=True if plotlyjs == "inline" else plotlyjs,
                full_html=True,
                post_script=LINK_TRANSLATIONS_JS,
                config={"responsive": True, "displaylogo": False},
                auto_play=False,
            )
    return targets


def check_figure_path(path: str | os.PathLike[str]) -> str:
    """The format a figure path asks for (its suffix), checked: ``html``, or an image format that kaleido and a
    browser can write here. Call it before expensive work whose figure would fail at the end."""
    target = Path(path)
    fmt = target.suffix.lower().lstrip(".")
    if fmt != "html" and fmt not in IMAGE_FORMATS:
        raise InputError(f"cannot write {target.name}: use .html or one of .{', .'.join(IMAGE_FORMATS)}")
    if fmt != "html":
        _check_image_export(fmt)
    return fmt


def _check_image_export(fmt: str) -> None:
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise FigureExportError(
            f"writing {fmt.upper()} needs kaleido>=1: pip install -e '.[figures]' (or write .html instead)"
        ) from None
    if find_browser() is None:
        raise FigureExportError(
            f"writing {fmt.upper()} needs Chrome or Chromium for kaleido: install one (Debian/Ubuntu: "
            "apt-get install chromium; or run `kaleido_get_chrome`), or set BROWSER_PATH to its executable"
        )
