"""Figures: every plotted number against a brute-force or independent reference, the style, and the export."""

from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.decomposition import PCA

from xlens.activations import Responses, UnitIndex
from xlens.conditions import Condition
from xlens.config import ExperimentConfig
from xlens.errors import InputError
from xlens.experts.sets import STAT_NAMES, ExpertScores
from xlens.models import LensModel
from xlens.runs.results import RunResults
from xlens.viz import alignment as va
from xlens.viz import experts as vx
from xlens.viz import export, neuron, space, style

LANGS = ["eng_Latn", "spa_Latn", "jpn_Jpan"]
LAYERS = [0, 1, 2]


def data(fig: go.Figure) -> list[Any]:
    """The traces, typed loosely: plotly's attributes are generated at runtime."""
    return list(fig.data)


def layout(fig: go.Figure) -> Any:
    return fig.layout


def frames(fig: go.Figure) -> list[Any]:
    return list(fig.frames)


def synthetic_scores(seed: int = 0, width: int = 8) -> ExpertScores:
    gen = torch.Generator().manual_seed(seed)
    units = UnitIndex(tuple(f"blocks.{layer}.mlp.hook_post" for layer in LAYERS), (width,) * len(LAYERS))
    shape = (len(LANGS), units.n_units)
    return ExpertScores(
        ap=torch.rand(shape, generator=gen),
        auroc=torch.rand(shape, generator=gen),
        stats={name: torch.rand(shape, generator=gen) for name in STAT_NAMES},
        units=units,
        languages=list(LANGS),
        model={},
        meta={"scored_pooling": "mean"},
    )


def synthetic_results(seed: int = 0) -> RunResults:
    """Baseline plus two conditions, every pair and layer, random metric values."""
    rng = np.random.default_rng(seed)
    retrieval, alignment = [], []
    conditions = [Condition.baseline(), Condition("force", "eng_Latn", 5), Condition("force", "spa_Latn", 5)]
    for condition in conditions:
        label, method, lang, k = condition.keys().values()
        for layer in LAYERS:
            for i, a in enumerate(LANGS):
                for j, b in enumerate(LANGS):
                    if i == j:
                        continue
                    top1 = float(rng.uniform(0.05, 0.9))
                    retrieval.append(
                        {"condition": label, "intervention": method, "expert_lang": lang, "k": k, "mode": "both"}
                        | {"layer": layer, "src": a, "tgt": b, "top1": top1, "top5": min(1.0, top1 + 0.1), "mrr": top1}
                    )
                    if i < j:
                        metrics = {m: float(rng.uniform(0, 1)) for m in va.ALIGNMENT_METRICS}
                        alignment.append(
                            {"condition": label, "intervention": method, "expert_lang": lang, "k": k, "layer": layer}
                            | {"lang_a": a, "lang_b": b}
                            | metrics
                        )
    return RunResults(
        config=ExperimentConfig(),
        languages=list(LANGS),
        layers=list(LAYERS),
        provenance={},
        experts={lang: {} for lang in LANGS},
        conditions=conditions,
        retrieval=pd.DataFrame(retrieval),
        alignment=pd.DataFrame(alignment),
    )


# --- style ---------------------------------------------------------------------------------------------------


def test_language_colors_are_fixed_and_code_independent() -> None:
    assert style.language_color("en") == style.language_color("eng_Latn") == style.language_color("English")
    builtin = ["eng_Latn", "spa_Latn", "deu_Latn", "fra_Latn", "jpn_Jpan"]
    builtin += ["zho_Hans", "arb_Arab", "hin_Deva", "kor_Hang", "rus_Cyrl"]
    assert len({style.language_color(c) for c in builtin}) == 10
    # Any other language (known or not) gets a palette colour that does not depend on what else is shown.
    swahili = style.language_color("swh_Latn")
    assert re.fullmatch(r"#[0-9A-F]{6}", swahili)
    assert style.language_colors(["swh_Latn", "en"])["swh_Latn"] == swahili
    assert re.fullmatch(r"#[0-9A-F]{6}", style.language_color("not-a-language"))


# --- experts -------------------------------------------------------------------------------------------------


