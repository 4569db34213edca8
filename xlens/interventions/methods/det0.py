"""det0: set the top-k experts to zero (apple/ml-aura's det0)."""

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
class Det0(ScoredMethod):
    """Set the experts to zero (multiply by 0), ml-aura's det0."""

    name: ClassVar[str] = "det0"

    def on(self, experts: ExpertSet) -> Intervention:
        return ScaleUnits.of(experts, torch.zeros(len(experts)), self.where)
