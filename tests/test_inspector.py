"""The neuron inspector: selection logic against brute force, the widget callbacks without a browser, from_run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from ipywidgets.widgets.widget import _remove_buffers

from xlens.activations import Responses
from xlens.config import ExperimentConfig
from xlens.data.splits import load_splits
from xlens.experts.sets import ExpertScores
from xlens.inspector import InspectorError, NeuronInspector
from xlens.models import LensModel
from xlens.runs.results import RunResults
from xlens.runs.study import run_experiment

LANGS = ["eng_Latn", "spa_Latn", "jpn_Jpan"]
CONFIG = ExperimentConfig.from_dict(
    {
        "model": "tiny-gpt2",
        "languages": LANGS,
        "find": {"sentences": 8},
        "intervene": {"k": [4]},
        "evaluate": {"sentences": 4},
        "runtime": {"device": "cpu"},
    }
)


@pytest.fixture(scope="module")
def run_dir(tiny_gpt2: LensModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    run_experiment(CONFIG, folder, model=tiny_gpt2, progress=False)
    return folder


@pytest.fixture
def inspector(run_dir: Path, tiny_gpt2: LensModel) -> NeuronInspector:
    return NeuronInspector.from_run(RunResults.load(run_dir, model=tiny_gpt2))


def best_in_block(scores: ExpertScores, language: str, block: int) -> int:
    blocks = scores.units.blocks().tolist()
    li = scores.languages.index(language)
    members = [u for u in range(scores.units.n_units) if blocks[u] == block]
    return max(members, key=lambda u: (float(scores.ap[li, u]), -u))


def test_from_run_loads_responses_and_texts(inspector: NeuronInspector, run_dir: Path) -> None:
    assert isinstance(inspector.responses, Responses)
    assert inspector.texts is not None and len(inspector.texts) == 3 * 8
    find = load_splits(CONFIG).find
    assert inspector.texts[8] == find["spa_Latn"][0]  # rows are language after language
    assert len(inspector.card.top) == 5 and all(t.tokens for t in inspector.card.top)


def test_initial_selection_is_the_best_block_of_the_first_language(inspector: NeuronInspector) -> None:
    scores = inspector.scores
    sel = inspector.selection
    assert sel.language == "eng_Latn"
    best_block = max(inspector.blocks, key=lambda la: float(scores.ap[0, best_in_block(scores, "eng_Latn", la)]))
    assert sel.block == best_block
    assert sel.unit == best_in_block(scores, "eng_Latn", best_block)


def test_select_moves_between_languages_blocks_and_units(inspector: NeuronInspector) -> None:
    scores = inspector.scores
    card = inspector.select(language="ja", block=1)
    assert inspector.selection.language == "jpn_Jpan" and inspector.selection.block == 1
    assert inspector.selection.unit == best_in_block(scores, "jpn_Jpan", 1)
    assert card.language == "jpn_Jpan" and card.unit == inspector.selection.unit
    inspector.select(unit=3)  # a block-0 unit: the block follows
    assert inspector.selection.block == 0 and inspector.card.unit == 3
    with pytest.raises(InspectorError, match="is in block 0, not 1"):
        inspector.select(unit=3, block=1)
    with pytest.raises(InspectorError, match="block 7 has no scored units"):
        inspector.select(block=7)
    with pytest.raises(InspectorError, match="out of range"):
        inspector.select(unit=10**6)


def test_unit_options_are_the_block_sorted_by_ap(inspector: NeuronInspector) -> None:
    options = inspector.unit_options("spa_Latn", 1)
    li = inspector.scores.languages.index("spa_Latn")
    aps = [float(inspector.scores.ap[li, u]) for _, u in options]
    assert len(options) == inspector.units_listed
    assert aps == sorted(aps, reverse=True)
    assert all(inspector.scores.units.blocks()[u] == 1 for _, u in options)
    assert options[0][1] == best_in_block(inspector.scores, "spa_Latn", 1)
    assert re.fullmatch(r"L1\.mlp#\d+ \(AP \d\.\d{3}\)", options[0][0])


def test_heatmap_click_selects_the_cell(inspector: NeuronInspector) -> None:
    inspector.on_heatmap_click(None, SimpleNamespace(point_inds=[], xs=[], ys=[]))  # a click outside the cells
    assert inspector.selection.language == "eng_Latn"
    inspector.on_heatmap_click(None, SimpleNamespace(point_inds=[4], xs=["spa_Latn"], ys=[1]))
    assert (inspector.selection.language, inspector.selection.block) == ("spa_Latn", 1)


def test_widgets_follow_the_state_and_drive_it(inspector: NeuronInspector, tiny_gpt2: LensModel) -> None:
    inspector.widget()
    ws = inspector._widgets
    assert ws is not None
    # A click on the heatmap updates the dropdowns and redraws the card figure.
    inspector.on_heatmap_click(None, SimpleNamespace(point_inds=[0], xs=["jpn_Jpan"], ys=[1]))
    unit = inspector.selection.unit
    assert (ws["language"].value, ws["block"].value, ws["unit"].value) == ("jpn_Jpan", 1, unit)
    assert ws["card"].layout.title.text == inspector.card.title
    np.testing.assert_allclose(np.asarray(ws["card"].data[0].y), inspector.scores.ap[:, unit].numpy(), rtol=1e-6)
    assert inspector.card.label in ws["card_text"].value
    # What the widgets send to the browser must be valid JSON (NaN is not: the front end would drop the message).
    for name in ("card", "heatmap"):
        state, _, _ = _remove_buffers(ws[name].get_state())  # binary buffers travel beside the JSON, as in a comm
        json.dumps(state, allow_nan=False)
    # Choosing in a dropdown changes the selection.
    ws["language"].value = "eng_Latn"
    assert inspector.selection == type(inspector.selection)(
        "eng_Latn", 1, best_in_block(inspector.scores, "eng_Latn", 1)
    )
    other = ws["unit"].options[2][1]
    ws["unit"].value = other
    assert inspector.selection.unit == other
    # A unit chosen from code that is not among the listed best ones joins the list.
    li = inspector.scores.languages.index("eng_Latn")
    worst = int(inspector.scores.ap[li].argmin())
    inspector.select(unit=worst)
    assert ws["unit"].value == worst and ws["unit"].options[-1][1] == worst
    # Free text: one coloured span per token, with the unit's activation as its title.
    ws["text"].value = "¿Dónde está la biblioteca?"
    ws["run"].click()
    titles = [float(t) for t in re.findall(r'title="([-0-9.]+)"', ws["result"].value)]
    expected = inspector.activations("¿Dónde está la biblioteca?").values
    np.testing.assert_allclose(titles, expected, atol=1e-4)
    assert len(titles) == len(tiny_gpt2.tokenize(["¿Dónde está la biblioteca?"]).tokens[0]) - 1  # BOS left out


def test_without_a_model_there_is_no_free_text(run_dir: Path) -> None:
    inspector = NeuronInspector.from_run(run_dir, load_model=False)
    assert all(not t.tokens for t in inspector.card.top)  # texts, but no per-token view
    with pytest.raises(InspectorError, match="need the model"):
        inspector.activations("hello")
    inspector.widget()
    assert inspector._widgets is not None and inspector._widgets["run"].disabled


def test_ranking_steps_through_the_experts_in_ap_order(inspector: NeuronInspector) -> None:
    scores = inspector.scores
    li = scores.languages.index("spa_Latn")
    # Brute force: sort (AP descending, unit ascending).
    expected = sorted(range(scores.units.n_units), key=lambda u: (-float(scores.ap[li, u]), u))
    inspector.select(language="es", unit=expected[0])
    assert inspector.rank() == 1
    visited = [inspector.selection.unit]
    for _ in range(4):
        visited.append(inspector.step(+1).unit)
    assert visited == expected[:5] and inspector.rank() == 5
    assert inspector.step(-2).unit == expected[2] and inspector.rank() == 3
    inspector.step(-10)  # clamped at the best expert
    assert inspector.selection.unit == expected[0]
    inspector.select(unit=expected[-1])
    assert inspector.rank() == len(expected) and inspector.step(+1).unit == expected[-1]


def test_search_reads_unit_ids_and_names_bad_ones(inspector: NeuronInspector) -> None:
    units = inspector.scores.units
    width = units.widths[0]
    target = units.unit(units.hooks[1], 5)
    for label in ("L1.5", "L1.mlp#5", str(target)):
        inspector.select(unit=0)
        assert inspector.search(label).unit == target and inspector.selection.block == 1
    assert width > 5
    with pytest.raises(InspectorError, match=r"cannot read unit 'L9\.5': no hook of block 9"):
        inspector.search("L9.5")
    with pytest.raises(InspectorError, match=r"write L<block>\.<position>"):
        inspector.search("neuron five")
    with pytest.raises(InspectorError, match="out of range"):
        inspector.search(f"L1.{width}")


def test_counts_figure_marks_the_units_block(inspector: NeuronInspector) -> None:
    inspector.counted = 20
    card = inspector.select(language="ja", block=1)
    fig = inspector.counts_figure()
    bars = fig.data[0]
    li = inspector.scores.languages.index("jpn_Jpan")
    top = inspector.scores.ap[li].argsort(descending=True, stable=True)[:20]
    blocks = inspector.scores.units.blocks()[top].tolist()
    assert list(bars.y) == [blocks.count(b) for b in inspector.blocks] and sum(bars.y) == 20
    marked = [b for b, color in zip(bars.x, bars.marker.color, strict=True) if color != "#BBBBBB"]
    assert marked == [1]
    assert fig.layout.title.text.endswith(f"{card.label} ranks #{inspector.rank()}")


def test_search_box_and_buttons_drive_the_widgets(inspector: NeuronInspector) -> None:
    inspector.widget()
    ws = inspector._widgets
    assert ws is not None
    inspector.select(language="en", block=0)
    first, rank = inspector.selection.unit, inspector.rank()
    ws["next"].click()
    assert inspector.rank() == rank + 1 and inspector.selection.unit != first
    second = inspector.selection.unit
    assert ws["unit"].value == second and inspector.card.label in ws["status"].value
    assert f"#{inspector.rank()}" in ws["status"].value
    assert ws["counts"].layout.title.text == inspector.counts_figure().layout.title.text
    ws["previous"].click()
    assert inspector.selection.unit == first
    label = inspector.scores.units.labels([7])[0]
    ws["search"].value = label  # submitting the text box (continuous_update=False) selects the unit
    assert inspector.selection.unit == 7 and ws["unit"].value == 7
    ws["search"].value = "L42.1"
    assert inspector.selection.unit == 7 and "no hook of block 42" in ws["status"].value
    ws["go"].click()  # the same text again through the button: the same message, nothing selected
    assert inspector.selection.unit == 7 and "no hook of block 42" in ws["status"].value
