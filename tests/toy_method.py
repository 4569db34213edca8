"""A toy intervention method, added the way a user adds one: this file and its registration, nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from xlens.experts.sets import ExpertSet
from xlens.interventions import Intervention, ScaleUnits, ScoredMethod, register


@register
@dataclass(frozen=True)
class Negate(ScoredMethod):
    """Multiply the experts by ``scale`` (default -1: flip their sign)."""

    name: ClassVar[str] = "negate"
    scale: float = -1.0

    def on(self, experts: ExpertSet) -> Intervention:
        return ScaleUnits.of(experts, torch.full((len(experts),), self.scale), self.where)
