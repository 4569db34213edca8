"""One self-contained HTML page per run: configuration and provenance, the results tables, and every figure.

The page inlines plotly.js once (about 4.5 MB) and each figure as a ``<div>``, so it opens offline, from an
e-mail attachment or a CI artifact, with nothing to fetch.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from xlens._io import atomic_write, own_path
from xlens._schema import flatten
from xlens.errors import InputError, ResultsError
from xlens.evaluation.registry import task_class
from xlens.runs.folder import RunFolder
from xlens.runs.results import RunResults, headline_lines, pair_change_lines
from xlens.viz import alignment as va
from xlens.viz import experts as vx
from xlens.viz.export import PlotlyJs, figure_div, save_figures
from xlens.viz.neuron import NeuronCard, neuron_card
from xlens.viz.space import embedding_space

MAX_SPACE_SENTENCES = 200  # per language in the embedding-space figure: enough to see clusters, small pages

_CSS = """
body { font-family: Inter, 'Helvetica Neue', Arial, sans-serif; margin: 0 auto; max-width: 1280px; padding: 0 24px;
       color: #222; line-height: 1.45; }
header { border-bottom: 1px solid #ddd; margin-bottom: 8px; }
nav a { margin-right: 14px; }
h2 { margin-top: 36px; border-bottom: 1px solid #eee; }
table.xlens { border-collapse: collapse; font-size: 12px; margin: 8px 0 16px; }
table.xlens th, table.xlens td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
table.xlens th { background: #f5f5f5; }
details { margin: 8px 0; } summary { cursor: pointer; font-weight: 600; }
pre { background: #f7f7f7; padding: 8px; overflow-x: auto; font-size: 12px; }
.note { color: #666; font-size: 13px; }
.card-text li { margin: 4px 0; }
.table-wrap { overflow-x: auto; }
"""


def run_figures(results: RunResults, *, cards: bool = True) -> tuple[dict[str, go.Figure], list[NeuronCard], list[str]]:
    """Every figure of a run by name, the neuron cards (best unit of each language) and notes on what is missing."""
    figures: dict[str, go.Figure] = {}
    notes: list[str] = []
    best = results.best_condition()
    figures["improvement"] = va.improvement_bars(results)
    figures["retrieval"] = va.retrieval_curves(results, best)
    figures["cka"] = va.similarity_heatmaps(results, "cka", best)
    figures["cosine"] = va.similarity_heatmaps(results, "cosine_parallel", best)
    if not results.differences.empty:
        figures["conditions"] = va.condition_gains(results)
    space = _space_figure(results, best, notes)
    if space is not None:
        figures["space"] = space
    neuron_cards: list[NeuronCard] = []
    scores = results.scores
    if scores is None:
        notes.append("experts: no expert scores in the run folder")
        return figures, neuron_cards, notes
    figures["expert_counts"] = vx.expert_counts(scores)
    figures["ap_distribution"] = vx.ap_distribution(scores)
    k = max(results.config.intervene.k_values, default=100)
    figures["expert_overlap"] = vx.expert_overlap(scores, min(k, scores.ap.shape[1]))
    if not cards:
        return figures, neuron_cards, notes
    model = None
    try:
        model = results.model
    except Exception as err:  # the report is still useful without per-token activations
        notes.append(f"neuron cards: model {results.config.model!r} could not be loaded ({err}); no token view")
    texts = results.find_texts
    for li, lang in enumerate(scores.languages):
        unit = int(scores.ap[li].argmax())
        card = neuron_card(
            scores,
            unit,
            language=lang,
            responses=results.responses,
            texts=texts,
            model=model,
            max_length=results.config.runtime.max_length,
        )
        neuron_cards.append(card)
        figures[f"neuron_{lang}"] = card.figure()
    return figures, neuron_cards, notes


def _space_figure(results: RunResults, best: Any, notes: list[str]) -> go.Figure | None:
    """The embedding space before and after the best condition (None, with a note, without cached embeddings)."""
    before = results.embeddings(None)
    if before is None:
        notes.append("embedding space: no cached baseline embeddings in the run's cache folder")
        return None
    after = results.embeddings(best) if best is not None else None
    corpus = results.eval_corpus
    langs = results.languages
    per_lang = before.shape[0] // len(langs)
    keep = min(per_lang, MAX_SPACE_SENTENCES)
    rows = [li * per_lang + i for li in range(len(langs)) for i in range(keep)]
    texts = [s for lang in langs for s in corpus[lang][:keep]] if corpus is not None else None
    if corpus is None:
        notes.append("embedding space: the evaluation corpus is not readable here, so hover shows no text")
    return embedding_space(
        before[rows],
        None if after is None else after[rows],
        languages=langs,
        layers=results.layers,
        ids=corpus.ids[:keep] if corpus is not None else None,
        texts=texts,
        after_label=f"after {best.label}" if best is not None else "after",
    )


def _table(frame: pd.DataFrame, index: bool = False) -> str:
    table = frame.to_html(index=index, classes="xlens", border=0, float_format=lambda x: f"{x:.3f}", na_rep="–")
    return f'<div class="table-wrap">{table}</div>'  # wide tables scroll instead of overflowing the page


def _pivot(table: pd.DataFrame, pair: list[str], value: str) -> pd.DataFrame:
    rows: Any = table[table["mode"] == "both"] if "mode" in table else table
    return rows.pivot_table(index=["condition", *pair], columns="layer", values=value, sort=False)


def _headline_html(results: RunResults) -> str:
    h = results.headline()
    parts = [f"<p><b>{html.escape(line)}</b></p>" for line in headline_lines(h)] if h["conditions"] else []
    parts += [
        f"<p>Best layer (highest baseline mean top-1): <b>{h['best_layer']}</b>; last layer: "
        f"<b>{h['last_layer']}</b>.</p>",
        "<h3>Baseline mean top-1 by layer</h3>",
        _table(pd.DataFrame([h["baseline_mean_top1_by_layer"]])),
        "<h3>Baseline top-1 per pair</h3>",
        _table(pd.DataFrame(h["baseline_pairs"])),
    ]
    if h["conditions"]:
        shown = pd.DataFrame(h["conditions"]).drop(columns=["intervention", "expert_lang", "k", "control", "verdict"],
                                                   errors="ignore")  # fmt: skip
        parts += ["<h3>After intervention (means over pairs)</h3>", _table(shown)]
    details = pair_change_lines(h)
    if details:
        parts += ["<h3>Details: the largest single-pair changes</h3>"]
        parts += [f"<p>{html.escape(line)}</p>" for line in details]
    return "\n".join(parts)


def _conditions_html(results: RunResults, figures: dict[str, go.Figure]) -> str:
    """The grid's conditions against the baseline and their controls, and the centroid-retrieval correlation."""
    if results.differences.empty:
        return '<p class="note">No bootstrap comparisons in these results.</p>'
    comparison = results.comparison()
    shown = comparison.drop(columns=["intervention", "expert_lang", "k"])
    parts = [
        _figure(figures, "conditions", "Filled: the intervention; hollow: its random-unit control (mean over seeds)."),
        "<h3>Mean top-1 over pairs, changes with their bootstrap intervals</h3>",
        _table(shown),
    ]
    if not results.correlation.empty:
        parts += [
            "<h3>Correlation of centroid-distance change with top-1 change (per layer, over conditions x pairs)</h3>",
            _table(results.correlation),
        ]
    return "\n".join(parts)


def _tasks_html(results: RunResults) -> str:
    """Each task beyond retrieval: every intervention against the baseline and its controls, per metric."""
    parts = []
    for task in results.config.evaluate.tasks:
        if task == "retrieval":
            continue
        for metric in task_class(task).metrics:
            table = results.comparison(metric, task=task)
            if not table.empty:
                parts += [
                    f"<h3>{html.escape(task)}: {html.escape(metric)}</h3>",
                    _table(table.drop(columns=["intervention", "expert_lang", "k"])),
                ]
    return "\n".join(parts) or '<p class="note">This study measured retrieval only.</p>'


def _full_tables_html(results: RunResults) -> str:
    parts = []
    for metric in va.RETRIEVAL_METRICS:
        parts.append(
            f"<details><summary>retrieval {metric} per layer</summary>"
            + _table(_pivot(results.retrieval, ["src", "tgt"], metric), index=True)
            + "</details>"
        )
    for metric in va.ALIGNMENT_METRICS:
        parts.append(
            f"<details><summary>alignment {metric} per layer</summary>"
            + _table(_pivot(results.alignment, ["lang_a", "lang_b"], metric), index=True)
            + "</details>"
        )
    return "\n".join(parts)


def _config_html(results: RunResults) -> str:
    flat = flatten(results.config.to_dict())
    config = pd.DataFrame([{"key": k, "value": v if isinstance(v, str) else json.dumps(v)} for k, v in flat.items()])
    prov = json.dumps(results.provenance, indent=1, default=str)
    return (
        _table(config)
        + "<details><summary>provenance (model, corpora and their sha256, versions, machine, timings)</summary>"
        + f"<pre>{html.escape(prov)}</pre></details>"
    )


def _figure(figures: dict[str, go.Figure], name: str, note: str = "") -> str:
    if name not in figures:
        return ""
    extra = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f'<div class="figure" id="fig-{name}">{figure_div(figures[name], div_id=f"plot-{name}")}</div>{extra}'


def build_report(results: RunResults, *, cards: bool = True) -> str:
    """The report page of ``results`` as one HTML string."""
    figures, neuron_cards, notes = run_figures(results, cards=cards)
    cfg = results.config
    title = (
        f"xlens report: {cfg.model} · {', '.join(results.languages)} · "
        f"{', '.join(dict.fromkeys(spec.name for spec in cfg.intervene.specs))} k={cfg.intervene.k_values}"
    )
    cards_html = "".join(
        f'<div class="card">{_figure(figures, f"neuron_{c.language}")}'
        f'<details class="card-text"><summary>top sentences of {html.escape(c.label)} as text</summary>'
        f"{c.html()}</details></div>"
        for c in neuron_cards
    )
    sections = [
        ("headline", "Headline", _headline_html(results)),
        (
            "retrieval",
            "Retrieval",
            _figure(figures, "improvement") + _figure(figures, "retrieval"),
        ),
        ("alignment", "Alignment", _figure(figures, "cka") + _figure(figures, "cosine")),
        ("conditions", "Conditions", _conditions_html(results, figures)),
        ("tasks", "Other tasks", _tasks_html(results)),
        (
            "space",
            "Embedding space",
            _figure(
                figures,
                "space",
                "Hover a sentence to ring its translations in every language and panel; the slider picks the layer.",
            ),
        ),
        (
            "experts",
            "Experts",
            _figure(figures, "expert_counts")
            + _figure(figures, "ap_distribution")
            + _figure(figures, "expert_overlap")
            + ("<h3>Best unit of each language</h3>" + cards_html if cards_html else ""),
        ),
        ("tables", "Full tables", _full_tables_html(results)),
        ("config", "Configuration and provenance", _config_html(results)),
    ]
    notes_html = "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join(f'<section id="{sid}"><h2>{name}</h2>{content}</section>' for sid, name, content in sections)
    nav = " ".join(f'<a href="#{sid}">{name}</a>' for sid, name, _ in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{_CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head>
<body><header><h1>{html.escape(title)}</h1>
<p class="note">Run folder {html.escape(str(results.folder))}; report written {stamp}.</p>
<nav>{nav}</nav>{notes_html}</header>
{body}
</body></html>
"""


def write_report(
    results: RunResults | str | os.PathLike[str], *, out: str | os.PathLike[str] | None = None, cards: bool = True
) -> Path:
    """Write the report of a run (its results, or its folder) to ``out`` (default ``FOLDER/report.html``).

    The neuron cards' per-token activations use the results' model (the run's own when the results came from
    :func:`xlens.run_experiment`, else loaded once); ``cards=False`` leaves the cards out and loads no model.
    """
    if not isinstance(results, RunResults):
        results = RunResults.load(results)
    if "retrieval" not in results.config.evaluate.tasks:
        raise ResultsError(
            "the report's figures are the retrieval task's: this study has none (results.study_summary() and "
            "results.comparison(task=...) give its numbers)"
        )
    if out is None and results.folder is None:
        raise InputError("these results have no run folder: pass out= for the report")
    folder = Path(str(results.folder))
    target = Path(out) if out is not None else folder / "report.html"
    inside = results.folder is not None and target.parent.absolute() == folder.absolute()
    if inside:
        own_path(folder, target.name)  # a link planted at the report's name is refused, not written through
    page = build_report(results, cards=cards)
    # Writing into the run folder holds its lock: no other run may be replacing the folder meanwhile.
    with RunFolder.writing(folder) if inside else contextlib.nullcontext():
        atomic_write(target, lambda p: p.write_text(page, encoding="utf-8"))
    return target


def write_figures(
    results: RunResults | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    formats: tuple[str, ...] = ("html", "png"),
    *,
    cards: bool = True,
    plotlyjs: PlotlyJs = "directory",
) -> list[Path]:
    """Every figure of a run as ``out_dir/<name>.<format>`` (the README's assets); returns the files written.

    HTML figures share one ``plotly.min.js`` beside them by default (see :func:`xlens.viz.export.save_figure`).
    """
    if not isinstance(results, RunResults):
        results = RunResults.load(results)
    figures, _, _ = run_figures(results, cards=cards)
    jobs = [(fig, Path(out_dir) / f"{name}.{fmt}") for name, fig in figures.items() for fmt in formats]
    return save_figures([fig for fig, _ in jobs], [path for _, path in jobs], plotlyjs=plotlyjs)
