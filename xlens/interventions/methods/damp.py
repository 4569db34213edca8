"""damp: multiply the top-k experts by ``alpha``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from xlens.experts.sets import ExpertSet
from xlens.hooks.intervention import Intervention
from xlens.interventions.registry import register
from xlens.interventions.spec import ScoredMethod
from xlens.interventions.units import ScaleUnits


@register
@dataclass(frozen=True)
class Damp(ScoredMethod):
    """Multiply the experts by ``alpha`` at every token (dampening; 0 would be det0)."""

    name: ClassVar[str] = "damp"
    alpha: float = 0.5

    def on(self, experts: ExpertSet) -> Intervention:
        return ScaleUnits.of(experts, torch.full((len(experts),), self.alpha), self.where)
