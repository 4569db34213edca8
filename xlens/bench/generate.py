"""``xlens bench generate``: KV-cached generation against the full-forward loop."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from xlens.bench.common import machine, peak_rss_mb, random_force, sync
from xlens.config import TranslateConfig
from xlens.data import load_builtin
from xlens.errors import InputError
from xlens.evaluation.translation import context_overflow, few_shot_prompts
from xlens.generation import BUILTIN_PROMPTS, generate
from xlens.models import load_model
from xlens.models.lens import LensModel

TARGET_SPEEDUP_MIN = 5.0  # KV-cached against the full-forward loop


def bench_generate(
    model: str | None = None,
    prompts: int = 8,
    new_tokens: int = 64,
    batch_size: int = 8,
    shots: int = 3,
    device: str | None = None,
    dtype: str | None = None,
) -> dict[str, Any]:
    """New tokens per second of greedy generation, KV-cached against the full-forward loop, on the same prompts
    with the same batches, without and under a force intervention on 200 random MLP units, in two regimes: short
    prompts (the built-in openings, a few tokens each) and few-shot translation prompts (``shots`` English->Spanish
    examples from the built-in corpus before each test sentence, the prompts of ``xlens translate``). Rows never
    stop early (``stop_at_eos=False``), so both loops count ``prompts x new_tokens`` tokens; the cached tokens are
    checked to equal the full loop's. Target: a speedup of at least 5x.

    Both loops unembed one position per row at every step; ``unembedding_ms`` times that call alone (one batch),
    the floor under a cached step's time whatever the prompt length."""
    check_generation_bench(prompts, shots)
    return generation_speed(load_model(model, device=device, dtype=dtype), prompts, new_tokens, batch_size, shots)


def check_generation_bench(prompts: int, shots: int) -> None:
    """The few-shot prompts' test sentences and examples are distinct rows of the built-in corpus."""
    rows = len(load_builtin(["en", "es"]))
    if prompts + shots > rows:
        raise InputError(
            f"--prompts {prompts} + --shots {shots} exceed the {rows} rows of the built-in corpus that the "
            "few-shot prompts are drawn from (test sentences and examples are distinct rows): lower either"
        )


def generation_speed(lm: LensModel, prompts: int, new_tokens: int, batch_size: int, shots: int) -> dict[str, Any]:
    """The measurements of :func:`bench_generate` on a loaded model."""
    check_generation_bench(prompts, shots)
    corpus = load_builtin(["en", "es"])
    few_shot = few_shot_prompts(corpus, "en", "es", shots, prompts, TranslateConfig().template, seed=0).prompts
    regimes = {"short": [BUILTIN_PROMPTS[i % len(BUILTIN_PROMPTS)] for i in range(prompts)], "few_shot": few_shot}
    overflow = context_overflow(lm, few_shot, new_tokens)
    if overflow is not None:
        raise InputError(
            f"the longest few-shot prompt has {overflow[0]} tokens, + --new-tokens {new_tokens} exceeds "
            f"{lm.name}'s context of {overflow[1]} tokens: lower --shots or --new-tokens"
        )
    force = random_force(lm, 200, seed=0)

    def timed(texts: list[str], cached: bool, interventions: list[Any]) -> tuple[dict[str, float], list[str]]:
        options = {"interventions": interventions, "batch_size": batch_size, "stop_at_eos": False, "kv_cache": cached}
        generate(lm, texts[:batch_size], 2, **options)  # warm-up
        sync(lm.device)
        start = time.perf_counter()
        out = generate(lm, texts, new_tokens, **options)
        sync(lm.device)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "new_tokens_per_s": len(texts) * new_tokens / seconds}, out

    report: dict[str, Any] = {}
    for regime, texts in regimes.items():
        runs: dict[str, Any] = {}
        for label, interventions in (("none", []), ("force_200_units", [force])):
            cached, cached_texts = timed(texts, True, interventions)
            full, full_texts = timed(texts, False, interventions)
            runs[label] = {
                "cached": cached,
                "full_forward": full,
                "speedup": cached["new_tokens_per_s"] / full["new_tokens_per_s"],
                "same_tokens": cached_texts == full_texts,
            }
        lengths = lm.tokenize(texts).mask.sum(dim=1).tolist()
        report[regime] = {"prompt_tokens_mean": float(np.mean(lengths)), "prompt_tokens_max": max(lengths), **runs}
    return {
        "benchmark": "generate",
        "machine": machine(),
        "model": lm.identity(),
        "numerics": lm.numerics(),
        "prompts": prompts,
        "new_tokens": new_tokens,
        "batch_size": batch_size,
        "shots": shots,
        "unembedding_ms": _unembedding_ms(lm, min(batch_size, prompts)),
        "regimes": report,
        "target_speedup_min": TARGET_SPEEDUP_MIN,
        "peak_rss_mb": peak_rss_mb(),
    }


def _unembedding_ms(lm: Any, rows: int, repeats: int = 5) -> float:
    """Median milliseconds of the model's output layer on ``rows`` positions (one decoding step's unembedding)."""
    head = lm.bridge.original_model.get_output_embeddings()
    hidden = torch.randn(rows, 1, lm.d_model, device=lm.device, dtype=lm.dtype)
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            sync(lm.device)
            start = time.perf_counter()
            head(hidden)
            sync(lm.device)
            times.append(time.perf_counter() - start)
    return float(np.median(times[1:]) * 1000)
