from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xlens.activations import UnitIndex
from xlens.data import load_builtin
from xlens.errors import ConfigError, ExpertInputError, ModelMismatchError
from xlens.experts.lape import LapeResult
from xlens.experts.sets import ExpertScores, find_experts
from xlens.interventions import (
    Aura,
    Damp,
    Det0,
    DiffMean,
    Force,
    InterventionError,
    Lape,
    ScaleUnits,
    SetUnits,
    SteeringVector,
    TokenPositions,
    apply,
    aura_factors,
    mean_residual,
    methods,
    spec_from_dict,
    token_positions,
)
from xlens.models import LensModel, load_model

TEXTS = ["The bakery on the corner opens early.", "Hi there", "Could you pass me the salt?"]


def record(
    model: LensModel, names: list[str], *interventions: Any, texts: list[str] = TEXTS
) -> dict[str, torch.Tensor]:
    """Activations at ``names`` (read after the interventions) on a right-padded batch of ``texts``."""
    batch = model.tokenize(texts)
    seen: dict[str, torch.Tensor] = {}

    def reader(name: str) -> Any:
        def read(act: torch.Tensor, hook: Any) -> None:
            seen[name] = act.detach().clone()

        return read

    readers = [(n, reader(n)) for n in names]
    with torch.inference_mode(), apply(model, *interventions, *readers), token_positions(batch.mask):
        seen["logits"] = model.bridge(batch.tokens, attention_mask=batch.mask.long())
    return seen


def all_hooks(model: LensModel) -> list[str]:
    return [
        "hook_embed",
        *[h for layer in range(model.n_layers) for h in (model.mlp_hook(layer), model.resid_hook(layer))],
    ]


def logits(model: LensModel, texts: list[str] = TEXTS) -> torch.Tensor:
    batch = model.tokenize(texts)
    with torch.inference_mode():
        return model.bridge(batch.tokens, attention_mask=batch.mask.long())


# --- only the targeted units change ------------------------------------------------------------------------


def test_force_changes_only_the_targeted_units(tiny_model: LensModel) -> None:
    model = tiny_model
    last = model.n_layers - 1
    hook = model.mlp_hook(last)
    units = torch.tensor([3, 0, 17])
    values = torch.tensor([2.5, -1.0, 0.25])
    force = SetUnits({hook: units}, {hook: values})
    names = all_hooks(model)
    base = record(model, names)
    forced = record(model, names, force)

    upstream = names[: names.index(hook)]
    for name in upstream:
        assert torch.equal(base[name], forced[name]), f"{name} is upstream of the intervention but changed"
    others = torch.ones(model.d_mlp, dtype=torch.bool)
    others[units] = False
    assert torch.equal(base[hook][..., others], forced[hook][..., others])
    assert torch.equal(forced[hook][..., units], values.expand(*forced[hook].shape[:2], 3))
    assert not torch.equal(base[hook][..., units], forced[hook][..., units])
    assert not torch.allclose(base[model.resid_hook(last)], forced[model.resid_hook(last)])
    assert not torch.allclose(base["logits"], forced["logits"])


def test_dampen_scales_only_the_targeted_units(tiny_model: LensModel) -> None:
    model = tiny_model
    hook = model.mlp_hook(0)
    units, factors = torch.tensor([1, 5, 9]), torch.tensor([0.5, 0.0, -2.0])
    names = all_hooks(model)
    base = record(model, names)
    damped = record(model, names, ScaleUnits({hook: units}, {hook: factors}))
    assert torch.equal(base["hook_embed"], damped["hook_embed"])
    torch.testing.assert_close(damped[hook][..., units], base[hook][..., units] * factors, rtol=0, atol=0)
    others = torch.ones(model.d_mlp, dtype=torch.bool)
    others[units] = False
    assert torch.equal(base[hook][..., others], damped[hook][..., others])
    assert not torch.allclose(base[model.resid_hook(0)], damped[model.resid_hook(0)])


