"""Zero-shot cross-lingual transfer on SIB-200: a topic probe trained on one language's sentence embeddings and
tested on the others', before and after each intervention of the run's grid.

``run_transfer(config, out)`` (``xlens transfer CONFIG --out DIR``) reads the ``[evaluate.transfer]`` section
(:class:`xlens.config.TransferConfig`). Everything that can be checked without the model is checked first
(scikit-learn, the corpus and its languages, the layers against the model's shape, the run's config and find
split); then, in a run folder it owns (:class:`xlens.runfolder.RunFolder`), it finds the experts as ``xlens run``
does (:class:`xlens.experiment.Interventions`) and, for every condition (the baseline, then each intervention and
its controls), embeds the SIB-200 splits at the chosen embedding layers and scores a probe per layer:

* the probe is a logistic regression on standardised features (:func:`fit_probe`), trained on the source's train
  split with its ``C`` chosen on the source's dev split;
* ``applied = "target"``: the probe is the baseline's (trained on embeddings without intervention) and the test
  inputs are intervened; ``applied = "all"``: the probe is trained on intervened embeddings too. The baseline has
  one set of rows, ``applied = "none"``;
* it is tested on the test split of the source itself (the in-language reference) and of every target: accuracy and
  macro-F1 with percentile bootstrap intervals over the test sentences (the same resamples for every row, from
  ``[stats]``), beside the test split's majority-class rate, and the accuracy change from the baseline's
  predictions on the same sentences with its paired interval (0 on the baseline's own rows).

Embeddings are content-keyed artefacts of the run folder's cache, one per (texts, condition) with the model,
numerics, layers, pooling and batching in the key: a language's test sentences are embedded once per condition for
both applied modes, and a rerun (or a run resumed after a kill) embeds only what is missing. The result is a
:class:`TransferResults`, written as ``transfer.json`` and ``transfer.parquet``.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
from jaxtyping import Float, Int
from torch import Tensor

from xlens._display import html_card, html_frame, short_list
from xlens._io import content_key, read_json, reading, write_json
from xlens.conditions import Condition
from xlens.config import ExperimentConfig
from xlens.embeddings import sentence_embeddings
from xlens.errors import ResultsError
from xlens.evaluation.base import texts_fingerprint
from xlens.evaluation.transfer import (
    MAX_ITER,
    Probe,
    TransferPlan,
    fit_probe,
    majority_rate,
    plan_transfer,
    score_predictions,
)
from xlens.executors import config_numerics, load
from xlens.experiment import Interventions, check_config, folder_owner, package_versions
from xlens.metrics.bootstrap import resample_counts
from xlens.models.lens import LensModel
from xlens.results import tidy
from xlens.runfolder import RunFolder, read_manifest

if TYPE_CHECKING:
    from xlens.experiment import Interventions

__all__ = [
    "MANIFEST",
    "Probe",
    "TransferPlan",
    "TransferResults",
    "check_transfer",
    "fit_probe",
    "majority_rate",
    "run_transfer",
    "score_predictions",
]

SCHEMA_VERSION = 2  # 2: accuracy_change with its paired interval
MANIFEST = "transfer.json"
TABLE = "transfer"
OUTPUTS = (MANIFEST, f"{TABLE}.parquet")
METRICS = (
    "applied",
    "layer",
    "target",
    "accuracy",
    "accuracy_low",
    "accuracy_high",
    "macro_f1",
    "macro_f1_low",
    "macro_f1_high",
    "accuracy_change",
    "accuracy_change_low",
    "accuracy_change_high",
    "majority",
    "c",
    "dev_accuracy",
)


def check_transfer(config: ExperimentConfig) -> TransferPlan:
    """Everything about a transfer run that can be checked before a model is loaded (scikit-learn, the corpus and
    its languages and splits, the layers, the run's config and splits); returns the plan."""
    return plan_transfer(config, check_config(config))


# --- the run -----------------------------------------------------------------------------------------------------


def owner(config: ExperimentConfig, model: LensModel | None = None) -> dict[str, Any]:
    """What a transfer folder records as its owner: the settings that change its results, and the numerics."""
    numerics = model.numerics() if model is not None else config_numerics(config)
    return folder_owner(config, numerics, model, ["transfer"])


class _Transfer:
    """One transfer run's embeddings, probes and rows with one model (see the module docstring)."""

    def __init__(
        self,
        config: ExperimentConfig,
        plan: TransferPlan,
        model: LensModel,
        store: Any,
        iv: Interventions,
        progress: bool,
    ) -> None:
        self.config, self.plan, self.model, self.store, self.iv = config, plan, model, store, iv
        self.progress = progress
        self.identity, self.numerics = model.identity(), model.numerics()
        self.built: dict[Condition, list[Any]] = {}
        stats = config.stats
        test_y = plan.labels("test")
        self.counts = resample_counts(len(test_y), stats.resamples, stats.seed).numpy()
        self.majority = majority_rate(test_y)
        self.timings: dict[str, float] = {"embeddings_s": 0.0, "probes_s": 0.0}

    def key(self, lang: str, split: str, condition: Condition) -> str:
        """The content key of ``lang``'s rows of ``split`` embedded under ``condition``."""
        runtime, iv = self.config.runtime, self.iv
        needs = frozenset() if condition.is_baseline else condition.spec().needs
        return content_key(
            "transfer-embeddings",
            self.identity,
            self.numerics,
            texts_fingerprint(self.plan.texts(lang, split)),
            self.plan.layers,
            self.config.transfer.pooling,
            runtime.max_length,
            runtime.batch_size,
            runtime.max_tokens,
            condition.to_dict(),
            iv.scores_key if "experts" in needs else None,
            iv.splits.find.fingerprint() if "corpus" in needs else None,
        )

    def embeddings(self, lang: str, split: str, condition: Condition) -> Float[Tensor, "sentence layer d_model"]:
        """The embeddings of ``lang``'s rows of ``split`` under ``condition``, from the cache when they are there."""

        def compute() -> dict[str, Tensor]:
            if condition not in self.built:  # built on the first miss only: a rerun from the cache builds nothing
                self.built[condition] = self.iv.build(condition, self.model)
            runtime = self.config.runtime
            emb = sentence_embeddings(
                self.model,
                self.plan.texts(lang, split),
                layers=self.plan.layers,
                pooling=self.config.transfer.pooling,
                interventions=self.built[condition],
                batch_size=runtime.batch_size,
                max_tokens=runtime.max_tokens,
                max_length=runtime.max_length,
                progress=False,
            )
            return {"embeddings": emb}

        tick = time.perf_counter()
        out = self.store.tensors("transfer-embeddings", self.key(lang, split, condition), compute)["embeddings"]
        self.timings["embeddings_s"] += time.perf_counter() - tick
        return out

    def probes(self, condition: Condition) -> list[Probe]:
        """One probe per layer on the source's train and dev embeddings under ``condition``."""
        source = self.plan.source
        train, dev = self.embeddings(source, "train", condition), self.embeddings(source, "dev", condition)
        tick = time.perf_counter()
        train_y, dev_y = self.plan.labels("train"), self.plan.labels("dev")
        c_values, seed = self.config.transfer.c_values, self.config.seed
        out = [
            fit_probe(train[:, j].numpy(), train_y, dev[:, j].numpy(), dev_y, c_values, seed=seed)
            for j in range(len(self.plan.layers))
        ]
        self.timings["probes_s"] += time.perf_counter() - tick
        return out

    @cached_property
    def baseline_probes(self) -> list[Probe]:
        # Fitted when first needed: a rerun whose rows are all cached fits none.
        return self.probes(Condition.baseline())

    def modes(self, condition: Condition) -> list[str]:
        return ["none"] if condition.is_baseline else list(self.config.transfer.applied)

    def rows_key(self, condition: Condition) -> str:
        """The content key of a condition's rows: the embeddings they score (the probes' and the tests') and the
        probe and bootstrap settings."""
        from importlib.metadata import version

        plan, stats, baseline = self.plan, self.config.stats, Condition.baseline()
        probe_conditions = {"none": baseline, "target": baseline, "all": condition}
        probes = {
            mode: [self.key(plan.source, split, probe_conditions[mode]) for split in ("train", "dev")]
            for mode in self.modes(condition)
        }
        tests = {lang: self.key(lang, "test", condition) for lang in plan.languages}
        references = {lang: self.key(lang, "test", baseline) for lang in plan.languages}
        labels = {split: plan.labels(split).tolist() for split in plan.rows}
        settings = (self.config.transfer.c_values, self.config.seed, MAX_ITER, version("scikit-learn"))
        bootstrap = (stats.resamples, stats.seed, stats.confidence)
        return content_key("transfer-rows", probes, tests, references, labels, settings, bootstrap, condition.columns())

    def condition(self, condition: Condition) -> list[dict[str, Any]]:
        """Every row of one condition (kept as an artefact): its test embeddings in every language, scored by the
        probes of each applied mode."""
        return self.store.folder(
            "transfer-rows", self.rows_key(condition), lambda: self.compute(condition), _save_rows, _load_rows
        )

    def compute(self, condition: Condition) -> list[dict[str, Any]]:
        from tqdm.auto import tqdm

        languages = tqdm(self.plan.languages, desc=f"transfer: {condition.label}", disable=not self.progress)
        tests = {lang: self.embeddings(lang, "test", condition) for lang in languages}
        out = []
        for mode in self.modes(condition):
            probes = self.baseline_probes if mode in ("none", "target") else self.probes(condition)
            out += self.rows(condition, mode, probes, tests)
        return out

    @cached_property
    def baseline_predictions(self) -> list[dict[str, Int[np.ndarray, " sentence"]]]:
        """Per layer and language, the baseline probe's predictions on the baseline's test embeddings: what every
        row's accuracy change is paired with."""
        tests = {lang: self.embeddings(lang, "test", Condition.baseline()) for lang in self.plan.languages}
        return [
            {lang: probe.predict(emb[:, j].numpy()) for lang, emb in tests.items()}
            for j, probe in enumerate(self.baseline_probes)
        ]

    def rows(
        self, condition: Condition, applied: str, probes: list[Probe], tests: dict[str, Tensor]
    ) -> list[dict[str, Any]]:
        test_y, confidence = self.plan.labels("test"), self.config.stats.confidence
        references = self.baseline_predictions
        out = []
        for j, layer in enumerate(self.plan.layers):
            probe = probes[j]
            for lang, emb in tests.items():
                predicted = probe.predict(emb[:, j].numpy())
                scores = score_predictions(test_y, predicted, self.counts, confidence, references[j][lang])
                row = {**condition.columns(), "control": condition.control, "applied": applied, "layer": layer}
                row |= {"target": lang, **scores, "majority": self.majority}
                row |= {"c": probe.c, "dev_accuracy": probe.dev_accuracy}
                out.append(row)
        return out


def _save_rows(rows: list[dict[str, Any]], folder: Path) -> None:
    write_json(folder / "rows.json", rows)


def _load_rows(folder: Path) -> list[dict[str, Any]]:
    with reading(folder / "rows.json"):
        rows = read_json(folder / "rows.json")
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "accuracy" in r for r in rows):
            raise ValueError("not a list of transfer rows")
        return rows


