"""Intervention methods as specs: a spec holds a method's settings (``Force(value="on_p50")``) and
:meth:`InterventionSpec.build` turns it, for one language and k, into the hook-level intervention::

    force = Force(value="on_p50")
    spanish = force.build(scores, "es", k=200)       # SetUnits on the 200 best Spanish experts
    with spanish.apply(model):
        ...

The bases here: :class:`InterventionSpec` (any method), :class:`ExpertMethod` (a method acting on a language's
experts, with random controls), :class:`ScoredMethod` (experts chosen by AP or AUROC). The built-in methods live
one per file in :mod:`xlens.interventions.methods`; :mod:`xlens.interventions.registry` names them.

Adding a method is one file: subclass :class:`ExpertMethod` (or :class:`InterventionSpec`) as a frozen dataclass
with a ``name`` and its settings as fields, and decorate it with :func:`xlens.interventions.registry.register`. Its
fields become the ``[intervene]`` keys of a config and are validated like every other setting.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Self

import torch

from xlens._io import content_key
from xlens._schema import from_mapping
from xlens.data.languages import flores_code
from xlens.errors import ConfigError, InterventionError
from xlens.experts.sets import RANK_BY, SELECTIONS, ExpertScores, ExpertSet
from xlens.hooks import check_same_model
from xlens.hooks.intervention import Intervention
from xlens.hooks.positions import WHERE, Where

if TYPE_CHECKING:
    from xlens.data.corpus import ParallelCorpus
    from xlens.models.lens import LensModel
    from xlens.models.shape import ModelShape


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
        """The method's name and settings as JSON-able data, as a config's ``[intervene]`` gives them."""
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