def test_units_of_a_head_hook_are_flattened_heads_times_d_head(tiny_gpt2: LensModel) -> None:
    model = tiny_gpt2
    hook = "blocks.0.attn.hook_z"
    base = record(model, [hook])[hook]
    n_heads, d_head = base.shape[2], base.shape[3]
    unit = d_head + 3  # head 1, dimension 3
    forced = record(model, [hook], SetUnits({hook: torch.tensor([unit])}, {hook: torch.tensor([7.0])}))[hook]
    assert torch.equal(forced[:, :, 1, 3], torch.full(forced.shape[:2], 7.0))
    changed = (forced != base).reshape(*base.shape[:2], n_heads * d_head).any(dim=(0, 1))
    assert changed.nonzero().flatten().tolist() == [unit]


def test_steer_adds_alpha_times_vector_to_the_residual(tiny_model: LensModel) -> None:
    model = tiny_model
    vector = torch.linspace(-1, 1, model.d_model)
    names = all_hooks(model)
    base = record(model, names)
    steered = record(model, names, SteeringVector(0, vector, alpha=3.0))
    assert torch.equal(base[model.mlp_hook(0)], steered[model.mlp_hook(0)])
    torch.testing.assert_close(steered[model.resid_hook(0)], base[model.resid_hook(0)] + 3.0 * vector)
    assert not torch.allclose(base[model.mlp_hook(1)], steered[model.mlp_hook(1)])


# --- leaving the context restores the model ----------------------------------------------------------------


def test_leaving_the_context_restores_bit_identical_logits(tiny_model: LensModel) -> None:
    model = tiny_model
    before = logits(model)
    force = SetUnits({model.mlp_hook(0): torch.tensor([0, 1, 2])}, {model.mlp_hook(0): torch.tensor([5.0, 5.0, 5.0])})
    steer = SteeringVector(model.n_layers - 1, torch.ones(model.d_model))
    with force.apply(model):
        inside = logits(model)
    assert not torch.allclose(before, inside)
    assert torch.equal(before, logits(model))

    with pytest.raises(RuntimeError, match="boom"), apply(model, force, steer):
        raise RuntimeError("boom")
    assert torch.equal(before, logits(model))

    # An intervention failing inside the forward pass is removed as well.
    broken = SetUnits({model.mlp_hook(0): torch.tensor([10**6])}, {model.mlp_hook(0): torch.tensor([1.0])})
    with pytest.raises(InterventionError, match="out of range"), apply(model, steer, broken):
        logits(model)
    assert torch.equal(before, logits(model))


def test_hooks_work_with_run_with_hooks_and_run_with_cache(tiny_gpt2: LensModel) -> None:
    model = tiny_gpt2
    hook = model.mlp_hook(1)
    force = SetUnits({hook: torch.tensor([4])}, {hook: torch.tensor([1.5])})
    batch = model.tokenize(["hello world"])
    with torch.inference_mode():
        out = model.bridge.run_with_hooks(batch.tokens, fwd_hooks=force.hooks(model))
        with apply(model, force):
            expected = model.bridge(batch.tokens)
            cached_logits, inside = model.bridge.run_with_cache(batch.tokens, names_filter=[hook])
        _, after = model.bridge.run_with_cache(batch.tokens, names_filter=[hook])
    assert torch.equal(out, expected)
    assert torch.equal(cached_logits, expected)
    # The cache holds the hook's output after the intervention, and nothing is left once the context is gone.
    assert torch.equal(inside[hook][..., 4], torch.full(inside[hook].shape[:2], 1.5))
    assert torch.equal(inside[hook][..., :4], after[hook][..., :4])
    assert not bool((after[hook][..., 4] == 1.5).any())


# --- composition -------------------------------------------------------------------------------------------


