"""The registry of evaluation tasks: names to task classes, for configs (``[evaluate] tasks``), the runner and
the CLI. It imports no task: the built-in ones are imported by name when first asked for, and yours register when
their module is imported (``--plugin``)."""

from __future__ import annotations

import importlib
from typing import Any, TypeVar

from xlens.errors import ConfigError, InputError

_REGISTRY: dict[str, type] = {}
BUILTIN = {
    "retrieval": "xlens.evaluation.retrieval",
    "mining": "xlens.evaluation.mining",
    "transfer": "xlens.evaluation.transfer",
    "translation": "xlens.evaluation.translation",
    "fidelity": "xlens.evaluation.fidelity",
}
TaskClass = TypeVar("TaskClass", bound=type)


def register_task(cls: TaskClass) -> TaskClass:
    """Class decorator: make a task class available by its ``name`` to ``[evaluate] tasks``."""
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise InputError(f"{cls.__name__}.name must be an identifier, got {name!r}")
    if name in BUILTIN and not cls.__module__.startswith("xlens."):
        raise InputError(f"task {name!r} is built into xlens: give {cls.__name__} another name")
    current = _REGISTRY.get(name)
    if current is not None and (current.__module__, current.__qualname__) != (cls.__module__, cls.__qualname__):
        raise InputError(f"task {name!r} is already registered by {current.__module__}.{current.__qualname__}")
    _REGISTRY[name] = cls
    return cls


def tasks() -> tuple[str, ...]:
    """Names of the tasks: the built-in ones, then those registered since."""
    return tuple(dict.fromkeys([*BUILTIN, *_REGISTRY]))


def user_tasks() -> list[type]:
    """The registered tasks defined outside xlens: what a Ray worker's process lacks."""
    return [cls for cls in _REGISTRY.values() if not cls.__module__.startswith("xlens.")]


def task_class(name: str) -> Any:
    """The class of task ``name`` (a ConfigError lists the tasks there are)."""
    if name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown task {name!r} in evaluate.tasks; tasks: {', '.join(tasks())}") from None
