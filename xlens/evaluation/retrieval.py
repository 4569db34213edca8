"""The ``retrieval`` task: the paper's measures of the embedding space on the run's N-way evaluation split, per
embedding layer: retrieval top-1/top-5/MRR for every ordered pair, alignment (cosine gap, CKA, centroid distances)
for every unordered pair, each language's centroid against the medoid and the expert language, and with
``controls.mixed`` retrieval with one side embedded without the intervention. With ``evaluate.pivot_pairs`` (a
folder of ``<lang>-<pivot>`` pairs, each with its own pivot side: the Tatoeba layout or a TSV per pair) it also
retrieves within each pair, both directions (table ``pivot``).

Tables (the runner adds the condition's columns):

- ``retrieval``: ``{layer, src, tgt, mode, top1, top5, mrr}``, ``mode`` ``both`` (queries and candidates under
  the condition) or ``queries-baseline`` / ``candidates-baseline`` (one side without it);
- ``alignment``: ``{layer, lang_a, lang_b, cosine_parallel, cosine_random, cosine_gap, cka, cka_debiased,
  centroid_distance, centroid_cosine_distance}``;
- ``centroids``: ``{layer, lang, to_medoid, to_expert_lang, spread}``; ``spread``: the language's sentences' mean
  squared distance to the mean of every sentence, over their mean squared norm (scale-free; near 0 when every
  sentence lands on one point: a collapsed space, :meth:`xlens.RunResults.collapsed`);
- ``pivot``: ``{layer, src, tgt, sentences, top1, top5, mrr}``.

Items: one per query sentence; groups ``{mode, layer, src, tgt}`` (``src = tgt = "mean"``: a sentence's score
averaged over the pairs) and, for pivot pairs, ``mode = "pivot"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from xlens.activations import corpus_texts
from xlens.conditions import Condition
from xlens.config import MIN_RETRIEVAL_SENTENCES, RETRIEVAL_KNN
from xlens.data.pivot import PivotPairs, load_pivot_pairs
from xlens.errors import ConfigError
from xlens.evaluation.base import ItemScores, Task, TaskContext, TaskOutput, hits_and_reciprocal, language_frame
from xlens.evaluation.registry import register_task
from xlens.metrics.alignment import (
    centroid_distance_matrix,
    cka_matrix,
    cosine_parallel_matrix,
    cosine_random_matrix,
    mean_center,
    medoid_distances,
)
from xlens.metrics.retrieval import RetrievalScores, retrieval_matrix, retrieval_ranks

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
    tables: dict[str, Rows] = {"retrieval": [], "alignment": [], "centroids": []}
    ranks = []
    expert = list(languages).index(expert_lang) if expert_lang is not None and expert_lang in languages else None
    for slot, layer in enumerate(layers):
        E = per_lang[:, :, slot].double()
        if center:
            E = mean_center(E)
        ret = retrieval_matrix(E, method=retrieval_method, knn=knn, ranks=True)  # type: ignore[arg-type]
        ranks.append(ret["ranks"])
        for name, rows in _layer_rows(E, ret, languages, layer, expert).items():
            tables[name] += rows
    return tables, torch.stack(ranks)


def _layer_rows(
    E: Float[Tensor, "lang sentence d_model"],
    ret: dict[str, Tensor],
    languages: Sequence[str],
    layer: int,
    expert: int | None,
) -> dict[str, Rows]:
    """One layer's rows: retrieval per ordered pair, alignment per unordered pair, centroids per language."""
    cos_par, cos_rand = cosine_parallel_matrix(E), cosine_random_matrix(E)
    m = {  # as nested lists: 204 languages make 41k pairs, too many for element-wise tensor reads
        "cosine_parallel": cos_par.tolist(),
        "cosine_random": cos_rand.tolist(),
        "cosine_gap": (cos_par - cos_rand).tolist(),
        "cka": cka_matrix(E).tolist(),
        "cka_debiased": cka_matrix(E, debiased=True).tolist(),
        "centroid_distance": centroid_distance_matrix(E).tolist(),
        "centroid_cosine_distance": centroid_distance_matrix(E, "cosine").tolist(),
    }
    scores = {name: ret[name].tolist() for name in ("top1", "top5", "mrr")}
    to_medoid = medoid_distances(E)[0].tolist()
    wide = E.double()
    centred = wide - wide.mean(dim=(0, 1))
    spread = (centred.pow(2).sum(-1).mean(-1) / wide.pow(2).sum(-1).mean(-1).clamp(min=1e-30)).tolist()
    n, out = len(languages), {"retrieval": [], "alignment": [], "centroids": []}
    for i in range(n):
        to_expert = None if expert is None else float(m["centroid_cosine_distance"][i][expert])
        out["centroids"].append({"layer": layer, "lang": languages[i], "to_medoid": float(to_medoid[i])}
                                | {"to_expert_lang": to_expert, "spread": float(spread[i])})  # fmt: skip
        for j in range(n):
            if i == j:
                continue
            out["retrieval"].append({"layer": layer, "src": languages[i], "tgt": languages[j], "mode": "both"}
                                    | {name: float(v[i][j]) for name, v in scores.items()})  # fmt: skip
            if i < j:
                out["alignment"].append({"layer": layer, "lang_a": languages[i], "lang_b": languages[j]}
                                        | {name: float(v[i][j]) for name, v in m.items()})  # fmt: skip
    return out


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


