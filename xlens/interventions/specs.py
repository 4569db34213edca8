"""Intervention methods as specs in one registry: the runner, ``xlens steer`` and Python all build through them.

A spec holds a method's settings (``Force(value="on_p50")``); :meth:`InterventionSpec.build` turns it, for one
language and k, into the hook-level intervention::

    force = Force(value="on_p50")
    spanish = force.build(scores, "es", k=200)       # SetUnits on the 200 best Spanish experts
    with spanish.apply(model):
        ...

Methods (:func:`methods` lists the registered ones):

- ``force``: set the top-k experts to a statistic of their response on the language (Suau et al. 2022; the paper
  uses the mean, ``value="on_mean"``; default the median, ``on_p50``).
- ``damp``: multiply them by ``alpha``; ``det0``: set them to zero (ml-aura's det0).
- ``aura``: AurA (Suau et al. 2024): scale each by ``1 - Gini``, ``Gini = 2 (AUROC - 0.5)``; with ``k=None``
  every unit with AUROC > 0.5, as in the paper.
- ``lape``: zero the language's k lowest-entropy LAPE units (Tang et al. 2024).
- ``diffmean``: add ``alpha * (mean(language) - mean(other languages))`` of the residual after ``block``.

Adding a method is one file: subclass :class:`ExpertMethod` (or :class:`InterventionSpec`) as a frozen dataclass
with a ``name`` and its settings as fields, and decorate it with :func:`register`. Its fields become the
``[intervene]`` keys of a config and are validated like every other setting.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

import torch

from xlens._schema import from_mapping
from xlens.errors import ConfigError, InputError, InterventionError
from xlens.interventions.base import Intervention
from xlens.interventions.positions import WHERE, Where
from xlens.interventions.residual import SteeringVector
from xlens.interventions.units import ScaleUnits, SetUnits, aura_factors, group_by_hook
from xlens.models.lens import check_same_model

if TYPE_CHECKING:
    from xlens.data.corpus import ParallelCorpus
    from xlens.experts.sets import ExpertScores, ExpertSet
    from xlens.models.lens import LensModel
    from xlens.models.loading import ModelShape

_REGISTRY: dict[str, type[InterventionSpec]] = {}
SpecClass = TypeVar("SpecClass", bound="type[InterventionSpec]")
RESERVED_NAMES = ("none", "baseline")


@dataclass(frozen=True)
class InterventionSpec(ABC):
    """A method's settings. Subclasses set ``name`` and add their settings as fields (all with defaults).

    Class attributes:
        name: the method's name in configs, tables and on the command line.
        takes_k: whether k (a number of units) applies; methods without it make one condition per language.
        needs: what :meth:`build` needs besides the spec: ``"experts"`` (ExpertScores or an ExpertSet),
            ``"lape"`` (scores with a LAPE ranking), ``"corpus"`` (sentences and the model).
    """

    name: ClassVar[str]
    takes_k: ClassVar[bool] = True
    needs: ClassVar[frozenset[str]] = frozenset({"experts"})
    controls: ClassVar[tuple[str, ...]] = ("none",)
    where: Where = "all"
    control: str = "none"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.where not in WHERE:
            raise ConfigError(f"intervene.where = {self.where!r}: must be one of {', '.join(WHERE)}")
        if self.control not in self.controls:
            allowed = ", ".join(self.controls)
            raise ConfigError(f"intervene.control = {self.control!r}: method {self.name!r} has the controls {allowed}")

    def defaults(self) -> dict[str, Any]:
        """The settings a spec of this method has when none is given."""
        return type(self)().params()

    def neutral(self) -> InterventionSpec | None:
        """The value control of this spec: the same units set to a language-neutral value (None: the method sets
        no value)."""
        return None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The spec from its settings (without ``method``); unknown keys and bad types are ConfigErrors."""
        return from_mapping(cls, data, "intervene", note=f"method {cls.name!r} takes: method, k")

    def params(self) -> dict[str, Any]:
        """The settings, as plain values."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, **self.params()}

    def check(self, k: Sequence[int] | None, shape: ModelShape | None, units: str, languages: Sequence[str]) -> None:
        """Settings against the model's shape and the run's languages, before any model is loaded.

        ``units`` is the unit spec experts are found on (``mlp``, ...); ``shape`` None skips the size checks.
        """
        if "lape" in self.needs and "top_rate" not in self.params():
            raise ConfigError(f"method {self.name!r} needs a LAPE ranking, so it must have a top_rate setting")
        if not self.takes_k:
            if k:
                raise ConfigError(
                    f"intervene.k = {list(k)}: method {self.name!r} does not take k (it makes one intervention "
                    "per language); remove intervene.k"
                )
            return
        if not k:
            raise ConfigError(f"intervene.k is empty: method {self.name!r} needs at least one number of units")
        limit = self.max_k(shape, units)
        if limit is not None and max(k) > limit[0]:
            raise ConfigError(f"intervene.k = {list(k)}: k must be <= {limit[0]} ({limit[1]})")

    def max_k(self, shape: ModelShape | None, units: str) -> tuple[int, str] | None:
        """The largest k and why, where the shape tells it."""
        n = None if shape is None else shape.units(units)
        if n is None or shape is None:
            return None
        return n, f"the number of {units} units: {shape.n_layers} blocks x {n // shape.n_layers}"

    @abstractmethod
    def build(
        self,
        source: ExpertScores | ExpertSet | None = None,
        language: str | None = None,
        k: int | None = None,
        *,
        model: LensModel | None = None,
        corpus: ParallelCorpus | None = None,
        check_model: bool = True,
    ) -> Intervention:
        """The hook-level intervention of this method for ``language`` with ``k`` units.

        ``source``: ExpertScores (any k) or an ExpertSet (its first k). With ``model``, experts found on another
        model are refused (``check_model=False`` to transplant them on purpose).
        """

    def label(self) -> str:
        """The method's name with the settings that differ from its defaults: ``force(value=on_mean)``."""
        defaults = self.defaults()
        changed = ", ".join(f"{k}={v}" for k, v in self.params().items() if v != defaults[k])
        return f"{self.name}({changed})" if changed else self.name


