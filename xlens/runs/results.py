"""What a study produced, as an object: :class:`RunResults`. Every table has the columns of the condition a row
belongs to (:mod:`xlens.conditions`).

``results.json`` (``schema_version`` 4) holds:

- ``config`` (the nested :class:`xlens.config.ExperimentConfig`), ``languages`` (the evaluation languages) and
  ``layers`` (embedding layers);
- ``provenance``: model identity and numerics, corpus specs, files and sha256, corpus fingerprints, the find/eval
  split and its measured overlap (0 for a valid run), package versions, machine, timings;
- ``experts``: per language experts were found for, best AP and the experts per block at the largest k;
  ``scores``: the scores' folder;
- ``conditions``: every condition with its cached ``[sentence, layer, d_model]`` embeddings file (sentences
  grouped by language in config order), relative to the run folder;
- the tables, as lists of rows, each also written as ``<table>.parquet`` (``tables``: their sha256), with the
  condition's columns and (see :mod:`xlens.evaluation` for each task's tables, :mod:`xlens.comparisons` for the
  statistics):

  - ``retrieval``: ``{layer, src, tgt, mode, top1, top5, mrr}`` for every ordered pair src != tgt; ``mode`` is
    ``both``, or ``queries-baseline`` / ``candidates-baseline`` for mixed retrieval;
  - ``alignment``: ``{layer, lang_a, lang_b, cosine_parallel, cosine_random, cosine_gap, cka, cka_debiased,
    centroid_distance, centroid_cosine_distance}`` for every unordered pair (lang_a first in config order);
  - ``centroids``: ``{layer, lang, to_medoid, to_expert_lang, spread}`` (``collapsed()`` reads the spread);
  - ``differences``: ``{task, subject, against, metric, <the task's group columns>, subject_mean, against_mean,
    diff, low, high, significant}``, the paired bootstrap over each task's items (retrieval: ``mode, layer, src,
    tgt``, ``src = tgt = "mean"`` the mean over pairs);
  - ``correlation``: ``{layer, points, r, low, high}``;
  - ``task_tables``: the tables of the other tasks (``transfer``, ``mining``, ``fidelity``, ``translation``,
    ``pivot``, a plug-in's), by name.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from xlens._display import html_card, short_list
from xlens._io import load_tensors, own_path
from xlens.activations import Responses, corpus_texts
from xlens.artifacts import ArtifactStore
from xlens.conditions import Condition, controls_of
from xlens.config import ExperimentConfig
from xlens.data.splits import load_splits
from xlens.errors import ResultsError
from xlens.evaluation.registry import task_class
from xlens.experts.sets import ExpertScores
from xlens.metrics.bootstrap import bootstrap_correlation
from xlens.models.lens import LensModel
from xlens.models.loading import load_model
from xlens.runs.folder import CACHE, read_manifest

if TYPE_CHECKING:
    from xlens.config import ExperimentConfig
    from xlens.data.corpus import ParallelCorpus
    from xlens.experts.sets import ExpertScores

SCHEMA_VERSION = 4  # 4: tasks; differences with a task column; the tables of tasks beyond retrieval
RESULTS_FILE = "results.json"
RETIRED_MANIFESTS = {"transfer": "transfer.json", "translate": "translate.json"}  # runners that became tasks
TABLES = ("retrieval", "alignment", "centroids", "differences", "correlation")


DIFFERENCE_COLUMNS = (
    "task", "subject", "against", "metric", "subject_mean", "against_mean", "diff", "low", "high", "significant"
)  # fmt: skip


def _compared(condition: Condition, found: pd.DataFrame, shown: list[str]) -> list[dict[str, Any]]:
    """One row per item group of ``condition``'s differences: against the baseline and each kind of control."""
    sides: Any = found.assign(side=found["subject"] + " vs " + found["against"])
    groups = sides.groupby(shown, sort=False, dropna=False) if shown else [((), sides)]
    rows = []
    for key, at in groups:
        at = at.set_index("side")
        values = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = {**condition.keys(), **dict(zip(shown, values, strict=True))}
        main = at.loc["condition vs baseline"]
        row.update(value=main["subject_mean"], baseline=main["against_mean"])
        row.update({f"{name}_vs_baseline": main[name] for name in ("diff", "low", "high")})
        row["significant_vs_baseline"] = bool(main["significant"])
        kinds = [
            side.split(" vs ")[0]
            for side in at.index
            if side.endswith(" vs baseline") and side != "condition vs baseline"
        ]
        for kind in kinds:
            own, against = at.loc[f"{kind} vs baseline"], at.loc[f"condition vs {kind}"]
            row[f"{kind}_mean"] = own["subject_mean"]
            row.update({f"{name}_{kind}_vs_baseline": own[name] for name in ("diff", "low", "high")})
            row.update({f"{name}_vs_{kind}": against[name] for name in ("diff", "low", "high")})
            row[f"significant_vs_{kind}"] = bool(against["significant"])
        rows.append(row)
    return rows