def test_expert_counts_match_a_loop() -> None:
    scores = synthetic_scores()
    counts = vx.expert_counts_per_block(scores, threshold=0.7)
    layers = scores.units.blocks()
    for li in range(len(LANGS)):
        for j, layer in enumerate(LAYERS):
            expected = sum(1 for u in range(scores.units.n_units) if layers[u] == layer and scores.ap[li, u] >= 0.7)
            assert counts[li, j] == expected
    fig = vx.expert_counts(scores, threshold=0.7)
    np.testing.assert_array_equal(np.asarray(data(fig)[0].z), counts.T.numpy())
    assert list(data(fig)[0].x) == LANGS


def test_block_best_ap_matches_a_loop() -> None:
    scores = synthetic_scores(seed=1)
    best, where, layers = vx.block_best_ap(scores)
    assert layers == LAYERS
    unit_layers = scores.units.blocks().tolist()
    for li in range(len(LANGS)):
        for j, layer in enumerate(LAYERS):
            members = [u for u in range(scores.units.n_units) if unit_layers[u] == layer]
            top = max(members, key=lambda u: float(scores.ap[li, u]))
            assert int(where[li, j]) == top
            assert float(best[li, j]) == pytest.approx(float(scores.ap[li, top]))
    fig = vx.best_ap_heatmap(scores)
    assert data(fig)[0].customdata[0][0] == scores.units.labels([int(where[0, 0])])[0]


def test_ap_survival_is_the_fraction_above() -> None:
    scores = synthetic_scores(seed=2)
    x, frac = vx.ap_survival(scores, grid=11)
    for li in range(len(LANGS)):
        expected = [(scores.ap[li] >= v).float().mean().item() for v in x]
        np.testing.assert_allclose(frac[li], expected, atol=1e-7)
    fig = vx.ap_distribution(scores)
    assert [t.name for t in data(fig)] == LANGS
    assert data(fig)[1].line.color == style.language_color("spa_Latn")


def test_jaccard_matches_python_sets() -> None:
    scores = synthetic_scores(seed=3)
    jac = vx.jaccard_matrix(scores, k=6)
    sets = [set(scores.select(lang, 6).units.tolist()) for lang in LANGS]
    for i in range(3):
        for j in range(3):
            assert float(jac[i, j]) == pytest.approx(len(sets[i] & sets[j]) / len(sets[i] | sets[j]))
    np.testing.assert_allclose(np.asarray(data(vx.expert_overlap(scores, 6))[0].z), jac.numpy())


# --- embedding space -----------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(5, 30), st.integers(3, 12))
def test_pca_matches_sklearn(seed: int, n: int, d: int) -> None:
    X = np.random.default_rng(seed).normal(size=(n, d)) * np.linspace(3, 0.5, d)
    ours, _ = space.project_2d(X)
    ref = PCA(n_components=2, svd_solver="full").fit_transform(X)
    assert ours is not None
    for c in range(2):  # component signs are a convention
        sign = np.sign(ours[:, c] @ ref[:, c]) or 1.0
        np.testing.assert_allclose(ours[:, c] * sign, ref[:, c], atol=1e-6 * max(1.0, np.abs(ref).max()))


def test_after_is_projected_in_the_baseline_basis() -> None:
    X = np.random.default_rng(0).normal(size=(40, 6)) * np.array([5, 2, 1, 1, 1, 1])
    _, axes = space.pca_fit(X)
    shifted = X + 0.7 * axes[0]  # move every sentence along the first principal axis
    before, after = space.project_2d(X, shifted)
    assert after is not None
    np.testing.assert_allclose(after[:, 0], before[:, 0] + 0.7, atol=1e-9)
    np.testing.assert_allclose(after[:, 1], before[:, 1], atol=1e-9)


