"""Benchmarks behind ``xlens bench``: each returns a JSON-ready dict of measurements (never asserted in tests)."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xlens.config import ExperimentConfig
from xlens.errors import InputError
from xlens.models.lens import LensModel
from xlens.models.memory import parameter_count, resident_parameters


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _machine() -> dict[str, Any]:
    import os
    import platform

    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    info["platform"] = platform.platform()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _gemm_rate(E: torch.Tensor, block_langs: int, repeats: int = 3) -> float:
    """Flop/s of one matmul of the shape the retrieval matrix runs (one language against ``block_langs``), best of
    ``repeats``: the matrix cannot run faster than its matmul flops at this rate."""
    n_lang, _, d_model = E.shape
    a = E[0]
    b = E[1 : 1 + min(block_langs, n_lang - 1)].reshape(-1, d_model)
    out = torch.empty(a.shape[0], b.shape[0], dtype=E.dtype, device=E.device)
    best = float("inf")
    for _ in range(repeats + 1):  # the first call warms up
        _sync(E.device)
        start = time.perf_counter()
        torch.matmul(a, b.T, out=out)
        _sync(E.device)
        best = min(best, time.perf_counter() - start)
    return 2 * a.shape[0] * b.shape[0] * d_model / best


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

    from xlens.activations import collect_responses, corpus_texts
    from xlens.data.loaders import load_corpus
    from xlens.experts.scoring import one_vs_rest
    from xlens.models import load_model

    data = load_corpus(corpus, langs=list(languages)).sample(per_lang, seed=seed)
    langs = list(data.languages)
    texts, lang_ids = corpus_texts(data, langs)
    lm = load_model(model, device=device, dtype=dtype)
    dev = lm.device

    # Collection: pooled responses of every MLP unit vs a plain forward pass (with unembedding) on the same batches.
    collect_responses(lm, texts[: lm.batch_limit(batch_size)], batch_size=batch_size, progress=False)  # warm-up
    _sync(dev)
    start = time.perf_counter()
    responses = collect_responses(lm, texts, batch_size=batch_size, lang_ids=lang_ids, languages=langs, progress=False)
    _sync(dev)
    collect_s = time.perf_counter() - start
    start = time.perf_counter()
    lm.forward(texts, logits=lambda logits, batch: None, batch_size=batch_size)  # a plain pass, unembedding included
    _sync(dev)
    forward_s = time.perf_counter() - start

    values = responses["mean"].to(dev)
    ids = lang_ids.to(dev)
    one_vs_rest(values[:, :1000], ids, len(langs))  # warm-up
    _sync(dev)
    start = time.perf_counter()
    ours = one_vs_rest(values, ids, len(langs), metric="ap")
    _sync(dev)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    one_vs_rest(values, ids, len(langs), metric="auroc")
    _sync(dev)
    auroc_s = time.perf_counter() - start

    n_units = values.shape[1]
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n_units, size=min(sklearn_units, n_units), replace=False))
    host = responses["mean"].numpy()
    labels = lang_ids.numpy()
    reference = np.empty((len(langs), len(sample)))
    start = time.perf_counter()
    for li in range(len(langs)):
        for j, unit in enumerate(sample):
            reference[li, j] = average_precision_score(labels == li, host[:, unit])
    loop_s = time.perf_counter() - start
    loop_full_s = loop_s * n_units / len(sample)
    max_diff = float(np.abs(ours[:, torch.from_numpy(sample)].double().cpu().numpy() - reference).max())

    return {
        "benchmark": "experts",
        "model": lm.identity(),
        "device": str(dev),
        "machine": _machine(),
        "corpus": corpus,
        "languages": langs,
        "sentences": len(texts),
        "units": n_units,
        "scoring": {
            "ours_ap_s": ours_s,
            "ours_auroc_s": auroc_s,
            "sklearn_loop_units_timed": len(sample),
            "sklearn_loop_timed_s": loop_s,
            "sklearn_loop_full_s": loop_full_s,
            "sklearn_loop_full_is_extrapolated": len(sample) < n_units,
            "speedup": loop_full_s / ours_s,
            "max_abs_diff_vs_sklearn": max_diff,
            "max_abs_diff_units_checked": len(sample) * len(langs),
        },
        "collection": {
            "pooled_collection_s": collect_s,
            "plain_forward_s": forward_s,
            "ratio_collection_over_forward": collect_s / forward_s,
            "batch_size": batch_size,
            "peak_rss_mb": _peak_rss_mb(),
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None,
        },
        "targets": {"speedup_min": 100, "max_abs_diff_max": 1e-6, "ratio_collection_over_forward_max": 1.0},
    }


def bench_retrieval(
    flores: str | Path = "../shared/data/flores200/devtest",
    run_out: str | Path = "runs/bench",
    skip_run: bool = False,
    model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    layer: int = 0,
    run_config: ExperimentConfig | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Time the retrieval matrix over every FLORES-200 language at one layer, and an end-to-end run.

    The matrix needs embeddings of ~200k sentences; embedding them at a deep layer would itself take hours on a
    CPU, so the matrix is timed on layer ``layer`` (default 0: the model's own token embeddings, mean-pooled),
    which is real model output and has the shape of every other layer.

    The end-to-end part times what ``xlens run`` does (experiment, then report) with ``run_config``; by default
    the issue's setting: the embedded default, en/es/de/fr/ja, experts on 200 NTREX-128 sentences per language
    (found beside the FLORES folder), 500 FLORES devtest sentences per language for evaluation, one k.
    """
    from xlens.activations import corpus_texts
    from xlens.data.loaders import load_flores
    from xlens.embeddings import sentence_embeddings
    from xlens.experiment import run_experiment
    from xlens.metrics.retrieval import retrieval_matrix
    from xlens.models import load_model
    from xlens.report import write_report

    lm = load_model(model, device=device, dtype=dtype)
    corpus = load_flores(flores)
    langs = corpus.languages
    start = time.perf_counter()
    texts, _ = corpus_texts(corpus, langs)
    emb = sentence_embeddings(lm, texts, layers=[layer], batch_size=256, desc="FLORES embeddings")
    embed_s = time.perf_counter() - start
    E = emb[:, 0].view(len(langs), len(corpus), -1).to(lm.device)
    _sync(lm.device)
    start = time.perf_counter()
    block_langs = 16  # target languages per matmul, the same in the timed matrix and in the GEMM-rate probe
    matrix = retrieval_matrix(E, block_langs=block_langs)
    _sync(lm.device)
    matrix_s = time.perf_counter() - start
    gemm_flops_per_s = _gemm_rate(E, block_langs)
    # Every unordered language pair needs one sentence x sentence x d_model matmul (it serves both directions).
    n_lang, n_sent, d_model = E.shape
    matmul_flop = n_lang * (n_lang - 1) / 2 * 2 * n_sent**2 * d_model
    top1 = matrix["top1"]
    off_diag = ~torch.eye(len(langs), dtype=torch.bool, device=top1.device)
    report: dict[str, Any] = {
        "benchmark": "retrieval",
        "model": lm.identity(),
        "device": str(lm.device),
        "machine": _machine(),
        "matrix": {
            "languages": len(langs),
            "sentences_per_language": len(corpus),
            "sentences_dropped_as_duplicates": len(corpus.dropped_ids),
            "d_model": d_model,
            "layer": layer,
            "embedding_s": embed_s,
            "retrieval_matrix_s": matrix_s,
            "matmul_tflop": matmul_flop / 1e12,
            "gemm_gflops_measured": gemm_flops_per_s / 1e9,
            "matmul_time_at_measured_gemm_rate_s": matmul_flop / gemm_flops_per_s,
            "mean_top1_off_diagonal": float(top1[off_diag].mean()),
            "target_s": 30,
        },
    }
    if not skip_run:
        config = run_config or ExperimentConfig.from_dict(
            {
                "model": model or "gemma-3-270m",
                "languages": ["en", "es", "de", "fr", "ja"],
                "find": {"corpus": f"ntrex:{Path(flores).resolve().parents[1] / 'ntrex128'}", "sentences": 200},
                "intervene": {"method": "force", "k": [200]},
                "evaluate": {"corpus": f"flores:{Path(flores).resolve()}", "sentences": 500},
                "runtime": {"device": device, "dtype": dtype},
            }
        )
        resumed = (Path(run_out) / "cache").exists()  # a warm cache would make the timing meaningless
        start = time.perf_counter()
        same_model = config.model == (model or "gemma-3-270m")
        results = run_experiment(config, run_out, model=lm if same_model else None, progress=False, force=force)
        experiment_s = time.perf_counter() - start
        write_report(results)  # `xlens run` ends with the report, so the timing does too
        report["end_to_end"] = {
            "config": config.to_dict(),
            "wall_s": time.perf_counter() - start,
            "experiment_s": experiment_s,
            "timings": results.provenance["timings"],
            "resumed_from_cache": resumed,
            "target_s": 600,
            "peak_rss_mb": _peak_rss_mb(),
        }
    return report


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

    from xlens.interventions.methods import Force
    from xlens.measure import centroid_correlation, condition_differences
    from xlens.metrics.bootstrap import resample_counts
    from xlens.results import Condition

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
        "machine": _machine(),
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
        "peak_rss_mb": _peak_rss_mb(),
        "target_s": 30,
    }