def _at_layers(values: Any, layers: list[int]) -> Any:
    """Per-language values at ``layers`` (values without a layer kept)."""
    return values[values["layer"].isna() | values["layer"].isin(layers)]


def _with_interval(value: float, low: float, high: float) -> str:
    return f"{value:+.3f} [{low:+.3f}, {high:+.3f}]"


def _side(low: float, high: float) -> int:
    """Which side of 0 an interval lies on: 1 above, -1 below, 0 when it holds 0 (nothing more can be said)."""
    return 1 if low > 0 else -1 if high < 0 else 0


def _interval(row: Any, side: str) -> str:
    return _with_interval(row[f"diff_{side}"], row[f"low_{side}"], row[f"high_{side}"])


def _verdict(row: Any, kind: str) -> str:
    said = {1: "above", -1: "below", 0: "not distinguishable from"}[
        _side(row[f"low_vs_{kind}"], row[f"high_vs_{kind}"])
    ]
    return f"{said} {kind}"


def compact_comparison(table: pd.DataFrame, confidence: float = 0.95) -> str:
    """A :meth:`RunResults.comparison` table for the terminal (see :func:`comparison_view`)."""
    return comparison_view(table, confidence).to_string(index=False)


def comparison_view(table: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """A :meth:`RunResults.comparison` table as it is shown (the terminal, the docs' results pages): value,
    baseline, the change with its interval and, per control, the difference with its interval and a verdict."""
    kinds = [c.removeprefix("diff_vs_") for c in table.columns if c.startswith("diff_vs_") and c != "diff_vs_baseline"]
    keys = ["condition", *[c for c in table.columns if c in ("layer", "target", "language", "direction", "src")]]
    rows = []
    for row in table.to_dict(orient="records"):
        shown = {key: int(row[key]) if key == "layer" else row[key] for key in keys}
        shown |= {"value": f"{row['value']:.3f}", "baseline": f"{row['baseline']:.3f}"}
        shown[f"change [{confidence:.0%} CI]"] = _interval(row, "vs_baseline")
        for kind in kinds:
            shown[f"vs {kind} [{confidence:.0%} CI]"] = _interval(row, f"vs_{kind}")
            shown[f"vs {kind}"] = _verdict(row, kind)
        rows.append(shown)
    return pd.DataFrame(rows)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with missing values as None (JSON null), not NaN."""
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")  # type: ignore[return-value]


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """A table as it reads back from results.json (missing values as None), so a run's tables and the loaded
    ones are equal, dtypes included. A column that mixes text with other values (a grid over ``value =
    ["on_mean", 0.5]``) holds them all as text, which parquet can store."""
    out = pd.DataFrame(_records(frame), columns=frame.columns)
    for name in out.columns:
        kinds = {type(v) for v in out[name] if not pd.isna(v)}
        if str in kinds and len(kinds) > 1:
            out[name] = pd.Series([None if v is None else str(v) for v in out[name]], dtype=object)
    return out


def select(table: pd.DataFrame, condition: Condition) -> pd.DataFrame:
    """The rows of a results table that belong to ``condition``."""
    return cast(pd.DataFrame, table.loc[table["condition"] == condition.label])


@dataclass
class RunResults:
    """A finished run: its config, provenance, conditions and tables, and (lazily) what the run folder holds.

    Tables are pandas DataFrames (see the module docstring for their columns). :meth:`embeddings`,
    :attr:`scores`, :attr:`responses`, :attr:`find_texts` and :attr:`eval_corpus` read the run folder when asked;
    :attr:`model` loads the run's model on first use (or is the model the run was given).
    """

    config: ExperimentConfig
    languages: list[str]
    layers: list[int]
    provenance: dict[str, Any]
    experts: dict[str, Any]
    conditions: list[Condition]
    retrieval: pd.DataFrame
    alignment: pd.DataFrame
    centroids: pd.DataFrame = field(default_factory=pd.DataFrame)
    differences: pd.DataFrame = field(default_factory=pd.DataFrame)
    correlation: pd.DataFrame = field(default_factory=pd.DataFrame)
    task_tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # tables of the other tasks, by name
    embedding_files: dict[Condition, str] = field(default_factory=dict)
    scores_folder: str | None = None
    folder: Path | None = None
    _model: LensModel | None = field(default=None, repr=False)

    # --- reading and writing -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The results as the JSON of ``results.json`` (the tables are written beside it as parquet)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "config": self.config.to_dict(),
            "languages": self.languages,
            "layers": self.layers,
            "provenance": self.provenance,
            "experts": self.experts,
            "scores": self.scores_folder,
            "conditions": [{**c.to_dict(), "embeddings": self.embedding_files.get(c)} for c in self.conditions],
            **{name: _records(getattr(self, name)) for name in TABLES},
            "task_tables": {name: _records(frame) for name, frame in self.task_tables.items()},
        }

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table of the results by name (see the module docstring)."""
        return {**{name: getattr(self, name) for name in TABLES}, **self.task_tables}

    @classmethod
    def from_dict(cls, data: dict[str, Any], folder: Path | None = None, model: LensModel | None = None) -> RunResults:
        """Results from the JSON of ``results.json``; an error for another schema version, naming how to rerun."""
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ResultsError(
                f"results of schema version {version} (this xlens reads {SCHEMA_VERSION}): rerun the experiment "
                "with this version into a new folder"
            )
        conditions = [Condition.from_dict(c) for c in data["conditions"]]
        return cls(
            config=ExperimentConfig.from_dict(data["config"]),
            languages=list(data["languages"]),
            layers=[int(x) for x in data["layers"]],
            provenance=data["provenance"],
            experts=data["experts"],
            conditions=conditions,
            **{name: tidy(pd.DataFrame(data.get(name, []))) for name in TABLES},
            task_tables={name: tidy(pd.DataFrame(rows)) for name, rows in data.get("task_tables", {}).items()},
            embedding_files={c: e["embeddings"] for c, e in zip(conditions, data["conditions"], strict=True)},
            scores_folder=data.get("scores"),
            folder=folder,
            _model=model,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: LensModel | None = None) -> RunResults:
        """The results of the run in folder ``path`` (its tables checked against the hashes results.json keeps)."""
        folder = Path(path)
        if not (folder / RESULTS_FILE).is_file():
            for task, manifest in RETIRED_MANIFESTS.items():
                if (folder / manifest).is_file():
                    raise ResultsError(
                        f"{folder} was written by an earlier `xlens {task}` ({manifest}), before {task} became a task "
                        f"of the study: rerun `xlens {task} CONFIG --out NEW_FOLDER` (or `xlens sweep` with "
                        f"[evaluate] tasks = [...]) to get results this xlens reads"
                    )
            raise ResultsError(f"{folder} holds no {RESULTS_FILE}: run `xlens run --out {folder}` first")
        return cls.from_dict(read_manifest(folder, RESULTS_FILE), folder, model)

    # --- what the run measured ---------------------------------------------------------------------------

    @property
    def interventions(self) -> list[Condition]:
        """Every condition but the baseline, in the order the run made them."""
        return [c for c in self.conditions if not c.is_baseline]

    def condition(self, label_or_condition: str | Condition | None) -> Condition:
        """A condition of this run by its label (``"force spa_Latn k=200"``), itself, or None for the baseline."""
        if label_or_condition is None:
            return Condition.baseline()
        if isinstance(label_or_condition, Condition):
            if label_or_condition in self.conditions:
                return label_or_condition
            wanted = label_or_condition.label
        else:
            wanted = label_or_condition
        for c in self.conditions:
            if c.label == wanted:
                return c
        listed = ", ".join(c.label for c in self.interventions) or "none (baseline only)"
        raise ResultsError(f"condition {wanted!r} is not in these results; available: {listed}")

    def table(self, name: str, condition: Condition | str | None = None) -> pd.DataFrame:
        """The rows of one condition (None: the baseline) in table ``name``; retrieval rows of the ``both``
        mode (queries and candidates under the condition)."""
        tables = {k: v for k, v in self.tables().items() if k != "correlation"}
        if name not in tables:
            raise ResultsError(f"unknown table {name!r} for one condition; use one of {', '.join(tables)}")
        rows = select(tables[name], self.condition(condition))
        return cast(pd.DataFrame, rows[rows["mode"] == "both"]) if name == "retrieval" else rows

    def embeddings(self, condition: Condition | str | None = None) -> Float[Tensor, "sentence layer d_model"] | None:
        """The cached evaluation embeddings of one condition (None: the baseline), or None if not on disk."""
        file = self.embedding_files.get(self.condition(condition))
        if file is None or self.folder is None or not own_path(self.folder, file).is_file():
            return None
        return load_tensors(own_path(self.folder, file))["embeddings"]

    def headline(self) -> dict[str, Any]:
        """The numbers the paper reports (see :func:`headline`)."""
        return headline(self)

    def summary(self) -> str:
        """A plain-text report of the headline for the terminal (a study without retrieval: its
        :meth:`study_summary`)."""
        return summarize(self) if "retrieval" in self.config.evaluate.tasks else self.study_summary()

    def best_condition(self) -> Condition | None:
        """The intervention (no control) with the highest best-layer improvement ratio of mean top-1 (None:
        baseline only, or no retrieval measured)."""
        if self.retrieval.empty:
            return None
        entries = [e for e in self.headline()["conditions"] if e["control"] == "none"]
        if not entries:
            return None
        best = max(entries, key=lambda e: e["best_ratio"])
        return self.condition(best["condition"])

    def comparison(
        self,
        metric: str = "top1",
        layers: Sequence[int] | None = None,
        task: str = "retrieval",
        where: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Every intervention (controls are columns, not rows) on ``task``'s ``metric``: its value, the change
        against the baseline with its paired bootstrap interval, and, where the run has them, its random controls'
        mean and the change against them with its interval. ``significant_*`` is True when the interval excludes
        0. Rows are the task's summary groups (retrieval: the mean over language pairs; transfer: the mean over
        targets, baseline probe; ``where`` narrows or changes them, e.g. ``{"target": "spa_Latn"}``) at ``layers``
        (default: the best baseline layer and the last one where the run has retrieval, else all).

        For retrieval also: ``{kind}_spread``, the spread of a control's mean over its seeds, ``centroid_spread``
        (the mean pairwise cosine distance of the language means) and ``to_medoid`` (their mean distance to the
        medoid mean), each beside the baseline's."""
        found: Any = self._differences(task, metric)
        summary = {**task_class(task).summary, **(where or {})}
        unknown = sorted(set(where or {}) - set(found.columns))
        if unknown:
            raise ResultsError(f"where: {task}'s differences have no column {unknown}; they have {list(found.columns)}")
        for column, value in (where or {}).items():
            if not (found[column] == value).any():
                raise ResultsError(
                    f"where: no {task} row has {column} = {value!r}; it has {sorted(set(found[column].dropna()))}"
                )
        fixed = []
        for column, value in summary.items():
            if column in found.columns and (found[column] == value).any():
                found = found[found[column] == value]
                fixed.append(column)
        groups = self._group_columns(found)
        if "layer" in groups:
            found = found[found["layer"].isin(self._chosen_layers(layers))]
        shown = [c for c in groups if c not in fixed]
        rows = [row for condition in self.interventions if condition.control == "none"
                for row in _compared(condition, found[found["condition"] == condition.label], shown)]  # fmt: skip
        frame = pd.DataFrame(rows)
        return self._retrieval_extras(frame, metric) if task == "retrieval" and not frame.empty else frame

    def _differences(self, task: str, metric: str) -> pd.DataFrame:
        if self.differences.empty:
            raise ResultsError("these results hold no bootstrap comparisons (run them with this version of xlens)")
        diffs: Any = self.differences
        mine = diffs[diffs["task"] == task]
        if mine.empty:
            raise ResultsError(f"these results measured no {task!r}; they have {', '.join(diffs['task'].unique())}")
        if metric not in set(mine["metric"]):
            raise ResultsError(f"{task} has no paired metric {metric!r}; it has {', '.join(mine['metric'].unique())}")
        return mine[mine["metric"] == metric]

    def _group_columns(self, found: pd.DataFrame) -> list[str]:
        """The columns that name a task's item groups (``layer``, ``target``, ...)."""
        conditions = {name for c in self.conditions for name in c.columns()}
        named = [str(c) for c in found.columns if c not in {*conditions, *DIFFERENCE_COLUMNS}]
        return [c for c in named if bool(found[c].notna().any())]

    def _chosen_layers(self, layers: Sequence[int] | None) -> list[int]:
        if layers is not None:
            return list(layers)
        if self.retrieval.empty:
            return sorted(set(self.layers))
        h = self.headline()
        return list(dict.fromkeys([h["best_layer"], h["last_layer"]]))

    def _retrieval_extras(self, frame: pd.DataFrame, metric: str) -> pd.DataFrame:
        retrieval: Any = self.retrieval[self.retrieval["mode"] == "both"]
        per_condition = retrieval.groupby(["condition", "layer"])[metric].mean()
        alignment: Any = self.alignment
        spread = alignment.groupby(["condition", "layer"])["centroid_cosine_distance"].mean()
        centroids: Any = self.centroids
        to_medoid = centroids.groupby(["condition", "layer"])["to_medoid"].mean()
        controls = controls_of(self.conditions)
        extra = []
        for row in frame.to_dict(orient="records"):
            label, layer = row["condition"], row["layer"]
            # The paper's Table 1: mean pairwise cosine distance of the language means, and their distance to the
            # medoid mean, here and in the baseline.
            more = {
                "centroid_spread": spread.loc[(label, layer)],
                "baseline_centroid_spread": spread.loc[("baseline", layer)],
                "to_medoid": to_medoid.loc[(label, layer)],
                "baseline_to_medoid": to_medoid.loc[("baseline", layer)],
            }
            for kind, members in controls.get(label, {}).items():
                more[f"{kind}_spread"] = float(np.std([per_condition.loc[(c.label, layer)] for c in members]))
            extra.append(more)
        return pd.concat([frame, pd.DataFrame(extra, index=frame.index)], axis=1)

    def collapsed(self, threshold: float = 0.05) -> pd.DataFrame:
        """The (condition, layer) where an intervention collapses the embedding space: the sentences' spread (see
        the retrieval task's ``centroids``), averaged over languages, below ``threshold`` times the baseline's at
        that layer; retrieval there is decided by what little spread is left. Columns ``condition, layer, spread,
        baseline_spread, ratio``."""
        columns = ["condition", "layer", "spread", "baseline_spread", "ratio"]
        cents: Any = self.centroids
        if cents.empty or "spread" not in cents.columns:
            return pd.DataFrame(columns=columns)
        mean = cents.groupby(["condition", "layer"], sort=False)["spread"].mean().reset_index()
        base = mean[mean["condition"] == "baseline"].set_index("layer")["spread"]
        mean = mean[mean["condition"] != "baseline"]
        mean = mean.assign(baseline_spread=mean["layer"].map(base))
        mean = mean.assign(ratio=mean["spread"] / mean["baseline_spread"])
        return mean[mean["ratio"] < threshold][columns].reset_index(drop=True)

    def study_summary(self) -> str:
        """Per task and metric, every intervention against the baseline and against its controls, with paired
        bootstrap intervals and a verdict that says no more than the interval allows; where no control was run,
        it says so."""
        blocks, controlled = [], False
        for task in self.config.evaluate.tasks:
            for metric in task_class(task).metrics:
                table = self.comparison(metric, task=task)
                if not table.empty:
                    others = [str(c) for c in table.columns if str(c).startswith("diff_vs_")]
                    controlled = controlled or others != ["diff_vs_baseline"]
                    blocks.append(f"{task} · {metric}\n{compact_comparison(table, self.config.stats.confidence)}")
        if not controlled:
            blocks.append("no random control was run: changes are against the baseline only ([controls] random)")
        blocks += collapse_lines(self)
        return "\n\n".join(blocks)

    def validity(
        self,
        x: str = "retrieval.top1",
        y: str = "transfer.accuracy",
        *,
        across: str = "languages",
        layers: Sequence[int] | None = None,
    ) -> pd.DataFrame:
        """Does one task's metric predict another's? Pearson's r and Spearman's rho, with percentile bootstrap
        intervals (``[stats]``'s resamples, seed and confidence), between per-language values of ``x`` and ``y``
        (``"task.metric"``; see each task's ``per_language``): ``across="languages"``, one correlation per
        condition and layer over the languages; ``across="conditions"``, one per language and layer over the
        conditions. Layers: ``layers`` (default: the best baseline layer and the last one where the run has
        retrieval, else all); a task without layers (fidelity) pairs with every layer."""
        if across not in ("languages", "conditions"):
            raise ResultsError(f"across = {across!r}: must be 'languages' or 'conditions'")
        both = self.paired_values(x, y, self._chosen_layers(layers))
        by = ["condition", "layer"] if across == "languages" else ["language", "layer"]
        stats = self.config.stats
        rows = []
        groups: Any = both.groupby(by, sort=False, dropna=False)  # a task without layers has none
        for key, group in groups:
            if len(group) < 3:
                continue
            xs, ys = (torch.tensor(group[c].to_numpy(dtype=float)) for c in ("x", "y"))
            r, rho = (bootstrap_correlation(xs, ys, stats.resamples, stats.seed, stats.confidence, m)
                      for m in ("pearson", "spearman"))  # fmt: skip
            rows.append({"x": x, "y": y, "across": across, **dict(zip(by, key, strict=True)), "points": len(group)}
                        | dict(zip(("pearson", "pearson_low", "pearson_high"), r, strict=True))
                        | dict(zip(("spearman", "spearman_low", "spearman_high"), rho, strict=True)))  # fmt: skip
        if not rows:
            raise ResultsError(f"no {across} group has 3 or more points of both {x} and {y}")
        return pd.DataFrame(rows)

    def language_values(self, metric: str) -> pd.DataFrame:
        """Per condition, layer and language, one value of ``"task.metric"`` (``retrieval.top1``)."""
        task, _, name = metric.partition(".")
        if task not in self.config.evaluate.tasks or not name:
            raise ResultsError(f"{metric!r}: write task.metric with a task of this run ({self.config.evaluate.tasks})")
        return task_class(task).per_language(self.tables(), name)

    def paired_values(self, x: str, y: str, layers: list[int]) -> pd.DataFrame:
        """Per condition, layer and language, the values of ``x`` and ``y`` side by side (columns ``x``, ``y``)."""
        xs: Any = _at_layers(self.language_values(x), layers)
        ys: Any = _at_layers(self.language_values(y), layers)
        on = ["condition", "language"]
        if xs["layer"].notna().any() and ys["layer"].notna().any():
            on.append("layer")
        merged = xs.rename(columns={"value": "x"}).merge(ys.rename(columns={"value": "y"}), on=on, suffixes=("", "_y"))
        if "layer_y" in merged.columns:
            merged["layer"] = merged["layer"].fillna(merged.pop("layer_y"))
        return merged

    # --- the run folder's other contents -----------------------------------------------------------------

    @cached_property
    def scores(self) -> ExpertScores | None:
        if self.folder is None or self.scores_folder is None or not own_path(self.folder, self.scores_folder).is_dir():
            return None
        return ExpertScores.load(own_path(self.folder, self.scores_folder))

    @cached_property
    def responses(self) -> Any:
        """The pooled responses the experts were scored on (from the run's cache), or None."""
        key = (self.scores.meta if self.scores is not None else {}).get("cache_key")
        if self.folder is None or not key:
            return None
        path = ArtifactStore(own_path(self.folder, CACHE)).path("responses", key)
        return Responses.load(path) if path.is_dir() else None

    @cached_property
    def _splits(self) -> Any:
        try:
            return load_splits(self.config)
        except (OSError, ValueError):  # the corpus is not on this machine any more
            return None

    def _split(self, which: str) -> ParallelCorpus | None:
        if self._splits is None:
            return None
        corpus = getattr(self._splits, which)
        # Texts shown must be the ones measured: a changed corpus file must not slip in.
        recorded = self.provenance[f"{which}_corpus"]["fingerprint"]
        return corpus if corpus.fingerprint() == recorded else None

    @property
    def find_texts(self) -> list[str] | None:
        """Texts of the responses' rows (language after language), or None."""
        find, responses = self._split("find"), self.responses
        if find is None or responses is None:
            return None
        return corpus_texts(find, responses.languages)[0]

    @property
    def eval_corpus(self) -> ParallelCorpus | None:
        """The evaluation split the run measured, where the run folder holds it."""
        return self._split("eval")

    @property
    def model(self) -> LensModel:
        """The run's model: the one it was given, else loaded on first use."""
        if self._model is None:
            runtime = self.config.runtime
            self._model = load_model(self.config.model, device=runtime.device, dtype=runtime.dtype)
        return self._model

    # --- display -----------------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"RunResults({self.config.model}, {len(self.languages)} languages, {len(self.interventions)} "
            f"interventions + baseline, {len(self.layers)} layers, folder={self.folder})"
        )

    def _repr_html_(self) -> str:
        if self.retrieval.empty:  # a study of other tasks: its summary
            facts = {"model": self.config.model, "tasks": ", ".join(self.config.evaluate.tasks),
                     "conditions": f"baseline + {len(self.interventions)}", "folder": self.folder or "–"}  # fmt: skip
            return html_card("RunResults", facts, f"<pre>{html.escape(self.study_summary())}</pre>")
        h = self.headline()
        base = h["baseline_mean_top1_by_layer"]
        facts = {
            "model": self.config.model,
            "languages": short_list(self.languages),
            "conditions": f"baseline + {len(self.interventions)}",
            "baseline mean top-1": f"best layer {h['best_layer']}: {base[h['best_layer']]:.3f}; last layer "
            f"{h['last_layer']}: {base[h['last_layer']]:.3f}",
            "folder": self.folder or "–",
        }
        body = ""
        if h["conditions"]:
            frame = pd.DataFrame(h["conditions"])[["condition", "top1_best_layer", "top1_last_layer", "best_ratio"]]
            body = frame.to_html(index=False, border=0, float_format=lambda x: f"{x:.3f}")
        return html_card("RunResults", facts, body)


