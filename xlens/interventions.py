"""Interventions on hook points: force, dampen or shift units while a model runs.

Every intervention yields ``(hook_name, hook_fn)`` pairs (:meth:`Intervention.hooks`), so it works wherever
TransformerLens takes hooks (``run_with_hooks``, ``run_with_cache``, ``bridge.hooks``, :mod:`xlens.generation`),
and as a context manager on a model::

    force = Force.from_experts(scores.select("es", 200), value="on_p50")  # top 200 Spanish experts -> median
    with force.apply(model):
        logits = model.bridge(tokens)
    with apply(model, Dampen.det0(german_experts), Steer(6, vector, alpha=2.0)):
        ...

Leaving the context removes exactly the hooks it added (also when an exception is raised inside), so the model
computes bit-identical logits afterwards.

Units are the flattened dimensions after ``[batch, pos]`` of a hook's activation, as in
:class:`xlens.activations.UnitIndex` (``heads x d_head`` count as units). Hook functions never modify an
activation in place: they return a new tensor, so a cache that stored the activation keeps the original.

Composition: hooks run in the order the interventions are given (and within one intervention, in the order of its
hooks); on the same hook point each hook receives the previous one's output. So ``apply(model, dampen, force)``
leaves a unit both touch at the forced value, and ``apply(model, force, dampen)`` at ``factor * value``.

Positions (``where``): ``"all"`` tokens, ``"prompt"`` tokens, or ``"last"`` tokens. What is a prompt or a last token
in a padded batch is set by the caller with :func:`token_positions` (a context, so one setting serves every
intervention and hook of a forward pass):

- ``with token_positions(batch.mask):`` for a right-padded batch: prompt = the real tokens of each row, last = the
  last REAL token of each row (not the padding at the end);
- :func:`xlens.generation.generate` and :func:`xlens.generation.perplexity` set it themselves. In generation,
  prompt = the prompt tokens (never the generated ones) and last = the last prompt token and every generated token
  (each one is the last token when it is produced, so the same positions stay forced on every later step);
- with no context, every token is a prompt token and last is the final column: right for unpadded input.

Interventions on padding do not change real tokens (causal attention with the padding masked), so ``"all"`` needs
no positions.
"""

from __future__ import annotations

import contextlib
import contextvars
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from xlens.activations import UnitIndex

if TYPE_CHECKING:
    from xlens.data.corpus import ParallelCorpus
    from xlens.experts.lape import LapeResult
    from xlens.experts.sets import ExpertScores, ExpertSet
    from xlens.models import LensModel

Where = Literal["all", "prompt", "last"]
WHERE: tuple[str, ...] = ("all", "prompt", "last")
HookFn = Callable[[Tensor, Any], Tensor | None]
Hook = tuple[str, HookFn]
METHODS: tuple[str, ...] = ("force", "aura", "det0", "damp", "lape", "diffmean")
DAMP_FACTOR = 0.5  # default factor of the ``damp`` method


class InterventionError(ValueError):
    """An intervention that cannot be built or applied as asked."""


