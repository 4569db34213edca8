"""Statistics across the conditions of a study: the paired bootstrap of every intervention against the baseline
and against its controls on every task's items, the correlation of centroid moves with retrieval gains, and the
validity of one task's metric as a predictor of another's.

- differences: ``{task, subject, against, metric, <the task's group columns>, subject_mean, against_mean, diff,
  low, high, significant}``, the paired bootstrap of ``subject`` (``condition``, or a kind of random control: the
  mean over its seeds, item by item) against ``baseline`` or a control, over the task's items (query sentences,
  test sentences, prompts); ``low``/``high`` bound the confidence interval of ``diff = subject_mean -
  against_mean``. The interval resamples items only: the spread of a random control over its seeds is not in it
  (``RunResults.comparison`` reports that spread beside it);
- correlation: ``{layer, points, r, low, high}``, Pearson's r between the change of the centroid cosine distance
  of a language pair and the change of its mean top-1, over the conditions and pairs of a run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from xlens.conditions import Condition, controls_of
from xlens.errors import MetricInputError
from xlens.evaluation.base import ItemScores
from xlens.metrics.bootstrap import bootstrap_correlation, paired_bootstrap, resample_counts

Rows = list[dict[str, Any]]
CHUNK = 4096  # item groups bootstrapped at once: bounds memory at CHUNK x resamples (204 languages: 41k pairs)
Scores = dict[str, tuple[dict[str, Any], dict[str, Tensor]]]  # group key -> (group, metric -> items)


def _by_group(blocks: Sequence[ItemScores]) -> Scores:
    out: Scores = {}
    for block in blocks:
        for g, group in enumerate(block.groups):
            key = json.dumps(group, sort_keys=True)  # blocks of other metrics may share a group: merged
            out.setdefault(key, (group, {}))[1].update({m: v[g] for m, v in block.scores.items()})
    return out


def _seed_mean(members: Sequence[Scores]) -> Scores:
    """A control's seeds averaged item by item, on the groups every seed has."""
    shared = [key for key in members[0] if all(key in m for m in members)]
    return {
        key: (
            members[0][key][0],
            {m: torch.stack([s[key][1][m] for s in members]).mean(dim=0) for m in members[0][key][1]},
        )
        for key in shared
    }


class Counts:
    """Bootstrap resample counts per number of items, seeded alike: every comparison over the same items is
    paired with the same resamples."""

    def __init__(self, resamples: int, seed: int) -> None:
        self.resamples, self.seed = resamples, seed
        self._made: dict[int, Tensor] = {}

    def __call__(self, n: int) -> Float[Tensor, "resample item"]:
        if n not in self._made:
            self._made[n] = resample_counts(n, self.resamples, self.seed)
        return self._made[n]


def differences(subject: Scores, against: Scores, counts: Counts, confidence: float) -> Rows:
    """For every group and metric both sides have: the paired bootstrap interval of the mean item difference."""
    rows: Rows = []
    missing = [key for key in subject if key not in against]
    if missing:
        raise MetricInputError(
            f"{len(missing)} item group(s) measured under one condition have no counterpart under the other, e.g. "
            f"{missing[0]}: the two were measured with different settings (rerun into a new folder)"
        )
    shared = list(subject)
    batches: dict[tuple[str, int], list[str]] = {}
    for key in shared:
        for metric, values in subject[key][1].items():
            if metric in against[key][1]:
                if against[key][1][metric].shape != values.shape:
                    raise MetricInputError(f"group {key} has {values.shape[0]} items on one side, "
                                           f"{against[key][1][metric].shape[0]} on the other")  # fmt: skip
                batches.setdefault((metric, values.shape[0]), []).append(key)
    chunks = [(m, n, keys[i : i + CHUNK]) for (m, n), keys in batches.items() for i in range(0, len(keys), CHUNK)]
    for metric, n, keys in chunks:
        a = torch.stack([subject[k][1][metric] for k in keys])
        b = torch.stack([against[k][1][metric] for k in keys])
        if n < 2:  # one item: a difference, no interval
            diff, low, high = (
                (a - b).double().mean(dim=-1),
                torch.full((len(keys),), float("nan")),
                torch.full((len(keys),), float("nan")),
            )
        else:
            diff, low, high = paired_bootstrap(a - b, counts(n), confidence)
        means = a.double().mean(dim=-1).tolist(), b.double().mean(dim=-1).tolist()
        for key, mine, theirs, d, lo, hi in zip(keys, *means, diff.tolist(), low.tolist(), high.tolist(), strict=True):
            rows.append(
                {
                    "metric": metric,
                    **subject[key][0],
                    "subject_mean": mine,
                    "against_mean": theirs,
                    "diff": d,
                    "low": lo,
                    "high": hi,
                    "significant": lo > 0 or hi < 0,
                }
            )
    return rows


