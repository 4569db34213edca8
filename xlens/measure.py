"""The numbers a run reports, from embeddings and per-query ranks: one condition's tables, mixed retrieval, the
paired-bootstrap comparisons between conditions, and the correlation of centroid moves with retrieval gains.

Tables are lists of row dicts (the runner adds each condition's columns):

- retrieval: ``{layer, src, tgt, mode, top1, top5, mrr}`` for every ordered pair (``mode`` ``both``: queries and
  candidates under the condition; ``queries-baseline`` / ``candidates-baseline``: one side without it);
- alignment: ``{layer, lang_a, lang_b, cosine_parallel, cosine_random, cosine_gap, cka, cka_debiased,
  centroid_distance, centroid_cosine_distance}`` for every unordered pair;
- centroids: ``{layer, lang, to_medoid, to_expert_lang}``, cosine distances of each language's mean embedding to
  the medoid of all means and to the expert language's mean (the paper's Table 1 measures);
- differences: ``{mode, subject, against, metric, layer, src, tgt, subject_mean, against_mean, diff, low, high,
  significant}``, the paired bootstrap of ``subject`` (``condition``, or a kind of random control: the mean over
  its seeds) against ``baseline`` or a control in retrieval ``mode`` (``src = tgt = "mean"``: the mean over
  pairs); ``low``/``high`` bound the confidence interval of ``diff = subject_mean - against_mean``. The interval
  resamples sentences only: the spread of a random control over its seeds is not in it (``RunResults.comparison``
  reports that spread beside it);
- correlation: ``{layer, points, r, low, high}``, Pearson's r between the change of the centroid cosine distance
  of a language pair and the change of its mean top-1, over the conditions and pairs of a run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from xlens.metrics.alignment import (
    centroid_distance_matrix,
    cka_matrix,
    cosine_parallel_matrix,
    cosine_random_matrix,
    mean_center,
    medoid_distances,
)
from xlens.metrics.bootstrap import bootstrap_pearson, paired_bootstrap
from xlens.metrics.retrieval import RetrievalScores, retrieval_matrix, retrieval_ranks
from xlens.results import Condition, controls_of

Rows = list[dict[str, Any]]
MIXED_MODES = ("queries-baseline", "candidates-baseline")


def layer_metrics(
    per_lang: Float[Tensor, "lang sentence layer d_model"],
    languages: Sequence[str],
    layers: Sequence[int],
    retrieval_method: str,
    center: bool,
    knn: int,
    expert_lang: str | None = None,
) -> tuple[dict[str, Rows], Int[Tensor, "layer src tgt sentence"]]:
    """The retrieval, alignment and centroid rows of one condition at every layer, and the rank of every query's
    translation (for the bootstrap)."""
    retrieval_rows: Rows = []
    alignment_rows: Rows = []
    centroid_rows: Rows = []
    ranks = []
    n = len(languages)
    expert = list(languages).index(expert_lang) if expert_lang is not None and expert_lang in languages else None
    for slot, layer in enumerate(layers):
        E = per_lang[:, :, slot].double()
        if center:
            E = mean_center(E)
        ret = retrieval_matrix(E, method=retrieval_method, knn=knn, ranks=True)  # type: ignore[arg-type]
        ranks.append(ret["ranks"])
        cos_par, cos_rand = cosine_parallel_matrix(E), cosine_random_matrix(E)
        cka, cka_d = cka_matrix(E), cka_matrix(E, debiased=True)
        centroid, centroid_cos = centroid_distance_matrix(E), centroid_distance_matrix(E, "cosine")
        to_medoid, _ = medoid_distances(E)
        for i in range(n):
            centroid_rows.append(
                {
                    "layer": layer,
                    "lang": languages[i],
                    "to_medoid": float(to_medoid[i]),
                    "to_expert_lang": None if expert is None else float(centroid_cos[i, expert]),
                }
            )
            for j in range(n):
                if i == j:
                    continue
                retrieval_rows.append(
                    {
                        "layer": layer,
                        "src": languages[i],
                        "tgt": languages[j],
                        "mode": "both",
                        **{m: float(ret[m][i, j]) for m in ("top1", "top5", "mrr")},
                    }
                )
                if i < j:
                    alignment_rows.append(
                        {
                            "layer": layer,
                            "lang_a": languages[i],
                            "lang_b": languages[j],
                            "cosine_parallel": float(cos_par[i, j]),
                            "cosine_random": float(cos_rand[i, j]),
                            "cosine_gap": float(cos_par[i, j] - cos_rand[i, j]),
                            "cka": float(cka[i, j]),
                            "cka_debiased": float(cka_d[i, j]),
                            "centroid_distance": float(centroid[i, j]),
                            "centroid_cosine_distance": float(centroid_cos[i, j]),
                        }
                    )
    tables = {"retrieval": retrieval_rows, "alignment": alignment_rows, "centroids": centroid_rows}
    return tables, torch.stack(ranks)


def mixed_retrieval(
    baseline: Float[Tensor, "lang sentence layer d_model"],
    intervened: Float[Tensor, "lang sentence layer d_model"],
    languages: Sequence[str],
    layers: Sequence[int],
    retrieval_method: str,
    center: bool,
    knn: int,
) -> tuple[Rows, dict[str, Int[Tensor, "layer src tgt sentence"]]]:
    """Retrieval with one side embedded without the intervention (the paper's mixed retrieval): queries from the
    baseline against intervened candidates (``queries-baseline``), and intervened queries against baseline
    candidates (``candidates-baseline``); the rows, and the translations' ranks per mode (0 on the diagonal)."""
    rows: Rows = []
    n_lang, n = baseline.shape[:2]
    ranks = {mode: torch.zeros((len(layers), n_lang, n_lang, n), dtype=torch.int32) for mode in MIXED_MODES}
    for slot, layer in enumerate(layers):
        before, after = baseline[:, :, slot].double(), intervened[:, :, slot].double()
        if center:
            before, after = mean_center(before), mean_center(after)
        for i, src in enumerate(languages):
            for j, tgt in enumerate(languages):
                if i == j:
                    continue
                for mode, queries, candidates in (
                    ("queries-baseline", before[i], after[j]),
                    ("candidates-baseline", after[i], before[j]),
                ):
                    found = retrieval_ranks(queries, candidates, retrieval_method, knn)  # type: ignore[arg-type]
                    ranks[mode][slot, i, j] = found.to("cpu", torch.int32)
                    got = RetrievalScores.of_ranks(found)
                    rows.append(
                        {"layer": layer, "src": src, "tgt": tgt, "mode": mode}
                        | {"top1": got.top1, "top5": got.top5, "mrr": got.mrr}
                    )
    return rows, ranks


def query_scores(ranks: Sequence[Int[Tensor, "layer src tgt sentence"]]) -> dict[str, Float[Tensor, "..."]]:
    """Per-query top-1 hits and reciprocal ranks of translation ranks, averaged over several rank tensors (a
    random control's seeds); a rank of 0 (the diagonal) scores 0."""
    stacked = torch.stack([r.to(torch.float32) for r in ranks])
    hits, reciprocal = (stacked == 1).to(torch.float32), torch.where(stacked > 0, 1 / stacked.clamp(min=1), 0.0)
    return {"top1": hits.mean(dim=0), "mrr": reciprocal.mean(dim=0)}


def differences(
    subject: dict[str, Float[Tensor, "layer src tgt sentence"]],
    reference: dict[str, Float[Tensor, "layer src tgt sentence"]],
    languages: Sequence[str],
    layers: Sequence[int],
    counts: Float[Tensor, "resample sentence"],
    confidence: float,
) -> Rows:
    """One side against another (:func:`query_scores` of a condition, or of a random control's seeds, against
    those of the baseline or of that control): per ordered pair and for the mean over pairs, at every layer, the
    paired bootstrap interval of the difference of per-query top-1 and reciprocal rank."""
    n_lang = len(languages)
    pairs = [(i, j) for i in range(n_lang) for j in range(n_lang) if i != j]
    src, tgt = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    names = [(languages[i], languages[j]) for i, j in pairs] + [("mean", "mean")]
    rows: Rows = []
    for metric in ("top1", "mrr"):
        a, b = subject[metric][:, src, tgt], reference[metric][:, src, tgt]  # [layer, pair, sentence]
        a = torch.cat([a, a.mean(dim=1, keepdim=True)], dim=1)
        b = torch.cat([b, b.mean(dim=1, keepdim=True)], dim=1)
        diff, low, high = paired_bootstrap(a - b, counts, confidence)
        means = a.double().mean(dim=-1).tolist(), b.double().mean(dim=-1).tolist()
        columns = zip(*means, diff.tolist(), low.tolist(), high.tolist(), strict=True)
        for layer, per_layer in zip(layers, columns, strict=True):
            for (s, t), value, ref, d, lo, hi in zip(names, *per_layer, strict=True):
                rows.append(
                    {
                        "metric": metric,
                        "layer": layer,
                        "src": s,
                        "tgt": t,
                        "subject_mean": value,
                        "against_mean": ref,
                        "diff": d,
                        "low": lo,
                        "high": hi,
                        "significant": lo > 0 or hi < 0,
                    }
                )
    return rows


def condition_differences(
    conditions: Sequence[Condition],
    ranks: Callable[[Condition], dict[str, Int[Tensor, "layer src tgt sentence"]]],
    languages: Sequence[str],
    layers: Sequence[int],
    counts: Float[Tensor, "resample sentence"],
    confidence: float,
) -> Rows:
    """The differences table of a run: for every retrieval mode of every condition that is no control,
    :func:`differences` of the condition against the baseline and, for each kind of its random controls (their
    seeds averaged per query), of the condition against them and of them against the baseline.

    ``conditions`` starts with the baseline; ``ranks`` gives a condition's translation ranks by mode (``both``,
    and the mixed modes where measured; the baseline's ``both`` is the reference of every mode, as mixing the
    baseline with itself changes nothing). A control enters through the condition it controls.
    """
    controls = controls_of(conditions)
    base = query_scores([ranks(conditions[0])["both"]])
    rows: Rows = []
    for condition in conditions[1:]:
        if condition.control != "none":
            continue
        members = {kind: [ranks(c) for c in group] for kind, group in controls.get(condition.label, {}).items()}
        for mode, own in ranks(condition).items():
            mine = query_scores([own])
            comparisons = [("condition", mine, "baseline", base)]
            for kind, seeds in members.items():
                group = query_scores([seed[mode] for seed in seeds])
                comparisons += [("condition", mine, kind, group), (kind, group, "baseline", base)]
            for subject, a, against, b in comparisons:
                found = differences(a, b, languages, layers, counts, confidence)
                rows += [
                    {**condition.columns(), "mode": mode, "subject": subject, "against": against, **row}
                    for row in found
                ]
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
        r, low, high = bootstrap_pearson(x, y, resamples, seed, confidence)
        rows.append({"layer": int(layer), "points": len(group), "r": r, "low": low, "high": high})
    return rows


def _pair(a: Any, b: Any) -> Any:
    """An order-free key of two language columns (``eng_Latn|spa_Latn``)."""
    return [f"{x}|{y}" if x < y else f"{y}|{x}" for x, y in zip(a, b, strict=True)]