def test_embedding_space_frames_and_hover() -> None:
    gen = torch.Generator().manual_seed(0)
    per_lang, d = 6, 5
    before = torch.randn(len(LANGS) * per_lang, len(LAYERS), d, generator=gen)
    after = before + 0.5
    ids = [10, 11, 12, 13, 14, 15]
    texts = [f'{lang} "sentence" <{i}>' for lang in LANGS for i in ids]
    fig = space.embedding_space(before, after, languages=LANGS, layers=LAYERS, ids=ids, texts=texts, layer=1)
    n_points = 2 * len(LANGS)
    assert len(data(fig)) == n_points + 2  # points of both panels + one translation-link trace per panel
    assert [f.name for f in frames(fig)] == ["0", "1", "2"]
    assert layout(fig).sliders[0].active == 1
    for slot, frame in enumerate(frames(fig)):
        assert len(frame.data) == n_points
        ref, _ = space.project_2d(before[:, slot].numpy())
        assert ref is not None
        np.testing.assert_allclose(np.asarray(frame.data[1].x), ref[per_lang : 2 * per_lang, 0], atol=1e-5)
    # The base traces show the chosen layer; hover names language, id, panel and the (escaped) text.
    assert np.allclose(np.asarray(data(fig)[0].x), np.asarray(frames(fig)[1].data[0].x))
    spa_before = data(fig)[1]
    assert spa_before.name == "spa_Latn" and list(spa_before.customdata) == ids
    # Only &, < and > are escaped: plotly reads tags such as <s> but shows &quot; literally.
    assert spa_before.hovertext[2] == 'spa_Latn #12 (before)<br>spa_Latn "sentence" &lt;12&gt;'
    assert data(fig)[len(LANGS)].showlegend is False  # the after panel reuses the legend
    assert [t.meta for t in data(fig)[-2:]] == ["xlens-link", "xlens-link"]


def test_embedding_space_rejects_bad_input() -> None:
    emb = torch.zeros(6, 3, 4)
    with pytest.raises(space.ProjectionError, match="split evenly"):
        space.embedding_space(emb, languages=["a", "b", "c", "d"], layers=LAYERS)
    with pytest.raises(space.ProjectionError, match="3 layers"):
        space.embedding_space(emb, languages=["a", "b"], layers=[0, 1])
    with pytest.raises(space.ProjectionError, match="differ in shape"):
        space.embedding_space(emb, torch.zeros(6, 3, 5), languages=["a", "b"], layers=LAYERS)
    with pytest.raises(space.ProjectionError, match="texts"):
        space.embedding_space(emb, languages=["a", "b"], layers=LAYERS, texts=["x"])
    with pytest.raises(space.ProjectionError, match="layer 5 is not among"):
        space.embedding_space(emb, languages=["a", "b"], layers=LAYERS, layer=5)


def test_umap_without_umap_learn_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)
    with pytest.raises(space.ProjectionError, match="umap-learn"):
        space.project_2d(np.zeros((5, 3)), method="umap")
    with pytest.raises(space.ProjectionError, match="unknown projection"):
        space.project_2d(np.zeros((5, 3)), method="tsne")  # type: ignore[arg-type]


# --- neuron card ---------------------------------------------------------------------------------------------


def test_token_html_colours_and_escapes() -> None:
    out = neuron.token_html(["<b>", " a", "&"], [2.0, -1.0, 0.0])
    assert out.count('class="xlens-token"') == 3
    assert "&lt;b&gt;" in out and "&amp;" in out and "<b>" not in out
    assert "rgba(230,85,13,1.000)" in out  # the largest positive value is fully orange
    assert "rgba(49,130,189,0.500)" in out  # half as large, negative: half-transparent blue
    with pytest.raises(neuron.NeuronCardError, match="2 tokens but 1 values"):
        neuron.token_html(["a", "b"], [1.0])


def test_unit_token_activations_match_run_with_cache(tiny_gpt2: LensModel) -> None:
    units = UnitIndex(tuple(tiny_gpt2.mlp_hooks), (tiny_gpt2.d_mlp,) * tiny_gpt2.n_layers)
    unit = units.unit("blocks.1.mlp.hook_post", 7)
    texts = ["Hola mundo", "A longer sentence here."]
    got = neuron.unit_token_activations(tiny_gpt2, texts, units, unit)
    for text, item in zip(texts, got, strict=True):
        tokens = tiny_gpt2.tokenize([text]).tokens  # unbatched: no padding at all
        _, cache = tiny_gpt2.bridge.run_with_cache(tokens)
        expected = cache["blocks.1.mlp.hook_post"][0, 1:, 7].numpy()  # BOS left out
        np.testing.assert_allclose(item.values, expected, atol=1e-5)
        assert "".join(item.tokens) == text


