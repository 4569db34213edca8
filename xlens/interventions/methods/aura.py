"""aura: AurA (Suau et al. 2024): scale each expert by ``1 - Gini``, ``Gini = 2 (AUROC - 0.5)``; with ``k=None``
every unit with AUROC > 0.5, as in the paper."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xlens.errors import InterventionError
from xlens.experts.sets import ExpertScores, ExpertSet
from xlens.hooks.intervention import Intervention
from xlens.interventions.registry import register
from xlens.interventions.spec import ScoredMethod
from xlens.interventions.units import ScaleUnits, aura_factors, group_by_hook


@register
@dataclass(frozen=True)
class Aura(ScoredMethod):
    """AurA: scale each expert with AUROC > 0.5 by ``1 - 2 (AUROC - 0.5)``; units with AUROC <= 0.5 stay.

    With k, the top k experts by AP (the units force and det0 take at that k); with ``k=None`` on ExpertScores,
    every unit of the model with AUROC > 0.5 for the language, as in Suau et al. 2024.
    """

    name: ClassVar[str] = "aura"

    def select(self, source: ExpertScores | ExpertSet | None, language: str | None, k: int | None) -> ExpertSet:
        if isinstance(source, ExpertScores) and k is None and self.selection == "top":
            if language is None:
                raise InterventionError("aura on ExpertScores needs language=")
            auroc = source.auroc[source.lang_index(language)]
            units = (auroc > 0.5).nonzero().squeeze(1)
            return source.expert_set(language, units[auroc[units].argsort(descending=True, stable=True)], "aura")
        return super().select(source, language, k)

    def on(self, experts: ExpertSet) -> Intervention:
        keep = experts.auroc > 0.5
        units, factors = group_by_hook(experts.unit_index, experts.units[keep], aura_factors(experts.auroc[keep]))
        return ScaleUnits(units, factors, self.where, experts.model)