# --- positions ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenPositions:
    """Which columns of the forward passes in a :func:`token_positions` context are prompt and last tokens.

    Columns are positions in the sequence passed to the model. Per row: prompt tokens are the columns
    ``< prompt_end``; last tokens are the columns ``last_start <= c < last_end``.
    """

    prompt_end: Int[Tensor, " batch"]
    last_start: Int[Tensor, " batch"]
    last_end: Int[Tensor, " batch"]

    @classmethod
    def from_mask(cls, mask: Bool[Tensor, "batch pos"]) -> TokenPositions:
        """A right-padded batch: prompt = each row's real tokens, last = each row's last real token."""
        lengths = mask.long().sum(dim=1)
        if bool((lengths == 0).any()):
            raise InterventionError("the mask has a row without real tokens; drop empty rows first")
        right_padded = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0) < lengths.unsqueeze(1)
        if not bool((mask.bool() == right_padded).all()):
            raise InterventionError(
                "token_positions(mask) expects right padding (real tokens first in every row); for other layouts "
                "build TokenPositions(prompt_end, last_start, last_end) yourself"
            )
        return cls(lengths, lengths - 1, lengths)

    @classmethod
    def generating(cls, prompt_end: int, batch: int) -> TokenPositions:
        """Generation on left-padded prompts that end at column ``prompt_end``: prompt = the columns before it,
        last = the last prompt token and every generated token."""
        end = torch.full((batch,), prompt_end, dtype=torch.long)
        return cls(end, end - 1, torch.full((batch,), torch.iinfo(torch.long).max, dtype=torch.long))

    def select(self, where: Where, batch: int, n_pos: int, device: torch.device) -> Bool[Tensor, "batch pos"] | None:
        """Columns ``where`` covers in a pass of ``n_pos`` columns (None: all of them)."""
        if where == "all":
            return None
        if batch != self.prompt_end.shape[0]:
            raise InterventionError(
                f"token positions were set for a batch of {self.prompt_end.shape[0]} rows but the forward pass has "
                f"{batch}: set token_positions for the batch being run"
            )
        column = torch.arange(n_pos, device=device).unsqueeze(0)
        if where == "prompt":
            return column < self.prompt_end.to(device).unsqueeze(1)
        start, end = self.last_start.to(device).unsqueeze(1), self.last_end.to(device).unsqueeze(1)
        return (column >= start) & (column < end)


_POSITIONS: contextvars.ContextVar[TokenPositions | None] = contextvars.ContextVar("xlens_positions", default=None)


@contextlib.contextmanager
def token_positions(positions: TokenPositions | Bool[Tensor, "batch pos"]) -> Iterator[TokenPositions]:
    """Tell ``where="prompt"|"last"`` interventions which tokens those are in the forward passes inside.

    Pass a right-padded batch's mask (``batch.mask``) or a :class:`TokenPositions`.
    """
    if isinstance(positions, Tensor):
        positions = TokenPositions.from_mask(positions)
    token = _POSITIONS.set(positions)
    try:
        yield positions
    finally:
        _POSITIONS.reset(token)


def _selected(where: Where, act: Tensor) -> Bool[Tensor, "batch pos"] | None:
    if where == "all":
        return None
    positions = _POSITIONS.get()
    batch, n_pos = act.shape[0], act.shape[1]
    if positions is None:  # unpadded input: every token is a prompt token, the final column is the last one
        if where == "prompt":
            return None
        sel = torch.zeros(batch, n_pos, dtype=torch.bool, device=act.device)
        sel[:, -1] = True
        return sel
    return positions.select(where, batch, n_pos, act.device)


def _check_where(where: str) -> None:
    if where not in WHERE:
        raise InterventionError(f"where must be one of {WHERE}, got {where!r}")


# --- base --------------------------------------------------------------------------------------------------


class Intervention(ABC):
    """Something that changes activations at hook points while the model runs."""

    @abstractmethod
    def hooks(self, model: Any) -> list[Hook]:
        """``(hook_name, hook_fn)`` pairs for ``run_with_hooks`` / ``bridge.hooks`` (hook names are checked)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (kind, hooks, unit count, settings)."""

    def apply(self, model: Any) -> contextlib.AbstractContextManager[Any]:
        """Context manager: the intervention is active inside and removed exactly on exit."""
        return apply(model, self)


def intervention_hooks(model: Any, interventions: Sequence[Intervention | Hook]) -> list[Hook]:
    """The hooks of several interventions (or raw ``(name, fn)`` pairs), in the order given."""
    hooks: list[Hook] = []
    for iv in interventions:
        if isinstance(iv, Intervention):
            hooks.extend(iv.hooks(model))
        elif isinstance(iv, tuple) and len(iv) == 2 and isinstance(iv[0], str) and callable(iv[1]):
            hooks.append(iv)
        else:
            raise InterventionError(f"expected an Intervention or a (hook_name, fn) pair, got {type(iv).__name__}")
    return hooks


