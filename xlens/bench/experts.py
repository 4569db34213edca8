"""``xlens bench experts``: vectorised AP scoring against the sklearn per-unit loop, pooled collection against a
plain forward."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from xlens.activations import Responses, collect_responses, corpus_texts
from xlens.bench.common import machine, peak_rss_mb, sync
from xlens.data.loaders import load_corpus
from xlens.experts.scoring import one_vs_rest
from xlens.models import load_model
from xlens.models.lens import LensModel


def bench_experts(
    model: str | None = None,
    corpus: str = "builtin",
    languages: Sequence[str] = ("eng_Latn", "spa_Latn", "deu_Latn", "fra_Latn", "jpn_Jpan"),
    per_lang: int = 200,
    sklearn_units: int = 300,
    batch_size: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Scoring (ours vs the sklearn per-unit loop of ml-selfcond) and collection (pooled vs plain forward)."""
    from sklearn.metrics import average_precision_score

    data = load_corpus(corpus, langs=list(languages)).sample(per_lang, seed=seed)
    langs = list(data.languages)
    texts, lang_ids = corpus_texts(data, langs)
    lm = load_model(model, device=device, dtype=dtype)
    dev = lm.device
    responses, collect_s, forward_s = _time_collection(lm, texts, lang_ids, langs, batch_size)
    values = responses["mean"].to(dev)
    ours, ours_s, auroc_s = _time_scoring(values, lang_ids.to(dev), len(langs))
    n_units = values.shape[1]
    scoring = _against_sklearn(
        ours, ours_s, auroc_s, responses["mean"], lang_ids, sklearn_units, seed, average_precision_score
    )
    return {
        "benchmark": "experts",
        "model": lm.identity(),
        "device": str(dev),
        "machine": machine(),
        "corpus": corpus,
        "languages": langs,
        "sentences": len(texts),
        "units": n_units,
        "scoring": scoring,
        "collection": {
            "pooled_collection_s": collect_s,
            "plain_forward_s": forward_s,
            "ratio_collection_over_forward": collect_s / forward_s,
            "batch_size": batch_size,
            "peak_rss_mb": peak_rss_mb(),
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None,
        },
        "targets": {"speedup_min": 100, "max_abs_diff_max": 1e-6, "ratio_collection_over_forward_max": 1.0},
    }


def _time_collection(
    lm: LensModel, texts: list[str], lang_ids: torch.Tensor, langs: list[str], batch_size: int | None
) -> tuple[Responses, float, float]:
    """Pooled responses of every MLP unit, and the seconds they took and a plain forward pass (with unembedding)
    on the same batches took."""
    collect_responses(lm, texts[: lm.batch_limit(batch_size)], batch_size=batch_size, progress=False)  # warm-up
    sync(lm.device)
    start = time.perf_counter()
    responses = collect_responses(lm, texts, batch_size=batch_size, lang_ids=lang_ids, languages=langs, progress=False)
    sync(lm.device)
    collect_s = time.perf_counter() - start
    start = time.perf_counter()
    lm.forward(texts, logits=lambda logits, batch: None, batch_size=batch_size)  # a plain pass, unembedding included
    sync(lm.device)
    return responses, collect_s, time.perf_counter() - start


def _time_scoring(values: torch.Tensor, ids: torch.Tensor, n_langs: int) -> tuple[torch.Tensor, float, float]:
    """AP of every unit for every language, and the seconds AP and AUROC scoring took."""
    one_vs_rest(values[:, :1000], ids, n_langs)  # warm-up
    sync(values.device)
    start = time.perf_counter()
    ours = one_vs_rest(values, ids, n_langs, metric="ap")
    sync(values.device)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    one_vs_rest(values, ids, n_langs, metric="auroc")
    sync(values.device)
    return ours, ours_s, time.perf_counter() - start


def _against_sklearn(
    ours: torch.Tensor,
    ours_s: float,
    auroc_s: float,
    values: torch.Tensor,
    lang_ids: torch.Tensor,
    sklearn_units: int,
    seed: int,
    average_precision: Callable[..., Any],
) -> dict[str, Any]:
    """Our scoring times against sklearn's per-unit AP loop timed on ``sklearn_units`` random units (extrapolated
    to all), and the largest difference of the APs."""
    n_langs, n_units = ours.shape
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n_units, size=min(sklearn_units, n_units), replace=False))
    host = values.numpy()
    labels = lang_ids.numpy()
    reference = np.empty((n_langs, len(sample)))
    start = time.perf_counter()
    for li in range(n_langs):
        for j, unit in enumerate(sample):
            reference[li, j] = average_precision(labels == li, host[:, unit])
    loop_s = time.perf_counter() - start
    loop_full_s = loop_s * n_units / len(sample)
    max_diff = float(np.abs(ours[:, torch.from_numpy(sample)].double().cpu().numpy() - reference).max())
    return {
        "ours_ap_s": ours_s,
        "ours_auroc_s": auroc_s,
        "sklearn_loop_units_timed": len(sample),
        "sklearn_loop_timed_s": loop_s,
        "sklearn_loop_full_s": loop_full_s,
        "sklearn_loop_full_is_extrapolated": len(sample) < n_units,
        "speedup": loop_full_s / ours_s,
        "max_abs_diff_vs_sklearn": max_diff,
        "max_abs_diff_units_checked": len(sample) * n_langs,
    }
