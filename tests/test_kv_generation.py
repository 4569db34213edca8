"""KV-cached generation against the full-forward loop, under every intervention type of the registry."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from xlens.data import load_builtin
from xlens.experts.sets import ExpertScores, find_experts
from xlens.generation import generate
from xlens.interventions import (
    Aura,
    Damp,
    Det0,
    DiffMean,
    Force,
    Intervention,
    Lape,
    TokenPositions,
    apply,
    token_positions,
)
from xlens.interventions.registry import methods, spec_class
from xlens.models import LensModel

PROMPTS = ["The weather this morning was", "Hi", "My neighbour has a dog that barks at night", "On rainy days"]


def registry_interventions(model: LensModel, k: int) -> dict[str, list[Intervention]]:
    """No intervention and every method xlens registers, on Spanish, built by the registry's specs as `xlens run`
    builds them."""
    corpus = load_builtin(["en", "es", "de"]).head(12)
    scores: ExpertScores = find_experts(model, corpus, lape_top_rate=0.2, progress=False)
    return {
        "none": [],
        "force": [Force(value="on_mean").build(scores, "es", k, model=model)],
        "damp": [Damp(alpha=0.25).build(scores, "es", k, model=model)],
        "det0": [Det0().build(scores, "es", k, model=model)],
        "aura": [Aura().build(scores, "es", k, model=model)],
        "lape": [Lape(top_rate=0.2).build(scores, "es", model=model)],
        "diffmean": [DiffMean(alpha=4.0).build(None, "es", model=model, corpus=corpus)],
    }


def next_logits(model: LensModel, ivs: list[Intervention]) -> torch.Tensor:
    batch = model.tokenize(PROMPTS, padding="left")
    positions = TokenPositions.generating(batch.tokens.shape[1], len(PROMPTS))
    with torch.inference_mode(), apply(model, *ivs), token_positions(positions):
        return model.logits_at_last(batch)


def columns_seen(model: LensModel) -> tuple[list[int], Any]:
    """A raw hook recording how many columns each forward pass runs on."""
    widths: list[int] = []

    def record(act: torch.Tensor, hook: Any) -> None:
        widths.append(act.shape[1])

    return widths, (model.resid_hook(0), record)


def test_cached_greedy_tokens_equal_the_full_forward_loop(tiny_model: LensModel) -> None:
    by_method = registry_interventions(tiny_model, k=24)
    # A method added to xlens' registry must be added here too.
    assert set(by_method) == {"none"} | {m for m in methods() if spec_class(m).__module__.startswith("xlens.")}
    for method, ivs in by_method.items():
        cached = generate(tiny_model, PROMPTS, 8, interventions=ivs, batch_size=4, stop_at_eos=False)
        full = generate(tiny_model, PROMPTS, 8, interventions=ivs, batch_size=4, stop_at_eos=False, kv_cache=False)
        assert cached == full, method
    # Every intervention changes the next-token logits, so the comparison above is not between unhooked runs
    # (tiny random models often keep their argmax tokens).
    plain = next_logits(tiny_model, [])
    for method in set(by_method) - {"none"}:
        assert not torch.allclose(next_logits(tiny_model, by_method[method]), plain, atol=1e-4), method


def test_cached_steps_run_on_the_new_token_only(tiny_gpt2: LensModel) -> None:
    widths, hook = columns_seen(tiny_gpt2)
    generate(tiny_gpt2, PROMPTS, 5, interventions=[hook], batch_size=4, stop_at_eos=False)
    width = tiny_gpt2.tokenize(PROMPTS).tokens.shape[1]
    assert widths == [width, 1, 1, 1, 1]
    widths.clear()
    generate(tiny_gpt2, PROMPTS, 5, interventions=[hook], batch_size=4, stop_at_eos=False, kv_cache=False)
    assert widths == [width + i for i in range(5)]


def test_stop_string_cuts_and_ends_rows(tiny_gpt2: LensModel) -> None:
    plain = generate(tiny_gpt2, PROMPTS, 10, stop_at_eos=False)
    # A stop string taken from inside one continuation: that row is cut before it, the others are unchanged
    # unless they contain it too.
    row = next(i for i, t in enumerate(plain) if len(t.strip()) > 4)
    stop = plain[row].strip()[2:4]
    got = generate(tiny_gpt2, PROMPTS, 10, stop_at_eos=False, stop=stop)
    for text, full in zip(got, plain, strict=True):
        assert text == full.split(stop, 1)[0]
    assert stop not in got[row] and got[row] != plain[row]


@pytest.fixture(scope="module")
def embedded_interventions(embedded: LensModel) -> dict[str, list[Intervention]]:
    return registry_interventions(embedded, k=200)


def test_cached_generation_on_the_embedded_model(
    embedded: LensModel, embedded_interventions: dict[str, list[Intervention]]
) -> None:
    by_method = embedded_interventions
    texts = {}
    for method, ivs in by_method.items():
        cached = generate(embedded, PROMPTS, 6, interventions=ivs, batch_size=4, stop_at_eos=False)
        full = generate(embedded, PROMPTS, 6, interventions=ivs, batch_size=4, stop_at_eos=False, kv_cache=False)
        assert cached == full, method
        assert all(text.strip() for text in cached), method
        texts[method] = cached
    assert all(texts[m] != texts["none"] for m in ("force", "diffmean"))


def test_cached_generation_beyond_the_sliding_window(
    embedded: LensModel, embedded_interventions: dict[str, list[Intervention]]
) -> None:
    # A prompt longer than Gemma-3's 512-token sliding window: its local layers must drop the oldest keys, in the
    # cache as in a full pass; batched with a short prompt, so the long row is the one without left padding.
    long_prompt = " ".join(["The market opens early on Saturdays and the farmers bring fresh bread."] * 40)
    assert 512 < embedded.tokenize([long_prompt]).tokens.shape[1] < 540
    prompts = [long_prompt, PROMPTS[1]]
    for interventions in ([], embedded_interventions["force"]):
        cached = generate(embedded, prompts, 3, interventions=interventions, stop_at_eos=False)
        full = generate(embedded, prompts, 3, interventions=interventions, stop_at_eos=False, kv_cache=False)
        assert cached == full