def _responses_for(scores: ExpertScores, per_lang: int = 4) -> Responses:
    gen = torch.Generator().manual_seed(5)
    lang_ids = torch.arange(len(LANGS)).repeat_interleave(per_lang)
    values = torch.randn(len(lang_ids), scores.units.n_units, generator=gen)
    return Responses({"mean": values}, scores.units, torch.full((len(lang_ids),), 5), lang_ids, list(LANGS))


def test_neuron_card_splits_responses_and_ranks_sentences() -> None:
    scores = synthetic_scores(seed=4)
    responses = _responses_for(scores)
    texts = [f"text {i}" for i in range(responses.n_sentences)]
    unit = 9
    card = neuron.neuron_card(scores, unit, responses=responses, texts=texts, top=3)
    assert card.language == LANGS[int(scores.ap[:, unit].argmax())]  # default: the unit's best language
    li = LANGS.index(card.language)
    values = responses["mean"][:, unit]
    assert card.positives is not None and card.negatives is not None
    np.testing.assert_allclose(np.sort(card.positives), np.sort(values[li * 4 : (li + 1) * 4].numpy()))
    assert len(card.negatives) == responses.n_sentences - 4
    ranked = sorted(range(len(texts)), key=lambda i: -float(values[i]))[:3]
    assert [t.text for t in card.top] == [texts[i] for i in ranked]
    lang_ids = torch.arange(len(LANGS)).repeat_interleave(4)
    assert [t.language for t in card.top] == [LANGS[int(lang_ids[i])] for i in ranked]
    fig = card.figure()
    np.testing.assert_allclose(np.asarray(data(fig)[0].y), scores.ap[:, unit].numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(data(fig)[1].y), scores.auroc[:, unit].numpy(), rtol=1e-6)
    assert card.label in layout(fig).title.text
    spa = neuron.neuron_card(scores, unit, language="es")
    assert spa.language == "spa_Latn" and spa.positives is None and spa.top == []


def _widget_json(fig: go.Figure) -> str:
    """What a FigureWidget of ``fig`` sends to the browser, as strict JSON (binary buffers travel beside it)."""
    from ipywidgets.widgets.widget import _remove_buffers

    state, _, _ = _remove_buffers(go.FigureWidget(fig).get_state())
    return json.dumps(state, allow_nan=False)


def test_figures_with_gaps_are_valid_json_for_figure_widgets() -> None:
    scores = synthetic_scores()
    card = neuron.neuron_card(scores, 0)
    card.top = [
        neuron.ActivatedText('a<s>"', ["a", '<s>"'], np.array([0.5, -0.2]), "eng_Latn", 0.1),
        neuron.ActivatedText("c", ["c"], np.array([0.3]), "spa_Latn", 0.05),  # shorter: padded with gaps
    ]
    heatmap = data(card.figure())[-1]
    assert heatmap.z[1] == [0.3, None]
    assert list(heatmap.text[0]) == ["a", '&lt;s&gt;"']  # plotly would swallow "<s>" as a tag
    _widget_json(card.figure())
    # NaN diagonal (FigureWidget takes no frames: the slider figures are shown with plotly's renderer instead).
    heatmaps = va.similarity_heatmaps(synthetic_results(), "cka")
    _widget_json(go.Figure(data=heatmaps.data, layout=heatmaps.layout))


def test_neuron_card_errors() -> None:
    scores = synthetic_scores()
    with pytest.raises(neuron.NeuronCardError, match="out of range"):
        neuron.neuron_card(scores, scores.units.n_units)
    other = UnitIndex(("blocks.0.mlp.hook_post",), (scores.units.n_units,))
    bad = Responses({"mean": torch.zeros(3, other.n_units)}, other, torch.ones(3), torch.arange(3), list(LANGS))
    with pytest.raises(neuron.NeuronCardError, match="other units"):
        neuron.neuron_card(scores, 0, responses=bad)
    with pytest.raises(neuron.NeuronCardError, match="2 texts for 12"):
        neuron.neuron_card(scores, 0, responses=_responses_for(scores), texts=["a", "b"])


# --- alignment and retrieval ---------------------------------------------------------------------------------