def test_composition_follows_the_order_given(tiny_gpt2: LensModel) -> None:
    model = tiny_gpt2
    hook = model.mlp_hook(0)
    force = SetUnits({hook: torch.tensor([2, 3])}, {hook: torch.tensor([4.0, -1.0])})
    dampen = ScaleUnits({hook: torch.tensor([3, 6])}, {hook: torch.tensor([0.5, 0.25])})
    base = record(model, [hook])[hook]
    force_last = record(model, [hook], dampen, force)[hook]
    dampen_last = record(model, [hook], force, dampen)[hook]
    # Force after Dampen on the same unit wins; Dampen after Force scales the forced value.
    assert torch.equal(force_last[..., 3], torch.full(base.shape[:2], -1.0))
    assert torch.equal(dampen_last[..., 3], torch.full(base.shape[:2], -0.5))
    for out in (force_last, dampen_last):
        assert torch.equal(out[..., 2], torch.full(base.shape[:2], 4.0))
        assert torch.equal(out[..., 6], base[..., 6] * 0.25)
    twice = record(model, [hook], dampen, dampen)[hook]
    assert torch.equal(twice[..., 6], base[..., 6] * 0.25 * 0.25)


# --- where: prompt / last with padding ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["all", "prompt", "last"])
def test_where_selects_tokens_of_a_right_padded_batch(tiny_model: LensModel, where: str) -> None:
    model = tiny_model
    hook = model.mlp_hook(0)
    batch = model.tokenize(TEXTS)
    lengths = batch.lengths.tolist()
    base = record(model, [hook])[hook]
    forced = record(model, [hook], SetUnits({hook: torch.tensor([5])}, {hook: torch.tensor([9.0])}, where=where))[hook]  # type: ignore[arg-type]
    for row, n in enumerate(lengths):
        hit = forced[row, :, 5] == 9.0
        if where == "all":
            expected = list(range(forced.shape[1]))
        elif where == "prompt":
            expected = list(range(n))
        else:
            expected = [n - 1]  # the last REAL token, not the padding
        assert hit.nonzero().flatten().tolist() == expected
        untouched = torch.ones(forced.shape[1], dtype=torch.bool)
        untouched[expected] = False
        assert torch.equal(forced[row, untouched, 5], base[row, untouched, 5])


def test_last_on_a_padded_row_equals_the_unpadded_run(tiny_model: LensModel) -> None:
    model = tiny_model
    force = SetUnits(
        {model.mlp_hook(0): torch.tensor([1, 2])}, {model.mlp_hook(0): torch.tensor([3.0, 3.0])}, where="last"
    )
    padded = record(model, [], force)["logits"]
    short = TEXTS[1]
    n = int(model.tokenize([short]).lengths[0])
    alone = record(model, [], force, texts=[short])["logits"]  # one row: no padding, last = final column
    torch.testing.assert_close(padded[1, :n], alone[0], rtol=1e-4, atol=1e-5)
    # The unforced run differs at the last token only.
    plain = record(model, [], texts=[short])["logits"]
    torch.testing.assert_close(plain[0, : n - 1], alone[0, : n - 1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(plain[0, n - 1], alone[0, n - 1])


def test_without_a_context_prompt_is_everything_and_last_is_the_final_column(tiny_gpt2: LensModel) -> None:
    model = tiny_gpt2
    hook = model.mlp_hook(0)
    batch = model.tokenize(["one two three"])
    seen: dict[str, torch.Tensor] = {}

    def read(act: torch.Tensor, hook: Any) -> None:
        seen[hook.name] = act.clone()

    for where, expected in (("prompt", list(range(batch.tokens.shape[1]))), ("last", [batch.tokens.shape[1] - 1])):
        force = SetUnits({hook: torch.tensor([0])}, {hook: torch.tensor([42.0])}, where=where)  # type: ignore[arg-type]
        with torch.inference_mode(), apply(model, force, (hook, read)):
            model.bridge(batch.tokens)
        assert (next(iter(seen.values()))[0, :, 0] == 42.0).nonzero().flatten().tolist() == expected


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=5), st.integers(0, 3))
def test_token_positions_select_matches_a_loop(lengths: list[int], extra: int) -> None:
    width = max(lengths) + extra
    mask = torch.tensor([[c < n for c in range(width)] for n in lengths])
    positions = TokenPositions.from_mask(mask)
    prompt = positions.select("prompt", len(lengths), width, torch.device("cpu"))
    last = positions.select("last", len(lengths), width, torch.device("cpu"))
    assert prompt is not None and last is not None
    for row, n in enumerate(lengths):
        assert prompt[row].tolist() == [c < n for c in range(width)]
        assert last[row].tolist() == [c == n - 1 for c in range(width)]
    gen = TokenPositions.generating(width, len(lengths)).select("last", len(lengths), width + 4, torch.device("cpu"))
    assert gen is not None
    assert gen.tolist() == [[c >= width - 1 for c in range(width + 4)]] * len(lengths)


