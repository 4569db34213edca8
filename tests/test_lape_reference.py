"""LAPE on gated MLPs counts what its reference counts, on the bridge and the ``hf`` backend.

The reference (RUCAIBox/Language-Specific-Neurons, ``identify.py``) replaces the MLP's forward and counts, per unit,
the tokens where ``activation = act_fn(gate_proj(x))`` is positive; its ``ppl.py`` / ``generation.py`` deactivate
units with ``activation.index_fill_(2, mask, 0)`` on that same activation. Both are transcribed here by hooking the
output of the Hugging Face MLP's own ``act_fn`` module, which is that activation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_lape import _reference_selection
from torch import Tensor, nn
from typer.testing import CliRunner

import xlens
from xlens.activations import collect_responses
from xlens.cli import app
from xlens.config import ExperimentConfig
from xlens.data import load_corpus
from xlens.errors import ConfigError, ExpertInputError, InterventionError
from xlens.experts.lape import lape
from xlens.experts.sets import ExpertScores, find_experts
from xlens.models import LensModel

LANGS = ["en", "es", "de"]


@pytest.fixture(scope="module")
def corpus() -> Any:
    return load_corpus("builtin", langs=LANGS).head(8)


@pytest.fixture(scope="module", params=[("tiny-gemma3", "auto"), ("tiny-gemma3", "hf"), ("tiny-cohere", "auto")])
def gated(request: pytest.FixtureRequest) -> LensModel:
    name, backend = request.param
    return xlens.load_model(name, backend=backend)


def _mlps(model: LensModel) -> list[nn.Module]:
    """The Hugging Face MLP modules, block by block (the bridge wraps them; the hf backend holds them bare)."""
    modules = model.bridge.original_model.named_modules()
    found = [m for _, m in modules if type(m).__module__.startswith("transformers.") and hasattr(m, "act_fn")]
    assert len(found) == model.n_layers
    return found


@contextmanager
def _on_activation(model: LensModel, fn: Callable[[int, Tensor], Tensor | None]) -> Iterator[None]:
    """``fn(block, act_fn(gate_proj(x)))`` on every MLP's activation, as the reference's patched forward sees it."""
    handles = [
        mlp.act_fn.register_forward_hook(lambda _m, _i, out, b=b: fn(b, out)) for b, mlp in enumerate(_mlps(model))
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _reference_counts(model: LensModel, texts: list[str]) -> Tensor:
    """identify.py's over_zero, per sentence: tokens with ``act_fn(gate_proj(x)) > 0``, each sentence alone."""
    rows = []
    for text in texts:
        per_block: dict[int, Tensor] = {}

        def count(block: int, activation: Tensor, per_block: dict[int, Tensor] = per_block) -> None:
            per_block[block] = (activation[0] > 0).sum(dim=0).float()

        with _on_activation(model, count), torch.no_grad():
            model.bridge(model.tokenize([text]).tokens)
        rows.append(torch.cat([per_block[b] for b in range(model.n_layers)]))
    return torch.stack(rows)


def test_gate_counts_are_the_references_and_differ_from_the_neurons(gated: LensModel, corpus: Any) -> None:
    texts = [t for lang in LANGS for t in corpus[lang]]
    responses = collect_responses(gated, texts, pooling=["gate_active", "active"], batch_size=5, progress=False)
    torch.testing.assert_close(responses["gate_active"], _reference_counts(gated, texts), rtol=0, atol=0)
    # On a gated MLP the neuron is act_fn(gate) * up: its sign is not the gate's, so the two counts differ.
    assert not torch.equal(responses["gate_active"], responses["active"])


def test_on_mlps_without_a_gate_both_counts_are_the_neurons(corpus: Any) -> None:
    bloom = xlens.load_model("tiny-bloom")
    assert bloom.gate_hook(0) is None
    texts = list(corpus["en"])
    responses = collect_responses(bloom, texts, pooling=["gate_active", "active"], progress=False)
    torch.testing.assert_close(responses["gate_active"], responses["active"], rtol=0, atol=0)
    assert responses["active"].sum() > 0
    with pytest.raises(xlens.XlensError, match="gate_active pooling counts MLP neurons only"):
        collect_responses(bloom, texts, units="resid", pooling="gate_active", progress=False)


def test_the_selection_is_the_references_on_the_references_counts(gated: LensModel, corpus: Any) -> None:
    scores = find_experts(gated, corpus, lape_top_rate=0.2, progress=False)
    assert scores.lape is not None and scores.lape.counts == "gate"
    texts = [t for lang in LANGS for t in corpus[lang]]
    counts = _reference_counts(gated, texts).numpy()
    lang_ids = np.repeat(np.arange(len(LANGS)), len(corpus))
    tokens = np.array([len(gated.tokenize([t]).tokens[0]) for t in texts])
    prob = np.stack([counts[lang_ids == i].sum(0) / tokens[lang_ids == i].sum() for i in range(len(LANGS))])
    index, per_lang = _reference_selection(prob, 0.2, 0.95, 0.95)
    np.testing.assert_allclose(scores.lape.probability.numpy(), prob, rtol=1e-12)
    # The reference's index also holds units no language makes active above the filter (infinite entropy, taken
    # in index order when fewer units pass): no language gets them, and xlens keeps only the others.
    passing = set(np.flatnonzero((prob > np.sort(prob.flatten())[round(prob.size * 0.95) - 1]).any(axis=0)).tolist())
    assert sorted(scores.lape.selected.tolist()) == sorted(u for u in index.tolist() if u in passing)
    for i, lang in enumerate(scores.languages):
        assert sorted(scores.lape_set(lang).units.tolist()) == per_lang[i]
    post = find_experts(gated, corpus, lape_top_rate=0.2, lape_counts="post", progress=False)
    assert post.lape is not None and post.lape.counts == "post"
    assert not torch.equal(post.lape.probability, scores.lape.probability)


