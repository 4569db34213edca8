"""A sentence's numbers do not depend on its batch, on every tiny architecture and backend: embeddings, pooled
responses (right padding), next-token logits and greedy continuations (left padding), with and without an
intervention. The learned positional embeddings are amplified so that a row read at the wrong positions would
change its tokens (relative schemes, RoPE and ALiBi, do not see a shifted row; absolute ones do)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import xlens
from xlens.activations import collect_responses
from xlens.embeddings import sentence_embeddings
from xlens.generation import generate
from xlens.models import LensModel

TEXTS = ["a", "the quick brown fox jumps over the lazy dog again", "hello there world", "x y"]
MODELS = [
    ("tiny-gpt2", "bridge"),
    ("tiny-gpt2", "hf"),
    ("tiny-gemma3", "bridge"),
    ("tiny-gemma3", "hf"),
    ("tiny-bloom", "bridge"),
    ("tiny-bloom", "hf"),
    ("tiny-cohere", "bridge"),
    ("tiny-cohere", "hf"),
    ("tiny-biogpt", "hf"),  # no TransformerLens adapter; transformers derives its positions from an arange
]


@pytest.fixture(scope="module", params=MODELS, ids=[f"{n}-{b}" for n, b in MODELS])
def model(request: pytest.FixtureRequest) -> LensModel:
    name, backend = request.param
    lens = xlens.load_model(name, backend=backend, device="cpu")
    with torch.no_grad():
        for path, weight in lens.bridge.original_model.named_parameters():
            if any(part in path for part in ("wpe", "embed_positions")):
                weight.mul_(30)  # positions now dominate the tiny model's residual stream
    return lens


def _interventions(with_one: bool) -> list[Any]:
    return [("blocks.0.hook_resid_post", lambda act, hook: act * 1.5)] if with_one else []


@pytest.mark.parametrize("intervened", [False, True], ids=["plain", "intervened"])
def test_a_sentences_numbers_are_the_same_alone_and_in_any_batch(model: LensModel, intervened: bool) -> None:
    ivs = _interventions(intervened)
    alone = torch.cat([sentence_embeddings(model, [t], interventions=ivs, progress=False) for t in TEXTS])
    batched = sentence_embeddings(model, TEXTS, interventions=ivs, batch_size=4, progress=False)
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=1e-4)
    shuffled = sentence_embeddings(model, TEXTS[::-1], interventions=ivs, batch_size=3, progress=False)
    torch.testing.assert_close(shuffled.flip(0), alone, atol=1e-4, rtol=1e-4)
    if not intervened:
        responses = collect_responses(model, TEXTS, pooling=["mean", "max"], batch_size=4, progress=False)
        single = [collect_responses(model, [t], pooling=["mean", "max"], progress=False) for t in TEXTS]
        for pooling in ("mean", "max"):
            torch.testing.assert_close(
                responses[pooling], torch.cat([r[pooling] for r in single]), atol=1e-4, rtol=1e-4
            )
    with xlens.apply(model, *ivs) if ivs else torch.no_grad(), torch.no_grad():
        last = model.logits_at_last(model.tokenize(TEXTS, padding="left"))
        each = torch.cat([model.logits_at_last(model.tokenize([t], padding="left")) for t in TEXTS])
    torch.testing.assert_close(last, each, atol=1e-4, rtol=1e-4)
    for kv_cache in (True, False):
        together = generate(model, TEXTS, 6, interventions=ivs, batch_size=4, kv_cache=kv_cache, stop_at_eos=False)
        apart = [generate(model, [t], 6, interventions=ivs, kv_cache=kv_cache, stop_at_eos=False)[0] for t in TEXTS]
        assert together == apart, kv_cache