@contextlib.contextmanager
def apply(model: Any, *interventions: Intervention | Hook) -> Iterator[Any]:
    """Activate interventions on ``model`` (a LensModel or a TransformerLens model) inside a ``with`` block.

    Hooks run in the order the interventions are given. On exit, normal or by an exception, exactly the hooks added
    here are removed.
    """
    hooks = intervention_hooks(model, interventions)
    with _bridge(model).hooks(fwd_hooks=hooks):
        yield model


def _bridge(model: Any) -> Any:
    return getattr(model, "bridge", model)


def _check_hook_names(model: Any, names: Sequence[str]) -> None:
    hook_dict = _bridge(model).hook_dict
    unknown = [n for n in names if n not in hook_dict]
    if unknown:
        raise InterventionError(
            f"unknown hook name(s) {unknown[:5]} for this model; see model.bridge.hook_dict for the available ones "
            "(was the expert set made with another model?)"
        )


# --- unit interventions ------------------------------------------------------------------------------------


def _as_long(x: Any) -> Tensor:
    return torch.as_tensor(x, dtype=torch.long).flatten().cpu()


def _as_float(x: Any) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float32).flatten().cpu()


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


def _flat_units(act: Tensor, pos: Tensor, hook_name: str) -> Tensor:
    flat = act.reshape(act.shape[0], act.shape[1], -1)
    if pos.numel() and int(pos.max()) >= flat.shape[2]:
        raise InterventionError(
            f"unit position {int(pos.max())} is out of range at {hook_name}, which has {flat.shape[2]} units: "
            "the intervention was made for another model"
        )
    return flat


def _unit_hook(hook_name: str, pos: Tensor, per_unit: Tensor, where: Where, op: str) -> HookFn:
    """A hook that forces (``op="set"``) or scales (``op="scale"``) units ``pos`` at the ``where`` tokens."""
    cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def hook_fn(act: Tensor, hook: Any) -> Tensor:
        flat = _flat_units(act, pos, hook_name)
        key = (act.device, act.dtype)
        if key not in cache:
            cache[key] = (pos.to(act.device), per_unit.to(device=act.device, dtype=act.dtype))
        index, value = cache[key]
        current = flat.index_select(2, index)
        new = value.expand_as(current) if op == "set" else current * value
        sel = _selected(where, act)
        if sel is not None:
            new = torch.where(sel.unsqueeze(-1), new, current)
        return flat.index_copy(2, index, new).view(act.shape)

    return hook_fn


