from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xlens.activations import UnitIndex
from xlens.data import load_builtin
from xlens.experts.lape import LapeResult
from xlens.experts.sets import ExpertScores, find_experts
from xlens.interventions import (
    Dampen,
    Force,
    InterventionError,
    Steer,
    TokenPositions,
    apply,
    aura_factors,
    build_intervention,
    lape_deactivate,
    mean_residual,
    token_positions,
)
from xlens.models import LensModel

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
    force = Force({hook: units}, {hook: values})
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
    damped = record(model, names, Dampen({hook: units}, {hook: factors}))
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
    forced = record(model, [hook], Force({hook: torch.tensor([unit])}, {hook: torch.tensor([7.0])}))[hook]
    assert torch.equal(forced[:, :, 1, 3], torch.full(forced.shape[:2], 7.0))
    changed = (forced != base).reshape(*base.shape[:2], n_heads * d_head).any(dim=(0, 1))
    assert changed.nonzero().flatten().tolist() == [unit]


def test_steer_adds_alpha_times_vector_to_the_residual(tiny_model: LensModel) -> None:
    model = tiny_model
    vector = torch.linspace(-1, 1, model.d_model)
    names = all_hooks(model)
    base = record(model, names)
    steered = record(model, names, Steer(0, vector, alpha=3.0))
    assert torch.equal(base[model.mlp_hook(0)], steered[model.mlp_hook(0)])
    torch.testing.assert_close(steered[model.resid_hook(0)], base[model.resid_hook(0)] + 3.0 * vector)
    assert not torch.allclose(base[model.mlp_hook(1)], steered[model.mlp_hook(1)])


# --- leaving the context restores the model ----------------------------------------------------------------


def test_leaving_the_context_restores_bit_identical_logits(tiny_model: LensModel) -> None:
    model = tiny_model
    before = logits(model)
    force = Force({model.mlp_hook(0): torch.tensor([0, 1, 2])}, {model.mlp_hook(0): torch.tensor([5.0, 5.0, 5.0])})
    steer = Steer(model.n_layers - 1, torch.ones(model.d_model))
    with force.apply(model):
        inside = logits(model)
    assert not torch.allclose(before, inside)
    assert torch.equal(before, logits(model))

    with pytest.raises(RuntimeError, match="boom"), apply(model, force, steer):
        raise RuntimeError("boom")
    assert torch.equal(before, logits(model))

    # An intervention failing inside the forward pass is removed as well.
    broken = Force({model.mlp_hook(0): torch.tensor([10**6])}, {model.mlp_hook(0): torch.tensor([1.0])})
    with pytest.raises(InterventionError, match="out of range"), apply(model, steer, broken):
        logits(model)
    assert torch.equal(before, logits(model))