# --- throughput: xlens' hooked passes against a plain Hugging Face forward --------------------------------------

# Random-weight Gemma-3 configs for `bench gpu`: the embedded model's shape (its real weights do not travel to a
# GPU machine), the same family scaled to about a billion parameters, and a tiny one for tests.
THROUGHPUT_SHAPES: dict[str, dict[str, Any]] = {
    "gemma3-tiny-shape": {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
                          "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32},
    "gemma3-270m-shape": {"num_hidden_layers": 18, "hidden_size": 640, "intermediate_size": 2048,
                          "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256},
    "gemma3-1b-shape": {"num_hidden_layers": 20, "hidden_size": 1536, "intermediate_size": 6144,
                        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 192},
}  # fmt: skip


def throughput_config(shape: str) -> Any:
    """The Hugging Face config of one of :data:`THROUGHPUT_SHAPES` (a Gemma-3 with the real vocabulary of 262,144
    and the byte tokenizer's special tokens)."""
    from transformers import Gemma3TextConfig

    if shape not in THROUGHPUT_SHAPES:
        raise InputError(f"unknown shape {shape!r}; use one of {', '.join(THROUGHPUT_SHAPES)}")
    n_layers = THROUGHPUT_SHAPES[shape]["num_hidden_layers"]
    return Gemma3TextConfig(
        vocab_size=262144,
        max_position_embeddings=32768,
        sliding_window=512,
        layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n_layers)],
        bos_token_id=256,
        eos_token_id=257,
        pad_token_id=258,
        **THROUGHPUT_SHAPES[shape],
    )