def run_transfer(
    config: ExperimentConfig,
    out: str | os.PathLike[str],
    *,
    model: LensModel | None = None,
    progress: bool = True,
    force: bool = False,
) -> TransferResults:
    """Measure zero-shot transfer on SIB-200 under every condition of the run's grid into folder ``out`` (see the
    module docstring) and return its results.

    Args:
        model: the loaded model to use (it must be ``config.model``); default: load it.
        force: replace the results of another config in ``out`` (the content-keyed cache is kept).
    """
    started = time.perf_counter()
    plan = check_transfer(config)
    with RunFolder.open(Path(out), "transfer", owner(config, model), outputs=OUTPUTS, force=force) as run:
        store = run.artifacts
        tick = time.perf_counter()
        lm = model if model is not None else load(config)
        iv = Interventions.prepare(config, lm, store, plan.splits, progress)
        experts_s = time.perf_counter() - tick
        job = _Transfer(config, plan, lm, store, iv, progress)
        rows = [row for condition in iv.conditions for row in job.condition(condition)]
        frame = pd.DataFrame(rows)
        settings = [c for c in frame.columns if c not in METRICS]
        table = tidy(cast(pd.DataFrame, frame[[*settings, *METRICS]]))
        timings = {"experts_s": experts_s, **job.timings, "total_s": time.perf_counter() - started}
        results = TransferResults(
            config=config,
            source=plan.source,
            targets=plan.targets,
            layers=plan.layers,
            labels=plan.data.labels,
            sentences={split: len(rows) for split, rows in plan.rows.items()},
            conditions=list(iv.conditions),
            table=table,
            provenance=_provenance(config, plan, lm, iv, store, Path(out), timings),
            folder=Path(out),
        )
        run.commit(MANIFEST, results.to_dict(), results.tables())
        return results


