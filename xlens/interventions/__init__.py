"""Interventions: hook-level changes of activations, and the method specs that build them from experts.

- :mod:`~xlens.hooks.positions`: which tokens (all, prompt, last) an intervention acts on;
- :mod:`~xlens.hooks.intervention`: :class:`Intervention`, :func:`apply` (a context manager);
- :mod:`~xlens.interventions.units`: :class:`SetUnits`, :class:`ScaleUnits` (per-unit values or factors);
- :mod:`~xlens.interventions.residual`: :class:`SteeringVector`, :func:`mean_residual`;
- :mod:`~xlens.interventions.spec`: the method specs' bases; :mod:`~xlens.interventions.registry`: their registry;
- :mod:`~xlens.interventions.methods`: the built-in methods, one file each (force, damp, det0, aura, lape, diffmean).
"""

from xlens.errors import InterventionError
from xlens.hooks.intervention import Hook, HookFn, Intervention, apply, intervention_hooks
from xlens.hooks.positions import WHERE, TokenPositions, Where, token_positions
from xlens.interventions.methods import Aura, Damp, Det0, DiffMean, Force, Lape
from xlens.interventions.registry import methods, register, spec_class, spec_from_dict
from xlens.interventions.residual import SteeringVector, mean_residual
from xlens.interventions.spec import ExpertMethod, InterventionSpec, ScoredMethod
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
