"""Sentence embeddings per layer: pooling over real tokens vs brute force, layer convention, hooks composing."""

from __future__ import annotations

import pytest
import torch

import xlens
from xlens.embeddings import sentence_embeddings
from xlens.errors import NonFiniteError
from xlens.models import LensModel

TEXTS = ["A short one.", "Una frase bastante más larga que la primera, con comas.", "短い文です。", "Mittel lang."]


def brute_force(model: LensModel, text: str) -> torch.Tensor:
    """[layer, token, d_model] hidden states of one unpadded sentence, from the HF model's hidden_states."""
    batch = model.tokenize([text])
    with torch.inference_mode():
        out = model.bridge.original_model(input_ids=batch.tokens, output_hidden_states=True)
    # HF applies the final norm to its last hidden state; the residual stream before it is what xlens reads.
    with torch.inference_mode():
        _, cache = model.bridge.run_with_cache(batch.tokens, names_filter=[model.resid_hook(model.n_layers - 1)])
    states = [h[0] for h in out.hidden_states[:-1]] + [cache[model.resid_hook(model.n_layers - 1)][0]]
    return torch.stack(states)


@pytest.mark.parametrize("pooling", ["mean", "last", "weighted"])
def test_matches_hidden_states(tiny_model: LensModel, pooling: str) -> None:
    emb = sentence_embeddings(tiny_model, TEXTS, pooling=pooling, batch_size=3, progress=False)
    assert emb.shape == (len(TEXTS), tiny_model.n_layers + 1, tiny_model.d_model)
    for i, text in enumerate(TEXTS):
        states = brute_force(tiny_model, text)
        n = states.shape[1]
        if pooling == "mean":
            expected = states.mean(1)
        elif pooling == "last":
            expected = states[:, -1]
        else:
            w = torch.arange(1, n + 1, dtype=states.dtype)
            expected = (states * w[None, :, None]).sum(1) / w.sum()
        torch.testing.assert_close(emb[i], expected.float(), atol=1e-4, rtol=1e-4)


def test_layer_subset_and_order(tiny_gpt2: LensModel) -> None:
    every = sentence_embeddings(tiny_gpt2, TEXTS, progress=False)
    some = sentence_embeddings(tiny_gpt2, TEXTS, layers=[2, 0], progress=False)
    torch.testing.assert_close(some[:, 0], every[:, 2])
    torch.testing.assert_close(some[:, 1], every[:, 0])
    # Layer 0 alone stops the pass at the first block's input.
    torch.testing.assert_close(sentence_embeddings(tiny_gpt2, TEXTS, layers=[0], progress=False)[:, 0], every[:, 0])
    hooks = [tiny_gpt2.embedding_hook(layer) for layer in tiny_gpt2.embedding_layers]
    assert hooks == ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


def test_raw_hooks_run_before_reading(tiny_gpt2: LensModel) -> None:
    def zero(act: torch.Tensor, hook: object) -> torch.Tensor:
        return torch.zeros_like(act)

    emb = sentence_embeddings(tiny_gpt2, TEXTS, interventions=[("blocks.0.hook_resid_post", zero)], progress=False)
    base = sentence_embeddings(tiny_gpt2, TEXTS, progress=False)
    assert torch.count_nonzero(emb[:, 1]) == 0
    torch.testing.assert_close(emb[:, 0], base[:, 0])  # upstream layer untouched
    assert not torch.allclose(emb[:, 2], base[:, 2])


def test_bad_input(tiny_gpt2: LensModel) -> None:
    with pytest.raises(ValueError, match="no sentences"):
        sentence_embeddings(tiny_gpt2, [], progress=False)
    with pytest.raises(ValueError, match=r"embedding layers are 0\.\.2"):
        sentence_embeddings(tiny_gpt2, TEXTS, layers=[3], progress=False)
    with pytest.raises(ValueError, match="unknown embedding pooling"):
        sentence_embeddings(tiny_gpt2, TEXTS, pooling="max", progress=False)
    with pytest.raises(TypeError, match="not a single string"):
        sentence_embeddings(tiny_gpt2, "text", progress=False)  # type: ignore[arg-type]


def test_non_finite_hidden_states_name_the_hook_the_dtype_and_the_fix(tiny_gpt2: LensModel) -> None:
    texts = ["a short sentence", "another one"]
    blow_up = ("blocks.0.hook_resid_post", lambda act, hook: act * float("inf"))
    with pytest.raises(
        NonFiniteError, match=r"nan or infinite at blocks\.0\.hook_resid_post \(embedding layer 1\) in float32: an "
    ):
        sentence_embeddings(tiny_gpt2, texts, interventions=[blow_up], progress=False)
    half = xlens.load_model("tiny-gpt2", dtype="float16", device="cpu")
    overflow = ("blocks.0.hook_resid_post", lambda act, hook: act * 1e9)  # beyond float16's 65504
    with pytest.raises(NonFiniteError, match=r"in float16: float16 overflows .* float32 or bfloat16"):
        sentence_embeddings(half, texts, layers=[1], interventions=[overflow], progress=False)
    assert torch.isfinite(sentence_embeddings(tiny_gpt2, texts, progress=False)).all()