def test_hooks_work_with_run_with_hooks_and_run_with_cache(tiny_gpt2: LensModel) -> None:
    model = tiny_gpt2
    hook = model.mlp_hook(1)
    force = Force({hook: torch.tensor([4])}, {hook: torch.tensor([1.5])})
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
    force = Force({hook: torch.tensor([2, 3])}, {hook: torch.tensor([4.0, -1.0])})
    dampen = Dampen({hook: torch.tensor([3, 6])}, {hook: torch.tensor([0.5, 0.25])})
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
    forced = record(model, [hook], Force({hook: torch.tensor([5])}, {hook: torch.tensor([9.0])}, where=where))[hook]  # type: ignore[arg-type]
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
    force = Force(
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
        force = Force({hook: torch.tensor([0])}, {hook: torch.tensor([42.0])}, where=where)  # type: ignore[arg-type]
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
    force = Force({hook: torch.tensor([0])}, {hook: torch.tensor([1.0])}, where="last")
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
        force = Force.from_experts(experts, k=20, value=value)
        expected = {int(u): float(gpt2_scores.stats[value][li, u]) for u in experts.units[:20]}
        got = _per_unit(index, force.units, force.values)
        assert got.keys() == expected.keys()
        assert all(got[u] == pytest.approx(v, abs=1e-6) for u, v in expected.items())
    zero = Force.from_experts(experts, k=5, value="zero")
    assert set(_per_unit(index, zero.units, zero.values).values()) == {0.0}
    custom = Force.from_experts(experts, k=3, value=torch.tensor([1.0, 2.0, 3.0]))
    assert _per_unit(index, custom.units, custom.values) == {
        int(u): float(i + 1) for i, u in enumerate(experts.units[:3])
    }
    with pytest.raises(InterventionError, match="unknown value"):
        Force.from_experts(experts, k=3, value="median")
    with pytest.raises(InterventionError, match="2 entries for 3"):
        Force.from_experts(experts, k=3, value=torch.tensor([1.0, 2.0]))


def test_aura_factors_match_the_formula(gpt2_scores: ExpertScores) -> None:
    li = gpt2_scores.lang_index("de")
    auroc = gpt2_scores.auroc[li].numpy().astype(np.float64)
    aura = Dampen.aura(gpt2_scores, "de")
    got = _per_unit(gpt2_scores.units, aura.units, aura.factors)
    expected = {u: 1 - 2 * (a - 0.5) for u, a in enumerate(auroc) if a > 0.5}
    assert got.keys() == expected.keys()
    assert all(got[u] == pytest.approx(v, abs=1e-6) for u, v in expected.items())
    # k keeps the highest-AUROC units.
    top = Dampen.aura(gpt2_scores, "de", k=10)
    assert set(_per_unit(gpt2_scores.units, top.units, top.factors)) == set(np.argsort(-auroc, kind="stable")[:10])
    # From an expert set: its units with AUROC > 0.5 only.
    experts = gpt2_scores.select("de", 40)
    from_set = Dampen.aura(experts)
    kept = {int(u): 1 - 2 * (float(a) - 0.5) for u, a in zip(experts.units, experts.auroc, strict=True) if a > 0.5}
    got_set = _per_unit(gpt2_scores.units, from_set.units, from_set.factors)
    assert got_set.keys() == kept.keys()
    assert all(got_set[u] == pytest.approx(v, abs=1e-6) for u, v in kept.items())
    assert aura_factors(torch.tensor([0.2, 0.5, 0.75, 1.0])).tolist() == [1.0, 1.0, 0.5, 0.0]


def test_aura_dampens_the_model_by_its_factors(tiny_gpt2: LensModel, gpt2_scores: ExpertScores) -> None:
    aura = Dampen.aura(gpt2_scores, "es", k=8)
    assert aura.n_units == 8
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
    det0 = Dampen.det0(experts, k=10)
    assert det0.n_units == 10
    assert set(_per_unit(gpt2_scores.units, det0.units, det0.factors).values()) == {0.0}
    damp = Dampen.damp(experts, 0.3)
    assert set(_per_unit(gpt2_scores.units, damp.units, damp.factors)) == {int(u) for u in experts.units}
    assert {round(v, 6) for v in _per_unit(gpt2_scores.units, damp.units, damp.factors).values()} == {0.3}


def test_lape_deactivate_zeroes_the_languages_units(tiny_gpt2: LensModel) -> None:
    index = UnitIndex(tuple(tiny_gpt2.mlp_hooks), (tiny_gpt2.d_mlp,) * tiny_gpt2.n_layers)
    n = index.n_units
    assignment = torch.zeros(2, n, dtype=torch.bool)
    assignment[1, [3, 70, 100, 127]] = True
    entropy = torch.rand(n, generator=torch.Generator().manual_seed(0)).double()
    result = LapeResult(torch.zeros(2, n), entropy, torch.tensor([3, 70, 100, 127]), assignment, 0.1, 0.2)
    off = lape_deactivate(result, 1, index)
    assert _per_unit(index, off.units, off.factors) == {3: 0.0, 70: 0.0, 100: 0.0, 127: 0.0}
    two = lape_deactivate(result, 1, index, k=2)
    lowest = sorted([3, 70, 100, 127], key=lambda u: float(entropy[u]))[:2]
    assert set(_per_unit(index, two.units, two.factors)) == set(lowest)
    with pytest.raises(InterventionError, match="no unit"):
        lape_deactivate(result, 0, index)


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

    steer = Steer.mean_difference(model, corpus["en"], corpus["es"], layer, alpha=2.0, batch_size=2)
    expected = brute(corpus["es"]) - brute(corpus["en"])
    np.testing.assert_allclose(steer.vector.numpy(), expected, rtol=1e-4, atol=1e-5)
    assert steer.alpha == 2.0 and steer.hook_name == model.resid_hook(layer)
    np.testing.assert_allclose(
        mean_residual(model, corpus["en"], layer, batch_size=3).numpy(), brute(corpus["en"]), rtol=1e-4, atol=1e-5
    )
    between = Steer.between_languages(model, corpus, "es", "en", layer=layer)
    np.testing.assert_allclose(between.vector.numpy(), expected, rtol=1e-4, atol=1e-5)


# --- build_intervention and errors -------------------------------------------------------------------------


def test_build_intervention_methods(tiny_gpt2: LensModel, gpt2_scores: ExpertScores) -> None:
    force = build_intervention("force", scores=gpt2_scores, language="es", k=12)
    reference = Force.from_experts(gpt2_scores.select("es", 12), None, "on_p50")
    assert isinstance(force, Force)
    assert _per_unit(gpt2_scores.units, force.units, force.values) == _per_unit(
        gpt2_scores.units, reference.units, reference.values
    )
    det0 = build_intervention("det0", scores=gpt2_scores, language="es", k=12)
    assert isinstance(det0, Dampen) and set(_per_unit(gpt2_scores.units, det0.units, det0.factors)) == set(
        _per_unit(gpt2_scores.units, force.units, force.values)
    )
    damp = build_intervention("damp", experts=gpt2_scores.select("es", 20), k=4)
    assert isinstance(damp, Dampen) and damp.n_units == 4
    assert {round(float(f), 6) for f in torch.cat(list(damp.factors.values()))} == {0.5}
    aura_all = build_intervention("aura", scores=gpt2_scores, language="es")
    assert isinstance(aura_all, Dampen)
    assert aura_all.n_units == int((gpt2_scores.auroc[gpt2_scores.lang_index("es")] > 0.5).sum())
    diff = build_intervention(
        "diffmean", model=tiny_gpt2, corpus=load_builtin(["en", "es", "de"]).head(4), language="es", alpha=2.0
    )
    assert isinstance(diff, Steer) and diff.layer == tiny_gpt2.n_layers // 2 and diff.alpha == 2.0

    from xlens.activations import collect_corpus_responses

    responses = collect_corpus_responses(
        tiny_gpt2, load_builtin(["en", "es"]).head(8), pooling=["mean", "active"], progress=False
    )
    lape_iv = build_intervention("lape", language="es", responses=responses)
    assert isinstance(lape_iv, Dampen) and lape_iv.n_units > 0
    assert set(torch.cat(list(lape_iv.factors.values())).tolist()) == {0.0}

    with pytest.raises(InterventionError, match="unknown intervention method"):
        build_intervention("ablate", scores=gpt2_scores, language="es", k=3)
    with pytest.raises(InterventionError, match="needs model"):
        build_intervention("diffmean", language="es")
    with pytest.raises(InterventionError, match="needs k"):
        build_intervention("force", scores=gpt2_scores, language="es")
    with pytest.raises(InterventionError, match="not spa_Latn"):
        build_intervention("force", experts=gpt2_scores.select("de", 5), language="es", k=3)
    with pytest.raises(InterventionError, match="'active' pooling"):
        build_intervention("lape", language="es", scores=gpt2_scores)


def test_bad_interventions_get_one_clear_error(tiny_gpt2: LensModel) -> None:
    hook = tiny_gpt2.mlp_hook(0)
    with pytest.raises(InterventionError, match="unknown hook"):
        Force({"blocks.99.mlp.hook_post": torch.tensor([0])}, {"blocks.99.mlp.hook_post": torch.tensor([1.0])}).hooks(
            tiny_gpt2
        )
    with pytest.raises(InterventionError, match="2 units but 1 values"):
        Force({hook: torch.tensor([0, 1])}, {hook: torch.tensor([1.0])})
    with pytest.raises(InterventionError, match="listed twice"):
        Dampen({hook: torch.tensor([3, 3])}, {hook: torch.tensor([0.0, 0.5])})
    with pytest.raises(InterventionError, match="same hooks"):
        Force({hook: torch.tensor([0])}, {tiny_gpt2.mlp_hook(1): torch.tensor([1.0])})
    with pytest.raises(InterventionError, match="where must be"):
        Force({hook: torch.tensor([0])}, {hook: torch.tensor([1.0])}, where="first")  # type: ignore[arg-type]
    with pytest.raises(InterventionError, match="NaN"):
        Steer(0, torch.tensor([float("nan")] * tiny_gpt2.d_model))
    with pytest.raises(InterventionError, match="dimensions"), apply(tiny_gpt2, Steer(0, torch.ones(3))):
        logits(tiny_gpt2)
    with pytest.raises(InterventionError, match="expected an Intervention"):
        apply(tiny_gpt2, "force").__enter__()  # type: ignore[arg-type]
