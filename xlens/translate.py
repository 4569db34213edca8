"""Translation before and after interventions: few-shot prompts, greedy continuations, chrF++ and BLEU.

``run_translate(config, out)`` translates FLORES-200 devtest sentences (``[evaluate.translation]`` of the config, see
:class:`xlens.config.TranslateConfig`) in every direction under the run's grid of conditions, as ``xlens run`` makes
them: the baseline, then each intervention with its random controls, on experts found on the config's find corpus.
With ``translate.experts = "target"`` a direction gets the baseline and the conditions on its target language's
experts; with ``"all"`` every condition.

A direction's prompts share the same ``shots`` examples, drawn (seeded by the config's ``seed``) from rows disjoint
from its ``sentences`` test rows; a shot is the template filled with the example's source, a space, its reference
and a line break; the prompt ends with the test sentence's template. The test rows are drawn first, so they do
not depend on ``shots``; rows that share a sentence with the find split are left out beforehand. Continuations are
greedy, stopped and cut at their first line break, then stripped.

Scores per direction and condition: corpus chrF++ (sacrebleu, ``word_order=2``) and BLEU (``13a`` tokenization;
Japanese and Korean targets use MeCab when sacrebleu's ``ja``/``ko`` extras are installed and single characters
otherwise, Chinese targets sacrebleu's ``zh``; the ``bleu_tokenize`` column says which), the share of outputs
identified (py3langid) as the target language and the share of empty outputs; and for every condition but the
baseline, its chrF++ difference to the baseline with a paired bootstrap interval over the test sentences (chrF++
recomputed on every resampled sentence set; resamples, seed and confidence from ``[stats]``).

Every (direction, condition) generation is a content-keyed artefact in ``out/cache`` (model, numerics, prompts,
max_new_tokens, the condition and the experts it uses), so an interrupted run resumes and a rerun generates
nothing. The results are a :class:`TranslateResults`, written as ``translate.json`` and ``translate.parquet``.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pandas as pd

from xlens._display import html_card, html_frame, short_list
from xlens._io import content_key, read_json, reading, write_json
from xlens.conditions import Condition
from xlens.config import ExperimentConfig, parse_direction
from xlens.errors import ResultsError
from xlens.evaluation.translation import (
    STOP,
    FewShotPrompts,
    bleu_tokenizer,
    check_context,
    chrf_difference,
    direction_conditions,
    direction_label,
    few_shot_prompts,
    require_sacrebleu,
    scores,
    translate_prompts,
    translation_directions,
    translation_pool,
)
from xlens.executors import config_numerics, load
from xlens.experiment import Interventions, check_config, folder_owner, package_versions
from xlens.metrics.bootstrap import resample_counts
from xlens.models.lens import LensModel
from xlens.results import _records, tidy
from xlens.runfolder import RunFolder, read_manifest

if TYPE_CHECKING:
    from xlens.data.corpus import ParallelCorpus

MANIFEST = "translate.json"
TABLE = "translate"
OUTPUTS = (MANIFEST, f"{TABLE}.parquet")
SCHEMA_VERSION = 1
N_EXAMPLES = 3  # outputs kept in translate.json per direction and condition


def owner(config: ExperimentConfig, model: LensModel | None = None) -> dict[str, Any]:
    """What a translate folder records as its owner: the settings that change its results, and the numerics."""
    numerics = model.numerics() if model is not None else config_numerics(config)
    return folder_owner(config, numerics, model, ["translation"])


def generation_key(
    model: LensModel, plan: FewShotPrompts, config: ExperimentConfig, condition: Condition, iv: Any
) -> str:
    """The content key of one direction's outputs under ``condition``."""
    needs = frozenset() if condition.is_baseline else condition.spec().needs
    return content_key(
        "translation",
        model.identity(),
        model.numerics(),
        plan.prompts,
        config.translate.max_new_tokens,
        config.runtime.batch_size,
        STOP,
        condition.to_dict(),
        iv.scores_key if "experts" in needs else None,
        iv.splits.find.fingerprint() if "corpus" in needs else None,
    )


def _save_outputs(value: dict[str, Any], folder: Path) -> None:
    write_json(folder / "outputs.json", value)


def _load_outputs(folder: Path) -> dict[str, Any]:
    with reading(folder / "outputs.json"):
        data = read_json(folder / "outputs.json")
        if data["kind"] != "translation" or not all(isinstance(t, str) for t in data["outputs"]):
            raise ValueError("not a list of translations")
        return data


