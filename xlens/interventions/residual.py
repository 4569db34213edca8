"""Residual steering: add a vector to the residual stream after a block (mean-difference steering)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from xlens.data.languages import flores_code
from xlens.errors import InterventionError
from xlens.hooks.intervention import Hook, Intervention, check_hook_names
from xlens.hooks.positions import Where, check_where, selected
from xlens.models.lens import ForwardBatch

if TYPE_CHECKING:
    from xlens.data.corpus import ParallelCorpus
    from xlens.models.lens import LensModel


@dataclass(repr=False)
class SteeringVector(Intervention):
    """Add ``alpha * vector`` to the residual stream after block ``block`` (``blocks.{block}.hook_resid_post``)
    at the ``where`` tokens (default: every token)."""

    block: int
    vector: Float[Tensor, " d_model"] = field(repr=False)
    alpha: float = 1.0
    where: Where = "all"
    model: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_where(self.where)
        self.vector = torch.as_tensor(self.vector, dtype=torch.float32).detach().cpu()
        if self.vector.ndim != 1:
            raise InterventionError(f"the steering vector must be 1-D [d_model], got shape {tuple(self.vector.shape)}")
        if not bool(torch.isfinite(self.vector).all()):
            raise InterventionError("the steering vector holds NaN or inf")

    @property
    def hook_name(self) -> str:
        """The residual-stream hook the vector is added at, after block ``block``."""
        return f"blocks.{self.block}.hook_resid_post"

    def scaled(self, alpha: float) -> SteeringVector:
        """The same direction with another scale."""
        return SteeringVector(self.block, self.vector, alpha, self.where, self.model)

    def _hooks(self, model: Any) -> list[Hook]:
        check_hook_names(model, [self.hook_name])
        shift = self.alpha * self.vector
        where = self.where

        def hook_fn(act: Tensor, hook: Any) -> Tensor:
            if act.shape[-1] != shift.shape[0]:
                raise InterventionError(
                    f"the steering vector has {shift.shape[0]} dimensions but the residual stream has {act.shape[-1]}"
                )
            delta = shift.to(device=act.device, dtype=act.dtype)
            sel = selected(where, act)
            if sel is None:
                return act + delta
            return act + sel.unsqueeze(-1).to(act.dtype) * delta

        return [(self.hook_name, hook_fn)]

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "add",
            "block": self.block,
            "alpha": self.alpha,
            "vector_norm": float(self.vector.norm()),
            "where": self.where,
        }

    @classmethod
    def mean_difference(
        cls,
        model: LensModel,
        texts_a: Sequence[str],
        texts_b: Sequence[str],
        block: int,
        alpha: float = 1.0,
        where: Where = "all",
        batch_size: int | None = None,
        max_length: int | None = 256,
    ) -> SteeringVector:
        """Steer from A towards B: ``vector = mean(B) - mean(A)`` of the residual stream after block ``block``.

        Each mean is over sentences of the sentence's mean over its real tokens (mean pooling, so every sentence
        weighs the same whatever its length). The BOS token is left out of the pooling: its residual is the same
        for every sentence and often huge (attention sink), and with mean pooling it would enter the two means
        with weights 1/length that differ between languages.
        """
        mean_a = mean_residual(model, texts_a, block, batch_size=batch_size, max_length=max_length)
        mean_b = mean_residual(model, texts_b, block, batch_size=batch_size, max_length=max_length)
        return cls(block, mean_b - mean_a, alpha, where, model.identity())

    @classmethod
    def between_languages(
        cls,
        model: LensModel,
        corpus: ParallelCorpus,
        target: str,
        source: str | Sequence[str] | None = None,
        block: int | None = None,
        alpha: float = 1.0,
        where: Where = "all",
        **kwargs: Any,
    ) -> SteeringVector:
        """Mean difference from ``source`` (a language, several, or every other language of the corpus) to
        ``target`` on a parallel corpus; ``block`` defaults to the middle block."""
        tgt = flores_code(target)
        if source is None:
            sources = [lang for lang in corpus.languages if lang != tgt]
        else:
            sources = [flores_code(s) for s in ([source] if isinstance(source, str) else source)]
        if not sources or tgt in sources:
            raise InterventionError(f"the source languages {sources} must be non-empty and exclude the target {tgt}")
        texts_a = [s for lang in sources for s in corpus[lang]]
        block = model.n_layers // 2 if block is None else block
        return cls.mean_difference(model, texts_a, corpus[tgt], block, alpha, where, **kwargs)


def mean_residual(
    model: LensModel,
    texts: Sequence[str],
    block: int,
    batch_size: int | None = None,
    max_length: int | None = 256,
) -> Float[Tensor, " d_model"]:
    """Mean over sentences of each sentence's mean residual (after block ``block``) over its real tokens, BOS
    excluded (float32, CPU)."""
    if isinstance(texts, str) or len(texts) == 0:
        raise InterventionError("mean_residual needs a non-empty sequence of sentences")
    if not 0 <= block < model.n_layers:
        raise InterventionError(f"block {block} out of range: the model has blocks 0..{model.n_layers - 1}")
    skip = 1 if model.prepend_bos and model.tokenizer.bos_token_id is not None else 0
    total = torch.zeros(model.d_model, dtype=torch.float64)
    counted = [0]

    def pool(act: Tensor, batch: ForwardBatch) -> None:
        m = batch.mask_on(act.device).clone()
        m[:, :skip] = False
        lengths = m.sum(dim=1, keepdim=True)
        keep = lengths.squeeze(1) > 0  # a sentence that is only BOS has no token to pool
        pooled = (act.double() * m.unsqueeze(-1)).sum(dim=1)[keep] / lengths[keep]
        total.add_(pooled.sum(dim=0).cpu())
        counted[0] += int(keep.sum())

    model.forward(texts, [(model.resid_hook(block), pool)], batch_size=batch_size, max_length=max_length)
    if counted[0] == 0:
        raise InterventionError("no sentence has a token besides BOS: nothing to average")
    return (total / counted[0]).float()