def register(cls: SpecClass) -> SpecClass:
    """Class decorator: make a spec class available by its ``name`` to configs, the runner and the CLI."""
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name.isidentifier() or name in RESERVED_NAMES:
        raise InputError(f"{cls.__name__}.name must be an identifier other than {RESERVED_NAMES}, got {name!r}")
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


@dataclass(frozen=True)
class ExpertMethod(InterventionSpec):
    """A method that acts on a language's experts; subclasses say which units in :meth:`select` and what it does
    to them in :meth:`on`.

    Controls (``control``) act the same way on other units: ``random`` on as many units drawn uniformly from all
    units, ``random-per-block`` on as many drawn in each block as the experts have there; ``seed`` (with the
    language and k) seeds the draw. A random control needs ExpertScores (the whole unit set).
    """

    controls: ClassVar[tuple[str, ...]] = ("none", "random", "random-per-block")

    @abstractmethod
    def on(self, experts: ExpertSet) -> Intervention:
        """The intervention on every unit of ``experts``."""

    @abstractmethod
    def select(self, source: ExpertScores | ExpertSet | None, language: str | None, k: int | None) -> ExpertSet:
        """The language's experts this method acts on."""

    def experts(self, source: ExpertScores | ExpertSet | None, language: str | None, k: int | None) -> ExpertSet:
        """The units this spec acts on: the selected experts, or the control's units in their place."""
        chosen = self.select(source, language, k)
        return chosen if self.control == "none" else random_units(source, chosen, self.control, self.seed)

    def build(
        self,
        source: ExpertScores | ExpertSet | None = None,
        language: str | None = None,
        k: int | None = None,
        *,
        model: LensModel | None = None,
        corpus: ParallelCorpus | None = None,
        check_model: bool = True,
    ) -> Intervention:
        chosen = self.experts(source, language, k)
        if check_model:
            check_same_model(chosen.model, model, f"the {chosen.language} experts")
        intervention = self.on(chosen)
        if not check_model:
            intervention.model = None  # a transplant on purpose: usable on any model from here on
        return intervention


def random_units(source: Any, chosen: ExpertSet, control: str, seed: int) -> ExpertSet:
    """As many units as ``chosen`` drawn uniformly from all of ``source``'s units (``random``), or as many in each
    block as ``chosen`` has there (``random-per-block``), with their own scores and statistics."""
    from xlens._io import content_key
    from xlens.experts.sets import ExpertScores

    if not isinstance(source, ExpertScores):
        raise InterventionError(f"the {control!r} control draws from all units: it needs ExpertScores, not a set")
    generator = torch.Generator().manual_seed(int(content_key(seed, chosen.language, len(chosen)), 16))
    if control == "random":
        units = torch.randperm(source.units.n_units, generator=generator)[: len(chosen)]
    else:
        blocks = source.units.blocks()
        parts = []
        for block, count in sorted(chosen.counts_per_block().items()):
            members = (blocks == block).nonzero().squeeze(1)
            parts.append(members[torch.randperm(len(members), generator=generator)[:count]])
        units = torch.cat(parts)
    return source.expert_set(chosen.language, units, f"{chosen.method}+{control}", meta={"seed": seed})