def run_translate(
    config: ExperimentConfig,
    out: str | os.PathLike[str],
    *,
    model: LensModel | None = None,
    progress: bool = True,
    force: bool = False,
) -> TranslateResults:
    """Translate in every direction under every condition into folder ``out`` (see the module docstring).

    Everything that can fail without the model fails first: sacrebleu, the directions, the config against the
    model's shape, the corpora and the prompts.

    Args:
        model: the loaded model to use (it must be ``config.model``); default: load it.
        force: replace the results of another config in ``out`` (the content-keyed cache is kept).
    """
    started = time.perf_counter()
    t, stats = config.translate, config.stats
    splits, pool, removed, plans = _plan(config)
    timings: dict[str, float] = {}
    with RunFolder.open(Path(out), "translate", owner(config, model), outputs=OUTPUTS, force=force) as run:
        store = run.artifacts
        tick = time.perf_counter()
        lm = model if model is not None else load(config)
        check_context(lm, plans, t.max_new_tokens)
        iv = Interventions.prepare(config, lm, store, splits, progress)
        timings["model_and_experts_s"] = time.perf_counter() - tick
        jobs = [(plan, c) for plan in plans for c in direction_conditions(iv.conditions, plan.target, t.experts)]
        keys = [generation_key(lm, plan, config, c, iv) for plan, c in jobs]
        tick = time.perf_counter()
        outputs = _generate_all(config, lm, iv, store, jobs, keys, progress)
        timings["generate_s"] = time.perf_counter() - tick
        tick = time.perf_counter()
        counts = resample_counts(t.sentences, stats.resamples, stats.seed).numpy() if t.sentences >= 2 else None
        rows, examples = _score(jobs, outputs, counts, stats.confidence)
        generations = [
            {
                "direction": p.direction,
                "condition": c.label,
                "artifact": str(store.path("translation", k).relative_to(run.path)),
            }
            for (p, c), k in zip(jobs, keys, strict=True)
        ]
        timings["scores_s"] = time.perf_counter() - tick
        timings["total_s"] = time.perf_counter() - started
        conditions = list(dict.fromkeys(c for _, c in jobs))
        directions = [_direction_record(plan) for plan in plans]
        results = TranslateResults(
            config=config,
            table=_ordered(tidy(pd.DataFrame(rows)), conditions),
            examples=pd.DataFrame(examples),
            conditions=conditions,
            directions=directions,
            generations=generations,
            provenance=_provenance(config, lm, pool, removed, directions, timings),
            folder=run.path,
        )
        run.commit(MANIFEST, results.to_dict(), results.tables())
        return results


def _plan(config: ExperimentConfig) -> tuple[Any, ParallelCorpus, int, list[FewShotPrompts]]:
    """What can be checked without the model: sacrebleu, the directions, the config against the model's shape, the
    corpora and the prompts. Returns the splits, the translation pool, the rows it lost to the find split, and
    each direction's prompts."""
    require_sacrebleu()
    t = config.translate
    pairs = translation_directions(config)
    splits = check_config(config)
    languages = list(dict.fromkeys(lang for pair in pairs for lang in pair))
    pool, removed = translation_pool(config, languages, splits.find)
    plans = [few_shot_prompts(pool, src, tgt, t.shots, t.sentences, t.template, config.seed) for src, tgt in pairs]
    return splits, pool, removed, plans


def _generate_all(
    config: ExperimentConfig,
    lm: LensModel,
    iv: Interventions,
    store: Any,
    jobs: list[tuple[FewShotPrompts, Condition]],
    keys: list[str],
    progress: bool,
) -> dict[tuple[str, Condition], list[str]]:
    """Every direction's outputs under every condition, each a cached artefact (computed on a miss only)."""
    from tqdm.auto import tqdm

    t = config.translate
    done = sum(store.path("translation", key).is_dir() for key in keys)
    built: dict[Condition, list[Any]] = {}
    outputs: dict[tuple[str, Condition], list[str]] = {}
    with tqdm(total=len(jobs), initial=done, desc="translations", disable=not progress) as bar:
        for (plan, condition), key in zip(jobs, keys, strict=True):

            def compute(plan: FewShotPrompts = plan, condition: Condition = condition) -> dict[str, Any]:
                if condition not in built:
                    built[condition] = iv.build(condition, lm)
                begun = time.perf_counter()
                texts = translate_prompts(
                    lm, plan.prompts, t.max_new_tokens, built[condition], config.runtime.batch_size
                )
                bar.update()
                return {
                    "kind": "translation",
                    "direction": plan.direction,
                    "condition": condition.label,
                    "test_ids": plan.test_ids,
                    "outputs": texts,
                    "seconds": time.perf_counter() - begun,
                }

            kept = store.folder("translation", key, compute, _save_outputs, _load_outputs)
            outputs[(plan.direction, condition)] = kept["outputs"]
    return outputs


