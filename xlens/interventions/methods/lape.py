"""lape: zero the language's k lowest-entropy LAPE units (Tang et al. 2024)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from xlens.data.languages import flores_code
from xlens.errors import ConfigError, InterventionError
from xlens.experts.lape import LAPE_COUNTS
from xlens.experts.sets import ExpertScores, ExpertSet
from xlens.hooks.intervention import Intervention
from xlens.interventions.registry import register
from xlens.interventions.spec import ExpertMethod
from xlens.interventions.units import ScaleUnits

if TYPE_CHECKING:
    from xlens.models.shape import ModelShape


@register
@dataclass(frozen=True)
class Lape(ExpertMethod):
    """Zero the language's ``k`` lowest-entropy LAPE units (Tang et al. 2024's deactivation).

    ``top_rate`` is the share of all units LAPE keeps as language-specific (the paper: 1%); ``counts`` what makes
    a unit active on a token (``"gate"``: ``act_fn(gate_proj(x)) > 0`` on gated MLPs, as the reference code counts;
    ``"post"``: the neuron ``act_fn(gate) * up > 0``; the same on MLPs without a gate). The ranking comes with the
    scores (:meth:`xlens.ExpertScores.with_lape`) or with a LAPE expert set, lowest entropy first. Deactivating
    a unit sets its neuron to 0, which is the reference's zeroing of ``act_fn(gate)`` at that unit (their product
    with ``up_proj(x)`` is the neuron).
    """

    name: ClassVar[str] = "lape"
    needs: ClassVar[frozenset[str]] = frozenset({"experts", "lape"})
    top_rate: float = 0.01
    counts: str = "gate"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.top_rate <= 1:
            raise ConfigError(f"intervene.top_rate = {self.top_rate}: must lie in (0, 1]")
        if self.counts not in LAPE_COUNTS:
            raise ConfigError(f"intervene.counts = {self.counts!r}: use one of {sorted(LAPE_COUNTS)}")

    def check(self, k: Sequence[int] | None, shape: ModelShape | None, units: str, languages: Sequence[str]) -> None:
        super().check(k, shape, units, languages)
        if self.counts == "gate" and units != "mlp":
            raise ConfigError(
                f"intervene.counts = 'gate' counts MLP neurons by their gate, but experts are found on {units!r} "
                "units: find them on 'mlp' units, or give counts = 'post'"
            )

    def max_k(self, shape: ModelShape | None, units: str) -> tuple[int, str] | None:
        limit = super().max_k(shape, units)
        if limit is None:
            return None
        kept = round(limit[0] * self.top_rate)
        return kept, f"LAPE keeps top_rate = {self.top_rate} of the {limit[0]} {units} units, {kept} in all"

    def select(self, source: ExpertScores | ExpertSet | None, language: str | None, k: int | None) -> ExpertSet:
        if isinstance(source, ExpertScores):
            if language is None:
                raise InterventionError("lape on ExpertScores needs language=")
            ranked = source.lape_set(language, top_rate=self.top_rate, counts=self.counts)
        elif isinstance(source, ExpertSet):
            if source.method != "lape" or source.entropy is None:
                raise InterventionError(
                    f"method 'lape' needs a LAPE unit set ranked by entropy, got a {source.method!r} set"
                    + (
                        " without its entropy ranking: run `xlens experts --lape` again"
                        if source.method == "lape"
                        else ""
                    )
                )
            made = source.meta.get("lape", {}).get("counts", "post")  # sets saved before counts were recorded
            if made != self.counts:
                raise InterventionError(
                    f"the LAPE set counts a unit active by {made!r}, not {self.counts!r}: run `xlens experts --lape "
                    f"--lape-counts {self.counts}` again, or give counts = {made!r}"
                )
            ranked = source
        else:
            raise InterventionError("method 'lape' needs ExpertScores with a LAPE ranking or a LAPE expert set")
        if language is not None and flores_code(language) != ranked.language:
            raise InterventionError(f"the LAPE set is for {ranked.language}, not {flores_code(language)}")
        if k is not None and k > len(ranked):
            raise InterventionError(
                f"k={k}: LAPE gave {ranked.language} only {len(ranked)} units; lower k or raise top_rate"
            )
        return ranked if k is None else ranked.head(k)

    def on(self, experts: ExpertSet) -> Intervention:
        if len(experts) == 0:
            raise InterventionError(f"LAPE assigned no unit to {experts.language}: nothing to deactivate")
        return ScaleUnits.of(experts, torch.zeros(len(experts)), self.where)