def throughput_model_folder(shape: str) -> Path:
    """A random-weight model of :func:`throughput_config`, saved once in the xlens cache."""
    from xlens.models.loading import cache_dir
    from xlens.models.tiny import random_model_folder

    folder = cache_dir() / "models" / f"random-{shape}-v1"
    return random_model_folder(throughput_config(shape), folder, source=f"random:{shape}", prepend_bos=True)


def _tokens_per_s(run: Any, batches: list[Any], device: torch.device) -> dict[str, Any]:
    """Real (unpadded) tokens per second of ``run(batches)`` after a warm-up on the first batch, and the peak
    GPU memory of the timed pass."""
    run(batches[:1])
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    run(batches)
    _sync(device)
    seconds = time.perf_counter() - start
    tokens = sum(int(b.mask.sum()) for b in batches)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "peak_gpu_mb": peak}


def bench_gpu(
    shapes: Sequence[str] = ("gemma3-270m-shape", "gemma3-1b-shape"),
    sentences: int = 512,
    units: int = 2000,
    batch_size: int | None = None,
    max_tokens: int = 8192,
    max_length: int = 128,
    device: str | None = None,
    dtype: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Tokens per second on the same batches of (a) a plain Hugging Face forward of the model's body (no hooks; the
    unembedding left out, as xlens never needs it to read activations; with it, for reference), (b) xlens
    embeddings at every layer, (c) xlens pooled responses of every MLP unit, (d) (b) under a force intervention on
    ``units`` random MLP units; peak GPU memory of each. Target: (b), (c), (d) at least 0.9 of (a)."""
    from xlens.data import load_builtin
    from xlens.models import load_model

    corpus = load_builtin()
    pool = [s for lang in corpus.languages for s in corpus[lang]]
    texts = [pool[i % len(pool)] for i in range(sentences)]
    settings = {"batch_size": batch_size, "max_tokens": max_tokens, "max_length": max_length}
    report: dict[str, Any] = {"benchmark": "gpu", "machine": _machine(), "sentences": sentences, "models": {}}
    for shape in shapes:
        lm = load_model(str(throughput_model_folder(shape)), device=device, dtype=dtype)
        report["models"][shape] = throughput(lm, texts, units, settings, seed)
        del lm  # free the device before the next model
    report["peak_rss_mb"] = _peak_rss_mb()
    report["target_ratio_min"] = 0.9
    return report


def throughput(lm: LensModel, texts: list[str], units: int, settings: dict[str, Any], seed: int) -> dict[str, Any]:
    """The four passes of :func:`bench_gpu` on one loaded model."""
    from xlens.activations import collect_responses
    from xlens.embeddings import sentence_embeddings
    from xlens.interventions import SetUnits

    dev = lm.device
    batches = list(lm.batches(texts, **settings))
    hf_model = lm.bridge.original_model
    generator = torch.Generator().manual_seed(seed)
    flat = torch.randperm(lm.n_layers * lm.d_mlp, generator=generator)[:units]
    positions = {lm.mlp_hook(b): flat[flat // lm.d_mlp == b] % lm.d_mlp for b in range(lm.n_layers)}
    positions = {h: p for h, p in positions.items() if p.numel()}
    force = SetUnits(positions, {h: torch.randn(p.numel(), generator=generator) for h, p in positions.items()})
    ordered = [texts[i] for b in batches for i in b.row_ids.tolist()]  # xlens sorts these into the same batches

    def texts_of(run_batches: list[Any]) -> list[str]:
        return ordered[: sum(len(b.row_ids) for b in run_batches)]

    def plain(run_batches: list[Any], module: Any) -> None:
        with torch.inference_mode():
            for b in run_batches:
                module(input_ids=b.tokens, attention_mask=b.mask.long())

    def embeddings(run_batches: list[Any], interventions: Sequence[Any] = ()) -> None:
        sentence_embeddings(lm, texts_of(run_batches), interventions=interventions, progress=False, **settings)

    def responses(run_batches: list[Any]) -> None:
        collect_responses(lm, texts_of(run_batches), progress=False, **settings)

    timings = {
        "a_plain_hf_forward": _tokens_per_s(lambda bs: plain(bs, hf_model.base_model), batches, dev),
        "a_plain_hf_forward_with_unembedding": _tokens_per_s(lambda bs: plain(bs, hf_model), batches, dev),
        "b_embeddings_all_layers": _tokens_per_s(embeddings, batches, dev),
        "c_responses_all_mlp_units": _tokens_per_s(responses, batches, dev),
        "d_embeddings_under_force": _tokens_per_s(lambda bs: embeddings(bs, [force]), batches, dev),
    }
    base = timings["a_plain_hf_forward"]["tokens_per_s"]
    return {
        "parameters": parameter_count(hf_model.config),
        "resident_parameters": resident_parameters(hf_model),
        "model": lm.identity(),
        "numerics": lm.numerics(),
        "batches": len(batches),
        "tokens": sum(int(b.mask.sum()) for b in batches),
        "padded_tokens": sum(b.mask.numel() for b in batches),
        "force_units": units,
        **settings,
        "timings": timings,
        "ratios_vs_plain": {
            name: t["tokens_per_s"] / base for name, t in timings.items() if name != "a_plain_hf_forward"
        },
    }


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
    from xlens.models import load_model

    check_generation_bench(prompts, shots)
    return generation_speed(load_model(model, device=device, dtype=dtype), prompts, new_tokens, batch_size, shots)


def check_generation_bench(prompts: int, shots: int) -> None:
    """The few-shot prompts' test sentences and examples are distinct rows of the built-in corpus."""
    from xlens.data import load_builtin

    rows = len(load_builtin(["en", "es"]))
    if prompts + shots > rows:
        raise InputError(
            f"--prompts {prompts} + --shots {shots} exceed the {rows} rows of the built-in corpus that the "
            "few-shot prompts are drawn from (test sentences and examples are distinct rows): lower either"
        )


