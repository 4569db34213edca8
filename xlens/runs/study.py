"""A study, end to end: find experts, intervene, and measure every task under every condition.

``run_experiment(config, out)`` checks the whole config against the model's shape, loads the corpora (the find
and evaluation splits, disjoint by content) and prepares every task of ``[evaluate] tasks`` (their data and
settings) before any model is loaded; then, in a run folder it owns (:class:`xlens.runs.folder.RunFolder`), it
finds the experts of every language on the find split and measures each task under each condition (the baseline,
then each intervention of the grid with its controls). Every expensive step is a content-keyed artefact in
``out/cache``, so an interrupted run resumes where it stopped and a rerun with the same config is identical. Where
the conditions are computed is the executor's business (:mod:`xlens.runs.executors`: this process, or workers on
a Ray cluster). The paired bootstrap over each task's items then compares every condition with the baseline and
with its controls. The result is a :class:`xlens.runs.results.RunResults`, also written as ``results.json`` and
parquet tables (schema in :mod:`xlens.runs.results`). ``xlens run``, ``sweep``, ``transfer`` and ``translate``
are all this function.
"""

from __future__ import annotations

import errno
import os
import platform
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from xlens._io import content_key, produced_by
from xlens._schema import from_mapping
from xlens.activations import corpus_texts
from xlens.artifacts import CorruptArtifactWarning
from xlens.comparisons import Counts, centroid_correlation, condition_differences
from xlens.conditions import Condition
from xlens.config import RETRIEVAL_SETTINGS, TASK_SETTINGS, ExperimentConfig
from xlens.data.splits import Splits, load_splits
from xlens.errors import (
    ArtifactError,
    ConditionsFailedError,
    ConfigError,
    DiskFullError,
    ExpertInputError,
    InterventionError,
    ModelMismatchError,
)
from xlens.evaluation.base import Task, TaskOutput, embedding_key
from xlens.evaluation.registry import BUILTIN, task_class
from xlens.experts.sets import ExpertScores
from xlens.interventions.spec import ExpertMethod
from xlens.models.lens import LensModel
from xlens.models.loading import model_shape, resolved_numerics, same_model_name
from xlens.runs.executors import EvalInputs, LocalExecutor, make_executor, measured_key
from xlens.runs.folder import RunFolder
from xlens.runs.results import RESULTS_FILE, TABLES, RunResults, tidy

OUTPUTS = ("results.json", "retrieval.parquet", "alignment.parquet", "report.html", "figures")


def check_config(config: ExperimentConfig) -> Splits:
    """Everything about a run that can be checked before a model is loaded: the settings against the model's
    shape (from its config), the corpora and the splits. Returns the splits."""
    config.check_model(model_shape(config.model))
    return load_splits(config)


def prepare_tasks(config: ExperimentConfig, splits: Splits) -> dict[str, Task]:
    """The study's tasks with their settings, their data read and checked (before any model is loaded)."""
    evaluate = config.evaluate
    strays = [name for name in evaluate.plugins if name not in evaluate.tasks]
    if strays:
        raise ConfigError(
            f"[evaluate.{strays[0]}] is no sub-table of a task of evaluate.tasks {evaluate.tasks}: add the task "
            f"there, or remove the sub-table (built-in tasks: {', '.join(BUILTIN)})"
        )
    out: dict[str, Task] = {}
    for name in evaluate.tasks:
        cls = task_class(name)
        if name in TASK_SETTINGS:
            settings = getattr(evaluate, name)
        elif cls.Settings is not None:
            settings = from_mapping(cls.Settings, evaluate.plugins.get(name, {}), f"evaluate.{name}")
        else:
            if evaluate.plugins.get(name):
                raise ConfigError(f"[evaluate.{name}]: task {name!r} takes no settings")
            settings = None
        task = cls(settings)
        task.prepare(config, splits)
        out[name] = task
    return out