def headline(results: RunResults) -> dict[str, Any]:
    """The run's headline, controlled: per intervention, the mean top-1 over language pairs at the best and the
    last layer, baseline -> intervention, the change with its paired bootstrap interval, the difference from as
    many random units (mean over seeds) with its interval, and a one-line ``verdict`` that says no more than those
    intervals allow (``controlled`` False: no random control was run). Also the baseline per layer and pair, how
    cosine and CKA moved, and as details the largest per-pair ratio and gain, each the largest of ``comparisons``
    per-pair comparisons (no interval: a maximum, not a finding)."""
    if results.retrieval.empty:
        raise ResultsError("this study measured no retrieval, which the headline reads: see results.study_summary()")
    # pandas' stubs type column access too loosely for this arithmetic: the frames are used untyped here.
    base: Any = results.table("retrieval")
    by_layer: Any = base.groupby("layer")["top1"].mean()
    best_layer, last_layer = int(by_layer.idxmax()), int(by_layer.index.max())
    pairs = (
        base[base["layer"].isin([best_layer, last_layer])]
        .pivot_table(index=["src", "tgt"], columns="layer", values="top1")
        .rename(columns={best_layer: "baseline_best_layer", last_layer: "baseline_last_layer"})
    )
    align_base: Any = results.table("alignment")
    compared = None  # results made by hand may hold no differences: then no interval and no verdict
    if results.interventions and not results.differences.empty:
        compared = results.comparison("top1", layers=[best_layer, last_layer])
    conditions, pairs_changed = [], []
    for condition in results.interventions:
        group: Any = results.table("retrieval", condition)
        entry = _condition_entry(results, condition, group, by_layer, (best_layer, last_layer), align_base)
        controlled = {}
        if condition.control == "none" and compared is not None and "condition" in compared.columns:
            controlled = _controlled(compared[compared["condition"] == condition.label], best_layer, last_layer)
        if controlled:
            entry |= controlled
            entry["verdict"] = _condition_verdict(entry, best_layer, last_layer, results.config.controls.seeds)
        conditions.append(entry)
        if condition.control != "none":
            continue  # a control's lucky pair is no finding
        merged = group.merge(base, on=["layer", "src", "tgt"], suffixes=("", "_base"))
        pairs_changed += [
            {"condition": condition.label, "layer": int(row.layer), "src": row.src, "tgt": row.tgt,
             "before": float(row.top1_base), "after": float(row.top1)}
            for row in cast(Any, merged).itertuples()
        ]  # fmt: skip
    # Per-pair changes: the largest ratio (a near-zero baseline inflates it, so before/after come with it) and the
    # largest absolute gain in top-1.
    with_ratio = [{**p, "ratio": p["after"] / p["before"]} for p in pairs_changed if p["before"] > 0]
    best_gain = max(pairs_changed, key=lambda p: p["after"] - p["before"], default=None)
    return {
        "best_layer": best_layer,
        "last_layer": last_layer,
        "confidence": results.config.stats.confidence,
        "controlled": any("vs_random_best_layer" in entry for entry in conditions),
        "baseline_mean_top1_by_layer": {int(k): float(v) for k, v in by_layer.items()},
        "baseline_pairs": pairs.reset_index().to_dict(orient="records"),
        "conditions": conditions,
        "comparisons": len(pairs_changed),
        "best_pair_ratio": max(with_ratio, key=lambda p: p["ratio"], default=None),
        "best_pair_gain": None
        if best_gain is None
        else {**best_gain, "gain": best_gain["after"] - best_gain["before"]},
    }