def _group_by_hook(index: UnitIndex, units: Tensor, per_unit: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
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


class _UnitIntervention(Intervention):
    """Shared by Force and Dampen: one number per unit (a value or a factor), grouped by hook."""

    units: dict[str, Int[Tensor, " k"]]
    where: Where
    _op: str
    _what: str

    def _numbers(self) -> dict[str, Tensor]:
        return getattr(self, self._what)

    def _validate(self) -> None:
        _check_where(self.where)
        self.units = {h: _as_long(p) for h, p in self.units.items()}
        setattr(self, self._what, {h: _as_float(v) for h, v in self._numbers().items()})
        _check_units(type(self).__name__, self.units, self._numbers(), self._what)

    @property
    def n_units(self) -> int:
        return sum(int(p.numel()) for p in self.units.values())

    def hooks(self, model: Any) -> list[Hook]:
        _check_hook_names(model, list(self.units))
        numbers = self._numbers()
        return [(h, _unit_hook(h, self.units[h], numbers[h], self.where, self._op)) for h in self.units]

    def describe(self) -> dict[str, Any]:
        numbers = list(self._numbers().values())
        return {
            "kind": type(self).__name__.lower(),
            "n_units": self.n_units,
            "hooks": {h: int(p.numel()) for h, p in self.units.items()},
            "where": self.where,
            f"mean_{self._what[:-1]}": float(torch.cat(numbers).mean()) if self.n_units else None,
        }


@dataclass
class Force(_UnitIntervention):
    """Set units to a value per unit (a do-intervention) at the ``where`` tokens.

    Attributes:
        units: hook name -> unit positions in the hook's flattened activation.
        values: hook name -> the value of each of those units (same order).
        where: ``"all"``, ``"prompt"`` or ``"last"`` tokens (see the module docstring).
    """

    units: dict[str, Int[Tensor, " k"]]
    values: dict[str, Float[Tensor, " k"]] = field(repr=False)
    where: Where = "all"
    _op = "set"
    _what = "values"

    def __post_init__(self) -> None:
        self._validate()

    @classmethod
    def from_experts(
        cls,
        experts: ExpertSet,
        k: int | None = 200,
        value: str | float | Tensor = "on_p50",
        where: Where = "all",
    ) -> Force:
        """Force the first ``k`` experts (all with ``k=None``) to ``value``.

        ``value``: a statistic of the set (``on_p50`` = median response on the language, ``on_mean``, ``on_p90``,
        ``off_p50``, ``off_mean``), ``"zero"``, a number for every unit, or a tensor with one value per expert.
        Statistics are of the pooled responses the experts were scored on (mean over tokens by default).
        """
        chosen = experts if k is None else experts.head(k)
        if isinstance(value, str):
            if value == "zero":
                values = torch.zeros(len(chosen))
            elif value in chosen.stats:
                values = chosen.stats[value]
            else:
                raise InterventionError(
                    f"unknown value {value!r}: use 'zero', a number, a tensor, or a statistic of the expert set "
                    f"({', '.join(sorted(chosen.stats))})"
                )
        elif isinstance(value, Tensor):
            values = value.flatten()
            if values.numel() != len(chosen):
                raise InterventionError(f"value has {values.numel()} entries for {len(chosen)} experts")
        else:
            values = torch.full((len(chosen),), float(value))
        units, numbers = _group_by_hook(chosen.unit_index, chosen.units, values)
        return cls(units, numbers, where)


@dataclass
class Dampen(_UnitIntervention):
    """Multiply units by a factor per unit at the ``where`` tokens.

    Attributes:
        units: hook name -> unit positions in the hook's flattened activation.
        factors: hook name -> the factor of each of those units (same order).
        where: ``"all"``, ``"prompt"`` or ``"last"`` tokens.
    """

    units: dict[str, Int[Tensor, " k"]]
    factors: dict[str, Float[Tensor, " k"]] = field(repr=False)
    where: Where = "all"
    _op = "scale"
    _what = "factors"

    def __post_init__(self) -> None:
        self._validate()

    @classmethod
    def damp(cls, experts: ExpertSet, alpha: float, k: int | None = None, where: Where = "all") -> Dampen:
        """Multiply the first ``k`` experts (all with ``k=None``) by the constant ``alpha``."""
        chosen = experts if k is None else experts.head(k)
        units, numbers = _group_by_hook(chosen.unit_index, chosen.units, torch.full((len(chosen),), float(alpha)))
        return cls(units, numbers, where)

    @classmethod
    def det0(cls, experts: ExpertSet, k: int | None = None, where: Where = "all") -> Dampen:
        """Zero the first ``k`` experts (all with ``k=None``)."""
        return cls.damp(experts, 0.0, k, where)

    @classmethod
    def aura(
        cls,
        source: ExpertSet | ExpertScores,
        language: str | None = None,
        k: int | None = None,
        where: Where = "all",
    ) -> Dampen:
        """AurA (Suau et al. 2024, "Whispering Experts"): scale each unit with AUROC > 0.5 by ``1 - Gini``,
        ``Gini = 2 (AUROC - 0.5)``; units with AUROC <= 0.5 are left alone.

        ``source`` is an ExpertSet (its first ``k`` experts, all with ``k=None``) or ExpertScores with
        ``language`` (every unit of the model with AUROC > 0.5, as in the paper; with ``k``, the ``k`` of them
        with the highest AUROC).
        """
        from xlens.experts.sets import ExpertScores

        if isinstance(source, ExpertScores):
            if language is None:
                raise InterventionError("Dampen.aura on ExpertScores needs language=")
            auroc = source.auroc[source.lang_index(language)]
            units = (auroc > 0.5).nonzero().squeeze(1)
            units = units[auroc[units].argsort(descending=True, stable=True)]
            if k is not None:
                units = units[:k]
            index = source.units
            auroc = auroc[units]
        else:
            chosen = source if k is None else source.head(k)
            keep = chosen.auroc > 0.5
            units, index, auroc = chosen.units[keep], chosen.unit_index, chosen.auroc[keep]
        by_pos, by_factor = _group_by_hook(index, units, aura_factors(auroc))
        return cls(by_pos, by_factor, where)


def aura_factors(auroc: Float[Tensor, " unit"]) -> Float[Tensor, " unit"]:
    """AurA's dampening factor ``1 - Gini = 1 - 2 (AUROC - 0.5)`` where AUROC > 0.5, else 1 (untouched)."""
    auroc = auroc.double()
    return torch.where(auroc > 0.5, 1 - 2 * (auroc - 0.5), torch.ones_like(auroc)).float()


def lape_deactivate(
    lape_result: LapeResult,
    lang_index: int,
    unit_index: UnitIndex,
    k: int | None = None,
    where: Where = "all",
) -> Dampen:
    """Zero the LAPE units of language ``lang_index`` (Tang et al. 2024's deactivation).

    ``unit_index`` is the index of the responses LAPE was computed on. With ``k``, only the ``k`` of the language's
    units with the lowest entropy.
    """
    units = lape_result.units_for(lang_index).cpu()
    if units.numel() == 0:
        raise InterventionError(f"LAPE assigned no unit to language {lang_index}: nothing to deactivate")
    if int(units.max()) >= unit_index.n_units:
        raise InterventionError(
            f"LAPE unit {int(units.max())} is outside the unit index ({unit_index.n_units} units): pass the index of "
            "the responses LAPE was computed on"
        )
    if k is not None:
        units = units[lape_result.entropy[units].cpu().argsort(stable=True)[:k]]
    by_pos, by_factor = _group_by_hook(unit_index, units, torch.zeros(units.numel()))
    return Dampen(by_pos, by_factor, where)


# --- residual steering -------------------------------------------------------------------------------------


@dataclass
class Steer(Intervention):
    """Add ``alpha * vector`` to the residual stream after block ``layer`` (``blocks.{layer}.hook_resid_post``)
    at the ``where`` tokens (default: every token)."""

    layer: int
    vector: Float[Tensor, " d_model"] = field(repr=False)
    alpha: float = 1.0
    where: Where = "all"

    def __post_init__(self) -> None:
        _check_where(self.where)
        self.vector = torch.as_tensor(self.vector, dtype=torch.float32).detach().cpu()
        if self.vector.ndim != 1:
            raise InterventionError(f"the steering vector must be 1-D [d_model], got shape {tuple(self.vector.shape)}")
        if not bool(torch.isfinite(self.vector).all()):
            raise InterventionError("the steering vector holds NaN or inf")

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_post"

    def hooks(self, model: Any) -> list[Hook]:
        _check_hook_names(model, [self.hook_name])
        shift = self.alpha * self.vector
        where = self.where

        def hook_fn(act: Tensor, hook: Any) -> Tensor:
            if act.shape[-1] != shift.shape[0]:
                raise InterventionError(
                    f"the steering vector has {shift.shape[0]} dimensions but the residual stream has {act.shape[-1]}"
                )
            delta = shift.to(device=act.device, dtype=act.dtype)
            sel = _selected(where, act)
            if sel is None:
                return act + delta
            return act + sel.unsqueeze(-1).to(act.dtype) * delta

        return [(self.hook_name, hook_fn)]

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "steer",
            "layer": self.layer,
            "alpha": self.alpha,
            "vector_norm": float(self.vector.norm()),
            "where": self.where,
        }

    @classmethod
    def mean_difference(
        cls,
        model: LensModel,
        texts_a: Sequence[str],
        texts_b: Sequence[str],
        layer: int,
        alpha: float = 1.0,
        where: Where = "all",
        batch_size: int = 16,
        max_length: int | None = 256,
    ) -> Steer:
        """Steer from A towards B: ``vector = mean(B) - mean(A)`` of the residual stream after block ``layer``.

        Each mean is over sentences of the sentence's mean over its real tokens (mean pooling, so every sentence
        weighs the same whatever its length). The BOS token is left out of the pooling: its residual is the same
        for every sentence and often huge (attention sink), and with mean pooling it would enter the two means
        with weights 1/length that differ between languages.
        """
        mean_a = mean_residual(model, texts_a, layer, batch_size=batch_size, max_length=max_length)
        mean_b = mean_residual(model, texts_b, layer, batch_size=batch_size, max_length=max_length)
        return cls(layer, mean_b - mean_a, alpha, where)

    @classmethod
    def between_languages(
        cls,
        model: LensModel,
        corpus: ParallelCorpus,
        target: str,
        source: str | Sequence[str] | None = None,
        layer: int | None = None,
        alpha: float = 1.0,
        where: Where = "all",
        **kwargs: Any,
    ) -> Steer:
        """Mean difference from ``source`` (a language, several, or every other language of the corpus) to
        ``target`` on a parallel corpus; ``layer`` defaults to the middle block."""
        from xlens.data.languages import flores_code

        tgt = flores_code(target)
        if source is None:
            sources = [lang for lang in corpus.languages if lang != tgt]
        else:
            sources = [flores_code(s) for s in ([source] if isinstance(source, str) else source)]
        if not sources or tgt in sources:
            raise InterventionError(f"the source languages {sources} must be non-empty and exclude the target {tgt}")
        texts_a = [s for lang in sources for s in corpus[lang]]
        layer = model.n_layers // 2 if layer is None else layer
        return cls.mean_difference(model, texts_a, corpus[tgt], layer, alpha, where, **kwargs)


