"""An interactive neuron inspector for Jupyter (JupyterLab and Notebook 7): ipywidgets + plotly.

Pick a language, a block and a unit from the dropdowns, click a cell of the best-AP heatmap (block x language),
type a unit id (``L12.1834``), or step through the language's experts with the previous/next buttons, and the
unit's card appears: AP/AUROC per language, its pooled responses on the language vs the rest, its top-activating
sentences with per-token activations, and the per-block counts of the language's top experts with the unit's block
marked. Type any text to see the unit's activation on each token.

The state and the callbacks live in :class:`NeuronInspector` itself and work without a browser; the widgets are
built only when the inspector is displayed (:meth:`NeuronInspector.widget`).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from torch import Tensor

from xlens.activations import Responses
from xlens.errors import InputError, InspectorError
from xlens.experts.sets import ExpertScores
from xlens.models.lens import LensModel
from xlens.runs.results import RunResults
from xlens.viz.experts import best_ap_heatmap, block_best_ap, expert_counts_bar
from xlens.viz.neuron import ActivatedText, NeuronCard, neuron_card, token_html, unit_token_activations


@dataclass(frozen=True)
class Selection:
    language: str
    block: int
    unit: int


class NeuronInspector:
    """Inspect the units of ``scores``; ``responses``/``texts``/``model`` fill the card in (see
    :func:`xlens.viz.neuron.neuron_card`). Display it in a notebook cell, or call :meth:`widget`."""

    def __init__(
        self,
        scores: ExpertScores,
        *,
        responses: Responses | None = None,
        texts: Sequence[str] | None = None,
        model: LensModel | None = None,
        language: str | None = None,
        top: int = 5,
        units_listed: int = 50,
        counted: int = 1000,
        max_length: int | None = 128,
    ) -> None:
        self.scores = scores
        self.responses = responses
        self.texts = texts
        self.model = model
        self.top = top
        self.units_listed = units_listed
        self.counted = counted  # the per-block counts figure shows the language's top-`counted` experts
        self.max_length = max_length
        self._best, self._where, self.blocks = block_best_ap(scores)
        self._unit_blocks = scores.units.blocks()
        self._rankings: dict[int, Tensor] = {}
        self._widgets: dict[str, Any] | None = None
        self._syncing = False
        lang = scores.languages[scores.lang_index(language) if language else 0]
        li = scores.languages.index(lang)
        block = self.blocks[int(self._best[li].argmax())]
        self.selection = Selection(lang, block, self.best_unit(lang, block))
        self.card: NeuronCard = self._make_card()

    @classmethod
    def from_run(cls, results: Any, *, load_model: bool = True, **options: Any) -> NeuronInspector:
        """An inspector over a finished run's experts (its RunResults or folder); with ``load_model`` the run's
        model fills in per-token activations. ``options``: ``top``, ``units_listed``, ``counted``."""
        run = results if isinstance(results, RunResults) else RunResults.load(results)
        if run.scores is None:
            raise InspectorError(f"{run.folder} holds no expert scores: nothing to inspect")
        return cls(
            run.scores,
            responses=run.responses,
            texts=run.find_texts,
            model=run.model if load_model else None,
            max_length=run.config.runtime.max_length,
            **options,
        )

    # --- state -------------------------------------------------------------------------------------------

    def _block_slot(self, block: int) -> int:
        if block not in self.blocks:
            raise InspectorError(f"block {block} has no scored units; blocks: {self.blocks}")
        return self.blocks.index(block)

    def best_unit(self, language: str, block: int) -> int:
        """The unit of ``block`` with the best AP for ``language``."""
        return int(self._where[self.scores.lang_index(language), self._block_slot(block)])

    def unit_options(self, language: str, block: int, include: int | None = None) -> list[tuple[str, int]]:
        """``(label, unit)`` of the ``units_listed`` best units of ``block`` for ``language``, best first, plus
        unit ``include`` (the current one) at the end if it is not among them."""
        members = (self._unit_blocks == block).nonzero().squeeze(1)
        li = self.scores.lang_index(language)
        order = self.scores.ap[li, members].argsort(descending=True, stable=True)[: self.units_listed]
        units = members[order].tolist()
        if include is not None and include not in units:
            units.append(int(include))
        labels = self.scores.units.labels(units)
        return [(f"{label} (AP {self.scores.ap[li, u]:.3f})", u) for label, u in zip(labels, units, strict=True)]

    def ranking(self, language: str) -> Tensor:
        """Every unit, best AP for ``language`` first (ties by unit index): the order previous/next follow."""
        li = self.scores.lang_index(language)
        if li not in self._rankings:  # the scores never change: sort each language's units once
            self._rankings[li] = self.scores.ap[li].argsort(descending=True, stable=True)
        return self._rankings[li]

    def rank(self) -> int:
        """The selected unit's rank (1 = best) among all units by AP for the selected language."""
        order = self.ranking(self.selection.language)
        return int((order == self.selection.unit).nonzero()[0, 0]) + 1

    def step(self, delta: int) -> NeuronCard:
        """Select the expert ``delta`` ranks below (+) or above (-) the current unit for the language."""
        order = self.ranking(self.selection.language)
        target = min(max(self.rank() - 1 + int(delta), 0), len(order) - 1)
        return self.select(unit=int(order[target]))

    def search(self, label: str) -> NeuronCard:
        """Select the unit named ``label``: ``L12.1834``, ``L12.mlp#1834`` or a flat index."""
        try:
            unit = self.scores.units.parse(label)
        except InputError as err:
            raise InspectorError(str(err)) from None
        return self.select(unit=unit)

    def counts_figure(self) -> go.Figure:
        """The language's top experts per block, the selected unit's block marked and its rank in the title."""
        sel = self.selection
        fig = expert_counts_bar(self.scores, sel.language, self.counted, block=sel.block)
        layout: Any = fig.layout  # plotly's layout attributes are untyped
        fig.update_layout(title=f"{layout.title.text}; {self.card.label} ranks #{self.rank()}")
        return fig

    def select(self, language: str | None = None, block: int | None = None, unit: int | None = None) -> NeuronCard:
        """Change the selection and return the new card. A new language or block without a unit selects that
        block's best unit for the language; a unit alone moves to its block."""
        lang = self.selection.language if language is None else self.scores.languages[self.scores.lang_index(language)]
        if unit is not None:
            if not 0 <= int(unit) < self.scores.ap.shape[1]:
                raise InspectorError(f"unit {unit} out of range (0..{self.scores.ap.shape[1] - 1})")
            unit_block = int(self._unit_blocks[int(unit)])
            if block is not None and int(block) != unit_block:
                raise InspectorError(f"unit {unit} is in block {unit_block}, not {block}")
            new = Selection(lang, unit_block, int(unit))
        else:
            target_block = self.selection.block if block is None else int(block)
            new = Selection(lang, target_block, self.best_unit(lang, target_block))
        if new != self.selection:
            self.selection = new
            self.card = self._make_card()
            self._sync_widgets()
        return self.card

    def on_heatmap_click(self, trace: Any, points: Any, selector: Any = None) -> None:
        """FigureWidget click callback of the heatmap: x is the language, y the block of the clicked cell."""
        if not getattr(points, "point_inds", None):
            return
        self.select(language=str(points.xs[0]), block=int(points.ys[0]))

    def _make_card(self) -> NeuronCard:
        return neuron_card(
            self.scores,
            self.selection.unit,
            language=self.selection.language,
            responses=self.responses,
            texts=self.texts,
            model=self.model,
            top=self.top,
            max_length=self.max_length,
        )

    def activations(self, text: str) -> ActivatedText:
        """The selected unit's activation on every token of ``text``."""
        if self.model is None:
            raise InspectorError("per-token activations need the model: pass model= to the inspector")
        if not text.strip():
            raise InspectorError("type some text first")
        return unit_token_activations(self.model, [text], self.scores.units, self.selection.unit)[0]

    # --- widgets -----------------------------------------------------------------------------------------

    def widget(self) -> Any:
        """The inspector as one ipywidgets box (built once)."""
        if self._widgets is None:
            self._widgets = self._build()
        return self._widgets["box"]

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget())

    def _build(self) -> dict[str, Any]:
        """Every widget of the inspector, wired to its callbacks, under ``"box"`` the one that lays them out."""
        import ipywidgets as w

        ws = {**self._control_widgets(), **self._card_widgets()}
        self._wire(ws)
        controls = w.VBox(
            [
                ws["language"],
                ws["block"],
                ws["unit"],
                w.HBox([ws["search"], ws["go"]]),
                w.HBox([ws["previous"], ws["next"]]),
                ws["status"],
            ]
        )
        box = w.VBox(
            [
                w.HBox([ws["heatmap"], controls]),
                ws["counts"],
                ws["card"],
                ws["card_text"],
                w.HBox([ws["text"], ws["run"]]),
                ws["result"],
            ]
        )
        box.add_class("xlens-inspector")
        return {"box": box, **ws}

    def _control_widgets(self) -> dict[str, Any]:
        """The clickable heatmap and the widgets that pick a unit: dropdowns, unit id search, expert steps."""
        import ipywidgets as w

        heatmap = go.FigureWidget(best_ap_heatmap(self.scores))
        heatmap.update_layout(height=420, width=520)
        cells: Any = heatmap.data[0]  # plotly's trace attributes are untyped
        cells.on_click(self.on_heatmap_click)
        sel = self.selection
        unit_options = self.unit_options(sel.language, sel.block, include=sel.unit)
        return {
            "heatmap": heatmap,
            "language": w.Dropdown(options=list(self.scores.languages), value=sel.language, description="language"),
            "block": w.Dropdown(options=self.blocks, value=sel.block, description="block"),
            "unit": w.Dropdown(options=unit_options, value=sel.unit, description="unit"),
            "search": w.Text(placeholder="L12.1834", description="unit id", continuous_update=False),
            "go": w.Button(description="Go"),
            "previous": w.Button(description="◀ previous expert"),
            "next": w.Button(description="next expert ▶"),
            "status": w.HTML(self._status()),
        }

    def _card_widgets(self) -> dict[str, Any]:
        """The expert counts, the unit's card (figure and text) and the free-text activation box."""
        import ipywidgets as w

        counts = go.FigureWidget(self.counts_figure())
        counts.update_layout(height=260, width=760, margin={"t": 50, "b": 40})
        card = go.FigureWidget(self.card.figure())
        card.update_layout(width=1000)  # narrower, the two top panels' titles run into each other
        card_text = w.HTML(self.card.html())
        text = w.Textarea(placeholder="Type a sentence to see the unit's activation on each token", rows=2)
        text.layout.width = "70%"
        return {
            "counts": counts,
            "card": card,
            "card_text": card_text,
            "text": text,
            "run": w.Button(description="Show activations", disabled=self.model is None),
            "result": w.HTML("" if self.model is not None else "<i>pass model= to see activations on your text</i>"),
        }

    def _wire(self, ws: dict[str, Any]) -> None:
        """Connect the widgets to the inspector's callbacks; a selection change made by a sync triggers none."""

        def guarded(update: Any) -> Any:
            def handler(change: dict[str, Any]) -> None:
                if not self._syncing:
                    update(change["new"])

            return handler

        ws["language"].observe(guarded(lambda v: self.select(language=v)), "value")
        ws["block"].observe(guarded(lambda v: self.select(block=v)), "value")
        ws["unit"].observe(guarded(lambda v: self.select(unit=v)), "value")
        ws["run"].on_click(lambda _: self._show_text())
        ws["search"].observe(lambda change: self._search(change["new"]), "value")
        ws["go"].on_click(lambda _: self._search(ws["search"].value))
        ws["previous"].on_click(lambda _: self.step(-1))
        ws["next"].on_click(lambda _: self.step(+1))

    def _sync_widgets(self) -> None:
        """Show the current selection and card in the widgets (if built) without re-triggering their callbacks."""
        if self._widgets is None:
            return
        ws, sel = self._widgets, self.selection
        self._syncing = True
        try:
            ws["language"].value = sel.language
            ws["block"].value = sel.block
            ws["unit"].options = self.unit_options(sel.language, sel.block, include=sel.unit)
            ws["unit"].value = sel.unit
            for name, fresh in (("card", self.card.figure()), ("counts", self.counts_figure())):
                fig = ws[name]
                with fig.batch_update():
                    fig.data = ()
                    layout = fresh.layout
                    layout.update(width=fig.layout.width)
                    if name == "counts":
                        layout.update(height=fig.layout.height, margin=fig.layout.margin)
                    fig.layout = layout
                    fig.add_traces(list(fresh.data))
            ws["status"].value = self._status()
            ws["card_text"].value = self.card.html()
            ws["result"].value = ""
        finally:
            self._syncing = False

    def _status(self) -> str:
        sel = self.selection
        return f'<span class="xlens-status">{self.card.label}: {sel.language} expert #{self.rank()}</span>'

    def _search(self, label: str) -> None:
        assert self._widgets is not None
        if not label.strip():
            return
        try:
            self.search(label)
        except InspectorError as err:
            self._widgets["status"].value = f'<span class="xlens-status"><i>{html.escape(str(err))}</i></span>'

    def _show_text(self) -> None:
        assert self._widgets is not None
        try:
            item = self.activations(self._widgets["text"].value)
            self._widgets["result"].value = f"<b>{self.card.label}</b>: " + token_html(item.tokens, item.values)
        except InspectorError as err:
            self._widgets["result"].value = f"<i>{err}</i>"