def test_token_positions_errors(tiny_gpt2: LensModel) -> None:
    with pytest.raises(InterventionError, match="right padding"):
        TokenPositions.from_mask(torch.tensor([[False, True, True]]))
    with pytest.raises(InterventionError, match="without real tokens"):
        TokenPositions.from_mask(torch.tensor([[True, True], [False, False]]))
    hook = tiny_gpt2.mlp_hook(0)
    force = SetUnits({hook: torch.tensor([0])}, {hook: torch.tensor([1.0])}, where="last")
    batch = tiny_gpt2.tokenize(["a b", "c"])
    with (
        pytest.raises(InterventionError, match="batch of 1 rows"),
        token_positions(torch.tensor([[True, True]])),
        apply(tiny_gpt2, force),
    ):
        tiny_gpt2.bridge(batch.tokens, attention_mask=batch.mask.long())


# --- constructors from experts -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_scores(tiny_gpt2: LensModel) -> ExpertScores:
    return find_experts(tiny_gpt2, load_builtin(["en", "es", "de"]).head(12), progress=False)


def _per_unit(index: UnitIndex, units: dict[str, torch.Tensor], numbers: dict[str, torch.Tensor]) -> dict[int, float]:
    return {
        index.unit(hook, int(p)): float(v)
        for hook in units
        for p, v in zip(units[hook].tolist(), numbers[hook].tolist(), strict=True)
    }


def test_force_from_experts_uses_each_units_statistic(gpt2_scores: ExpertScores) -> None:
    experts = gpt2_scores.select("es", 30)
    index = gpt2_scores.units
    li = gpt2_scores.lang_index("es")
    for value in ("on_p50", "on_mean"):
        force = Force(value=value).build(experts, k=20)
        assert isinstance(force, SetUnits)
        expected = {int(u): float(gpt2_scores.stats[value][li, u]) for u in experts.units[:20]}
        got = _per_unit(index, force.units, force.values)
        assert got.keys() == expected.keys()
        assert all(got[u] == pytest.approx(v, abs=1e-6) for u, v in expected.items())
    zero = Force(value="zero").build(experts, k=5)
    assert set(_per_unit(index, zero.units, zero.values).values()) == {0.0}  # type: ignore[attr-defined]
    number = Force(value=1.5).build(experts, k=4)
    assert set(_per_unit(index, number.units, number.values).values()) == {1.5}  # type: ignore[attr-defined]
    custom = SetUnits.of(experts.head(3), torch.tensor([1.0, 2.0, 3.0]))
    assert _per_unit(index, custom.units, custom.values) == {
        int(u): float(i + 1) for i, u in enumerate(experts.units[:3])
    }
    with pytest.raises(ConfigError, match=r"intervene.value = 'median': must be a number, 'zero' or a statistic"):
        Force(value="median")
    with pytest.raises(InterventionError, match="2 numbers for 3 experts"):
        SetUnits.of(experts.head(3), torch.tensor([1.0, 2.0]))