@dataclass(frozen=True)
class ScoredMethod(ExpertMethod):
    """An expert method whose experts are chosen by their AP or AUROC (:meth:`xlens.ExpertScores.select`):
    ``selection`` top, per-block, top-bottom (with ``bottom_k``) or threshold (with ``threshold``), ranked by
    ``rank_by``."""

    selection: str = "top"
    rank_by: str = "ap"
    bottom_k: int | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        from xlens.experts.sets import RANK_BY, SELECTIONS

        if self.selection not in SELECTIONS:
            raise ConfigError(f"intervene.selection = {self.selection!r}: must be one of {', '.join(SELECTIONS)}")
        if self.rank_by not in RANK_BY:
            raise ConfigError(f"intervene.rank_by = {self.rank_by!r}: must be one of {', '.join(RANK_BY)}")
        if self.selection == "threshold" and (self.threshold is None or not 0 <= self.threshold <= 1):
            raise ConfigError(f"intervene.threshold = {self.threshold}: selection 'threshold' needs one in [0, 1]")
        if self.bottom_k is not None and self.bottom_k < 1:
            raise ConfigError(f"intervene.bottom_k = {self.bottom_k}: must be >= 1")

    def max_k(self, shape: ModelShape | None, units: str) -> tuple[int, str] | None:
        limit = super().max_k(shape, units)
        if limit is None or shape is None:
            return limit
        if self.selection == "per-block":
            per_block = limit[0] // shape.n_layers
            return per_block, f"selection 'per-block' takes k from each block, which has {per_block} {units} units"
        if self.selection == "top-bottom" and self.bottom_k is not None:
            return limit[0] - self.bottom_k, f"top-bottom takes k + bottom_k = k + {self.bottom_k} of {limit[0]} units"
        return limit

    def select(self, source: ExpertScores | ExpertSet | None, language: str | None, k: int | None) -> ExpertSet:
        from xlens.data.languages import flores_code
        from xlens.experts.sets import ExpertScores, ExpertSet

        if isinstance(source, ExpertSet):
            if language is not None and flores_code(language) != source.language:
                raise InterventionError(f"the expert set is for {source.language}, not {flores_code(language)}")
            if k is not None and k > len(source):
                raise InterventionError(
                    f"k={k} is more than the {len(source)} experts of this set for {source.language}; use the "
                    "ExpertScores it came from to select any k"
                )
            return source if k is None else source.head(k)
        if isinstance(source, ExpertScores):
            if language is None or (k is None and self.selection != "threshold"):
                raise InterventionError(f"{self.name}: selecting experts from ExpertScores needs language= and k=")
            return source.select(
                language,
                k,
                method=self.selection,  # type: ignore[arg-type]
                by=self.rank_by,  # type: ignore[arg-type]
                bottom_k=self.bottom_k,
                threshold=self.threshold,
            )
        raise InterventionError(f"method {self.name!r} needs experts: pass ExpertScores or an ExpertSet")


@register
@dataclass(frozen=True)
class Force(ScoredMethod):
    """Set the experts to ``value`` at every token: a statistic of their pooled response (``on_p50`` = median on
    the language, ``on_mean`` = mean, ``on_p90``, ``off_p50``, ``off_mean``), ``"zero"``, or a number."""

    name: ClassVar[str] = "force"
    value: str | float = "on_p50"

    def __post_init__(self) -> None:
        super().__post_init__()
        from xlens.experts.sets import STAT_NAMES

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


@register
@dataclass(frozen=True)
class Damp(ScoredMethod):
    """Multiply the experts by ``alpha`` at every token (dampening; 0 would be det0)."""

    name: ClassVar[str] = "damp"
    alpha: float = 0.5

    def on(self, experts: ExpertSet) -> Intervention:
        return ScaleUnits.of(experts, torch.full((len(experts),), self.alpha), self.where)


@register
@dataclass(frozen=True)
class Det0(ScoredMethod):
    """Set the experts to zero (multiply by 0), ml-aura's det0."""

    name: ClassVar[str] = "det0"

    def on(self, experts: ExpertSet) -> Intervention:
        return ScaleUnits.of(experts, torch.zeros(len(experts)), self.where)


