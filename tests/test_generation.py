from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from xlens.data import load_builtin
from xlens.generation import (
    BUILTIN_PROMPTS,
    GenerationError,
    generate,
    language_id,
    load_prompts,
    perplexity,
    target_language_rate,
)
from xlens.interventions import (
    Intervention,
    ScaleUnits,
    SetUnits,
    SteeringVector,
    TokenPositions,
    apply,
    token_positions,
)
from xlens.models import LensModel

PROMPTS = ["The weather this morning was", "Hi", "My neighbour has a dog that barks at night"]


def manual_greedy(model: LensModel, prompt: str, n: int, interventions: Sequence[Intervention]) -> str:
    """Reference: one unpadded prompt, full logits, argmax of the last column, no batching, no logits_to_keep."""
    tokens = model.tokenize([prompt]).tokens
    width = tokens.shape[1]
    hooks = [h for iv in interventions for h in iv.hooks(model)]
    with torch.inference_mode(), token_positions(TokenPositions.generating(width, 1)):
        for _ in range(n):
            logits = model.bridge.run_with_hooks(tokens, fwd_hooks=hooks)
            tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return model.tokenizer.decode(tokens[0, width:], skip_special_tokens=True)


def interventions_for(model: LensModel) -> list[SetUnits | ScaleUnits | SteeringVector]:
    hook = model.mlp_hook(0)
    return [
        SetUnits({hook: torch.tensor([0, 4, 9])}, {hook: torch.tensor([3.0, -2.0, 1.0])}, where="prompt"),
        ScaleUnits(
            {model.mlp_hook(1): torch.tensor([2, 3])}, {model.mlp_hook(1): torch.tensor([0.0, 4.0])}, where="last"
        ),
        SteeringVector(0, torch.linspace(-2, 2, model.d_model)),
    ]


def test_greedy_generation_equals_a_manual_loop(tiny_model: LensModel) -> None:
    ivs = interventions_for(tiny_model)
    got = generate(tiny_model, PROMPTS, 6, interventions=ivs, stop_at_eos=False)
    expected = [manual_greedy(tiny_model, p, 6, ivs) for p in PROMPTS]
    assert got == expected
    plain = generate(tiny_model, PROMPTS, 6, stop_at_eos=False)
    assert plain == [manual_greedy(tiny_model, p, 6, []) for p in PROMPTS]
    assert plain != got  # the interventions change the continuations


def test_generation_does_not_depend_on_the_batch(tiny_gpt2: LensModel) -> None:
    ivs = interventions_for(tiny_gpt2)
    one_by_one = generate(tiny_gpt2, PROMPTS, 5, interventions=ivs, batch_size=1)
    assert generate(tiny_gpt2, PROMPTS, 5, interventions=ivs, batch_size=3) == one_by_one
    assert generate(tiny_gpt2, PROMPTS, 5, interventions=ivs, batch_size=2) == one_by_one


def test_seeded_sampling_is_reproducible(tiny_gpt2: LensModel) -> None:
    a = generate(tiny_gpt2, PROMPTS, 5, greedy=False, seed=3)
    assert generate(tiny_gpt2, PROMPTS, 5, greedy=False, seed=3) == a
    assert generate(tiny_gpt2, PROMPTS, 5, greedy=False, seed=4) != a
    nucleus = generate(tiny_gpt2, PROMPTS, 5, greedy=False, top_p=0.8, temperature=0.7, seed=3)
    assert generate(tiny_gpt2, PROMPTS, 5, greedy=False, top_p=0.8, temperature=0.7, seed=3) == nucleus
    # A nucleus that holds only the most likely token is greedy decoding.
    assert generate(tiny_gpt2, PROMPTS, 5, greedy=False, top_p=1e-9, seed=5) == generate(tiny_gpt2, PROMPTS, 5)


def test_generation_stops_at_eos(tiny_gpt2: LensModel) -> None:
    eos = tiny_gpt2.tokenizer.eos_token_id
    z = tiny_gpt2.tokenizer("Z", add_special_tokens=False)["input_ids"][0]
    calls: list[None] = []

    def script(logits: torch.Tensor, hook: Any) -> torch.Tensor:
        # One forward pass per generated token: batch row 0 (the longest prompt: batches are sorted by length)
        # gets EOS as its third token, and "Z" as its fourth.
        calls.append(None)
        out = logits.clone()
        if len(calls) in (3, 4):
            out[0, :, eos if len(calls) == 3 else z] = 1e4
        return out

    stopped = generate(tiny_gpt2, PROMPTS, 6, interventions=[("unembed.hook_out", script)])
    calls.clear()
    going_on = generate(tiny_gpt2, PROMPTS, 6, interventions=[("unembed.hook_out", script)], stop_at_eos=False)
    plain = generate(tiny_gpt2, PROMPTS, 6)
    two = generate(tiny_gpt2, PROMPTS, 2)
    row = PROMPTS.index(max(PROMPTS, key=len))
    others = [i for i in range(len(PROMPTS)) if i != row]
    assert stopped[row] == two[row]  # EOS is dropped and nothing follows it
    assert [stopped[i] for i in others] == [plain[i] for i in others]  # a finished row does not disturb the others
    assert going_on[row].startswith(two[row] + "Z")
    assert generate(tiny_gpt2, PROMPTS, 0) == ["", "", ""]


