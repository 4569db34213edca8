"""Sentence embeddings at every layer of the residual stream, under any intervention (or none).

Layer 0 is the input of the first block (token embeddings, after any embedding scaling), layer ``l`` the residual
stream after block ``l - 1``: ``n_layers + 1`` layers, as Hugging Face ``hidden_states``. Hidden states are pooled
over real tokens inside the hooks, so memory grows with sentences x layers x d_model only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from xlens.activations import pool
from xlens.models import LensModel

EmbeddingPooling = Literal["mean", "last", "weighted"]
EMBEDDING_POOLINGS: tuple[str, ...] = ("mean", "last", "weighted")


def layer_hooks(model: LensModel) -> list[str]:
    """Hook of every embedding layer: ``blocks.0.hook_resid_pre``, then each block's ``hook_resid_post``."""
    return ["blocks.0.hook_resid_pre", *model.resid_hooks]


def _intervention_hooks(model: LensModel, interventions: Sequence[Any]) -> list[tuple[str, Callable[..., Any]]]:
    hooks: list[tuple[str, Callable[..., Any]]] = []
    for iv in interventions:
        hooks.extend(iv.hooks(model) if hasattr(iv, "hooks") else [iv])
    return hooks


def sentence_embeddings(
    model: LensModel,
    texts: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    pooling: str = "mean",
    interventions: Sequence[Any] = (),
    batch_size: int = 16,
    max_length: int | None = 256,
    progress: bool = True,
    desc: str = "embeddings",
) -> Float[Tensor, "sentence layer d_model"]:
    """Pooled residual-stream embeddings of every text at every (or the chosen) layer.

    Args:
        layers: embedding layers in ``0..n_layers`` (see module docstring); default all.
        pooling: ``mean`` (default, the paper's), ``last`` or ``weighted`` (position-weighted mean, see
            :func:`xlens.activations.pool`).
        interventions: objects with ``.hooks(model)`` (xlens.interventions) or raw ``(hook_name, fn)`` pairs; they
            run before the embedding is read at every hook point.
    Returns:
        float32 tensor on the CPU, rows in the order of ``texts``.
    """
    if isinstance(texts, str):
        raise TypeError("sentence_embeddings takes a sequence of sentences, not a single string")
    if len(texts) == 0:
        raise ValueError("no sentences to embed")
    if pooling not in EMBEDDING_POOLINGS:
        raise ValueError(f"unknown embedding pooling {pooling!r}; use one of {EMBEDDING_POOLINGS}")
    all_hooks = layer_hooks(model)
    chosen = list(range(len(all_hooks))) if layers is None else list(layers)
    bad = [layer for layer in chosen if not 0 <= layer < len(all_hooks)]
    if bad or not chosen:
        raise ValueError(f"layers {bad or chosen} out of range: embedding layers are 0..{len(all_hooks) - 1}")
    n = len(texts)
    out = torch.empty((n, len(chosen), model.d_model), dtype=torch.float32)
    rows: Tensor = torch.empty(0, dtype=torch.long)
    mask: Tensor = torch.empty(0, dtype=torch.bool)

    def reader(slot: int) -> Callable[[Tensor, Any], None]:
        def read(act: Tensor, hook: Any) -> None:
            out[rows, slot] = pool(act.float(), mask, pooling).cpu()

        return read

    hooks = _intervention_hooks(model, interventions)
    hooks += [(all_hooks[layer], reader(slot)) for slot, layer in enumerate(chosen)]
    lengths = [len(ids) for ids in model.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    order = sorted(range(n), key=lambda i: -lengths[i])
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    for batch_rows in tqdm(batches, desc=desc, unit="batch", disable=not progress):
        batch = model.tokenize([texts[i] for i in batch_rows], max_length=max_length)
        rows, mask = torch.tensor(batch_rows), batch.mask
        model.run_hooks(batch, hooks)
    return out
