"""Typed settings from plain mappings (TOML, YAML, CLI): every bad key or value is one ConfigError that names the
field, the value and what is allowed, raised before anything expensive starts."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

from xlens.errors import ConfigError

T = TypeVar("T")


def describe_type(tp: Any) -> str:
    """A reader's name for a type: ``an integer``, ``a list of strings or null``, ``one of 'all', 'last'``."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        inner = describe_type(args[0]) if args else "values"
        return "a list of " + inner.removeprefix("an ").removeprefix("a ") + "s"
    if origin is dict or tp is dict:
        return "a table"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def conforms(value: Any, tp: Any) -> bool:
    """Whether ``value`` (as read from TOML/YAML/JSON) fits annotation ``tp``. ``True`` is not an integer."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if origin is Literal:
        return value in args
    if origin is list:
        return isinstance(value, list | tuple) and all(conforms(v, args[0]) for v in value) if args else True
    if origin is dict or tp is dict:
        return isinstance(value, Mapping)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _normalise(value: Any, tp: Any) -> Any:
    """Lists as lists and integers given for floats as floats, so equal settings compare (and hash) equal."""
    origin, args = get_origin(tp), get_args(tp)
    if isinstance(value, list | tuple):
        inner = args[0] if origin is list and args else Any
        return [_normalise(v, inner) for v in value]
    if tp is float and isinstance(value, int):
        return float(value)
    if origin in (typing.Union, types.UnionType) and float in args and isinstance(value, int) and int not in args:
        return float(value)
    return value


# A class pickled by value into another process (a Ray worker) keeps only the globals its code uses, not those
# its string annotations name: typing's names fill in.
_TYPING_NAMES = {name: getattr(typing, name) for name in typing.__all__}


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, localns=_TYPING_NAMES)


def from_mapping(cls: type[T], data: Any, section: str, *, note: str = "", given: Mapping[str, Any] | None = None) -> T:
    """Build dataclass ``cls`` from ``data``, checking keys and value types; ``section`` names it in errors and
    ``note`` starts the list of allowed keys there. ``given`` fields (e.g. nested sections built already) are
    passed as they are."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"[{section}] must be a table of settings, got {type(data).__name__} {data!r}")
    given = dict(given or {})
    hints = field_types(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in given]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        allowed = f"{note}, {', '.join(known)}" if note else ", ".join(known)
        raise ConfigError(f"unknown key(s) {unknown} in [{section}]; allowed: {allowed}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if not conforms(value, tp):
            raise ConfigError(f"{section}.{name} = {value!r} ({type(value).__name__}): must be {describe_type(tp)}")
        if _non_finite(value):
            raise ConfigError(f"{section}.{name} = {value!r}: must be a finite number (not nan or inf)")
        kwargs[name] = _normalise(value, tp)
    return cls(**kwargs, **given)


def _non_finite(value: Any) -> bool:
    """Whether a setting is or holds nan or +-inf (TOML and YAML both spell them)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list | tuple):
        return any(_non_finite(v) for v in value)
    return False


def to_mapping(obj: Any) -> dict[str, Any]:
    """A dataclass's init fields as a plain dict (nested dataclasses as nested dicts), for TOML/YAML/JSON."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        if hasattr(value, "to_dict"):
            value = value.to_dict()
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = to_mapping(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one dict of dotted keys (``{"find": {"corpus": x}}`` -> ``{"find.corpus": x}``)."""
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}