def folder_owner(
    config: ExperimentConfig,
    numerics: dict[str, str],
    model: LensModel | None,
    tasks: Sequence[str] | None = None,
) -> dict[str, Any]:
    """What a run folder records as its owner: the config without the sub-tables of tasks the study does not run
    (``tasks``, default ``evaluate.tasks``: the others do not change its results), without the evaluation split's
    settings when none of its tasks reads that split, and with the numerics it computes in.
    A model given must be the config's, in its dtype."""
    if model is not None:
        if not same_model_name(model.name, config.model):
            raise ModelMismatchError(f"the model given ({model.name!r}) is not the config's model {config.model!r}")
        asked = resolved_numerics(str(model.device), config.runtime.dtype)["dtype"]
        if config.runtime.dtype is not None and asked != numerics["dtype"]:
            raise ModelMismatchError(f"the model given runs in {numerics['dtype']}, the config asks for {asked}")
    settings = config.to_dict()
    studied = set(config.evaluate.tasks if tasks is None else tasks)
    reads_split = any(task_class(name).reads_eval_split for name in studied)
    evaluate = {
        k: v
        for k, v in settings["evaluate"].items()
        if (k in studied if k in TASK_SETTINGS else reads_split or k not in RETRIEVAL_SETTINGS)
    }
    return {**settings, "evaluate": evaluate, "numerics": numerics}


def kept_scores(store: Any, config: ExperimentConfig, scores: Any) -> tuple[Any, str]:
    """Expert scores kept as a run folder artefact, keyed by the responses they came from and the scoring
    settings; returns the kept scores and their key."""
    rate = config.intervene.lape_top_rate
    lape = None if rate is None else (rate, config.intervene.lape_counts)
    key = content_key("scores", scores.meta["cache_key"], config.find.pooling, config.find.negatives, lape)
    return store.folder("scores", key, lambda: scores, ExpertScores.save, ExpertScores.load), key


def grid_conditions(config: ExperimentConfig) -> list[Condition]:
    """The baseline, then every spec of the grid for each expert language and k, each followed by its controls
    (see :class:`xlens.config.ControlsConfig`)."""
    controls, intervene = config.controls, config.intervene
    seeds = range(controls.seeds)
    out = [Condition.baseline()]
    for spec in intervene.specs:
        neutral = spec.neutral() if controls.neutral else None
        variants = [spec] if neutral is None else [spec, neutral]
        for variant in variants:
            kinds = [
                kind
                for kind, on in (("random", controls.random), ("random-per-block", controls.random_per_block))
                if on and kind in variant.controls and variant.control == "none"
            ]
            for lang in config.expert_languages:
                for k in intervene.ks(variant):
                    out.append(Condition.of(variant, lang, k))
                    out += [
                        Condition.of(replace(variant, control=kind, seed=s), lang, k) for kind in kinds for s in seeds
                    ]
    return list(dict.fromkeys(out))


def check_conditions(scores: Any, conditions: list[Condition]) -> None:
    """Every condition can take its units from these scores (threshold yields, LAPE counts, ...): one clear error
    before anything is embedded."""
    for condition in conditions[1:]:
        spec = condition.spec()
        if isinstance(spec, ExpertMethod):
            try:
                spec.experts(scores, condition.language, condition.k)
            except (ExpertInputError, InterventionError) as err:
                raise ExpertInputError(f"condition {condition.label}: {err}") from err


def run_experiment(
    config: ExperimentConfig,
    out: str | os.PathLike[str],
    *,
    model: LensModel | None = None,
    executor: Any = None,
    progress: bool = True,
    force: bool = False,
) -> RunResults:
    """Run the experiment into folder ``out`` (see the module docstring) and return its results.

    Args:
        model: the loaded model to use (it must be ``config.model``); default: load it.
        executor: where the conditions are computed (:func:`xlens.runs.executors.make_executor`); default: here, with
            ``model``.
        force: replace the results of another config in ``out`` (the content-keyed cache is kept).
    """
    where = executor if executor is not None else make_executor("local", model=model)
    return Experiment(config, Path(out), executor=where, progress=progress, force=force).run()


