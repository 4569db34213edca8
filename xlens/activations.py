"""Pooled unit responses: one value per sentence per unit, collected through hook points.

Each unit's response is pooled over the real tokens of a sentence (mean, max, last token, median, or the number of
tokens on which it is active, for LAPE) inside the hook, so memory grows with sentences x units, never with tokens x
units, and no activation cache is built. Batches are sorted by length, padding is masked out of every statistic, and
the forward pass stops after the deepest block that is needed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from xlens._display import html_card, short_list
from xlens._io import content_key, read_pair, reading, write_pair
from xlens.artifacts import ArtifactStore
from xlens.data.corpus import ParallelCorpus
from xlens.errors import InputError, InputIndexError, InputTypeError, NonFiniteError
from xlens.models.lens import DEFAULT_MAX_TOKENS, ForwardBatch, LensModel, Reader, block_of

Pooling = Literal["mean", "max", "last", "median", "active", "gate_active", "weighted"]
POOLINGS: tuple[str, ...] = ("mean", "max", "last", "median", "active", "gate_active", "weighted")
UnitSpec = str | Sequence[str] | Callable[[str], bool]


def _short_name(hook: str) -> str:
    """``blocks.3.mlp.hook_post`` -> ``mlp``: a hook's name within its block, as unit labels show it."""
    return hook.split(".", 2)[-1].removesuffix(".hook_post").removesuffix(".hook_out")


