"""Interventions: hook-level changes of activations, and the method specs that build them from experts.

- :mod:`~xlens.interventions.positions`: which tokens (all, prompt, last) an intervention acts on;
- :mod:`~xlens.interventions.base`: :class:`Intervention`, :func:`apply` (a context manager);
- :mod:`~xlens.interventions.units`: :class:`SetUnits`, :class:`ScaleUnits` (per-unit values or factors);
- :mod:`~xlens.interventions.residual`: :class:`SteeringVector`, :func:`mean_residual`;
- :mod:`~xlens.interventions.specs`: the registry of methods (force, damp, det0, aura, lape, diffmean, and yours).
"""

from xlens.errors import InterventionError
from xlens.interventions.base import Hook, HookFn, Intervention, apply, intervention_hooks
from xlens.interventions.positions import WHERE, TokenPositions, Where, token_positions
from xlens.interventions.residual import SteeringVector, mean_residual
from xlens.interventions.specs import (
    Aura,
    Damp,
    Det0,
    DiffMean,
    ExpertMethod,
    Force,
    InterventionSpec,
    Lape,
    ScoredMethod,
    methods,
    register,
    spec_class,
    spec_from_dict,
)
from xlens.interventions.units import ScaleUnits, SetUnits, aura_factors, group_by_hook

__all__ = [
    "WHERE",
    "Aura",
    "Damp",
    "Det0",
    "DiffMean",
    "ExpertMethod",
    "Force",
    "Hook",
    "HookFn",
    "Intervention",
    "InterventionError",
    "InterventionSpec",
    "Lape",
    "ScaleUnits",
    "ScoredMethod",
    "SetUnits",
    "SteeringVector",
    "TokenPositions",
    "Where",
    "apply",
    "aura_factors",
    "group_by_hook",
    "intervention_hooks",
    "mean_residual",
    "methods",
    "register",
    "spec_class",
    "spec_from_dict",
    "token_positions",
]
