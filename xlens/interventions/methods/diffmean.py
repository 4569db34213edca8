"""diffmean: add ``alpha * (mean(language) - mean(other languages))`` of the residual after ``block``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from xlens._io import content_key
from xlens.data.languages import flores_code
from xlens.errors import ConfigError, InterventionError
from xlens.experts.sets import ExpertScores, ExpertSet
from xlens.hooks.intervention import Intervention
from xlens.interventions.registry import register
from xlens.interventions.residual import SteeringVector
from xlens.interventions.spec import InterventionSpec

if TYPE_CHECKING:
    from xlens.data.corpus import ParallelCorpus
    from xlens.models.lens import LensModel
    from xlens.models.shape import ModelShape


@register
@dataclass(frozen=True)
class DiffMean(InterventionSpec):
    """Add ``alpha * (mean(language) - mean(source))`` to the residual stream after ``block`` (default: the
    middle block); ``source`` defaults to every other language of the corpus. The means are of each sentence's
    mean residual over its real tokens (BOS left out), on up to 256 tokens per sentence. Its control ``random``
    adds a random direction of the same norm instead."""

    name: ClassVar[str] = "diffmean"
    takes_k: ClassVar[bool] = False
    needs: ClassVar[frozenset[str]] = frozenset({"corpus"})
    controls: ClassVar[tuple[str, ...]] = ("none", "random")
    alpha: float = 1.0
    block: int | None = None
    source: list[str] | None = None

    def check(self, k: Sequence[int] | None, shape: ModelShape | None, units: str, languages: Sequence[str]) -> None:
        super().check(k, shape, units, languages)
        if self.block is not None and shape is not None and not 0 <= self.block < shape.n_layers:
            raise ConfigError(f"intervene.block = {self.block}: the model has blocks 0..{shape.n_layers - 1}")
        if self.source is not None:
            have = [flores_code(x) for x in languages]
            missing = [s for s in self.source if flores_code(s) not in have]
            if missing:
                raise ConfigError(f"intervene.source = {self.source}: {missing} are not among the languages {have}")

    def build(
        self,
        source: ExpertScores | ExpertSet | None = None,
        language: str | None = None,
        k: int | None = None,
        *,
        model: LensModel | None = None,
        corpus: ParallelCorpus | None = None,
        check_model: bool = True,
    ) -> Intervention:
        if model is None or corpus is None or language is None:
            raise InterventionError("diffmean needs model=, corpus= (a ParallelCorpus) and language=")
        steer = SteeringVector.between_languages(
            model, corpus, language, self.source, self.block, self.alpha, self.where
        )
        if self.control == "random":  # a random direction of the same norm, seeded with the language
            generator = torch.Generator().manual_seed(int(content_key(self.seed, steer.model, language), 16))
            direction = torch.randn(steer.vector.shape, generator=generator)
            steer.vector = direction * (steer.vector.norm() / direction.norm())
        return steer