def _controlled(rows: Any, best_layer: int, last_layer: int) -> dict[str, Any]:
    """A condition's change against the baseline and against its random control (uniform, else matched per
    block) at the best and last layer, with their paired bootstrap intervals, from :meth:`RunResults.comparison`
    rows; empty where the comparison lacks the condition at those layers."""
    out: dict[str, Any] = {}
    for name, layer in (("best", best_layer), ("last", last_layer)):
        at = rows[rows["layer"] == layer]
        if at.empty:
            return {}
        row = at.iloc[0]
        kind = next((k for k in ("random", "random-per-block") if f"diff_vs_{k}" in row.index), None)
        out[f"baseline_top1_{name}_layer"] = float(row["baseline"])
        for side, column in (("change", "vs_baseline"), ("vs_random", f"vs_{kind}")):
            if f"diff_{column}" in row.index:
                out[f"{side}_{name}_layer"] = float(row[f"diff_{column}"])
                out[f"{side}_{name}_layer_low"] = float(row[f"low_{column}"])
                out[f"{side}_{name}_layer_high"] = float(row[f"high_{column}"])
        if kind is not None:
            out["control_kind"] = kind
            out[f"random_top1_{name}_layer"] = float(row[f"{kind}_mean"])
    return out


def _condition_verdict(entry: dict[str, Any], best_layer: int, last_layer: int, seeds: int) -> str:
    """One line: at the best and the last layer, top-1 before -> after with the change's interval, and the
    difference from as many random units (``seeds`` draws; the interval resamples sentences, not draws) with its
    interval and what it allows one to say."""
    parts = []
    units = "random units" if entry.get("control_kind") == "random" else "random units matched per block"
    draws = f"{seeds} draw{'s' if seeds > 1 else ''}"
    layers = [("best", best_layer)] if best_layer == last_layer else [("best", best_layer), ("last", last_layer)]
    for name, layer in layers:
        at = f"{name}_layer"
        text = (
            f"layer {layer}: top-1 {entry[f'baseline_top1_{at}']:.3f} -> {entry[f'top1_{at}']:.3f}, "
            f"{_signed(entry, f'change_{at}')}"
        )
        if f"vs_random_{at}" in entry:
            low, high = entry[f"vs_random_{at}_low"], entry[f"vs_random_{at}_high"]
            said = {1: "beats", -1: "is beaten by", 0: "is not distinguishable from"}[_side(low, high)]
            text += f"; vs {units} ({draws}) {_signed(entry, f'vs_random_{at}')}: {said} as many {units}"
        else:
            text += "; no random control"
        parts.append(text)
    return f"{entry['condition']}: " + " | ".join(parts)