def test_alignment_matrices_are_the_rows() -> None:
    results = synthetic_results()
    cond = "force spa_Latn k=5"
    langs, layers, values = va.alignment_matrices(results, "cka", cond)
    assert langs == LANGS and layers == LAYERS
    for row in results.alignment.to_dict(orient="records"):
        if (row["intervention"], row["expert_lang"], row["k"]) == ("force", "spa_Latn", 5):
            a, b = LANGS.index(row["lang_a"]), LANGS.index(row["lang_b"])
            assert values[row["layer"], a, b] == values[row["layer"], b, a] == row["cka"]
    assert np.isnan(values[:, range(3), range(3)]).all()
    with pytest.raises(va.ResultsError, match="unknown alignment metric"):
        va.alignment_matrices(results, "cosine")


def test_similarity_heatmaps_before_after_difference() -> None:
    results = synthetic_results()
    cond = "force eng_Latn k=5"
    fig = va.similarity_heatmaps(results, "cosine_parallel", cond)
    _, _, before = va.alignment_matrices(results, "cosine_parallel")
    _, _, after = va.alignment_matrices(results, "cosine_parallel", cond)
    assert len(frames(fig)) == len(LAYERS) and layout(fig).sliders[0].active == 2
    for slot, frame in enumerate(frames(fig)):
        np.testing.assert_allclose(np.asarray(frame.data[0].z, dtype=float), before[slot])
        np.testing.assert_allclose(np.asarray(frame.data[2].z, dtype=float), after[slot] - before[slot])
    assert "force eng_Latn k=5" in layout(fig).annotations[1].text
    with pytest.raises(va.ResultsError, match="available: force eng_Latn k=5, force spa_Latn k=5"):
        va.similarity_heatmaps(results, "cka", "aura eng_Latn k=5")


def test_best_condition_and_curves() -> None:
    results = synthetic_results()
    ratios = {c["condition"]: c["best_ratio"] for c in results.headline()["conditions"]}
    best = results.best_condition()
    assert best is not None and best.label == max(ratios, key=ratios.__getitem__)
    assert [c.label for c in results.interventions] == ["force eng_Latn k=5", "force spa_Latn k=5"]
    fig = va.retrieval_curves(results, "force spa_Latn k=5")
    assert len(data(fig)) == 3 * 2 * 2  # ordered pairs x (before, after)
    first = data(fig)[0]  # eng -> spa, before
    expected = [
        r["top1"]
        for r in sorted(results.retrieval.to_dict(orient="records"), key=lambda r: r["layer"])
        if r["intervention"] == "none" and (r["src"], r["tgt"]) == ("eng_Latn", "spa_Latn")
    ]
    np.testing.assert_allclose(np.asarray(first.y, dtype=float), expected)
    assert first.line.dash == "dot" and data(fig)[1].line.dash == "solid"
    assert sum(bool(t.showlegend) for t in data(fig)) == 3  # one legend entry per target language


def test_improvement_bars_show_means_over_pairs() -> None:
    results = synthetic_results()
    h = results.headline()
    fig = va.improvement_bars(results)
    rows = results.retrieval.to_dict(orient="records")
    base_best = np.mean([r["top1"] for r in rows if r["intervention"] == "none" and r["layer"] == h["best_layer"]])
    assert data(fig)[0].y[0] == pytest.approx(base_best)
    eng = [r["top1"] for r in rows if r["expert_lang"] == "eng_Latn" and r["layer"] == h["last_layer"]]
    assert data(fig)[1].y[1] == pytest.approx(np.mean(eng))
    assert [a.text for a in layout(fig).annotations] == [
        f"×{c['best_ratio']:.2f} (L{c['best_ratio_layer']})" for c in h["conditions"]
    ]


# --- export --------------------------------------------------------------------------------------------------


def test_html_export_is_self_contained(tmp_path: Path) -> None:
    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))
    path = export.save_figure(fig, tmp_path / "f.html")
    text = path.read_text()
    assert not re.search(r"<script[^>]*\bsrc=", text)  # nothing to fetch
    assert len(text) > 1_000_000  # plotly.js inline
    assert "xlens-link" in text  # the translation-link script rides along
    shared = export.save_figures([fig, fig], [tmp_path / "a.html", tmp_path / "b.html"], plotlyjs="directory")
    assert all(p.stat().st_size < 100_000 for p in shared)
    assert (tmp_path / "plotly.min.js").is_file()
    with pytest.raises(ValueError, match=r"use \.html or one of"):
        export.save_figure(fig, tmp_path / "f.gif")