def generation_speed(lm: LensModel, prompts: int, new_tokens: int, batch_size: int, shots: int) -> dict[str, Any]:
    """The measurements of :func:`bench_generate` on a loaded model."""
    from xlens.config import TranslateConfig
    from xlens.data import load_builtin
    from xlens.generation import BUILTIN_PROMPTS, generate
    from xlens.interventions import SetUnits
    from xlens.translate import context_overflow, few_shot_prompts

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
    generator = torch.Generator().manual_seed(0)
    flat = torch.randperm(lm.n_layers * lm.d_mlp, generator=generator)[:200]
    positions = {lm.mlp_hook(b): flat[flat // lm.d_mlp == b] % lm.d_mlp for b in range(lm.n_layers)}
    positions = {h: p for h, p in positions.items() if p.numel()}
    force = SetUnits(positions, {h: torch.randn(p.numel(), generator=generator) for h, p in positions.items()})

    def timed(texts: list[str], cached: bool, interventions: list[Any]) -> tuple[dict[str, float], list[str]]:
        options = {"interventions": interventions, "batch_size": batch_size, "stop_at_eos": False, "kv_cache": cached}
        generate(lm, texts[:batch_size], 2, **options)  # warm-up
        _sync(lm.device)
        start = time.perf_counter()
        out = generate(lm, texts, new_tokens, **options)
        _sync(lm.device)
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
        "machine": _machine(),
        "model": lm.identity(),
        "numerics": lm.numerics(),
        "prompts": prompts,
        "new_tokens": new_tokens,
        "batch_size": batch_size,
        "shots": shots,
        "unembedding_ms": _unembedding_ms(lm, min(batch_size, prompts)),
        "regimes": report,
        "target_speedup_min": 5.0,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _unembedding_ms(lm: Any, rows: int, repeats: int = 5) -> float:
    """Median milliseconds of the model's output layer on ``rows`` positions (one decoding step's unembedding)."""
    head = lm.bridge.original_model.get_output_embeddings()
    hidden = torch.randn(rows, 1, lm.d_model, device=lm.device, dtype=lm.dtype)
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            _sync(lm.device)
            start = time.perf_counter()
            head(hidden)
            _sync(lm.device)
            times.append(time.perf_counter() - start)
    return float(np.median(times[1:]) * 1000)