def _signed(entry: dict[str, Any], key: str) -> str:
    return _with_interval(entry[key], entry[f"{key}_low"], entry[f"{key}_high"])


def _condition_entry(
    results: RunResults, condition: Condition, group: Any, by_layer: Any, layers: tuple[int, int], align_base: Any
) -> dict[str, Any]:
    """One condition's headline numbers: mean top-1 at the best and last layer, its best ratio to the baseline,
    and how cosine and CKA moved there."""
    best_layer, last_layer = layers
    mean_by_layer: Any = group.groupby("layer")["top1"].mean()
    ratio = mean_by_layer / by_layer.loc[mean_by_layer.index]
    align: Any = results.table("alignment", condition)
    entry: dict[str, Any] = {
        **condition.keys(),
        "control": condition.control,
        "top1_best_layer": float(mean_by_layer.loc[best_layer]),
        "top1_last_layer": float(mean_by_layer.loc[last_layer]),
        "best_ratio": float(ratio.max()),
        "best_ratio_layer": int(ratio.idxmax()),
    }
    for metric in ("cosine_parallel", "cosine_gap", "cka"):
        for name, layer in (("best", best_layer), ("last", last_layer)):
            after = align[align["layer"] == layer][metric].mean()
            before = align_base[align_base["layer"] == layer][metric].mean()
            entry[f"delta_{metric}_{name}_layer"] = float(after - before)
    return entry


