"""An interactive neuron inspector for Jupyter (JupyterLab and the classic notebook): ipywidgets + plotly.

Pick a language, a layer and a unit from the dropdowns, or click a cell of the best-AP heatmap (layer x language),
and the unit's card appears: AP/AUROC per language, its pooled responses on the language vs the rest, and its
top-activating sentences with per-token activations. Type any text to see the unit's activation on each token.

The state and the callbacks live in :class:`NeuronInspector` itself and work without a browser; the widgets are
built only when the inspector is displayed (:meth:`NeuronInspector.widget`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xlens.activations import Responses
from xlens.experts.sets import ExpertScores
from xlens.models import LensModel
from xlens.viz.experts import best_ap_heatmap, layer_best_ap
from xlens.viz.neuron import ActivatedText, NeuronCard, neuron_card, token_html, unit_token_activations


class InspectorError(ValueError):
    """A selection the inspector cannot show (unknown layer or unit, no model for free text, ...)."""


@dataclass(frozen=True)
class Selection:
    language: str
    layer: int
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
        max_length: int | None = 128,
    ) -> None:
        self.scores = scores
        self.responses = responses
        self.texts = texts
        self.model = model
        self.top = top
        self.units_listed = units_listed
        self.max_length = max_length
        self._best, self._where, self.layers = layer_best_ap(scores)
        self._unit_layers = scores.units.layers()
        self._widgets: dict[str, Any] | None = None
        self._syncing = False
        lang = scores.languages[scores.lang_index(language) if language else 0]
        li = scores.languages.index(lang)
        layer = self.layers[int(self._best[li].argmax())]
        self.selection = Selection(lang, layer, self.best_unit(lang, layer))
        self.card: NeuronCard = self._make_card()

    @classmethod
    def from_run(
        cls, run_dir: str | os.PathLike[str], *, model: Any = None, load_model: bool = True
    ) -> NeuronInspector:
        """An inspector over a finished run's experts; loads the run's model unless ``load_model=False``."""
        from xlens.viz.run import Run

        run = Run.load(run_dir, model=model)
        if run.scores is None:
            raise InspectorError(f"{run.path} holds no expert scores (experts/scores): nothing to inspect")
        return cls(
            run.scores,
            responses=run.responses,
            texts=run.find_texts,
            model=run.model if load_model else None,
            max_length=run.config.get("max_length", 128),
        )

    # --- state -------------------------------------------------------------------------------------------

    def _layer_slot(self, layer: int) -> int:
        if layer not in self.layers:
            raise InspectorError(f"layer {layer} has no scored units; layers: {self.layers}")
        return self.layers.index(layer)

    def best_unit(self, language: str, layer: int) -> int:
        """The unit of ``layer`` with the best AP for ``language``."""
        return int(self._where[self.scores.lang_index(language), self._layer_slot(layer)])

    def unit_options(self, language: str, layer: int, include: int | None = None) -> list[tuple[str, int]]:
        """``(label, unit)`` of the ``units_listed`` best units of ``layer`` for ``language``, best first, plus
        unit ``include`` (the current one) at the end if it is not among them."""
        members = (self._unit_layers == layer).nonzero().squeeze(1)
        li = self.scores.lang_index(language)
        order = self.scores.ap[li, members].argsort(descending=True, stable=True)[: self.units_listed]
        units = members[order].tolist()
        if include is not None and include not in units:
            units.append(int(include))
        labels = self.scores.units.labels(units)
        return [(f"{label} (AP {self.scores.ap[li, u]:.3f})", u) for label, u in zip(labels, units, strict=True)]

    def select(self, language: str | None = None, layer: int | None = None, unit: int | None = None) -> NeuronCard:
        """Change the selection and return the new card. A new language or layer without a unit selects that
        layer's best unit for the language; a unit alone moves to its layer."""
        lang = self.selection.language if language is None else self.scores.languages[self.scores.lang_index(language)]
        if unit is not None:
            if not 0 <= int(unit) < self.scores.ap.shape[1]:
                raise InspectorError(f"unit {unit} out of range (0..{self.scores.ap.shape[1] - 1})")
            unit_layer = int(self._unit_layers[int(unit)])
            if layer is not None and int(layer) != unit_layer:
                raise InspectorError(f"unit {unit} is in layer {unit_layer}, not {layer}")
            new = Selection(lang, unit_layer, int(unit))
        else:
            target_layer = self.selection.layer if layer is None else int(layer)
            new = Selection(lang, target_layer, self.best_unit(lang, target_layer))
        if new != self.selection:
            self.selection = new
            self.card = self._make_card()
            self._sync_widgets()
        return self.card

    def on_heatmap_click(self, trace: Any, points: Any, selector: Any = None) -> None:
        """FigureWidget click callback of the heatmap: x is the language, y the layer of the clicked cell."""
        if not getattr(points, "point_inds", None):
            return
        self.select(language=str(points.xs[0]), layer=int(points.ys[0]))

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
        import ipywidgets as w
        import plotly.graph_objects as go

        heatmap = go.FigureWidget(best_ap_heatmap(self.scores))
        heatmap.update_layout(height=420, width=520)
        cells: Any = heatmap.data[0]  # plotly's trace attributes are untyped
        cells.on_click(self.on_heatmap_click)
        sel = self.selection
        language = w.Dropdown(options=list(self.scores.languages), value=sel.language, description="language")
        layer = w.Dropdown(options=self.layers, value=sel.layer, description="layer")
        unit = w.Dropdown(
            options=self.unit_options(sel.language, sel.layer, include=sel.unit), value=sel.unit, description="unit"
        )
        card = go.FigureWidget(self.card.figure())
        card_text = w.HTML(self.card.html())
        text = w.Textarea(placeholder="Type a sentence to see the unit's activation on each token", rows=2)
        text.layout.width = "70%"
        run = w.Button(description="Show activations", disabled=self.model is None)
        result = w.HTML("" if self.model is not None else "<i>pass model= to see activations on your text</i>")

        def guarded(update: Any) -> Any:
            def handler(change: dict[str, Any]) -> None:
                if not self._syncing:
                    update(change["new"])

            return handler

        language.observe(guarded(lambda v: self.select(language=v)), "value")
        layer.observe(guarded(lambda v: self.select(layer=v)), "value")
        unit.observe(guarded(lambda v: self.select(unit=v)), "value")
        run.on_click(lambda _: self._show_text())
        controls = w.VBox([language, layer, unit])
        box = w.VBox([w.HBox([heatmap, controls]), card, card_text, w.HBox([text, run]), result])
        return {
            "box": box,
            "heatmap": heatmap,
            "language": language,
            "layer": layer,
            "unit": unit,
            "card": card,
            "card_text": card_text,
            "text": text,
            "run": run,
            "result": result,
        }

    def _sync_widgets(self) -> None:
        """Show the current selection and card in the widgets (if built) without re-triggering their callbacks."""
        if self._widgets is None:
            return
        ws, sel = self._widgets, self.selection
        self._syncing = True
        try:
            ws["language"].value = sel.language
            ws["layer"].value = sel.layer
            ws["unit"].options = self.unit_options(sel.language, sel.layer, include=sel.unit)
            ws["unit"].value = sel.unit
            fresh = self.card.figure()
            fig = ws["card"]
            with fig.batch_update():
                fig.data = ()
                fig.layout = fresh.layout
                fig.add_traces(list(fresh.data))
            ws["card_text"].value = self.card.html()
            ws["result"].value = ""
        finally:
            self._syncing = False

    def _show_text(self) -> None:
        assert self._widgets is not None
        try:
            item = self.activations(self._widgets["text"].value)
            self._widgets["result"].value = f"<b>{self.card.label}</b>: " + token_html(item.tokens, item.values)
        except InspectorError as err:
            self._widgets["result"].value = f"<i>{err}</i>"
