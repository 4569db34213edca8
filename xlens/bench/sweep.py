"""``xlens bench sweep``: the statistics of a sweep on synthetic ranks."""

from __future__ import annotations

import time
from typing import Any

import torch

from xlens.bench.common import machine, peak_rss_mb
from xlens.interventions.methods import Force
from xlens.measure import centroid_correlation, condition_differences
from xlens.metrics.bootstrap import resample_counts
from xlens.results import Condition


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
    :class:`xlens.experiment.Experiment`."""
    import dataclasses

    import pandas as pd

    generator = torch.Generator().manual_seed(seed)
    names = [f"lang{i}" for i in range(languages)]
    layer_ids = list(range(layers))
    conditions = [Condition.baseline()]
    for k in range(1, interventions + 1):
        conditions.append(Condition.of(Force(), names[0], k))
        conditions += [
            Condition.of(dataclasses.replace(Force(), control="random", seed=s), names[0], k) for s in range(seeds)
        ]
    shape = (layers, languages, languages, sentences)
    ranks = {c: {"both": torch.randint(1, 6, shape, generator=generator, dtype=torch.int32)} for c in conditions}
    start = time.perf_counter()
    counts = resample_counts(sentences, resamples, seed)
    rows = condition_differences(conditions, ranks.__getitem__, names, layer_ids, counts, 0.95)
    bootstrap_s = time.perf_counter() - start
    labels = [c.label for c in conditions]
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