@dataclass(frozen=True)
class UnitIndex:
    """Maps flat unit indices to (hook, position within the hook) and back.

    Units are laid out hook after hook in the order of ``hooks``; a hook with ``[batch, pos, heads, d_head]``
    activations contributes ``heads * d_head`` units, flattened row-major.
    """

    hooks: tuple[str, ...]
    widths: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.hooks) != len(self.widths):
            raise InputError("UnitIndex needs one width per hook")
        if len(set(self.hooks)) != len(self.hooks):
            raise InputError(f"duplicate hook names in {self.hooks}")

    @property
    def n_units(self) -> int:
        """The number of units over all hooks."""
        return sum(self.widths)

    def __len__(self) -> int:
        return self.n_units

    @property
    def offsets(self) -> list[int]:
        """Where each hook's units start in the flat unit numbering."""
        out, total = [], 0
        for w in self.widths:
            out.append(total)
            total += w
        return out

    def hook_ids(self) -> Int[Tensor, " unit"]:
        """For each unit in the flat numbering, the index of its hook in ``hooks``."""
        return torch.repeat_interleave(torch.arange(len(self.hooks)), torch.tensor(self.widths))

    def positions(self) -> Int[Tensor, " unit"]:
        """For each unit in the flat numbering, its position within its hook's width."""
        return torch.cat([torch.arange(w) for w in self.widths])

    def blocks(self) -> Int[Tensor, " unit"]:
        """Block of every unit (-1 for hooks outside the blocks)."""
        per_hook = torch.tensor([-1 if (b := block_of(h)) is None else b for h in self.hooks])
        return per_hook[self.hook_ids()]

    def locate(self, unit: int) -> tuple[str, int]:
        """(hook name, position) of flat unit index ``unit``."""
        if not 0 <= unit < self.n_units:
            raise InputIndexError(f"unit {unit} out of range [0, {self.n_units})")
        for hook, offset, width in zip(self.hooks, self.offsets, self.widths, strict=True):
            if unit < offset + width:
                return hook, unit - offset
        raise AssertionError("unreachable")

    def unit(self, hook: str, position: int) -> int:
        """Flat index of ``position`` at ``hook``."""
        try:
            j = self.hooks.index(hook)
        except ValueError:
            raise InputError(f"hook {hook!r} is not in this index; it has {list(self.hooks)[:5]}...") from None
        if not 0 <= position < self.widths[j]:
            raise InputIndexError(f"position {position} out of range for {hook} (width {self.widths[j]})")
        return self.offsets[j] + position

    def labels(self, units: Sequence[int] | Tensor) -> list[str]:
        """Readable names such as ``L3.mlp#1234`` for plots and tables."""
        out = []
        for u in torch.as_tensor(units).tolist():
            hook, pos = self.locate(int(u))
            block = block_of(hook)
            out.append(f"L{block}.{_short_name(hook)}#{pos}" if block is not None else f"{hook}#{pos}")
        return out

    def parse(self, label: str) -> int:
        """The flat index a user names: a label of :meth:`labels` (``L12.mlp#1834``), the short ``L12.1834`` (the
        block's only hook in this index), or a flat index (``20345``)."""
        text = label.strip()
        if text.isdigit():
            unit = int(text)
            self.locate(unit)
            return unit
        match = re.fullmatch(r"L(\d+)\.(?:(.+)#)?(\d+)", text)
        if match is None:
            raise InputError(
                f"cannot read unit {label!r}: write L<block>.<position> (L12.1834), a label such as L12.mlp#1834, "
                "or a flat unit index"
            )
        block, short, position = int(match[1]), match[2], int(match[3])
        hooks = [h for h in self.hooks if block_of(h) == block]
        if short is not None:
            hooks = [h for h in hooks if _short_name(h) == short]
        if len(hooks) != 1:
            present = sorted({b for h in self.hooks if (b := block_of(h)) is not None})
            why = f"no hook of block {block}{f' named {short}' if short else ''} (blocks: {present})"
            if hooks:
                example = self.labels([self.unit(hooks[0], 0)])[0]
                why = f"block {block} has {len(hooks)} hooks here: name one, e.g. {example}"
            raise InputError(f"cannot read unit {label!r}: {why}")
        return self.unit(hooks[0], position)

    def to_dict(self) -> dict[str, Any]:
        """The index as JSON-able data (see :meth:`from_dict`)."""
        return {"hooks": list(self.hooks), "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UnitIndex:
        """The index that :meth:`to_dict` wrote."""
        return cls(tuple(data["hooks"]), tuple(int(w) for w in data["widths"]))


@dataclass
class Responses:
    """Pooled responses of many units to many sentences.

    Attributes:
        pooled: pooling name -> ``[sentence, unit]`` tensor.
        units: the unit index (hook, position) of the columns.
        token_counts: real tokens per sentence (BOS included where the model prepends one).
        lang_ids: language index of every sentence (into ``languages``), when collected from a corpus.
        languages: FLORES codes, when collected from a corpus.
        meta: what produced these responses (model identity, data fingerprint, settings).
    """

    pooled: dict[str, Float[Tensor, "sentence unit"]]
    units: UnitIndex
    token_counts: Int[Tensor, " sentence"]
    lang_ids: Int[Tensor, " sentence"] | None = None
    languages: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, pooling: str) -> Float[Tensor, "sentence unit"]:
        try:
            return self.pooled[pooling]
        except KeyError:
            raise InputError(f"pooling {pooling!r} was not collected; have {sorted(self.pooled)}") from None

    @property
    def n_sentences(self) -> int:
        """How many sentences the responses were pooled over."""
        return int(self.token_counts.shape[0])

    def labels_for(self, language: str) -> Bool[Tensor, " sentence"]:
        """Which sentences are in ``language`` (a boolean mask); an error if the responses carry no language labels."""
        if self.lang_ids is None:
            raise InputError("these responses carry no language labels; collect them from a corpus")
        return self.lang_ids == self.languages.index(language)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``responses.json`` and its tensors into folder ``path`` (one atomic commit, see
        :func:`xlens._io.write_pair`)."""
        folder = Path(path)
        tensors = {f"pooled.{k}": v for k, v in self.pooled.items()}
        tensors["token_counts"] = self.token_counts
        if self.lang_ids is not None:
            tensors["lang_ids"] = self.lang_ids
        header = {
            "kind": "xlens.Responses",
            "units": self.units.to_dict(),
            "languages": self.languages,
            "meta": self.meta,
        }
        write_pair(folder, "responses", tensors, header)
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Responses:
        """Responses that :meth:`save` wrote, checked for damage and read only inside ``path``."""
        tensors, header = read_pair(Path(path), "responses", "xlens.Responses")
        with reading(Path(path)):
            pooled = {k.removeprefix("pooled."): v for k, v in tensors.items() if k.startswith("pooled.")}
            return cls(
                pooled=pooled,
                units=UnitIndex.from_dict(header["units"]),
                token_counts=tensors["token_counts"],
                lang_ids=tensors.get("lang_ids"),
                languages=list(header["languages"]),
                meta=header["meta"],
            )

    def __repr__(self) -> str:
        return (
            f"Responses({self.n_sentences} sentences x {self.units.n_units} units, poolings {sorted(self.pooled)}, "
            f"languages {self.languages})"
        )

    def _repr_html_(self) -> str:
        return html_card(
            "Responses",
            {
                "sentences x units": f"{self.n_sentences} x {self.units.n_units}",
                "poolings": ", ".join(sorted(self.pooled)),
                "languages": short_list(self.languages),
                "hooks": short_list(list(self.units.hooks), 3),
                "model": self.meta.get("model", {}).get("name", "?"),
            },
        )


def resolve_units(model: LensModel, units: UnitSpec = "mlp") -> list[str]:
    """Hook names for a unit spec.

    ``"mlp"`` (every MLP neuron, ``blocks.{l}.mlp.hook_post``), ``"linear"`` (every linear layer's output: attention
    q/k/v/o and MLP in/gate/out), ``"resid"`` (residual stream after each block), a regular expression over hook
    names (``"re:blocks\\.1[0-7]\\.mlp\\.hook_post"``), an explicit list of hook names, or a predicate.
    """
    if isinstance(units, str):
        if units == "mlp":
            return model.mlp_hooks
        if units == "linear":
            return model.linear_hooks()
        if units == "resid":
            return model.resid_hooks
        if units.startswith("re:"):
            pattern = re.compile(units[3:])
            names = [n for n in model.bridge.hook_dict if pattern.fullmatch(n)]
            if not names:
                raise InputError(f"no hook name matches {units[3:]!r}")
            return names
        raise InputError(f"unknown unit spec {units!r}: use 'mlp', 'linear', 'resid', 're:REGEX' or a list of hooks")
    if callable(units):
        names = [n for n in model.bridge.hook_dict if units(n)]
        if not names:
            raise InputError("the unit filter selected no hook")
        return names
    names = list(units)
    if not names:
        raise InputError("no hook names given")
    model.check_hooks(names)
    return names


def pool(
    acts: Float[Tensor, "batch pos unit"], mask: Bool[Tensor, "batch pos"], pooling: str
) -> Float[Tensor, "batch unit"]:
    """Pool activations over the real tokens of each row (padding is never counted).

    ``mean``, ``max``, ``last`` (last real token), ``median`` (numpy's), ``active`` (number of tokens with
    activation > 0, for LAPE), ``weighted`` (position-weighted mean with weights 1..n: later tokens have seen more
    context; Muennighoff 2022). (``gate_active`` is ``active`` of another hook's activations: see
    :func:`collect_responses`.)
    """
    m = mask.unsqueeze(-1)
    lengths = mask.sum(dim=1)
    if pooling == "mean":
        return (acts * m).sum(dim=1) / lengths.unsqueeze(-1).to(acts.dtype)
    if pooling == "weighted":
        weights = (torch.cumsum(mask, dim=1) * mask).to(acts.dtype)
        return torch.einsum("bpu,bp->bu", acts, weights / weights.sum(dim=1, keepdim=True))
    if pooling == "max":
        return acts.masked_fill(~m, float("-inf")).amax(dim=1)
    if pooling == "last":
        idx = (lengths - 1).view(-1, 1, 1).expand(-1, 1, acts.shape[-1])
        return acts.gather(1, idx).squeeze(1)
    if pooling == "median":
        # numpy's median: the mean of the two middle values of the real tokens (padding sorted to the end).
        ordered = acts.masked_fill(~m, float("inf")).sort(dim=1).values
        lo = ((lengths - 1) // 2).view(-1, 1, 1).expand(-1, 1, acts.shape[-1])
        hi = (lengths // 2).view(-1, 1, 1).expand(-1, 1, acts.shape[-1])
        return (ordered.gather(1, lo) + ordered.gather(1, hi)).squeeze(1) / 2
    if pooling in ("active", "gate_active"):
        return ((acts > 0) & m).sum(dim=1).to(acts.dtype)
    raise InputError(f"unknown pooling {pooling!r}; use one of {POOLINGS}")


def collect_responses(
    model: LensModel,
    texts: Sequence[str],
    *,
    units: UnitSpec = "mlp",
    pooling: str | Sequence[str] = "mean",
    batch_size: int | None = None,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    max_length: int | None = 256,
    dtype: torch.dtype = torch.float32,
    lang_ids: Int[Tensor, " sentence"] | Sequence[int] | None = None,
    languages: Sequence[str] = (),
    progress: bool = True,
    meta: dict[str, Any] | None = None,
    offload: str | os.PathLike[str] | None = None,
) -> Responses:
    """Pooled responses of ``units`` to every text, as one ``[sentence, unit]`` tensor per pooling.

    Args:
        units: see :func:`resolve_units` (default: every MLP neuron).
        pooling: one pooling or several collected in the same forward passes (``mean``, ``max``, ``last``,
            ``median``, ``active`` = number of tokens with activation > 0, ``gate_active`` = for MLP neurons, the
            number of tokens on which LAPE's reference counts them active: ``act_fn(gate_proj(x)) > 0`` on gated
            MLPs (read at the gate hook), the neuron's activation > 0 elsewhere).
        max_length: truncate sentences to this many tokens (None: no limit).
        dtype: storage dtype of the result (float32 or float16 to halve memory on big models).
        offload: a folder; the result tensors are then memory-mapped files there (``<pooling>.bin``), written
            batch by batch, so a big model's ``[sentence, unit]`` matrix need not fit in RAM.
    """
    if isinstance(texts, str):
        raise InputTypeError("collect_responses takes a sequence of sentences, not a single string")
    if len(texts) == 0:
        raise InputError("no sentences to collect responses on")
    poolings = check_poolings(pooling)
    hooks = resolve_units(model, units)
    widths = model.hook_widths(hooks)  # from the config; a probing pass only for hooks it does not size
    index = UnitIndex(tuple(hooks), tuple(widths[h] for h in hooks))
    n = len(texts)
    ids = _checked_lang_ids(lang_ids, n)
    out = {
        p: _storage(n, index.n_units, dtype, None if offload is None else Path(offload) / f"{p}.bin") for p in poolings
    }
    token_counts = torch.empty(n, dtype=torch.long)
    gates = _gate_readers(model, index, poolings, out)
    model.forward(
        texts,
        [*_pooling_readers(index, poolings, out, token_counts, counted=set(gates)), *gates.values()],
        batch_size=batch_size,
        max_tokens=max_tokens,
        max_length=max_length,
        progress=progress,
        desc="pooled responses",
    )
    info = _responses_meta(model, units, poolings, max_length, dtype, meta)
    return Responses(out, index, token_counts, ids, list(languages), info)


def _checked_lang_ids(
    lang_ids: Int[Tensor, " sentence"] | Sequence[int] | None, n: int
) -> Int[Tensor, " sentence"] | None:
    """``lang_ids`` as a long tensor, checked to hold one entry per sentence."""
    ids = None if lang_ids is None else torch.as_tensor(lang_ids, dtype=torch.long)
    if ids is not None and ids.shape[0] != n:
        raise InputError(f"lang_ids has {ids.shape[0]} entries for {n} sentences")
    return ids


def _pooling_readers(
    index: UnitIndex,
    poolings: list[str],
    out: dict[str, Float[Tensor, "sentence unit"]],
    token_counts: Int[Tensor, " sentence"],
    counted: set[str],
) -> list[tuple[str, Reader]]:
    """One reader per hook that pools its activations into the hook's columns of ``out`` (and, at the first hook,
    stores each sentence's token count); ``gate_active`` only for hooks not ``counted`` at their gate."""

    def pooler(hook: str, start: int, width: int, mine: list[str]) -> Reader:
        def read(act: Tensor, batch: ForwardBatch) -> None:
            flat = act.reshape(act.shape[0], act.shape[1], -1).float()  # pooled in float32 whatever the dtype
            mask = batch.mask_on(act.device)
            # Padding may hold anything, real tokens may not; the masked copy is made only when something is off.
            if not bool(torch.isfinite(flat).all()) and not bool(torch.isfinite(flat[mask]).all()):
                raise non_finite_error(hook, act, False)
            for p in mine:
                batch.store(out[p], pool(flat, mask, p), slice(start, start + width))
            if start == 0:
                batch.store(token_counts, batch.lengths)

        return read

    return [
        (h, pooler(h, o, w, [p for p in poolings if p != "gate_active" or h not in counted]))
        for h, o, w in zip(index.hooks, index.offsets, index.widths, strict=True)
    ]


def non_finite_error(where: str, act: Tensor, intervened: bool) -> NonFiniteError:
    """The error for activations that are nan or infinite at ``where``, naming their dtype and what to change."""
    bad = int((~torch.isfinite(act)).sum())
    fix = (
        "float16 overflows in this model: run in float32 or bfloat16 (runtime.dtype)"
        if act.dtype == torch.float16
        else "an intervention may have made them so (a large value or alpha)"
        if intervened
        else "check the model's weights"
    )
    return NonFiniteError(
        f"{bad} activation values are nan or infinite at {where} in {str(act.dtype).removeprefix('torch.')}: {fix}"
    )


def _gate_readers(
    model: LensModel, index: UnitIndex, poolings: list[str], out: dict[str, Float[Tensor, "sentence unit"]]
) -> dict[str, tuple[str, Reader]]:
    """For ``gate_active`` on gated MLPs, by neuron hook: a reader at the block's gate hook that counts the tokens
    with ``act_fn(gate) > 0`` into the neurons' columns (LAPE's reference count). Neurons of MLPs without a gate
    count ``gate_active`` as ``active``, at their own hook."""
    if "gate_active" not in poolings:
        return {}
    blocks = {model.mlp_hook(b): b for b in range(model.n_layers)}
    others = [h for h in index.hooks if h not in blocks]
    if others:
        raise InputError(f"the gate_active pooling counts MLP neurons only; these units are not: {others[:3]}")
    gates = {h: gate for h in index.hooks if (gate := model.gate_hook(blocks[h])) is not None}
    if model.gated_mlp and len(gates) < len(index.hooks):
        raise InputError(
            f"{model.name} has gated MLPs but no hook on their gate projection, which the gate_active count reads: "
            "give the hf backend module_paths={'gate_proj': REGEX} (its path inside a block), or count the "
            "neuron instead (LAPE counts = 'post')"
        )
    act_fn = model.gate_activation() if gates else None

    def reader(start: int, width: int) -> Reader:
        def read(act: Tensor, batch: ForwardBatch) -> None:
            assert act_fn is not None
            active = act_fn(act) > 0  # in the model's dtype, as the reference computes it
            counts = (active & batch.mask_on(act.device).unsqueeze(-1)).sum(dim=1).float()
            batch.store(out["gate_active"], counts, slice(start, start + width))

        return read

    columns = dict(zip(index.hooks, zip(index.offsets, index.widths, strict=True), strict=True))
    return {h: (gate, reader(*columns[h])) for h, gate in gates.items()}


def _responses_meta(
    model: LensModel,
    units: UnitSpec,
    poolings: list[str],
    max_length: int | None,
    dtype: torch.dtype,
    meta: dict[str, Any] | None,
) -> dict[str, Any]:
    """What :class:`Responses` records of how they were collected, updated with ``meta``."""
    return {
        "model": model.identity(),
        "numerics": model.numerics(),
        "units": "custom" if callable(units) else units,
        "pooling": poolings,
        "max_length": max_length,
        "dtype": str(dtype).removeprefix("torch."),
        **(meta or {}),
    }


def check_poolings(pooling: str | Sequence[str]) -> list[str]:
    poolings = [pooling] if isinstance(pooling, str) else list(pooling)
    if not poolings:
        raise InputError(f"no pooling given; use one or more of {POOLINGS}")
    for p in poolings:
        if p not in POOLINGS:
            raise InputError(f"unknown pooling {p!r}; use one of {POOLINGS}")
    return poolings


def _storage(rows: int, cols: int, dtype: torch.dtype, file: Path | None) -> Tensor:
    if file is None:
        return torch.empty((rows, cols), dtype=dtype)
    file.parent.mkdir(parents=True, exist_ok=True)
    return torch.from_file(str(file), shared=True, size=rows * cols, dtype=dtype).view(rows, cols)


def corpus_texts(corpus: ParallelCorpus, languages: Sequence[str]) -> tuple[list[str], Int[Tensor, " sentence"]]:
    """Every sentence of ``languages`` (language after language) and the language index of each."""
    texts = [s for lang in languages for s in corpus[lang]]
    return texts, torch.repeat_interleave(torch.arange(len(languages)), len(corpus))


def responses_key(model: LensModel, corpus: ParallelCorpus, languages: Sequence[str], settings: dict[str, Any]) -> str:
    """Cache key of a corpus's responses: the model's identity and numerics, the sentences and the settings
    that change the numbers (where responses are shown or staged, e.g. progress or offload, is left out)."""
    return content_key("responses", model.identity(), model.numerics(), corpus.fingerprint(), list(languages), settings)


def collect_corpus_responses(
    model: LensModel,
    corpus: ParallelCorpus,
    languages: Sequence[str] | None = None,
    *,
    cache: str | os.PathLike[str] | None = None,
    units: UnitSpec = "mlp",
    pooling: str | Sequence[str] = "mean",
    batch_size: int | None = None,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    max_length: int | None = 256,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    offload: str | os.PathLike[str] | None = None,
) -> Responses:
    """Responses to every sentence of every language of a ``ParallelCorpus`` (sentences grouped by language).

    With ``cache`` (a folder), responses are saved there under :func:`responses_key` and a rerun with the same
    inputs loads them instead of recomputing; a corrupted entry is reported and recomputed.
    """
    langs = list(languages) if languages is not None else list(corpus.languages)
    corpus = corpus.select(langs)
    langs = list(corpus.languages)
    settings = {
        "units": resolve_units(model, units),  # the hook names themselves: a callable filter keys by what it picks
        "pooling": check_poolings(pooling),
        "batch_size": batch_size,
        "max_tokens": max_tokens,
        "max_length": max_length,
        "dtype": str(dtype),
    }
    key = responses_key(model, corpus, langs, settings)

    def compute() -> Responses:
        texts, lang_ids = corpus_texts(corpus, langs)
        meta = {"corpus": corpus.name, "corpus_fingerprint": corpus.fingerprint(), "cache_key": key}
        return collect_responses(
            model,
            texts,
            units=units,
            pooling=pooling,
            batch_size=batch_size,
            max_tokens=max_tokens,
            max_length=max_length,
            dtype=dtype,
            lang_ids=lang_ids,
            languages=langs,
            progress=progress,
            meta=meta,
            offload=offload,
        )

    if cache is None:
        return compute()
    return ArtifactStore(Path(cache)).folder("responses", key, compute, Responses.save, Responses.load)