def condition_differences(
    conditions: Sequence[Condition],
    items: Callable[[Condition], Sequence[ItemScores]],
    counts: Counts,
    confidence: float,
) -> Rows:
    """One task's differences (see the module docstring): every condition that is no control against the
    baseline and, for each kind of its random controls (their seeds averaged item by item), the condition against
    them and them against the baseline. ``conditions`` starts with the baseline."""
    controls = controls_of(conditions)
    base = _by_group(items(conditions[0]))
    rows: Rows = []
    for condition in conditions[1:]:
        if condition.control != "none":
            continue
        mine = _by_group(items(condition))
        comparisons = [("condition", mine, "baseline", base)]
        for kind, group in controls.get(condition.label, {}).items():
            theirs = _seed_mean([_by_group(items(c)) for c in group])
            comparisons += [("condition", mine, kind, theirs), (kind, theirs, "baseline", base)]
        for subject, a, against, b in comparisons:
            found = differences(a, b, counts, confidence)
            rows += [{**condition.columns(), "subject": subject, "against": against, **row} for row in found]
    return rows


def centroid_correlation(
    retrieval_table: pd.DataFrame,
    alignment_table: pd.DataFrame,
    conditions: Sequence[str],
    resamples: int,
    seed: int,
    confidence: float,
) -> Rows:
    """Per layer, Pearson's r (with a bootstrap interval over points) between the change of a language pair's
    centroid cosine distance and the change of its mean top-1 (both directions), one point per condition of
    ``conditions`` (labels) and unordered pair."""
    # pandas' stubs type this column arithmetic too loosely: the frames are used untyped here.
    ret: Any = retrieval_table[retrieval_table["mode"] == "both"]
    ali: Any = alignment_table
    top1 = ret.assign(pair=_pair(ret["src"], ret["tgt"])).groupby(["condition", "layer", "pair"])["top1"].mean()
    distance = ali.assign(pair=_pair(ali["lang_a"], ali["lang_b"])).set_index(["condition", "layer", "pair"])
    both: Any = pd.concat([top1, distance["centroid_cosine_distance"]], axis=1).reset_index()
    base = both[both["condition"] == "baseline"].drop(columns="condition")
    moved = both[both["condition"].isin(conditions)].merge(base, on=["layer", "pair"], suffixes=("", "_0"))
    rows: Rows = []
    for layer, group in moved.groupby("layer"):
        if len(group) < 3:
            continue
        x = torch.tensor((group["centroid_cosine_distance"] - group["centroid_cosine_distance_0"]).to_numpy())
        y = torch.tensor((group["top1"] - group["top1_0"]).to_numpy())
        r, low, high = bootstrap_correlation(x, y, resamples, seed, confidence)
        rows.append({"layer": int(layer), "points": len(group), "r": r, "low": low, "high": high})
    return rows


def _pair(a: Any, b: Any) -> Any:
    """An order-free key of two language columns (``eng_Latn|spa_Latn``)."""
    return [f"{x}|{y}" if x < y else f"{y}|{x}" for x, y in zip(a, b, strict=True)]
