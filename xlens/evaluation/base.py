"""What an evaluation task is: it reads its data before any model loads, measures one condition, and returns its
table rows and *per-item* scores, so that one paired bootstrap (:mod:`xlens.comparisons`) compares every condition
with the baseline and with its controls on every task.

A task is a class with a ``name``, the ``tables`` it writes, an optional ``Settings`` dataclass read from the
config's ``[evaluate.<name>]`` sub-table, and three methods: :meth:`Task.prepare` (read and check its data, raise
one :class:`xlens.XlensError` naming the fix), :meth:`Task.key` (what its numbers depend on besides the
condition and the model: settings, data fingerprints) and :meth:`Task.measure`. Register it with
:func:`xlens.register_task`; see ``tests/toy_task.py`` for a whole task in one file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from xlens._io import (
    check_tensors,
    content_key,
    load_tensors,
    own_path,
    read_json,
    reading,
    save_tensors,
    write_json,
)
from xlens.artifacts import ArtifactStore
from xlens.conditions import Condition
from xlens.embeddings import sentence_embeddings
from xlens.errors import ArtifactError, InputError, ResultsError
from xlens.models.lens import LensModel

Rows = list[dict[str, Any]]


@dataclass
class ItemScores:
    """Per-item scores of one task under one condition: ``groups[g]`` describes row ``g`` (``{"layer": 12,
    "target": "spa_Latn"}``) and ``scores[metric][g, i]`` is item ``i``'s score there. The items of a row are the
    same items, in the same order, under every condition: that is what makes the bootstrap paired."""

    groups: list[dict[str, Any]]
    scores: dict[str, Float[Tensor, "group item"]]

    def __post_init__(self) -> None:
        for metric, values in self.scores.items():
            if values.ndim != 2 or values.shape[0] != len(self.groups):
                raise InputError(
                    f"item scores of {metric!r} have shape {tuple(values.shape)}: expected [{len(self.groups)}, items]"
                )


@dataclass
class TaskOutput:
    """One task's measurement of one condition: its table rows (the runner adds the condition's columns), its
    per-item scores in blocks (the items of a block are as many in every row) and the seconds it took."""

    tables: dict[str, Rows]
    items: list[ItemScores] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def save(self, folder: Path) -> None:
        """Write the rows and per-item scores into ``folder`` (atomically, file by file)."""
        tensors = {f"{b}/{m}": v.contiguous() for b, block in enumerate(self.items) for m, v in block.scores.items()}
        save_tensors(folder / "items.safetensors", tensors)
        groups = [block.groups for block in self.items]
        write_json(folder / "measured.json", {"tables": self.tables, "groups": groups})

    @classmethod
    def load(cls, folder: Path) -> TaskOutput:
        """The output that :meth:`save` wrote into ``folder``, read only inside it."""
        with reading(folder / "measured.json"):
            data = read_json(own_path(folder, "measured.json"))
            tensors = load_tensors(own_path(folder, "items.safetensors")) if data["groups"] else {}
            blocks = []
            for b, groups in enumerate(data["groups"]):
                scores = {key.split("/", 1)[1]: v for key, v in tensors.items() if key.split("/", 1)[0] == str(b)}
                blocks.append(ItemScores(groups, scores))
            return cls(data["tables"], blocks)

    @staticmethod
    def check(folder: Path) -> None:
        """That a saved output reads back (its record, and its tensors' header against the file's length) without
        loading its tensors: ArtifactError where :meth:`load` would fail on a damaged file."""
        with reading(folder / "measured.json"):
            data = read_json(own_path(folder, "measured.json"))
            if not isinstance(data["tables"], dict) or not isinstance(data["groups"], list):
                raise ArtifactError(f"{folder / 'measured.json'} is not a measurement record")
            if data["groups"]:
                check_tensors(own_path(folder, "items.safetensors"))


def plain(value: Any) -> Any:
    """numpy and torch scalars as Python numbers: rows survive a JSON round trip unchanged."""
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value


class TaskContext:
    """What a task measures with: the model, the run's config, splits and expert scores, the embedding layers, and
    the run folder's cache (None: nothing is kept). :meth:`embed` is the one way tasks embed texts: a content-keyed
    artefact per (texts, condition, layers, pooling), so two tasks that read the same texts under the same
    condition share one forward pass."""

    def __init__(
        self,
        model: LensModel,
        inputs: Any,
        *,
        store: ArtifactStore | None = None,
        progress: bool = False,
    ) -> None:
        self.model = model
        self.inputs = inputs
        self.config = inputs.config
        self.splits = inputs.splits
        self.layers: list[int] = list(inputs.layer_ids)
        self.store = store
        self.progress = progress
        self.identity, self.numerics = model.identity(), model.numerics()
        self._built: dict[Condition, list[Any]] = {}
        self._memo: dict[str, Tensor] = {}
        self.embedding_seconds = 0.0  # spent embedding (forward passes and cache reads), for the run's timings

    def interventions(self, condition: Condition) -> list[Any]:
        """The interventions of ``condition`` on the model (none for the baseline), built once per context."""
        if condition not in self._built:
            self._built[condition] = condition_interventions(
                condition, self.inputs.scores, self.model, self.splits.find
            )
        return self._built[condition]

    def embed(
        self,
        texts: list[str],
        condition: Condition,
        *,
        layers: list[int] | None = None,
        pooling: str | None = None,
        desc: str = "embeddings",
    ) -> Float[Tensor, "sentence layer d_model"]:
        """``texts`` embedded under ``condition`` at ``layers`` (default: the run's), from the cache when there."""
        chosen = list(layers) if layers is not None else self.layers
        how = pooling or self.config.evaluate.pooling
        key = embedding_key(self.inputs, self.identity, self.numerics, texts, condition, chosen, how)
        if key in self._memo:
            return self._memo[key]

        def compute() -> dict[str, Tensor]:
            runtime = self.config.runtime
            emb = sentence_embeddings(
                self.model,
                texts,
                layers=chosen,
                pooling=how,
                interventions=self.interventions(condition),
                batch_size=runtime.batch_size,
                max_tokens=runtime.max_tokens,
                max_length=runtime.max_length,
                progress=self.progress,
                desc=f"{desc}: {condition.label}",
            )
            return {"embeddings": emb}

        tick = time.perf_counter()
        if self.store is None:
            emb = compute()["embeddings"]
        else:
            emb = self.store.tensors("embeddings", key, compute)["embeddings"]
        self.embedding_seconds += time.perf_counter() - tick
        if condition.is_baseline:  # the baseline is the reference of mixed retrieval and probes: kept in memory
            self._memo[key] = emb
        return emb


def condition_interventions(condition: Condition, scores: Any, model: LensModel, find_split: Any) -> list[Any]:
    """The interventions of ``condition`` on ``model`` (none for the baseline), from the run's expert scores and,
    for methods that need sentences (diffmean), its find split."""
    if condition.is_baseline:
        return []
    spec = condition.spec()
    return [spec.build(scores, condition.language, condition.k, model=model, corpus=find_split)]


def embedding_key(
    inputs: Any,
    identity: dict[str, Any],
    numerics: dict[str, str],
    texts: list[str],
    condition: Condition,
    layers: list[int],
    pooling: str,
) -> str:
    """The content key of ``texts`` embedded under ``condition``: the one cache key of every embedding."""
    runtime = inputs.config.runtime
    return content_key(
        "embeddings",
        identity,
        numerics,
        texts_fingerprint(texts),
        layers,
        pooling,
        runtime.max_length,
        runtime.batch_size,
        runtime.max_tokens,
        condition_key(inputs, condition),
    )


def condition_key(inputs: Any, condition: Condition) -> tuple[Any, ...]:
    """The part of every cache key that is the condition: its settings, and what it is built from (the run's
    expert scores, the find split's sentences) where its method needs them."""
    needs = frozenset() if condition.is_baseline else condition.spec().needs
    return (
        condition.to_dict(),
        inputs.scores_key if "experts" in needs else None,
        inputs.splits.find.fingerprint() if "corpus" in needs else None,
    )


def texts_fingerprint(texts: Sequence[str]) -> str:
    """A content key of a list of sentences (in order)."""
    return content_key("texts", json.dumps(list(texts), ensure_ascii=False))


class Task:
    """The base of every evaluation task (see the module docstring)."""

    name: ClassVar[str]
    version: ClassVar[int] = 1  # raise it when the task's numbers change: its cached measurements are not reused
    tables: ClassVar[tuple[str, ...]]
    Settings: ClassVar[type | None] = None
    metrics: ClassVar[tuple[str, ...]] = ()  # its per-item metrics, in the order summaries and reports show them
    summary: ClassVar[dict[str, Any]] = {}  # the item groups a summary of the task shows (e.g. a mean over pairs)
    packages: ClassVar[tuple[str, ...]] = ()  # what it computes with beyond torch: recorded in the provenance
    reads_eval_split: ClassVar[bool] = True  # False: [evaluate]'s own settings do not change its numbers

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings

    def prepare(self, config: Any, splits: Any) -> None:
        """Read and check the task's data (before any model is loaded)."""

    def check_model(self, model: LensModel) -> None:
        """What can only be checked with the model (its context, its tokenizer): run once it is loaded, before any
        expert is found."""

    def key(self) -> Any:
        """What the task's numbers depend on besides the condition, the model and the run's expert scores."""
        return None

    def measure(self, ctx: TaskContext, condition: Condition) -> TaskOutput:
        """Measure this task under ``condition``: the task's table rows and its per-item scores. Subclasses implement
        it."""
        raise NotImplementedError

    def provenance(self) -> dict[str, Any]:
        """What the results record of the task's data (row ids, fingerprints, overlaps), once prepared."""
        return {}

    @classmethod
    def per_language(cls, tables: dict[str, pd.DataFrame], metric: str) -> pd.DataFrame:
        """One value of ``metric`` per condition, layer and language (columns ``condition, layer, language,
        value``; ``layer`` None for tasks without layers), for :meth:`xlens.RunResults.validity`."""
        raise ResultsError(f"task {cls.name!r} has no per-language values")

    def run(self, ctx: TaskContext, condition: Condition) -> TaskOutput:
        """:meth:`measure`, timed (embedding apart), with the condition's columns in every row."""
        tick, embedding = time.perf_counter(), ctx.embedding_seconds
        out = self.measure(ctx, condition)
        columns = condition.columns()
        clash = sorted({k for rows in out.tables.values() for row in rows for k in row} & set(columns))
        if clash:
            raise InputError(f"task {self.name!r} writes columns {clash}, which name the condition: rename them")
        out.tables = {
            name: [{k: plain(v) for k, v in {**columns, **row}.items()} for row in rows]
            for name, rows in out.tables.items()
        }
        spent = ctx.embedding_seconds - embedding
        out.seconds |= {"embeddings_s": spent, f"{self.name}_s": time.perf_counter() - tick - spent}
        return out


def hits_and_reciprocal(ranks: Tensor) -> dict[str, Tensor]:
    """Per-query top-1 hits and reciprocal ranks of 1-based ranks (a rank of 0 scores 0)."""
    r = ranks.to(torch.float32)
    return {"top1": (r == 1).to(torch.float32), "mrr": torch.where(r > 0, 1 / r.clamp(min=1), 0.0)}


def language_frame(table: pd.DataFrame, metric: str, language: str, where: str) -> pd.DataFrame:
    """``table``'s ``metric`` as per-language values (``language`` names the language column), after checking
    the metric is one of its columns (``where`` names the task's table in the error)."""
    if metric not in table.columns:
        numeric = [c for c in table.columns if pd.api.types.is_float_dtype(table[c])]
        raise ResultsError(f"{where} has no metric {metric!r}; it has {', '.join(numeric)}")
    layer = table["layer"] if "layer" in table.columns else None
    return pd.DataFrame(
        {"condition": table["condition"], "layer": layer, "language": table[language], "value": table[metric]}
    )