def test_perplexity_matches_a_per_sentence_brute_force(tiny_model: LensModel) -> None:
    texts = load_builtin(["en"])["en"][:5]
    hook = tiny_model.mlp_hook(0)
    prompt = SetUnits({hook: torch.tensor([1, 2])}, {hook: torch.tensor([5.0, 5.0])}, where="prompt")
    last = SetUnits({hook: torch.tensor([1, 2])}, {hook: torch.tensor([5.0, 5.0])}, where="last")

    def brute(interventions: list[Intervention]) -> float:
        total, count = 0.0, 0
        for text in texts:
            tokens = tiny_model.tokenize([text]).tokens
            with torch.inference_mode(), apply(tiny_model, *interventions):  # one unpadded row: last = final column
                logp = torch.log_softmax(tiny_model.bridge(tokens)[0].double(), dim=-1)
            total -= sum(float(logp[i, tokens[0, i + 1]]) for i in range(tokens.shape[1] - 1))
            count += tokens.shape[1] - 1
        return math.exp(total / count)

    plain = brute([])
    assert perplexity(tiny_model, texts, batch_size=3) == pytest.approx(plain, rel=1e-5)
    with_force = perplexity(tiny_model, texts, interventions=[prompt], batch_size=4)
    assert with_force == pytest.approx(brute([prompt]), rel=1e-5)
    assert with_force != pytest.approx(plain, rel=1e-4)
    # The last real token predicts nothing that is scored: forcing only it leaves perplexity unchanged.
    assert perplexity(tiny_model, texts, interventions=[last], batch_size=4) == pytest.approx(plain, rel=1e-5)


def test_language_id_on_real_sentences() -> None:
    corpus = load_builtin(["en", "es", "de", "fr", "ja", "zh", "ru"])
    rows = [i for i in range(40) if all(len(corpus[lang][i]) > 25 for lang in ("en", "es", "de", "fr"))][:5]
    for lang in corpus.languages:
        texts = [corpus[lang][i] for i in rows]
        assert language_id(texts) == [lang] * len(texts), lang
        assert target_language_rate(texts, lang) == 1.0
    mixed = [corpus["es"][rows[0]], corpus["en"][rows[0]], "   ", corpus["es"][rows[1]]]
    assert language_id(mixed) == ["spa_Latn", "eng_Latn", "und", "spa_Latn"]
    assert target_language_rate(mixed, "es") == 0.5
    assert target_language_rate(mixed, "Spanish") == 0.5


def test_load_prompts(tmp_path: Path) -> None:
    assert load_prompts("builtin") == list(BUILTIN_PROMPTS)
    assert len(BUILTIN_PROMPTS) == 30 and len(set(BUILTIN_PROMPTS)) == 30
    assert language_id(list(BUILTIN_PROMPTS)).count("eng_Latn") >= 25
    path = tmp_path / "prompts.txt"
    path.write_text("First prompt\n\n  Second prompt  \n")
    assert load_prompts(path) == ["First prompt", "Second prompt"]
    assert load_prompts(str(path)) == ["First prompt", "Second prompt"]
    assert load_prompts(["a", "b"]) == ["a", "b"]
    with pytest.raises(GenerationError, match="not a file"):
        load_prompts(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(GenerationError, match="no prompts"):
        load_prompts(tmp_path / "empty.txt")
    with pytest.raises(GenerationError, match="non-empty"):
        load_prompts(["a", " "])


def test_bad_generation_input_gets_one_clear_error(tiny_gpt2: LensModel) -> None:
    with pytest.raises(GenerationError, match="wrap a single prompt"):
        generate(tiny_gpt2, "hello", 3)  # type: ignore[arg-type]
    with pytest.raises(GenerationError, match="non-empty"):
        generate(tiny_gpt2, [], 3)
    with pytest.raises(GenerationError, match="max_new_tokens"):
        generate(tiny_gpt2, ["a"], -1)
    with pytest.raises(GenerationError, match="temperature"):
        generate(tiny_gpt2, ["a"], 3, greedy=False, temperature=0)
    with pytest.raises(GenerationError, match="top_p"):
        generate(tiny_gpt2, ["a"], 3, greedy=False, top_p=1.5)
    with pytest.raises(GenerationError, match="non-empty list"):
        perplexity(tiny_gpt2, [])
    with pytest.raises(GenerationError, match="non-empty list"):
        target_language_rate([], "es")