def mean_residual(
    model: LensModel,
    texts: Sequence[str],
    layer: int,
    batch_size: int = 16,
    max_length: int | None = 256,
) -> Float[Tensor, " d_model"]:
    """Mean over sentences of each sentence's mean residual (after block ``layer``) over its real tokens, BOS
    excluded (float32, CPU)."""
    if isinstance(texts, str) or len(texts) == 0:
        raise InterventionError("mean_residual needs a non-empty sequence of sentences")
    if not 0 <= layer < model.n_layers:
        raise InterventionError(f"layer {layer} out of range: the model has blocks 0..{model.n_layers - 1}")
    skip = 1 if model.prepend_bos and model.tokenizer.bos_token_id is not None else 0
    total = torch.zeros(model.d_model, dtype=torch.float64)
    counted = 0
    mask: Tensor = torch.empty(0, dtype=torch.bool)

    def pool_hook(act: Tensor, hook: Any) -> None:
        nonlocal total, counted
        m = mask.clone()
        m[:, :skip] = False
        lengths = m.sum(dim=1, keepdim=True)
        keep = lengths.squeeze(1) > 0  # a sentence that is only BOS has no token to pool
        pooled = (act.double() * m.unsqueeze(-1)).sum(dim=1)[keep] / lengths[keep]
        total += pooled.sum(dim=0).cpu()
        counted += int(keep.sum())

    for start in range(0, len(texts), batch_size):
        batch = model.tokenize(list(texts[start : start + batch_size]), max_length=max_length)
        mask = batch.mask
        model.run_hooks(batch, [(model.resid_hook(layer), pool_hook)])
    if counted == 0:
        raise InterventionError("no sentence has a token besides BOS: nothing to average")
    return (total / counted).float()