def _score(
    jobs: list[tuple[FewShotPrompts, Condition]],
    outputs: dict[tuple[str, Condition], list[str]],
    counts: Any,
    confidence: float,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The table's rows (scores, and the change against the direction's baseline) and the examples."""
    measured = {
        (plan.direction, c): scores(outputs[(plan.direction, c)], plan.references, plan.target) for plan, c in jobs
    }
    rows, examples = [], []
    for plan, condition in jobs:
        texts, baseline = outputs[(plan.direction, condition)], outputs[(plan.direction, Condition.baseline())]
        row: dict[str, Any] = {
            **condition.columns(),
            "direction": plan.direction,
            "source": plan.source,
            "target": plan.target,
            "sentences": len(texts),
            **measured[(plan.direction, condition)],
            "chrf_delta": None,
            "chrf_delta_low": None,
            "chrf_delta_high": None,
            "target_share_delta": None,
        }
        if not condition.is_baseline:  # the baseline is what the others are compared with
            diff, low, high = chrf_difference(baseline, texts, plan.references, counts, confidence)
            row.update(chrf_delta=diff, chrf_delta_low=low, chrf_delta_high=high)
            base_share = measured[(plan.direction, Condition.baseline())]["target_share"]
            row["target_share_delta"] = row["target_share"] - base_share
        rows.append(row)
        shown = list(zip(plan.test_ids, plan.sources, plan.references, texts, strict=True))[:N_EXAMPLES]
        examples += [
            {
                "direction": plan.direction,
                "condition": condition.label,
                "row": i,
                "source": a,
                "reference": b,
                "output": o,
            }
            for i, a, b, o in shown
        ]
    return rows, examples


def _ordered(table: pd.DataFrame, conditions: Sequence[Condition]) -> pd.DataFrame:
    """The conditions' columns first (keys, then every setting), then the scores."""
    first = list(dict.fromkeys(name for c in conditions for name in c.columns()))
    return cast(pd.DataFrame, table[first + [name for name in table.columns if name not in first]])


def _direction_record(plan: FewShotPrompts) -> dict[str, Any]:
    return {
        "direction": plan.direction,
        "source": plan.source,
        "target": plan.target,
        "shot_ids": plan.shot_ids,
        "test_ids": plan.test_ids,
        "bleu_tokenize": bleu_tokenizer(plan.target),
        "first_prompt": plan.prompts[0],
    }


def _provenance(
    config: ExperimentConfig,
    model: LensModel,
    pool: ParallelCorpus,
    removed: int,
    directions: list[dict[str, Any]],
    timings: dict[str, float],
) -> dict[str, Any]:
    sacrebleu = require_sacrebleu()
    versions = package_versions(("sacrebleu", "py3langid"))

    def signature(metric: Any) -> str:
        metric.corpus_score(["a"], [["a"]])  # sacrebleu tells a metric's signature once it has scored something
        return metric.get_signature().format()

    targets = sorted({d["target"] for d in directions})
    signatures = {
        "chrf": signature(sacrebleu.metrics.CHRF(word_order=2)),
        "bleu": {tgt: signature(sacrebleu.metrics.BLEU(tokenize=bleu_tokenizer(tgt))) for tgt in targets},
    }
    return {
        "model": model.identity(),
        "numerics": model.numerics(),
        "corpus": {
            "spec": config.translate.corpus,
            "name": pool.name,
            "fingerprint": pool.fingerprint(),
            "rows": len(pool),
            "rows_removed_for_overlap_with_find_split": removed,
        },
        "sacrebleu_signatures": signatures,
        "versions": versions,
        "machine": {"platform": platform.platform(), "device": str(model.device)},
        "seed": config.seed,
        "timings": timings,
    }


# --- results -----------------------------------------------------------------------------------------------------