def pair_items(
    ranks: Int[Tensor, "layer src tgt sentence"], mode: str, languages: Sequence[str], layers: Sequence[int]
) -> ItemScores:
    """Per-query top-1 hits and reciprocal ranks of every ordered pair at every layer, and per sentence their
    mean over the pairs (``src = tgt = "mean"``)."""
    n = len(languages)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    src, tgt = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    names = [(languages[i], languages[j]) for i, j in pairs] + [("mean", "mean")]
    scores = {}
    for metric, values in hits_and_reciprocal(ranks).items():
        per_pair = values[:, src, tgt]  # [layer, pair, sentence]
        with_mean = torch.cat([per_pair, per_pair.mean(dim=1, keepdim=True)], dim=1)
        scores[metric] = with_mean.reshape(-1, with_mean.shape[-1])
    groups = [{"mode": mode, "layer": layer, "src": s, "tgt": t} for layer in layers for s, t in names]
    return ItemScores(groups, scores)


@register_task
class RetrievalTask(Task):
    """See the module docstring; its settings are ``[evaluate]``'s own."""

    name = "retrieval"
    version = 2  # 2: each language's spread in the centroids table
    tables = ("retrieval", "alignment", "centroids", "pivot")
    metrics = ("top1", "mrr")
    summary: ClassVar[dict[str, Any]] = {"mode": "both", "src": "mean", "tgt": "mean"}

    def prepare(self, config: Any, splits: Any) -> None:
        if len(splits.eval) < MIN_RETRIEVAL_SENTENCES:
            raise ConfigError(
                f"the evaluation split holds {len(splits.eval)} sentences per language (after leaving out those the "
                f"find split has): the retrieval task needs at least {MIN_RETRIEVAL_SENTENCES}; use a larger corpus"
            )
        self.pairs: PivotPairs | None = None
        folder = config.evaluate.pivot_pairs
        if folder is not None:
            found = load_pivot_pairs(folder)
            kept = {lang: pair for lang, pair in found.items() if lang in config.eval_languages}
            self.pairs = PivotPairs(found.pivot, kept, found.name)
            if not kept:
                raise ConfigError(f"evaluate.pivot_pairs = {folder!r}: no pair of the run's languages there")

    @classmethod
    def per_language(cls, tables: dict[str, pd.DataFrame], metric: str) -> pd.DataFrame:
        """A language's mean over every pair it is in (as query or candidate side), retrieval mode ``both``."""
        both: Any = tables["retrieval"]
        both = both[both["mode"] == "both"]
        sides = [language_frame(both, metric, side, "retrieval") for side in ("src", "tgt")]
        means: Any = pd.concat(sides).groupby(["condition", "layer", "language"], as_index=False)["value"].mean()
        return means

    def key(self) -> Any:
        pairs = None if self.pairs is None else {k: v.fingerprint() for k, v in self.pairs.items()}
        return ("retrieval", RETRIEVAL_KNN, pairs)

    def measure(self, ctx: TaskContext, condition: Condition) -> TaskOutput:
        config, layers = ctx.config, ctx.layers
        langs = config.eval_languages
        settings = (config.evaluate.retrieval, config.evaluate.center, RETRIEVAL_KNN)
        texts, _ = corpus_texts(ctx.splits.eval, langs)
        per_lang = ctx.embed(texts, condition).view(len(langs), -1, len(layers), ctx.model.d_model)
        tables, ranks = layer_metrics(per_lang, langs, layers, *settings, condition.language)
        items = [pair_items(ranks, "both", langs, layers)]
        if config.controls.mixed and condition.is_baseline:  # mixing the baseline with itself changes nothing
            items += [pair_items(ranks, mode, langs, layers) for mode in MIXED_MODES]
        if config.controls.mixed and not condition.is_baseline:
            baseline = ctx.embed(texts, Condition.baseline()).view(per_lang.shape)
            rows, mixed = mixed_retrieval(baseline, per_lang, langs, layers, *settings)
            tables["retrieval"] += rows
            items += [pair_items(mixed[mode], mode, langs, layers) for mode in MIXED_MODES]
        tables["pivot"] = []
        if self.pairs is not None:
            rows, blocks = self.pivot(ctx, condition, settings)
            tables["pivot"], items = rows, items + blocks
        return TaskOutput(tables, items)

    def pivot(
        self, ctx: TaskContext, condition: Condition, settings: tuple[str, bool, int]
    ) -> tuple[Rows, list[ItemScores]]:
        """Retrieval within each pivot pair, both directions, at every layer."""
        assert self.pairs is not None
        method, center, knn = settings
        rows: Rows = []
        blocks = []
        pivot = self.pairs.pivot
        for lang, pair in self.pairs.items():
            sides = {code: ctx.embed(list(pair[code]), condition).double() for code in (lang, pivot)}
            for src, tgt in ((lang, pivot), (pivot, lang)):
                groups, hits, recip = [], [], []
                for slot, layer in enumerate(ctx.layers):
                    x, y = sides[src][:, slot], sides[tgt][:, slot]
                    if center:
                        x, y = x - x.mean(dim=0), y - y.mean(dim=0)
                    found = retrieval_ranks(x, y, method, min(knn, len(pair)))  # type: ignore[arg-type]
                    got = RetrievalScores.of_ranks(found)
                    rows.append(
                        {"layer": layer, "src": src, "tgt": tgt, "sentences": len(pair)}
                        | {"top1": got.top1, "top5": got.top5, "mrr": got.mrr}
                    )
                    scores = hits_and_reciprocal(found)
                    groups.append({"mode": "pivot", "layer": layer, "src": src, "tgt": tgt})
                    hits.append(scores["top1"])
                    recip.append(scores["mrr"])
                blocks.append(ItemScores(groups, {"top1": torch.stack(hits), "mrr": torch.stack(recip)}))
        return rows, blocks