# --- one entry point for the CLI ---------------------------------------------------------------------------


def build_intervention(
    method: str,
    *,
    scores: ExpertScores | None = None,
    experts: ExpertSet | None = None,
    language: str | None = None,
    k: int | None = None,
    value: str | float = "on_p50",
    alpha: float | None = None,
    where: Where = "all",
    model: LensModel | None = None,
    corpus: ParallelCorpus | None = None,
    source_language: str | Sequence[str] | None = None,
    layer: int | None = None,
    responses: Any = None,
    lape_result: LapeResult | None = None,
    languages: Sequence[str] | None = None,
) -> Intervention:
    """Build the intervention of ``method`` for ``language``.

    Methods and what they need:
        ``force``: ``experts`` (first ``k``) or ``scores`` + ``language`` (top ``k`` by AP); ``value`` (default
        ``on_p50``, see :meth:`Force.from_experts`).
        ``det0`` / ``damp``: as force; ``damp`` multiplies by ``alpha`` (default ``DAMP_FACTOR`` = 0.5).
        ``aura``: as force; ``k=None`` dampens every unit with AUROC > 0.5 (the paper), otherwise the top ``k``
        experts by AP (the same units as force/det0 at that k), each by its AurA factor.
        ``lape``: ``lape_result`` + ``languages`` (its language order) + a unit index from ``scores`` or
        ``responses``; or ``responses`` with the ``active`` pooling, on which LAPE is computed. ``k`` keeps the
        language's ``k`` lowest-entropy units.
        ``diffmean``: ``model`` + ``corpus``: mean residual of ``language`` minus that of ``source_language``
        (default: all other corpus languages) after block ``layer`` (default: middle), scaled by ``alpha``
        (default 1). ``k`` is not used.
    """
    if method not in METHODS:
        raise InterventionError(f"unknown intervention method {method!r}; use one of {', '.join(METHODS)}")
    if language is None and experts is None:
        raise InterventionError(f"method {method!r} needs language=")
    if method == "diffmean":
        if model is None or corpus is None or language is None:
            raise InterventionError("diffmean needs model=, corpus= (a ParallelCorpus) and language=")
        return Steer.between_languages(
            model, corpus, language, source_language, layer, 1.0 if alpha is None else alpha, where
        )
    if method == "lape":
        return _build_lape(language, k, where, scores, responses, lape_result, languages)
    if method == "aura" and k is None:
        if scores is not None and language is not None:
            return Dampen.aura(scores, language, None, where)
        if experts is not None:
            return Dampen.aura(experts, None, None, where)
    chosen = _expert_set(scores, experts, language, k)
    if method == "force":
        return Force.from_experts(chosen, None, value, where)
    if method == "det0":
        return Dampen.det0(chosen, None, where)
    if method == "damp":
        return Dampen.damp(chosen, DAMP_FACTOR if alpha is None else alpha, None, where)
    return Dampen.aura(chosen, None, None, where)


