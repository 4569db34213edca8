"""The conditions a study measures: the baseline, or one method with its settings on one language's experts with
one k; a control (random units, a random direction) is a condition too. In every table a condition's columns are
``condition`` (its label, unique in a run: ``force(value=on_mean) spa_Latn k=200``), ``intervention`` (the method,
or ``none``), ``expert_lang`` (null for the baseline), ``k`` (0 for the baseline and for methods without k) and one
column per setting of the method (``value``, ``selection``, ``rank_by``, ``control``, ``seed``, ``alpha``, ...;
null where a method has no such setting)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from xlens.errors import ResultsError
from xlens.interventions.registry import spec_class
from xlens.interventions.spec import InterventionSpec


def _frozen(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _thawed(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thawed(v) for v in value]
    return value


@dataclass(frozen=True)
class Condition:
    """One measured setting: the baseline, or ``method`` with its ``params`` on ``language``'s experts at ``k``.

    ``tag`` is the method with the settings that differ from its defaults (``force(value=on_mean)``), so labels
    tell conditions of a grid apart: ``force(control=random, seed=1) spa_Latn k=200``.
    """

    method: str = "none"
    language: str | None = None
    k: int | None = None
    params: tuple[tuple[str, Any], ...] = ()
    tag: str = ""

    @classmethod
    def baseline(cls) -> Condition:
        """The condition without an intervention."""
        return cls()

    @classmethod
    def of(cls, spec: InterventionSpec, language: str, k: int | None) -> Condition:
        """The condition of ``spec`` on ``language``'s experts at ``k`` (``None`` for methods without k)."""
        params = tuple(sorted((n, _frozen(v)) for n, v in spec.params().items()))
        return cls(spec.name, language, k, params, spec.label())

    @property
    def is_baseline(self) -> bool:
        """Whether this is the baseline (no intervention)."""
        return self.method == "none"

    def spec(self) -> InterventionSpec:
        """The method's spec (from the registry)."""
        if self.is_baseline:
            raise ResultsError("the baseline has no intervention spec")
        return spec_class(self.method).from_dict({n: _thawed(v) for n, v in self.params})

    @property
    def label(self) -> str:
        """The condition's name in tables and figures, e.g. ``force spa_Latn k=200``."""
        if self.is_baseline:
            return "baseline"
        return f"{self.tag or self.method} {self.language}" + ("" if self.k is None else f" k={self.k}")

    @property
    def control(self) -> str:
        """The control this condition is (``random``, ``random-per-block``), or ``none``."""
        return str(dict(self.params).get("control", "none"))

    def controlled(self) -> Condition:
        """The condition this one is a control of (itself when it is no control): the same settings with the
        control and its seed at their defaults."""
        if self.control == "none":
            return self
        return Condition.of(replace(self.spec(), control="none", seed=0), str(self.language), self.k)

    def keys(self) -> dict[str, Any]:
        """What names the condition in a table: its label, method, expert language and k (0 for the baseline and
        for methods without k)."""
        k = 0 if self.k is None else self.k
        return {"condition": self.label, "intervention": self.method, "expert_lang": self.language, "k": k}

    def columns(self) -> dict[str, Any]:
        """The condition's columns in the results tables: :meth:`keys` and every setting (lists joined by
        commas)."""
        settings = {n: ",".join(map(str, v)) if isinstance(v, tuple) else v for n, v in self.params}
        return {**self.keys(), **settings}

    def to_dict(self) -> dict[str, Any]:
        """The condition as JSON-able data (see :meth:`from_dict`)."""
        return {
            "method": self.method,
            "language": self.language,
            "k": self.k,
            "params": {n: _thawed(v) for n, v in self.params},
            "tag": self.tag,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Condition:
        """The condition that :meth:`to_dict` wrote."""
        params = tuple(sorted((n, _frozen(v)) for n, v in data.get("params", {}).items()))
        return cls(data["method"], data.get("language"), data.get("k"), params, data.get("tag", ""))


def controls_of(conditions: Sequence[Condition]) -> dict[str, dict[str, list[Condition]]]:
    """For each controlled condition's label, its controls by kind (``random``, ``random-per-block``), seeds in
    order."""
    out: dict[str, dict[str, list[Condition]]] = {}
    for condition in conditions:
        if condition.control != "none":
            out.setdefault(condition.controlled().label, {}).setdefault(condition.control, []).append(condition)
    return out