def test_aura_factors_match_the_formula(gpt2_scores: ExpertScores) -> None:
    li = gpt2_scores.lang_index("de")
    auroc = gpt2_scores.auroc[li].numpy().astype(np.float64)
    aura = Aura().build(gpt2_scores, "de")  # k=None: every unit with AUROC > 0.5, as in the paper
    assert isinstance(aura, ScaleUnits)
    got = _per_unit(gpt2_scores.units, aura.units, aura.factors)
    expected = {u: 1 - 2 * (a - 0.5) for u, a in enumerate(auroc) if a > 0.5}
    assert got.keys() == expected.keys()
    assert all(got[u] == pytest.approx(v, abs=1e-6) for u, v in expected.items())
    # With k: the top-k experts by AP (the units force and det0 take), those with AUROC > 0.5.
    top = Aura().build(gpt2_scores, "de", k=10)
    chosen = gpt2_scores.select("de", 10)
    kept = {int(u) for u, a in zip(chosen.units, chosen.auroc, strict=True) if a > 0.5}
    assert set(_per_unit(gpt2_scores.units, top.units, top.factors)) == kept  # type: ignore[attr-defined]
    # From an expert set: its units with AUROC > 0.5 only.
    experts = gpt2_scores.select("de", 40)
    from_set = Aura().build(experts)
    kept_factors = {
        int(u): 1 - 2 * (float(a) - 0.5) for u, a in zip(experts.units, experts.auroc, strict=True) if a > 0.5
    }
    got_set = _per_unit(gpt2_scores.units, from_set.units, from_set.factors)  # type: ignore[attr-defined]
    assert got_set.keys() == kept_factors.keys()
    assert all(got_set[u] == pytest.approx(v, abs=1e-6) for u, v in kept_factors.items())
    assert aura_factors(torch.tensor([0.2, 0.5, 0.75, 1.0])).tolist() == [1.0, 1.0, 0.5, 0.0]


def test_aura_dampens_the_model_by_its_factors(tiny_gpt2: LensModel, gpt2_scores: ExpertScores) -> None:
    aura = Aura().build(gpt2_scores, "es", k=8)
    assert isinstance(aura, ScaleUnits)
    chosen = gpt2_scores.select("es", 8)
    assert aura.n_units == int((chosen.auroc > 0.5).sum()) > 0
    before: dict[str, torch.Tensor] = {}
    after: dict[str, torch.Tensor] = {}

    def reader(store: dict[str, torch.Tensor], name: str) -> Any:
        def read(act: torch.Tensor, hook: Any) -> None:
            store[name] = act.clone()

        return read

    # Read each hook just before and just after the intervention in the same pass.
    hooks = tiny_gpt2.mlp_hooks
    pre = [(h, reader(before, h)) for h in hooks]
    post = [(h, reader(after, h)) for h in hooks]
    batch = tiny_gpt2.tokenize(TEXTS)
    with torch.inference_mode(), apply(tiny_gpt2, *pre, aura, *post):
        tiny_gpt2.bridge(batch.tokens, attention_mask=batch.mask.long())
    for hook in hooks:
        expected = before[hook].clone()
        if hook in aura.units:
            pos = aura.units[hook]
            expected[..., pos] = before[hook][..., pos] * aura.factors[hook]
        assert torch.equal(after[hook], expected)


def test_det0_and_damp(gpt2_scores: ExpertScores) -> None:
    experts = gpt2_scores.select("en", 25)
    det0 = Det0().build(experts, k=10)
    assert isinstance(det0, ScaleUnits) and det0.n_units == 10
    assert set(_per_unit(gpt2_scores.units, det0.units, det0.factors).values()) == {0.0}
    damp = Damp(alpha=0.3).build(experts)
    assert isinstance(damp, ScaleUnits)
    assert set(_per_unit(gpt2_scores.units, damp.units, damp.factors)) == {int(u) for u in experts.units}
    assert {round(v, 6) for v in _per_unit(gpt2_scores.units, damp.units, damp.factors).values()} == {0.3}
    assert {round(float(f), 6) for f in torch.cat(list(Damp().build(experts).factors.values()))} == {0.5}  # type: ignore[attr-defined]