def pair_change_lines(h: dict[str, Any]) -> list[str]:
    """The largest per-pair ratio and gain of a :func:`headline`, one line each with the top-1 before and after,
    each labelled as the largest of the run's per-pair comparisons (none without interventions)."""
    lines = []
    for title, key in (("ratio", "best_pair_ratio"), ("gain", "best_pair_gain")):
        if b := h[key]:
            change = f"x{b['ratio']:.2f}" if key == "best_pair_ratio" else f"+{b['gain']:.3f}"
            lines.append(
                f"largest pair {title} of {h['comparisons']} pair comparisons (a maximum, no interval): {change}, "
                f"top-1 {b['before']:.3f} -> {b['after']:.3f} ({b['src']}->{b['tgt']}, layer {b['layer']}, "
                f"{b['condition']})"
            )
    return lines


def headline_lines(h: dict[str, Any]) -> list[str]:
    """What the headline says first: per intervention, its verdict line; and whether a random control ran."""
    pairs = len(h["baseline_pairs"])
    lines = [
        f"retrieval top-1, mean over {pairs} ordered language pairs; change vs baseline and vs as many random units "
        f"with {h['confidence']:.0%} paired bootstrap intervals over query sentences:"
    ]
    verdicts = [entry["verdict"] for entry in h["conditions"] if "verdict" in entry]
    if h["conditions"] and not verdicts:
        return ["these results hold no paired bootstrap comparisons: no interval and no verdict can be given"]
    lines += verdicts
    if not h["controlled"] and h["conditions"]:
        lines.append("no random control was run: changes are against the baseline only ([controls] random = true)")
    return lines


