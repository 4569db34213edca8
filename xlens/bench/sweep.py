"""``xlens bench sweep``: the statistics of a sweep on synthetic ranks."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from xlens.bench.common import machine, peak_rss_mb
from xlens.comparisons import Counts, Rows, centroid_correlation, condition_differences
from xlens.conditions import Condition
from xlens.evaluation.retrieval import pair_items
from xlens.interventions.methods import Force

if TYPE_CHECKING:
    import pandas as pd


def bench_sweep(
    languages: int = 5,
    layers: int = 19,
    interventions: int = 10,
    seeds: int = 3,
    sentences: int = 500,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Time the statistics of a sweep of ``interventions`` conditions, each with ``seeds`` random controls, on
    synthetic ranks of the shape such a sweep produces: the differences table (paired bootstrap of top-1 and MRR,
    every ordered pair and the pair mean, every layer, each intervention against the baseline and its controls,
    the controls against the baseline) and the centroid correlation. The same functions as
    :class:`xlens.runs.study.Experiment`."""
    generator = torch.Generator().manual_seed(seed)
    names = [f"lang{i}" for i in range(languages)]
    layer_ids = list(range(layers))
    conditions = _sweep_conditions(names[0], interventions, seeds)
    shape = (layers, languages, languages, sentences)
    ranks = {c: torch.randint(1, 6, shape, generator=generator, dtype=torch.int32) for c in conditions}
    rows, bootstrap_s = _time_differences(conditions, ranks, names, layer_ids, resamples, seed)
    retrieval, alignment = _synthetic_tables([c.label for c in conditions], names, layer_ids, generator)
    start = time.perf_counter()
    main = [c.label for c in conditions[1:] if c.control == "none"]
    correlation = centroid_correlation(retrieval, alignment, main, resamples, seed, 0.95)
    correlation_s = time.perf_counter() - start
    return {
        "benchmark": "sweep",
        "machine": machine(),
        "shape": {
            "languages": languages,
            "layers": layers,
            "interventions": interventions,
            "seeds": seeds,
            "conditions": len(conditions),
            "sentences": sentences,
            "resamples": resamples,
        },
        "bootstrap_s": bootstrap_s,
        "bootstrap_rows": len(rows),
        "correlation_s": correlation_s,
        "correlation_layers": len(correlation),
        "peak_rss_mb": peak_rss_mb(),
        "target_s": 30,
    }


def _sweep_conditions(language: str, interventions: int, seeds: int) -> list[Condition]:
    """The baseline, then each of ``interventions`` forcings of ``language`` followed by its ``seeds`` random
    controls."""
    import dataclasses

    conditions = [Condition.baseline()]
    for k in range(1, interventions + 1):
        conditions.append(Condition.of(Force(), language, k))
        conditions += [
            Condition.of(dataclasses.replace(Force(), control="random", seed=s), language, k) for s in range(seeds)
        ]
    return conditions


def _time_differences(
    conditions: list[Condition],
    ranks: dict[Condition, torch.Tensor],
    names: list[str],
    layer_ids: list[int],
    resamples: int,
    seed: int,
) -> tuple[Rows, float]:
    """The differences table of ``ranks`` and the seconds it took."""
    start = time.perf_counter()
    items = {c: [pair_items(r, "both", names, layer_ids)] for c, r in ranks.items()}
    rows = condition_differences(conditions, items.__getitem__, Counts(resamples, seed), 0.95)
    return rows, time.perf_counter() - start


def _synthetic_tables(
    labels: list[str], names: list[str], layer_ids: list[int], generator: torch.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random retrieval (top-1 of every ordered pair) and alignment (centroid distance of every unordered pair)
    tables of every condition and layer."""
    import pandas as pd

    pairs = [(a, b) for a in names for b in names if a != b]
    retrieval = pd.DataFrame(
        [
            {
                "condition": c,
                "layer": layer,
                "src": a,
                "tgt": b,
                "mode": "both",
                "top1": float(torch.rand(1, generator=generator)),
            }
            for c in labels
            for layer in layer_ids
            for a, b in pairs
        ]
    )
    alignment = pd.DataFrame(
        [
            {
                "condition": c,
                "layer": layer,
                "lang_a": a,
                "lang_b": b,
                "centroid_cosine_distance": float(torch.rand(1, generator=generator)),
            }
            for c in labels
            for layer in layer_ids
            for a, b in pairs
            if a < b
        ]
    )
    return retrieval, alignment