def _expert_set(
    scores: ExpertScores | None, experts: ExpertSet | None, language: str | None, k: int | None
) -> ExpertSet:
    if experts is not None:
        if language is not None:
            from xlens.data.languages import flores_code

            if flores_code(language) != experts.language:
                raise InterventionError(f"the expert set is for {experts.language}, not {flores_code(language)}")
        return experts if k is None else experts.head(k)
    if scores is None or language is None:
        raise InterventionError("give experts= (an ExpertSet) or scores= (ExpertScores) with language=")
    if k is None:
        raise InterventionError("selecting experts from scores needs k=")
    return scores.select(language, k)


def _build_lape(
    language: str | None,
    k: int | None,
    where: Where,
    scores: ExpertScores | None,
    responses: Any,
    lape_result: LapeResult | None,
    languages: Sequence[str] | None,
) -> Dampen:
    from xlens.data.languages import flores_code

    if language is None:
        raise InterventionError("lape needs language=")
    if lape_result is None:
        if responses is None or "active" not in responses.pooled:
            raise InterventionError(
                "lape needs lape_result= (with languages=) or responses= collected with the 'active' pooling"
            )
        from xlens.experts.lape import lape

        lape_result = lape(responses["active"], responses.token_counts, responses.lang_ids, len(responses.languages))
        languages = responses.languages
    if languages is None:
        languages = responses.languages if responses is not None else scores.languages if scores is not None else None
    if languages is None:
        raise InterventionError("lape with lape_result= needs languages= (the language order LAPE used)")
    unit_index = responses.units if responses is not None else scores.units if scores is not None else None
    if unit_index is None:
        raise InterventionError("lape with lape_result= needs scores= or responses= for the unit index")
    code = flores_code(language)
    if code not in languages:
        raise InterventionError(f"language {code} is not among LAPE's languages {list(languages)}")
    return lape_deactivate(lape_result, list(languages).index(code), unit_index, k, where)