def collapse_lines(results: RunResults) -> list[str]:
    """One warning line per condition that collapses the embedding space somewhere (:meth:`RunResults.collapsed`)."""
    found: Any = results.collapsed()
    lines = []
    for label, rows in found.groupby("condition", sort=False):
        layers = ", ".join(str(int(x)) for x in rows["layer"])
        lines.append(
            f"warning: {label} collapses the embedding space at layer(s) {layers} (the sentences' spread is "
            f"{float(rows['ratio'].min()):.3f} of the baseline's at least): retrieval there measures what is left"
        )
    return lines


def summarize(results: RunResults) -> str:
    """A plain-text report of :func:`headline` for the terminal: the controlled verdicts first, then the
    baseline, the conditions' means, and the largest per-pair changes as details."""
    h = headline(results)
    lines = [*headline_lines(h), *collapse_lines(results), ""] if h["conditions"] else []
    lines += [
        "baseline mean top-1 by layer: "
        + " ".join(f"L{k}:{v:.3f}" for k, v in h["baseline_mean_top1_by_layer"].items()),
        f"best layer {h['best_layer']}, last layer {h['last_layer']}",
        "",
        "baseline top-1 per pair:",
        pd.DataFrame(h["baseline_pairs"]).to_string(index=False, float_format="%.3f"),
    ]
    if h["conditions"]:
        lines += ["", "after intervention (mean over pairs):"]
        shown = pd.DataFrame(h["conditions"])[["condition", "top1_best_layer", "top1_last_layer", "best_ratio",
                                               "best_ratio_layer"]]  # fmt: skip
        lines.append(shown.to_string(index=False, float_format="%.3f"))
    changes = pair_change_lines(h)
    if changes:
        lines += ["", *changes]
    return "\n".join(lines)
