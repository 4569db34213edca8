"""The registry of intervention methods: names to spec classes, for configs, the runner and the CLI. It imports no
method: the built-in ones register themselves when :mod:`xlens.interventions` imports
:mod:`xlens.interventions.methods`, and yours when its module is imported (``--plugin``)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, TypeVar

from xlens.errors import ConfigError, InputError
from xlens.interventions.spec import InterventionSpec

_REGISTRY: dict[str, type[InterventionSpec]] = {}
SpecClass = TypeVar("SpecClass", bound="type[InterventionSpec]")
RESERVED_NAMES = ("none", "baseline")
# Keys of [intervene] that belong to the run (k, languages, method) or to every method (control, seed, where, tag):
# a method's own field may not take them.
RESERVED_FIELDS = ("method", "k", "languages", "control", "seed", "where", "tag")


def register(cls: SpecClass) -> SpecClass:
    """Class decorator: make a spec class available by its ``name`` to configs, the runner and the CLI."""
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name.isidentifier() or name in RESERVED_NAMES:
        raise InputError(f"{cls.__name__}.name must be an identifier other than {RESERVED_NAMES}, got {name!r}")
    own = [field for field in inspect.get_annotations(cls) if field in RESERVED_FIELDS]
    if own and cls.__module__ != "xlens.interventions.spec":
        raise InputError(
            f"{cls.__name__} declares the setting(s) {own}, which [intervene] reserves for the run or every method "
            f"({', '.join(RESERVED_FIELDS)}): rename them"
        )
    current = _REGISTRY.get(name)
    # The same class imported again (a reloaded module) may register again; another class may not take the name.
    if current is not None and (current.__module__, current.__qualname__) != (cls.__module__, cls.__qualname__):
        raise InputError(
            f"intervention method {name!r} is already registered by {current.__module__}.{current.__qualname__}"
        )
    _REGISTRY[name] = cls
    return cls


def methods() -> tuple[str, ...]:
    """Names of the registered methods, in registration order."""
    return tuple(_REGISTRY)


def user_methods() -> list[type[InterventionSpec]]:
    """The registered methods defined outside xlens (a notebook's, a plugin's): what other processes lack."""
    return [cls for cls in _REGISTRY.values() if not cls.__module__.startswith("xlens.")]


def spec_class(name: str) -> type[InterventionSpec]:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown intervention method {name!r}; registered: {', '.join(methods())}") from None


def spec_from_dict(data: Mapping[str, Any]) -> InterventionSpec:
    """A spec from ``{"method": name, **settings}``."""
    rest = dict(data)
    if "method" not in rest:
        raise ConfigError(f"an intervention needs a method ({', '.join(methods())})")
    return spec_class(rest.pop("method")).from_dict(rest)
