"""The hook-level intervention protocol below the models: what an intervention is (:class:`Intervention`, hooks as
``(hook_name, fn)`` pairs), how it is applied to a model (:func:`apply`), which tokens it acts on
(:func:`token_positions`), and the model-identity check that keeps experts with their model. ``xlens.models`` runs
interventions through these; ``xlens.interventions`` builds them."""

from xlens.hooks.identity import IDENTITY_FIELDS, check_same_model, identity_differences
from xlens.hooks.intervention import (
    Hook,
    HookFn,
    Intervention,
    apply,
    bridge_of,
    check_hook_names,
    intervention_hooks,
)
from xlens.hooks.positions import WHERE, TokenPositions, Where, check_where, selected, token_positions

__all__ = [
    "IDENTITY_FIELDS",
    "WHERE",
    "Hook",
    "HookFn",
    "Intervention",
    "TokenPositions",
    "Where",
    "apply",
    "bridge_of",
    "check_hook_names",
    "check_same_model",
    "check_where",
    "identity_differences",
    "intervention_hooks",
    "selected",
    "token_positions",
]
