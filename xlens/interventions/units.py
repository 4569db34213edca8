"""Unit interventions: set units to a value (a do-intervention) or scale them by a factor, per unit.

Units are the flattened dimensions after ``[batch, pos]`` of a hook's activation, as in
:class:`xlens.activations.UnitIndex` (``heads x d_head`` count as units).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from jaxtyping import Float, Int
from torch import Tensor

from xlens.errors import InterventionError
from xlens.hooks.intervention import Hook, HookFn, Intervention, check_hook_names
from xlens.hooks.positions import Where, check_where, selected

if TYPE_CHECKING:
    from xlens.activations import UnitIndex
    from xlens.experts.sets import ExpertSet


def _as_long(x: Any) -> Tensor:
    return torch.as_tensor(x, dtype=torch.long).flatten().cpu()


def _as_float(x: Any) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float32).flatten().cpu()


def group_by_hook(index: UnitIndex, units: Tensor, per_unit: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Flat unit indices (into ``index``) and their per-unit numbers, grouped by hook as (positions, numbers)."""
    units = _as_long(units)
    per_unit = _as_float(per_unit)
    hook_ids = index.hook_ids()[units]
    positions = index.positions()[units]
    by_pos: dict[str, Tensor] = {}
    by_val: dict[str, Tensor] = {}
    for h in hook_ids.unique().tolist():
        rows = (hook_ids == h).nonzero().squeeze(1)
        by_pos[index.hooks[h]] = positions[rows]
        by_val[index.hooks[h]] = per_unit[rows]
    return by_pos, by_val


def _check_units(kind: str, units: Mapping[str, Tensor], per_unit: Mapping[str, Tensor], what: str) -> None:
    if set(units) != set(per_unit):
        raise InterventionError(
            f"{kind}: units and {what} must name the same hooks, got {sorted(units)} and {sorted(per_unit)}"
        )
    for hook, pos in units.items():
        if pos.shape != per_unit[hook].shape:
            raise InterventionError(
                f"{kind}: {hook} has {pos.numel()} units but {per_unit[hook].numel()} {what}; give one per unit"
            )
        if pos.numel() and int(pos.min()) < 0:
            raise InterventionError(f"{kind}: negative unit position at {hook}")
        if pos.unique().numel() != pos.numel():
            raise InterventionError(f"{kind}: a unit is listed twice at {hook}; list every unit once")
        if not bool(torch.isfinite(per_unit[hook]).all()):
            raise InterventionError(f"{kind}: {what} at {hook} hold NaN or inf")


def _unit_hook(hook_name: str, pos: Tensor, per_unit: Tensor, where: Where, op: str) -> HookFn:
    """A hook that sets (``op="set"``) or scales (``op="scale"``) units ``pos`` at the ``where`` tokens."""
    cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def hook_fn(act: Tensor, hook: Any) -> Tensor:
        flat = act.reshape(act.shape[0], act.shape[1], -1)
        if pos.numel() and int(pos.max()) >= flat.shape[2]:
            raise InterventionError(
                f"unit position {int(pos.max())} is out of range at {hook_name}, which has {flat.shape[2]} units: "
                "the intervention was made for another model"
            )
        key = (act.device, act.dtype)
        if key not in cache:  # values move to the activation's device: layers may live on different GPUs
            cache[key] = (pos.to(act.device), per_unit.to(device=act.device, dtype=act.dtype))
        index, value = cache[key]
        current = flat.index_select(2, index)
        new = value.expand_as(current) if op == "set" else current * value
        sel = selected(where, act)
        if sel is not None:
            new = torch.where(sel.unsqueeze(-1), new, current)
        return flat.index_copy(2, index, new).view(act.shape)

    return hook_fn


class _UnitIntervention(Intervention):
    """One number per unit (a value or a factor), grouped by hook."""

    units: dict[str, Int[Tensor, " k"]]
    where: Where
    model: dict[str, Any] | None
    _op: ClassVar[str]
    _what: ClassVar[str]

    def _numbers(self) -> dict[str, Tensor]:
        return getattr(self, self._what)

    def _validate(self) -> None:
        check_where(self.where)
        self.units = {h: _as_long(p) for h, p in self.units.items()}
        setattr(self, self._what, {h: _as_float(v) for h, v in self._numbers().items()})
        _check_units(type(self).__name__, self.units, self._numbers(), self._what)

    @classmethod
    def of(cls, experts: ExpertSet, numbers: Tensor, where: Where = "all") -> Any:
        """The intervention on every unit of ``experts`` with one number per expert (in the set's order)."""
        numbers = _as_float(numbers)
        if numbers.numel() != len(experts):
            raise InterventionError(f"{numbers.numel()} numbers for {len(experts)} experts: give one per expert")
        units, per_unit = group_by_hook(experts.unit_index, experts.units, numbers)
        return cls(units, per_unit, where, experts.model)  # type: ignore[call-arg]

    @property
    def n_units(self) -> int:
        return sum(int(p.numel()) for p in self.units.values())

    def _hooks(self, model: Any) -> list[Hook]:
        check_hook_names(model, list(self.units))
        numbers = self._numbers()
        return [(h, _unit_hook(h, self.units[h], numbers[h], self.where, self._op)) for h in self.units]

    def describe(self) -> dict[str, Any]:
        numbers = list(self._numbers().values())
        return {
            "kind": self._op,
            "n_units": self.n_units,
            "hooks": {h: int(p.numel()) for h, p in self.units.items()},
            "where": self.where,
            f"mean_{self._what[:-1]}": float(torch.cat(numbers).mean()) if self.n_units else None,
        }


@dataclass(repr=False)
class SetUnits(_UnitIntervention):
    """Set units to a value per unit (a do-intervention) at the ``where`` tokens.

    Attributes:
        units: hook name -> unit positions in the hook's flattened activation.
        values: hook name -> the value of each of those units (same order).
        where: ``"all"``, ``"prompt"`` or ``"last"`` tokens (see :mod:`xlens.hooks.positions`).
        model: identity of the model the units belong to (None: any model).
    """

    units: dict[str, Int[Tensor, " k"]]
    values: dict[str, Float[Tensor, " k"]] = field(repr=False)
    where: Where = "all"
    model: dict[str, Any] | None = None
    _op: ClassVar[str] = "set"
    _what: ClassVar[str] = "values"

    def __post_init__(self) -> None:
        self._validate()


@dataclass(repr=False)
class ScaleUnits(_UnitIntervention):
    """Multiply units by a factor per unit at the ``where`` tokens (0 deactivates them).

    Attributes:
        units: hook name -> unit positions in the hook's flattened activation.
        factors: hook name -> the factor of each of those units (same order).
        where: ``"all"``, ``"prompt"`` or ``"last"`` tokens.
        model: identity of the model the units belong to (None: any model).
    """

    units: dict[str, Int[Tensor, " k"]]
    factors: dict[str, Float[Tensor, " k"]] = field(repr=False)
    where: Where = "all"
    model: dict[str, Any] | None = None
    _op: ClassVar[str] = "scale"
    _what: ClassVar[str] = "factors"

    def __post_init__(self) -> None:
        self._validate()


def aura_factors(auroc: Float[Tensor, " unit"]) -> Float[Tensor, " unit"]:
    """AurA's dampening factor ``1 - Gini = 1 - 2 (AUROC - 0.5)`` where AUROC > 0.5, else 1 (untouched)."""
    auroc = auroc.double()
    return torch.where(auroc > 0.5, 1 - 2 * (auroc - 0.5), torch.ones_like(auroc)).float()