def test_lape_zeroes_the_languages_lowest_entropy_units(gpt2_scores: ExpertScores) -> None:
    n = gpt2_scores.units.n_units
    assignment = torch.zeros(3, n, dtype=torch.bool)
    assignment[1, [3, 70, 100, 127]] = True
    entropy = torch.rand(n, generator=torch.Generator().manual_seed(0)).double()
    ranking = LapeResult(torch.zeros(3, n), entropy, torch.tensor([3, 70, 100, 127]), assignment, 0.1, 0.2, 0.01)
    scores = dataclasses.replace(gpt2_scores, lape=ranking)
    spanish = gpt2_scores.languages[1]
    off = Lape().build(scores, spanish)
    assert isinstance(off, ScaleUnits)
    assert _per_unit(gpt2_scores.units, off.units, off.factors) == {3: 0.0, 70: 0.0, 100: 0.0, 127: 0.0}
    two = Lape().build(scores, spanish, k=2)
    lowest = sorted([3, 70, 100, 127], key=lambda u: float(entropy[u]))[:2]
    assert set(_per_unit(gpt2_scores.units, two.units, two.factors)) == set(lowest)  # type: ignore[attr-defined]
    # The LAPE set is ordered by entropy, so head(k) is the k most specific units: the one path of run and steer.
    ranked = scores.lape_set(spanish)
    assert ranked.units.tolist() == sorted([3, 70, 100, 127], key=lambda u: float(entropy[u]))
    assert Lape().build(ranked, k=2).units == two.units  # type: ignore[attr-defined]
    with pytest.raises(InterventionError, match="LAPE assigned no unit"):
        Lape().build(scores, gpt2_scores.languages[0])
    with pytest.raises(InterventionError, match="k=5: LAPE gave spa_Latn only 4 units; lower k or raise top_rate"):
        Lape().build(scores, spanish, k=5)
    with pytest.raises(ExpertInputError, match="no LAPE ranking"):
        Lape().build(gpt2_scores, spanish, k=1)
    with pytest.raises(ExpertInputError, match=r"top_rate=0\.01, not 0\.05"):
        Lape(top_rate=0.05).build(scores, spanish, k=1)
    with pytest.raises(InterventionError, match="needs a LAPE unit set ranked by entropy"):
        Lape().build(gpt2_scores.select("es", 4), k=2)


# --- mean difference ---------------------------------------------------------------------------------------


def test_mean_difference_matches_a_per_sentence_loop(tiny_model: LensModel) -> None:
    model = tiny_model
    corpus = load_builtin(["en", "es"]).head(5)
    layer = model.n_layers - 1
    skip = 1 if model.prepend_bos and model.tokenizer.bos_token_id is not None else 0

    def brute(texts: list[str]) -> np.ndarray:
        means = []
        for text in texts:
            batch = model.tokenize([text])
            with torch.inference_mode():
                _, cache = model.bridge.run_with_cache(batch.tokens, names_filter=[model.resid_hook(layer)])
            acts = cache[model.resid_hook(layer)][0].double().numpy()
            means.append(acts[skip:].mean(axis=0))
        return np.mean(means, axis=0)

    steer = SteeringVector.mean_difference(model, corpus["en"], corpus["es"], layer, alpha=2.0, batch_size=2)
    expected = brute(corpus["es"]) - brute(corpus["en"])
    np.testing.assert_allclose(steer.vector.numpy(), expected, rtol=1e-4, atol=1e-5)
    assert steer.alpha == 2.0 and steer.hook_name == model.resid_hook(layer)
    np.testing.assert_allclose(
        mean_residual(model, corpus["en"], layer, batch_size=3).numpy(), brute(corpus["en"]), rtol=1e-4, atol=1e-5
    )
    between = SteeringVector.between_languages(model, corpus, "es", "en", block=layer)
    np.testing.assert_allclose(between.vector.numpy(), expected, rtol=1e-4, atol=1e-5)


# --- the registry of methods and errors ----------------------------------------------------------------------