class Experiment:
    """One run of the experiment; :meth:`run` reads as its list of stages."""

    def __init__(
        self, config: ExperimentConfig, out: Path, *, executor: Any = None, progress: bool = True, force: bool = False
    ) -> None:
        self.config = config
        self.out = out
        self.executor = executor if executor is not None else LocalExecutor()
        self.progress = progress
        self.force = force
        self.timings: dict[str, float] = {}
        self.store: Any = None  # the run folder's artefacts, once it is open
        self.scores_key: str | None = None
        self.layer_ids: list[int] = []
        self.embedding_files: dict[Condition, str] = {}
        self.tasks: dict[str, Task] = {}
        self.truncation: dict[str, Any] = {}

    def run(self) -> RunResults:
        started = time.perf_counter()
        splits = check_config(self.config)
        tasks = self.tasks = prepare_tasks(self.config, splits)
        try:
            outputs = (*OUTPUTS, *(f"{t}.parquet" for t in [*TABLES, *(t for k in tasks.values() for t in k.tables)]))
            with RunFolder.open(self.out, "experiment", self.owner(), outputs=outputs, force=self.force) as run:
                self.store = run.artifacts
                info = self.executor.start(self.config, self.out)
                self.executor.check(tasks)
                self.truncation = truncation(self.executor, splits, self.config)
                self.layer_ids = list(self.config.evaluate.layers or info.embedding_layers)
                scores = self.timed("experts_s", self.experts, splits)
                conditions = grid_conditions(self.config)
                check_conditions(scores, conditions)
                inputs = EvalInputs(self.config, splits, scores, self.scores_key, self.layer_ids, tasks)
                measured = self.measure_all(inputs, info, conditions)
                self.keep_embedding_files(inputs, info, conditions)
                tables = self.tables(tasks, conditions, measured)
                tables.update(self.timed("stats_s", self.statistics, tasks, conditions, measured, tables))
                self.timings["total_s"] = time.perf_counter() - started
                results = self.results(info, scores, splits, conditions, tables)
                run.commit(RESULTS_FILE, results.to_dict(), results.tables())
                return results
        finally:
            self.executor.close()

    def timed(self, name: str, stage: Any, *args: Any) -> Any:
        tick = time.perf_counter()
        value = stage(*args)
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - tick
        return value

    # --- stages --------------------------------------------------------------------------------------------

    def owner(self) -> dict[str, Any]:
        """What the run folder records as its owner: the config, and the numerics it resolves to (so a rerun
        that would compute in another dtype or on another device kind is another run, not a resume)."""
        numerics = self.executor.numerics(self.config)
        return folder_owner(self.config, numerics, getattr(self.executor, "model", None))

    def experts(self, splits: Splits) -> Any:
        """Every language's scores on the find split, found by the executor (from responses cached in the run
        folder where it can write there); kept as an artefact keyed by the responses and the scoring settings."""

        scores = self.executor.experts(self.config, splits, self.store.root, self.progress)
        scores, self.scores_key = kept_scores(self.store, self.config, scores)
        return scores

    def measure_all(
        self, inputs: EvalInputs, info: Any, conditions: list[Condition]
    ) -> dict[str, dict[Condition, str]]:
        """Every task's measurement of every condition not measured yet is made by the executor and kept as an
        artefact; a condition that fails is reported with its error once the others are done. Returns the
        artefacts' keys by task and condition."""
        keys = {
            name: {c: measured_key(inputs, info, c, task) for c in conditions} for name, task in inputs.tasks.items()
        }
        todo = []
        for c in conditions:
            missing = tuple(name for name in keys if not self.measured(keys[name][c]))
            if missing:
                todo.append((c, missing))
        failed: dict[Condition, BaseException] = {}
        bar = tqdm(
            total=len(conditions), initial=len(conditions) - len(todo), desc="conditions", disable=not self.progress
        )
        with bar:
            for condition, outcome in self.executor.evaluate(inputs, todo, self.store, self.out, self.progress):
                bar.update()
                if isinstance(outcome, BaseException):
                    _stop_if_disk_full(outcome, self.out)
                    failed[condition] = outcome
                    continue
                for name, output in outcome.items():
                    for stage, seconds in output.seconds.items():
                        self.timings[stage] = self.timings.get(stage, 0.0) + seconds
                    key = keys[name][condition]
                    try:
                        self.store.folder("measured", key, lambda o=output: o, TaskOutput.save, TaskOutput.load)
                    except OSError as err:
                        _stop_if_disk_full(err, self.out)
                        raise
        if failed:
            lines = "\n".join(f"  {c.label}: {type(e).__name__}: {e}" for c, e in failed.items())
            raise ConditionsFailedError(
                f"{len(failed)} of {len(conditions)} conditions failed (the others are kept in {self.out}/cache "
                f"and a rerun computes only these):\n{lines}"
            )
        return keys

    def measured(self, key: str) -> bool:
        """Whether the measurement ``key`` is in the cache and reads back whole (checked without loading its
        tensors, which the tables and statistics read later); a damaged one is removed (and so measured again),
        with a warning."""
        path = self.store.path("measured", key)
        if not path.is_dir():
            return False
        try:
            TaskOutput.check(path)
        except ArtifactError as err:
            warnings.warn(f"recomputing a corrupted cache entry: {err}", CorruptArtifactWarning, stacklevel=2)
            shutil.rmtree(path)
            return False
        return True

    def output(self, key: str) -> TaskOutput:
        return self.store.folder("measured", key, _missing, TaskOutput.save, TaskOutput.load)

    def tables(
        self, tasks: dict[str, Task], conditions: list[Condition], keys: dict[str, dict[Condition, str]]
    ) -> dict[str, pd.DataFrame]:
        """Every task's tables, rows in condition order; the embedding files the retrieval task kept."""
        rows: dict[str, list[dict[str, Any]]] = {table: [] for task in tasks.values() for table in task.tables}
        for name in tasks:
            for condition in conditions:
                for table, found in self.output(keys[name][condition]).tables.items():
                    rows.setdefault(table, []).extend(found)
        return {name: pd.DataFrame(table) for name, table in rows.items()}

    def keep_embedding_files(self, inputs: EvalInputs, info: Any, conditions: list[Condition]) -> None:
        """Where the evaluation split's embeddings of each condition are kept, for those in the cache."""
        texts, _ = corpus_texts(inputs.splits.eval, self.config.eval_languages)
        for condition in conditions:
            key = embedding_key(
                inputs, info.identity, info.numerics, texts, condition, self.layer_ids, self.config.evaluate.pooling
            )
            file = self.store.tensor_file("embeddings", key)
            if file.is_file():
                self.embedding_files[condition] = str(file.relative_to(self.out))

    def statistics(
        self,
        tasks: dict[str, Task],
        conditions: list[Condition],
        keys: dict[str, dict[Condition, str]],
        tables: dict[str, pd.DataFrame],
    ) -> dict[str, pd.DataFrame]:
        """Paired bootstrap of every condition against the baseline and of every intervention against its random
        controls (mean over seeds) on every task's items, and the correlation of centroid moves with retrieval
        gains."""
        stats = self.config.stats
        counts = Counts(stats.resamples, stats.seed)
        rows = []
        for name in tasks:
            found = condition_differences(
                conditions, lambda c, n=name: self.output(keys[n][c]).items, counts, stats.confidence
            )
            rows += [{"task": name, **row} for row in found]
        out = {"differences": pd.DataFrame(rows), "correlation": pd.DataFrame()}
        if "retrieval" in tasks:
            main = [c.label for c in conditions[1:] if c.control == "none"]
            correlation = centroid_correlation(
                tables["retrieval"], tables["alignment"], main, stats.resamples, stats.seed, stats.confidence
            )
            out["correlation"] = pd.DataFrame(correlation)
        return out

    def results(
        self, info: Any, scores: Any, splits: Splits, conditions: list[Condition], tables: dict[str, pd.DataFrame]
    ) -> RunResults:
        k_values = self.config.intervene.k_values
        largest_k = max(k_values, default=None)
        experts_info = {
            row["language"]: {
                "best_ap": row["best_ap"],
                "best_unit": row["best_unit"],
                "n_ap_ge_0.95": row["n_ap_ge_0.95"],
                "experts_per_block_at_max_k": None
                if largest_k is None
                else {str(b): n for b, n in scores.select(row["language"], largest_k).counts_per_block().items()},
            }
            for row in scores.summary().to_dict(orient="records")
        }
        provenance = {
            "model": info.identity,
            "numerics": info.numerics,
            "find_corpus": _corpus_provenance(self.config.find.corpus, splits.find),
            "eval_corpus": _corpus_provenance(self.config.evaluate.corpus, splits.eval),
            "splits": splits.provenance(),
            "versions": package_versions([p for task in self.tasks.values() for p in task.packages]),
            "commit": produced_by()["commit"],  # the code that assembled these results, for the docs' results pages
            "tasks": {name: found for name, task in self.tasks.items() if (found := task.provenance())},
            "truncation": self.truncation,
            "machine": {"platform": platform.platform(), "device": info.device, "threads": info.threads},
            "executor": self.executor.describe(),
            "seed": self.config.seed,
            "timings": self.timings,
        }
        return RunResults(
            config=self.config,
            languages=self.config.eval_languages,
            layers=list(self.layer_ids),
            provenance=provenance,
            experts=experts_info,
            conditions=conditions,
            **{name: tidy(tables.get(name, pd.DataFrame())) for name in TABLES},
            task_tables={name: tidy(frame) for name, frame in tables.items() if name not in TABLES and len(frame)},
            embedding_files=dict(self.embedding_files),
            scores_folder=str(self.store.path("scores", self.scores_key).relative_to(self.out)),
            folder=self.out,
            _model=getattr(self.executor, "model", None),
        )