def test_image_export_explains_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fig = go.Figure()
    monkeypatch.setattr(export, "find_browser", lambda: None)
    with pytest.raises(export.FigureExportError, match="Chrome or Chromium"):
        export.save_figure(fig, tmp_path / "f.png")
    monkeypatch.setitem(sys.modules, "kaleido", None)
    with pytest.raises(export.FigureExportError, match=r"pip install -e '\.\[figures\]'"):
        export.save_figure(fig, tmp_path / "f.svg")
    assert not export.image_export_available()


@pytest.mark.skipif(not export.image_export_available(), reason="kaleido or Chrome/Chromium not installed")
def test_png_export_with_kaleido(tmp_path: Path) -> None:
    path = export.save_figure(vx.expert_counts(synthetic_scores()), tmp_path / "counts.png", scale=1)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (export.IMAGE_WIDTH, export.IMAGE_HEIGHT)


def _two_clusters(n: int = 30, d: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n)
    return (rng.normal(size=(2 * n, d)) + 8.0 * labels[:, None]).astype(np.float32), labels


def test_umap_keeps_neighbourhoods_and_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import umap
    from sklearn.manifold import trustworthiness

    X, labels = _two_clusters()
    after = X + np.float32(0.05)
    first, moved = space.project_2d(X, after, method="umap", seed=3, cache=tmp_path)
    assert first.shape == (60, 2) and moved is not None and moved.shape == (60, 2)
    assert trustworthiness(X, first, n_neighbors=5) > 0.9  # sklearn's measure of kept neighbourhoods
    centres = np.stack([first[labels == c].mean(axis=0) for c in (0, 1)])
    nearest = np.linalg.norm(moved[:, None] - centres[None], axis=2).argmin(axis=1)
    assert (nearest == labels).all()  # shifted points land in their own cluster of the fitted map
    assert len(list(tmp_path.glob("umap-*.npz"))) == 1
    # A rerun reads the cache: identical coordinates, no UMAP fitted.
    monkeypatch.setattr(umap, "UMAP", lambda **_: pytest.fail("UMAP refitted despite the cache"))
    again, moved_again = space.project_2d(X, after, method="umap", seed=3, cache=tmp_path)
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(moved_again, moved)
    monkeypatch.undo()
    # Another seed or other embeddings are other keys.
    space.project_2d(X, after, method="umap", seed=4, cache=tmp_path)
    space.project_2d(X[:, ::-1].copy(), None, method="umap", seed=3, cache=tmp_path)
    assert len(list(tmp_path.glob("umap-*.npz"))) == 3
    with pytest.raises(space.ProjectionError, match="at least 4 points"):
        space.project_2d(X[:3], method="umap", cache=tmp_path)


def test_a_corrupt_cached_projection_names_its_file(tmp_path: Path) -> None:
    X, _ = _two_clusters(n=10)
    space.project_2d(X, method="umap", cache=tmp_path)
    [cached] = tmp_path.glob("umap-*.npz")
    cached.write_bytes(b"not an npz")
    with pytest.raises(space.ProjectionError, match=f"{cached.name} is unreadable .*delete it"):
        space.project_2d(X, method="umap", cache=tmp_path)


def test_umap_space_has_the_slider_and_translation_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XLENS_CACHE", str(tmp_path))
    X, _ = _two_clusters(n=10)
    emb = torch.from_numpy(np.stack([X, X * 2], axis=1))  # [sentence, layer, d]
    fig = space.embedding_space(emb, emb + 0.1, languages=["eng_Latn", "spa_Latn"], layers=[3, 6], method="umap")
    assert [f.name for f in fig.frames] == ["3", "6"]
    assert sum(t.meta == "xlens-link" for t in fig.data) == 2
    assert "UMAP" in fig.layout.title.text
    assert len(list((tmp_path / "projections").glob("umap-*.npz"))) == 2  # one per layer, in xlens' cache