def test_every_method_builds_through_the_registry(tiny_gpt2: LensModel, gpt2_scores: ExpertScores) -> None:
    assert methods()[:6] == ("force", "damp", "det0", "aura", "lape", "diffmean")
    force = spec_from_dict({"method": "force", "value": "on_mean"}).build(gpt2_scores, "es", 12)
    reference = Force(value="on_mean").build(gpt2_scores.select("es", 12))
    assert isinstance(force, SetUnits) and isinstance(reference, SetUnits)
    assert _per_unit(gpt2_scores.units, force.units, force.values) == _per_unit(
        gpt2_scores.units, reference.units, reference.values
    )
    det0 = spec_from_dict({"method": "det0"}).build(gpt2_scores, "es", 12)
    assert isinstance(det0, ScaleUnits)
    assert set(_per_unit(gpt2_scores.units, det0.units, det0.factors)) == set(
        _per_unit(gpt2_scores.units, force.units, force.values)
    )
    damp = spec_from_dict({"method": "damp", "alpha": 0.25}).build(gpt2_scores.select("es", 20), k=4)
    assert isinstance(damp, ScaleUnits) and damp.n_units == 4
    assert {round(float(f), 6) for f in torch.cat(list(damp.factors.values()))} == {0.25}
    corpus = load_builtin(["en", "es", "de"]).head(4)
    diff = spec_from_dict({"method": "diffmean", "alpha": 2.0}).build(language="es", model=tiny_gpt2, corpus=corpus)
    assert isinstance(diff, SteeringVector) and diff.block == tiny_gpt2.n_layers // 2 and diff.alpha == 2.0
    expected = SteeringVector.between_languages(tiny_gpt2, corpus, "es", alpha=2.0)
    torch.testing.assert_close(diff.vector, expected.vector)
    assert DiffMean(block=0, source=["de"]).to_dict() == {
        "method": "diffmean",
        "where": "all",
        "control": "none",
        "seed": 0,
        "alpha": 1.0,
        "block": 0,
        "source": ["de"],
    }


def test_specs_refuse_bad_settings_and_missing_inputs(tiny_gpt2: LensModel, gpt2_scores: ExpertScores) -> None:
    with pytest.raises(ConfigError, match="unknown intervention method 'ablate'; registered: force, damp"):
        spec_from_dict({"method": "ablate"})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['value'\] in \[intervene\]; allowed: method 'aura'"):
        spec_from_dict({"method": "aura", "value": "on_p50"})
    with pytest.raises(ConfigError, match=r"intervene.alpha = 'strong' \(str\): must be a number"):
        spec_from_dict({"method": "damp", "alpha": "strong"})
    with pytest.raises(ConfigError, match=r"intervene\.where = 'first'"):
        Force(where="first")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"intervene.top_rate = 2.0: must lie in \(0, 1\]"):
        Lape(top_rate=2.0)
    with pytest.raises(InterventionError, match="needs model="):
        DiffMean().build(language="es")
    with pytest.raises(InterventionError, match="needs language= and k="):
        Force().build(gpt2_scores, "es")
    with pytest.raises(InterventionError, match="not spa_Latn"):
        Force().build(gpt2_scores.select("de", 5), "es", k=3)
    with pytest.raises(InterventionError, match="k=9 is more than the 5 experts"):
        Force().build(gpt2_scores.select("de", 5), k=9)
    with pytest.raises(InterventionError, match="needs experts"):
        Det0().build(None, "es", k=3)


def test_experts_refuse_another_model_unless_asked(gpt2_scores: ExpertScores) -> None:
    other = load_model("tiny-gpt2", device="cpu", seed=1)  # same architecture and sizes, other weights
    with pytest.raises(ModelMismatchError, match=r"made with model 'tiny-gpt2'.*revision"):
        Force().build(gpt2_scores, "es", k=4, model=other)
    force = Force().build(gpt2_scores, "es", k=4)
    with pytest.raises(ModelMismatchError, match="this set intervention was made with model"):
        force.apply(other).__enter__()
    with pytest.raises(ModelMismatchError):
        embed_with(other, force)
    assert force.model == gpt2_scores.model
    with force.apply(other, check_model=False):  # an explicit transplant works
        pass
    with pytest.raises(ModelMismatchError, match="cannot check a bare TransformerLens model"):
        force.hooks(other.bridge)
    assert len(force.hooks(other.bridge, check_model=False)) == len(force.units)
    transplanted = Force().build(gpt2_scores, "es", k=4, model=other, check_model=False)
    assert isinstance(transplanted, SetUnits) and transplanted.model is None
    assert embed_with(other, transplanted).shape == (len(TEXTS), 1, other.d_model)  # usable everywhere from then on