def _stop_if_disk_full(err: BaseException, out: Path) -> None:
    """A full disk (or quota) ends the run at once, naming the file: every later write would fail the same way."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        where = err.filename or "the run folder"
        raise DiskFullError(
            f"no space left on the device while writing {where}: free some space (or write to another --out); "
            f"what was measured so far is kept in {out}/cache and a rerun continues from there"
        ) from err


class TruncationWarning(UserWarning):
    """Sentences longer than ``runtime.max_length`` are cut to it."""


def truncation(executor: Any, splits: Splits, config: ExperimentConfig) -> dict[str, Any]:
    """Per split and language, how many sentences ``runtime.max_length`` cuts and the longest one's tokens; one
    warning when any is cut (the results record it either way)."""
    limit = config.runtime.max_length
    out: dict[str, Any] = {"max_length": limit}
    for name, part in (("find", splits.find), ("eval", splits.eval)):
        lengths = {lang: executor.token_lengths(list(part[lang])) for lang in part.languages}
        out[name] = {lang: {"cut": sum(n > limit for n in ns), "longest": max(ns)} for lang, ns in lengths.items()}
    cut = sum(entry["cut"] for name in ("find", "eval") for entry in out[name].values())
    if cut:
        longest = max(entry["longest"] for name in ("find", "eval") for entry in out[name].values())
        warnings.warn(
            f"{cut} sentence(s) are longer than runtime.max_length = {limit} tokens and are cut to it (the longest "
            f"has {longest}); results['provenance']['truncation'] says where. Raise runtime.max_length to keep "
            "them whole",
            TruncationWarning,
            stacklevel=2,
        )
    return out


def _missing() -> Any:
    raise ArtifactError("a measured condition vanished from the run's cache while the run was writing it")


def _file_hashes(sources: dict[str, str]) -> dict[str, dict[str, str]]:
    """sha256 of every source file; builtin sources are files inside the installed package."""
    import hashlib
    from importlib.resources import files

    out = {}
    for lang, src in sources.items():
        path = files("xlens.data").joinpath(src) if src.startswith("builtin/") else Path(src)
        if path.is_file():
            out[lang] = {"file": src, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        else:
            out[lang] = {"source": src}
    return out


def _corpus_provenance(spec: str, corpus: Any) -> dict[str, Any]:
    return {
        "spec": spec,
        "fingerprint": corpus.fingerprint(),
        "files": _file_hashes(corpus.sources),
        "sentences": len(corpus),
    }


def package_versions(extra: Sequence[str] = ()) -> dict[str, str]:
    """The installed version of xlens, its core dependencies and ``extra`` packages ("not installed" if absent):
    what every run's provenance records."""
    out = {}
    for package in dict.fromkeys(("xlens", "torch", "transformers", "transformer-lens", "numpy", *extra)):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out