def _simulated_lab(hex_colors: list[str], deficiency: str) -> np.ndarray:
    """CIELAB of colours as seen with a colour-vision deficiency: the Machado et al. 2009 matrices (severity 1.0)
    applied in linear sRGB, then sRGB -> XYZ (D65) -> Lab."""
    machado = {
        "protanopia": [
            [0.152286, 1.052583, -0.204868],
            [0.114503, 0.786281, 0.099216],
            [-0.003882, -0.048116, 1.051998],
        ],
        "deuteranopia": [
            [0.367322, 0.860646, -0.227968],
            [0.280085, 0.672501, 0.047413],
            [-0.011820, 0.042940, 0.968881],
        ],
        "tritanopia": [
            [1.255528, -0.076749, -0.178779],
            [-0.078411, 0.930809, 0.147602],
            [0.004733, 0.691367, 0.303900],
        ],
        "none": np.eye(3).tolist(),
    }[deficiency]
    srgb = np.array([[int(h[i : i + 2], 16) / 255 for i in (1, 3, 5)] for h in hex_colors])
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    seen = np.clip(linear @ np.array(machado).T, 0, 1)
    xyz = seen @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


@pytest.mark.parametrize("deficiency", ["none", "protanopia", "deuteranopia", "tritanopia"])
def test_language_colours_stay_distinct_to_colour_blind_readers(deficiency: str) -> None:
    from xlens.viz.style import language_color

    builtin = ["en", "es", "de", "fr", "ja", "zh", "ar", "hi", "ko", "ru"]
    lab = _simulated_lab([language_color(c) for c in builtin], deficiency)
    distance = np.linalg.norm(lab[:, None] - lab[None], axis=2)  # CIE76 delta E
    closest = distance[~np.eye(len(builtin), dtype=bool)].min()
    assert closest > 15.0, (deficiency, closest)


@pytest.mark.parametrize(("size", "inches"), [("single", (3.03, 2.3)), ("double", (6.3, 2.8))])
def test_paper_sizes_export_at_their_physical_size(size: str, inches: tuple[float, float], tmp_path: Path) -> None:
    import re

    from xlens.viz.export import save_figure

    fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2], name="eng_Latn"))
    fig.update_layout(sliders=[{"steps": [{"label": "a"}]}])
    png = save_figure(fig, tmp_path / "f.png", size=size, dpi=300)  # type: ignore[arg-type]
    width, height = struct.unpack(">II", png.read_bytes()[16:24])  # the PNG header's IHDR size
    assert (width, height) == (round(inches[0] * 96) * 300 // 96, round(inches[1] * 96) * 300 // 96)
    pdf = save_figure(fig, tmp_path / "f.pdf", size=size)  # type: ignore[arg-type]
    box = [float(v) for v in re.search(rb"/MediaBox\s*\[([^\]]+)\]", pdf.read_bytes())[1].split()]  # type: ignore[index]
    assert box[2] - box[0] == pytest.approx(inches[0] * 72, abs=1.0)
    assert box[3] - box[1] == pytest.approx(inches[1] * 72, abs=1.0)
    svg = save_figure(fig, tmp_path / "f.svg", size=size).read_text()  # type: ignore[arg-type]
    assert f'width="{round(inches[0] * 96)}"' in svg and "slider" not in svg
    assert fig.layout.sliders  # the figure itself is left as it was
    with pytest.raises(InputError, match="unknown paper size 'a4'"):
        save_figure(fig, tmp_path / "g.png", size="a4")  # type: ignore[arg-type]


def test_split_characters_are_shown_whole(tiny_gpt2: LensModel) -> None:
    from xlens.viz.neuron import CONTINUATION, display_tokens

    tok = tiny_gpt2.tokenizer
    text = "日本語の文です。Hello ñ"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    shown = display_tokens(tok, ids)
    assert len(shown) == len(ids)  # one cell per token, values stay aligned
    # Dropping the continuation marks gives back the text itself (byte-level BPE: no U+FFFD left).
    assert "".join(t for t in shown if t != CONTINUATION) == tok.decode(ids) == text
    assert shown[:3] == ["日", CONTINUATION, CONTINUATION] and "\ufffd" not in "".join(shown)
    # A stray byte that never completes a character is shown as the tokenizer decodes it.
    assert display_tokens(tok, [ids[1], *tok("ab", add_special_tokens=False)["input_ids"]])[0] == "\ufffd"