def embed_with(model: LensModel, *interventions: Any) -> torch.Tensor:
    from xlens.embeddings import sentence_embeddings

    return sentence_embeddings(model, TEXTS, layers=[1], interventions=interventions, progress=False)


def test_bad_interventions_get_one_clear_error(tiny_gpt2: LensModel) -> None:
    hook = tiny_gpt2.mlp_hook(0)
    with pytest.raises(InterventionError, match="unknown hook"):
        SetUnits(
            {"blocks.99.mlp.hook_post": torch.tensor([0])}, {"blocks.99.mlp.hook_post": torch.tensor([1.0])}
        ).hooks(tiny_gpt2)
    with pytest.raises(InterventionError, match="2 units but 1 values"):
        SetUnits({hook: torch.tensor([0, 1])}, {hook: torch.tensor([1.0])})
    with pytest.raises(InterventionError, match="listed twice"):
        ScaleUnits({hook: torch.tensor([3, 3])}, {hook: torch.tensor([0.0, 0.5])})
    with pytest.raises(InterventionError, match="same hooks"):
        SetUnits({hook: torch.tensor([0])}, {tiny_gpt2.mlp_hook(1): torch.tensor([1.0])})
    with pytest.raises(InterventionError, match="where must be"):
        SetUnits({hook: torch.tensor([0])}, {hook: torch.tensor([1.0])}, where="first")  # type: ignore[arg-type]
    with pytest.raises(InterventionError, match="NaN"):
        SteeringVector(0, torch.tensor([float("nan")] * tiny_gpt2.d_model))
    with pytest.raises(InterventionError, match="dimensions"), apply(tiny_gpt2, SteeringVector(0, torch.ones(3))):
        logits(tiny_gpt2)
    with pytest.raises(InterventionError, match="expected an Intervention"):
        apply(tiny_gpt2, "force").__enter__()  # type: ignore[arg-type]


def _ml_aura_alpha(auroc: torch.Tensor, intervention: str, num_experts: int | None, damp_alpha: float = 0.5) -> Any:
    """apple/ml-aura, scripts/learn_aura.py, restated: the threshold (0.5 for aura; for det0/damp the AUROC of
    the (num_experts + 1)-th unit of the model, sorted), then alpha per unit above it."""
    if intervention == "aura":
        threshold = 0.5
    else:
        threshold = float(torch.sort(auroc, descending=True).values[num_experts]) if num_experts else 0.5
    alpha = torch.ones_like(auroc, dtype=torch.float32)
    mask = auroc > threshold
    alpha[mask] = {"aura": 1 - 2 * (auroc[mask] - 0.5), "damp": damp_alpha, "det0": 0.0}[intervention]
    return alpha


@pytest.mark.parametrize(("method", "k"), [("aura", None), ("det0", 12), ("damp", 12)])
def test_aura_det0_and_damp_are_ml_auras_factors_when_ranked_by_auroc(
    method: str, k: int | None, gpt2_scores: ExpertScores
) -> None:
    """On the same AUROC scores: xlens's factors (ranking by AUROC, as ml-aura does; xlens ranks by AP unless
    rank_by = "auroc") against the reference's alpha for every unit of the model."""
    auroc = gpt2_scores.auroc[gpt2_scores.lang_index("es")]
    if k is not None:  # a k whose boundary is no tie: there both select the same units (ties are broken apart)
        ranked = torch.sort(auroc, descending=True).values
        k = next(n for n in range(k, len(ranked)) if ranked[n - 1] > ranked[n])
    expected = _ml_aura_alpha(auroc, method, k)
    spec = {"aura": Aura(), "det0": Det0(rank_by="auroc"), "damp": Damp(rank_by="auroc")}[method]
    built = spec.build(gpt2_scores, "es", k=k)
    assert isinstance(built, ScaleUnits)
    got = torch.ones_like(auroc)
    for unit, factor in _per_unit(gpt2_scores.units, built.units, built.factors).items():
        got[unit] = factor
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert int((expected != 1).sum()) == (k or int((auroc > 0.5).sum()))