def _find_overlap(plan: TransferPlan) -> dict[str, int]:
    """Per split, the SIB-200 rows used whose sentence (in a language both have) is among the find split's, where
    the experts were found (SIB-200's sentences are FLORES-200's, so a FLORES find corpus overlaps them)."""
    find = plan.splits.find
    seen = {lang: set(find[lang]) for lang in plan.languages if lang in find.languages}
    out = {}
    for split, rows in plan.rows.items():
        hits = set()
        for lang, sentences in seen.items():
            if plan.data.has(lang, split):
                texts = plan.data.texts(lang, split)
                hits |= {i for i in rows if texts[i] in sentences}
        out[split] = len(hits)
    return out


def _provenance(
    config: ExperimentConfig,
    plan: TransferPlan,
    model: LensModel,
    iv: Interventions,
    store: Any,
    out: Path,
    timings: dict[str, float],
) -> dict[str, Any]:
    versions = package_versions(("scikit-learn",))
    texts = {
        lang: {split: texts_fingerprint(plan.texts(lang, split)) for split in plan.rows if plan.data.has(lang, split)}
        for lang in plan.languages
    }
    return {
        "model": model.identity(),
        "numerics": model.numerics(),
        "corpus": {
            "spec": config.transfer.corpus,
            "name": plan.data.name,
            "rows": {split: list(map(int, rows)) for split, rows in plan.rows.items()},
            "texts_sha256": texts,
            "rows_sharing_a_sentence_with_the_find_split": _find_overlap(plan),
        },
        "find_corpus": {"spec": config.find.corpus, "fingerprint": plan.splits.find.fingerprint()},
        "scores": str(store.path("scores", iv.scores_key).relative_to(out)),
        "versions": versions,
        "machine": {"platform": platform.platform(), "device": str(model.device)},
        "seed": config.seed,
        "timings": timings,
    }