@register
@dataclass(frozen=True)
class Aura(ScoredMethod):
    """AurA: scale each expert with AUROC > 0.5 by ``1 - 2 (AUROC - 0.5)``; units with AUROC <= 0.5 stay.

    With k, the top k experts by AP (the units force and det0 take at that k); with ``k=None`` on ExpertScores,
    every unit of the model with AUROC > 0.5 for the language, as in Suau et al. 2024.
    """

    name: ClassVar[str] = "aura"

    def select(self, source: ExpertScores | ExpertSet | None, language: str | None, k: int | None) -> ExpertSet:
        from xlens.experts.sets import ExpertScores

        if isinstance(source, ExpertScores) and k is None and self.selection == "top":
            if language is None:
                raise InterventionError("aura on ExpertScores needs language=")
            auroc = source.auroc[source.lang_index(language)]
            units = (auroc > 0.5).nonzero().squeeze(1)
            return source.expert_set(language, units[auroc[units].argsort(descending=True, stable=True)], "aura")
        return super().select(source, language, k)

    def on(self, experts: ExpertSet) -> Intervention:
        keep = experts.auroc > 0.5
        units, factors = group_by_hook(experts.unit_index, experts.units[keep], aura_factors(experts.auroc[keep]))
        return ScaleUnits(units, factors, self.where, experts.model)


@register
@dataclass(frozen=True)
class Lape(ExpertMethod):
    """Zero the language's ``k`` lowest-entropy LAPE units (Tang et al. 2024's deactivation).

    ``top_rate`` is the share of all units LAPE keeps as language-specific (the paper: 1%); the ranking comes with
    the scores (:meth:`xlens.ExpertScores.with_lape`) or with a LAPE expert set, lowest entropy first.
    """

    name: ClassVar[str] = "lape"
    needs: ClassVar[frozenset[str]] = frozenset({"experts", "lape"})
    top_rate: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.top_rate <= 1:
            raise ConfigError(f"intervene.top_rate = {self.top_rate}: must lie in (0, 1]")

    def max_k(self, shape: ModelShape | None, units: str) -> tuple[int, str] | None:
        limit = super().max_k(shape, units)
        if limit is None:
            return None
        kept = round(limit[0] * self.top_rate)
        return kept, f"LAPE keeps top_rate = {self.top_rate} of the {limit[0]} {units} units, {kept} in all"

    def select(self, source: ExpertScores | ExpertSet | None, language: str | None, k: int | None) -> ExpertSet:
        from xlens.data.languages import flores_code
        from xlens.experts.sets import ExpertScores, ExpertSet

        if isinstance(source, ExpertScores):
            if language is None:
                raise InterventionError("lape on ExpertScores needs language=")
            ranked = source.lape_set(language, top_rate=self.top_rate)
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


@register
@dataclass(frozen=True)
class DiffMean(InterventionSpec):
    """Add ``alpha * (mean(language) - mean(source))`` to the residual stream after ``block`` (default: the
    middle block); ``source`` defaults to every other language of the corpus. The means are of each sentence's
    mean residual over its real tokens (BOS left out), on up to 256 tokens per sentence. Its control ``random``
    adds a random direction of the same norm instead."""

    name: ClassVar[str] = "diffmean"
    takes_k: ClassVar[bool] = False
    needs: ClassVar[frozenset[str]] = frozenset({"corpus"})
    controls: ClassVar[tuple[str, ...]] = ("none", "random")
    alpha: float = 1.0
    block: int | None = None
    source: list[str] | None = None

    def check(self, k: Sequence[int] | None, shape: ModelShape | None, units: str, languages: Sequence[str]) -> None:
        super().check(k, shape, units, languages)
        if self.block is not None and shape is not None and not 0 <= self.block < shape.n_layers:
            raise ConfigError(f"intervene.block = {self.block}: the model has blocks 0..{shape.n_layers - 1}")
        if self.source is not None:
            from xlens.data.languages import flores_code

            have = [flores_code(x) for x in languages]
            missing = [s for s in self.source if flores_code(s) not in have]
            if missing:
                raise ConfigError(f"intervene.source = {self.source}: {missing} are not among the languages {have}")

    def build(
        self,
        source: ExpertScores | ExpertSet | None = None,
        language: str | None = None,
        k: int | None = None,
        *,
        model: LensModel | None = None,
        corpus: ParallelCorpus | None = None,
        check_model: bool = True,
    ) -> Intervention:
        if model is None or corpus is None or language is None:
            raise InterventionError("diffmean needs model=, corpus= (a ParallelCorpus) and language=")
        steer = SteeringVector.between_languages(
            model, corpus, language, self.source, self.block, self.alpha, self.where
        )
        if self.control == "random":  # a random direction of the same norm, seeded with the language
            from xlens._io import content_key

            generator = torch.Generator().manual_seed(int(content_key(self.seed, steer.model, language), 16))
            direction = torch.randn(steer.vector.shape, generator=generator)
            steer.vector = direction * (steer.vector.norm() / direction.norm())
        return steer