def test_deactivation_is_the_references_zeroing_of_the_gate_activation(corpus: Any) -> None:
    model = xlens.load_model("tiny-gemma3")
    scores = find_experts(model, corpus, lape_top_rate=0.2, progress=False)
    experts = xlens.Lape(top_rate=0.2).experts(scores, "es", 6)
    units = {b: [] for b in range(model.n_layers)}
    for unit in experts.units.tolist():
        hook, position = experts.unit_index.locate(unit)
        units[int(hook.split(".")[1])].append(position)
    tokens = model.tokenize(list(corpus["en"][:3])).tokens[:1]

    def zero(block: int, activation: Tensor) -> Tensor:
        mask = torch.tensor(units[block], dtype=torch.long)
        return activation.index_fill(2, mask, 0)  # ppl.py: activation.index_fill_(2, mask, 0)

    with torch.no_grad():
        with _on_activation(model, zero):
            reference = model.bridge(tokens)
        with xlens.Lape(top_rate=0.2).build(scores, "es", 6, model=model).apply(model):
            ours = model.bridge(tokens)
        plain = model.bridge(tokens)
    assert sum(map(len, units.values())) == 6
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(plain, reference, atol=1e-3)  # the deactivation does change the output


def test_the_definition_is_kept_with_the_ranking_and_never_mixed(tmp_path: Path, corpus: Any) -> None:
    model = xlens.load_model("tiny-gemma3")
    post = find_experts(model, corpus, lape_top_rate=0.2, lape_counts="post", progress=False)
    with pytest.raises(ExpertInputError, match="counts a unit active by 'post', not 'gate'"):
        xlens.Lape(top_rate=0.2).build(post, "es", 4, model=model)
    xlens.Lape(top_rate=0.2, counts="post").build(post, "es", 4, model=model)
    loaded = ExpertScores.load(post.save(tmp_path / "scores"))
    assert loaded.lape is not None and loaded.lape.counts == "post"
    # A LAPE set carries its definition too.
    only = post.lape_set("es")
    with pytest.raises(InterventionError, match="counts a unit active by 'post', not 'gate'"):
        xlens.Lape(top_rate=0.2).build(only, "es", 4, model=model)
    with pytest.raises(ConfigError, match=r"intervene\.counts = 'gates'"):
        xlens.Lape(counts="gates")
    with pytest.raises(ConfigError, match=r"intervene.counts = \['gate', 'post'\]: a run ranks its units by LAPE once"):
        ExperimentConfig.from_dict({"intervene": {"method": ["lape"], "counts": ["gate", "post"], "top_rate": 0.2}})
    result = lape(torch.ones(3, 4), torch.full((3,), 2), torch.tensor([0, 1, 2]), 3)
    assert result.counts == "gate" and result.settings()["counts"] == "gate"


def test_the_experts_command_names_a_bad_definition(tmp_path: Path) -> None:
    done = CliRunner().invoke(
        app, ["experts", "--out", str(tmp_path / "e"), "--model", "tiny-gemma3", "--lape", "--lape-counts", "neuron"]
    )
    assert done.exit_code == 2 and "--lape-counts 'neuron': must be one of gate, post" in done.output
    assert not (tmp_path / "e").exists()


def test_a_gated_mlp_without_its_gate_hook_is_named_not_counted_by_its_neurons(corpus: Any) -> None:
    hidden = xlens.load_model("tiny-gemma3", backend="hf", module_paths={"gate_proj": "no_such_module"})
    assert hidden.gated_mlp and hidden.gate_hook(0) is None
    with pytest.raises(xlens.XlensError, match=r"gated MLPs but no hook on their gate projection.*module_paths"):
        collect_responses(hidden, list(corpus["en"]), pooling="gate_active", progress=False)
    counted = collect_responses(hidden, list(corpus["en"]), pooling="active", progress=False)  # "post" still works
    assert counted["active"].sum() > 0


def test_gate_counts_on_units_that_are_not_mlp_neurons_are_refused_before_the_model(tmp_path: Path) -> None:
    config = {"model": "tiny-gemma3", "find": {"units": "resid"}, "intervene": {"method": "lape", "k": [1]}}
    with pytest.raises(ConfigError, match=r"counts = 'gate' counts MLP neurons by their gate, but .* 'resid'"):
        ExperimentConfig.from_dict(config).check_model(xlens.model_shape("tiny-gemma3"))
    post = {**config, "intervene": {"method": "lape", "k": [1], "counts": "post"}}
    ExperimentConfig.from_dict(post).check_model(xlens.model_shape("tiny-gemma3"))
    done = CliRunner().invoke(
        app, ["experts", "--out", str(tmp_path / "e"), "--model", "tiny-gemma3", "--lape", "--units", "resid"]
    )
    assert done.exit_code == 2 and "--lape-counts post" in done.output and not (tmp_path / "e").exists()
