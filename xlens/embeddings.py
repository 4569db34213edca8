"""Sentence embeddings at every embedding layer of the residual stream, under any intervention (or none).

Embedding layer 0 is the input of block 0 (token embeddings, after any embedding scaling), layer ``l`` the
residual stream after block ``l - 1``: ``n_layers + 1`` layers, as Hugging Face ``hidden_states``. Hidden states are
pooled over real tokens inside the hooks, so memory grows with sentences x layers x d_model only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from xlens.activations import non_finite_error, pool
from xlens.errors import InputError, InputTypeError
from xlens.models.lens import DEFAULT_MAX_TOKENS, ForwardBatch, LensModel, Reader

EmbeddingPooling = Literal["mean", "last", "weighted"]
EMBEDDING_POOLINGS: tuple[str, ...] = ("mean", "last", "weighted")


def sentence_embeddings(
    model: LensModel,
    texts: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    pooling: str = "mean",
    interventions: Sequence[Any] = (),
    batch_size: int | None = None,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    max_length: int | None = 256,
    progress: bool = True,
    desc: str = "embeddings",
) -> Float[Tensor, "sentence layer d_model"]:
    """Pooled residual-stream embeddings of every text at every (or the chosen) embedding layer.

    Args:
        layers: embedding layers in ``0..n_layers`` (see the module docstring); default all.
        pooling: ``mean`` (default, the paper's), ``last`` or ``weighted`` (position-weighted mean, see
            :func:`xlens.activations.pool`).
        interventions: interventions (xlens.interventions) or raw ``(hook_name, fn)`` pairs; they run before the
            embedding is read at every hook point.
    Returns:
        float32 tensor on the CPU, rows in the order of ``texts``.
    """
    if isinstance(texts, str):
        raise InputTypeError("sentence_embeddings takes a sequence of sentences, not a single string")
    if len(texts) == 0:
        raise InputError("no sentences to embed")
    if pooling not in EMBEDDING_POOLINGS:
        raise InputError(f"unknown embedding pooling {pooling!r}; use one of {EMBEDDING_POOLINGS}")
    chosen = model.embedding_layers if layers is None else list(layers)
    bad = [layer for layer in chosen if not 0 <= layer <= model.n_layers]
    if bad or not chosen:
        raise InputError(f"layers {bad or chosen} out of range: embedding layers are 0..{model.n_layers}")
    out = torch.empty((len(texts), len(chosen), model.d_model), dtype=torch.float32)

    def reader(slot: int, layer: int) -> Reader:
        def read(act: Tensor, batch: ForwardBatch) -> None:
            pooled = pool(act.float(), batch.mask_on(act.device), pooling)
            if not bool(torch.isfinite(pooled).all()):
                raise non_finite_error(
                    f"{model.embedding_hook(layer)} (embedding layer {layer})", act, bool(interventions)
                )
            batch.store(out, pooled, slot)

        return read

    readers = [(model.embedding_hook(layer), reader(slot, layer)) for slot, layer in enumerate(chosen)]
    model.forward(
        texts,
        readers,
        interventions=interventions,
        batch_size=batch_size,
        max_tokens=max_tokens,
        max_length=max_length,
        progress=progress,
        desc=desc,
    )
    return out