# --- results -----------------------------------------------------------------------------------------------------


@dataclass
class TransferResults:
    """A finished ``xlens transfer``: one row per condition, applied mode, layer and target in :attr:`table` (the
    condition's columns, ``control``, then :data:`METRICS`: ``applied`` (``none`` for the baseline, ``target`` or
    ``all``), ``layer``, ``target`` (FLORES code; the source's own row is the in-language reference), ``accuracy``
    and ``macro_f1`` with their bootstrap intervals (``_low``/``_high``), ``majority`` (the test split's
    majority-class rate), the probe's chosen ``c`` and its ``dev_accuracy``)."""

    config: ExperimentConfig
    source: str
    targets: list[str]
    layers: list[int]
    labels: list[str]
    sentences: dict[str, int]
    conditions: list[Condition]
    table: pd.DataFrame
    provenance: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None

    def tables(self) -> dict[str, pd.DataFrame]:
        return {TABLE: self.table}

    def to_dict(self) -> dict[str, Any]:
        """Everything but the table (``transfer.parquet``: a run over every language has ~10^5 rows)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "config": self.config.to_dict(),
            "source": self.source,
            "targets": self.targets,
            "layers": self.layers,
            "labels": self.labels,
            "sentences": self.sentences,
            "conditions": [c.to_dict() for c in self.conditions],
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], table: pd.DataFrame, folder: Path | None = None) -> TransferResults:
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ResultsError(
                f"transfer results of schema version {data.get('schema_version')} (this xlens reads "
                f"{SCHEMA_VERSION}): rerun `xlens transfer` with this version into a new folder"
            )
        return cls(
            config=ExperimentConfig.from_dict(data["config"]),
            source=data["source"],
            targets=list(data["targets"]),
            layers=[int(x) for x in data["layers"]],
            labels=list(data["labels"]),
            sentences={k: int(v) for k, v in data["sentences"].items()},
            conditions=[Condition.from_dict(c) for c in data["conditions"]],
            table=table,
            provenance=data["provenance"],
            folder=folder,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TransferResults:
        """The results in folder ``path`` (its table checked against the hash transfer.json keeps)."""
        folder = Path(path)
        if not (folder / MANIFEST).is_file():
            raise ResultsError(f"{folder} holds no {MANIFEST}: run `xlens transfer CONFIG --out {folder}` first")
        data = read_manifest(folder, MANIFEST)
        return cls.from_dict(data, pd.read_parquet(folder / data["tables"][TABLE]["file"]), folder)

    def _targets_only(self) -> pd.DataFrame:
        table = self.table
        return cast(pd.DataFrame, table[table["target"] != self.source])

    def best_layer(self) -> int:
        """The layer where the baseline's accuracy, averaged over the targets (the source left out), is highest."""
        rows: Any = self._targets_only()
        by_layer = rows[rows["condition"] == "baseline"].groupby("layer")["accuracy"].mean()
        return int(by_layer.idxmax())

    def overview(self, layer: int | None = None) -> pd.DataFrame:
        """Per condition and applied mode at ``layer`` (default :meth:`best_layer`): the source's accuracy, the mean
        accuracy and macro-F1 over the targets, the mean accuracy change against the baseline, and how many targets
        changed significantly (paired interval below / above 0)."""
        chosen = self.best_layer() if layer is None else layer
        if chosen not in self.layers:
            raise ResultsError(f"layer {chosen} is not among these results' layers {self.layers}")
        table: Any = self.table[self.table["layer"] == chosen]
        keys = ["condition", "applied"]
        source = table[table["target"] == self.source].set_index(keys)["accuracy"]
        rows = table[table["target"] != self.source]
        targets = rows.groupby(keys, sort=False)[["accuracy", "macro_f1"]].mean()
        frame = targets.rename(columns={"accuracy": "target_accuracy", "macro_f1": "target_macro_f1"})
        frame.insert(0, "source_accuracy", source.reindex(frame.index))
        baseline = float(frame.loc[("baseline", "none"), "target_accuracy"])  # type: ignore[arg-type]
        frame["vs_baseline"] = frame["target_accuracy"] - baseline
        significant = rows.assign(worse=rows["accuracy_change_high"] < 0, better=rows["accuracy_change_low"] > 0)
        frame = frame.join(significant.groupby(keys, sort=False)[["worse", "better"]].sum())
        frame = frame.rename(columns={"worse": "targets_worse", "better": "targets_better"})
        return frame.reset_index().assign(layer=chosen)

    def summary(self) -> str:
        """The overview at the best layer for the terminal."""
        layer = self.best_layer()
        shown = self.overview(layer).drop(columns=["layer"]).to_string(index=False, float_format=lambda x: f"{x:.3f}")
        majority = float(self.table["majority"].iloc[0])
        return (
            f"SIB-200 transfer from {self.source} to {len(self.targets)} target(s), {self.sentences['test']} test "
            f"sentences (majority class {majority:.3f}); best baseline layer {layer}:\n{shown}"
        )

    def __repr__(self) -> str:
        return (
            f"TransferResults({self.config.model}, {self.source} -> {len(self.targets)} targets, "
            f"{len(self.conditions)} conditions, {len(self.layers)} layers, folder={self.folder})"
        )

    def _repr_html_(self) -> str:
        layer = self.best_layer()
        facts = {
            "model": self.config.model,
            "source → targets": f"{self.source} → {short_list(self.targets)}",
            "conditions": f"baseline + {len(self.conditions) - 1}",
            "sentences (train / dev / test)": " / ".join(str(self.sentences[s]) for s in ("train", "dev", "test")),
            "best baseline layer": layer,
            "folder": self.folder or "–",
        }
        return html_card("TransferResults", facts, html_frame(self.overview(layer).drop(columns=["layer"])))