@dataclass
class TranslateResults:
    """A finished ``xlens translate``: one row per direction and condition in :attr:`table` (the condition's
    columns, ``direction``, ``source``, ``target``, ``sentences``, ``chrf``, ``bleu``, ``bleu_tokenize``,
    ``target_share``, ``empty_share``, and against the baseline ``chrf_delta`` with its bootstrap interval
    ``chrf_delta_low``/``chrf_delta_high`` and ``target_share_delta``; null for the baseline), the first outputs of
    each in :attr:`examples`, each direction's shot and test rows in :attr:`directions`, and where every
    generation is cached (:meth:`outputs` reads them all)."""

    config: ExperimentConfig
    table: pd.DataFrame
    examples: pd.DataFrame
    conditions: list[Condition]
    directions: list[dict[str, Any]]
    generations: list[dict[str, Any]]
    provenance: dict[str, Any]
    folder: Path | None = None

    def tables(self) -> dict[str, pd.DataFrame]:
        return {TABLE: self.table}

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "config": self.config.to_dict(),
            "provenance": self.provenance,
            "conditions": [c.to_dict() for c in self.conditions],
            "directions": self.directions,
            "generations": self.generations,
            "examples": _records(self.examples),
            TABLE: _records(self.table),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], folder: Path | None = None) -> TranslateResults:
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ResultsError(
                f"translation results of schema version {data.get('schema_version')} (this xlens reads "
                f"{SCHEMA_VERSION}): rerun `xlens translate` with this version into a new folder"
            )
        return cls(
            config=ExperimentConfig.from_dict(data["config"]),
            table=tidy(pd.DataFrame(data[TABLE])),
            examples=pd.DataFrame(data["examples"]),
            conditions=[Condition.from_dict(c) for c in data["conditions"]],
            directions=data["directions"],
            generations=data["generations"],
            provenance=data["provenance"],
            folder=folder,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TranslateResults:
        """The results in folder ``path`` (its table checked against the hash translate.json keeps)."""
        folder = Path(path)
        if not (folder / MANIFEST).is_file():
            raise ResultsError(f"{folder} holds no {MANIFEST}: run `xlens translate CONFIG --out {folder}` first")
        return cls.from_dict(read_manifest(folder, MANIFEST), folder)

    def outputs(self, direction: str, condition: str | Condition | None = None) -> list[str]:
        """Every output of ``direction`` (``eng_Latn-spa_Latn`` or ``en-es``) under ``condition`` (a label or a
        Condition; None: the baseline), from the run folder's cache."""
        label = "baseline" if condition is None else condition if isinstance(condition, str) else condition.label
        wanted = (
            direction
            if direction in {d["direction"] for d in self.directions}
            else direction_label(*parse_direction(direction))
        )
        for entry in self.generations:
            if entry["direction"] == wanted and entry["condition"] == label:
                if self.folder is None:
                    raise ResultsError("these results have no folder to read their outputs from")
                return _load_outputs(self.folder / entry["artifact"])["outputs"]
        listed = ", ".join(sorted({f"{g['direction']} / {g['condition']}" for g in self.generations}))
        raise ResultsError(f"no outputs for {wanted} / {label}; available: {listed}")

    def summary(self) -> str:
        """The table for the terminal: scores per direction and condition, the chrF++ change with its interval."""
        columns = ["direction", "condition", "chrf", "bleu", "target_share", "empty_share", "chrf_delta"]
        frame = cast(pd.DataFrame, self.table[columns].copy())
        low, high = self.table["chrf_delta_low"], self.table["chrf_delta_high"]
        confidence = round(self.config.stats.confidence * 100)
        frame[f"{confidence}% interval"] = [
            "" if pd.isna(a) or pd.isna(b) else f"[{a:.2f}, {b:.2f}]" for a, b in zip(low, high, strict=True)
        ]
        shown = frame.to_string(index=False, float_format=lambda x: f"{x:.3f}", na_rep="")
        tokenize = ", ".join(f"{d['target']}: {d['bleu_tokenize']}" for d in self.directions)
        return f"{shown}\nBLEU tokenization: {tokenize}"

    def __repr__(self) -> str:
        return (
            f"TranslateResults({self.config.model}, {len(self.directions)} directions, {len(self.conditions)} "
            f"conditions, folder={self.folder})"
        )

    def _repr_html_(self) -> str:
        facts = {
            "model": self.config.model,
            "directions": short_list([d["direction"] for d in self.directions]),
            "conditions": f"baseline + {len(self.conditions) - 1}",
            "shots / sentences": f"{self.config.translate.shots} / {self.config.translate.sentences}",
            "folder": self.folder or "–",
        }
        columns = ["direction", "condition", "chrf", "bleu", "target_share", "chrf_delta"]
        return html_card("TranslateResults", facts, html_frame(self.table[columns]))
