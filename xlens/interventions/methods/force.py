"""force: set the top-k experts to a statistic of their response on the language (Suau et al. 2022; the paper uses
the mean, ``value="on_mean"``; default the median, ``on_p50``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from xlens.errors import ConfigError
from xlens.experts.sets import STAT_NAMES, ExpertSet
from xlens.hooks.intervention import Intervention
from xlens.interventions.registry import register
from xlens.interventions.spec import InterventionSpec, ScoredMethod
from xlens.interventions.units import SetUnits


@register
@dataclass(frozen=True)
class Force(ScoredMethod):
    """Set the experts to ``value`` at every token: a statistic of their pooled response (``on_p50`` = median on
    the language, ``on_mean`` = mean, ``on_p90``; ``off_p50``, ``off_mean`` on the other languages; ``all_p50``,
    ``all_mean`` on every language, the neutral control's value), ``"zero"``, or a number."""

    name: ClassVar[str] = "force"
    value: str | float = "on_p50"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.value, str) and self.value not in ("zero", *STAT_NAMES):
            raise ConfigError(
                f"intervene.value = {self.value!r}: must be a number, 'zero' or a statistic of the experts' "
                f"responses ({', '.join(STAT_NAMES)})"
            )

    def neutral(self) -> InterventionSpec | None:
        """The experts set to their median over all languages' sentences instead."""
        return replace(self, value="all_p50")

    def on(self, experts: ExpertSet) -> Intervention:
        if self.value == "zero":
            values = torch.zeros(len(experts))
        elif isinstance(self.value, str):
            values = experts.stats[self.value]
        else:
            values = torch.full((len(experts),), float(self.value))
        return SetUnits.of(experts, values, self.where)
