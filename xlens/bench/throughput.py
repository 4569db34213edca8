"""``xlens bench gpu``: xlens' hooked passes against a plain Hugging Face forward, on random-weight models."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from xlens.activations import collect_responses
from xlens.bench.common import machine, peak_rss_mb, random_force, sync
from xlens.data import load_builtin
from xlens.embeddings import sentence_embeddings
from xlens.errors import InputError
from xlens.models import load_model
from xlens.models.lens import LensModel
from xlens.models.loading import cache_dir
from xlens.models.memory import parameter_count, resident_parameters
from xlens.models.tiny import random_model_folder

TARGET_RATIO_MIN = 0.9  # (b), (c), (d) against (a)

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
    folder = cache_dir() / "models" / f"random-{shape}-v1"
    return random_model_folder(throughput_config(shape), folder, source=f"random:{shape}", prepend_bos=True)


def tokens_per_s(run: Any, batches: list[Any], device: torch.device) -> dict[str, Any]:
    """Real (unpadded) tokens per second of ``run(batches)`` after a warm-up on the first batch, and the peak
    GPU memory of the timed pass."""
    run(batches[:1])
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    run(batches)
    sync(device)
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
    texts = throughput_texts(sentences)
    settings = {"batch_size": batch_size, "max_tokens": max_tokens, "max_length": max_length}
    report: dict[str, Any] = {"benchmark": "gpu", "machine": machine(), "sentences": sentences, "models": {}}
    for shape in shapes:
        lm = load_model(str(throughput_model_folder(shape)), device=device, dtype=dtype)
        report["models"][shape] = throughput(lm, texts, units, settings, seed)
        del lm  # free the device before the next model
    report["peak_rss_mb"] = peak_rss_mb()
    report["target_ratio_min"] = TARGET_RATIO_MIN
    return report


def throughput_texts(sentences: int) -> list[str]:
    """``sentences`` sentences of the built-in corpus, all its languages in turn, repeated as needed."""
    corpus = load_builtin()
    pool = [s for lang in corpus.languages for s in corpus[lang]]
    return [pool[i % len(pool)] for i in range(sentences)]


def throughput(lm: LensModel, texts: list[str], units: int, settings: dict[str, Any], seed: int) -> dict[str, Any]:
    """The four passes of :func:`bench_gpu` on one loaded model."""
    dev = lm.device
    batches = list(lm.batches(texts, **settings))
    hf_model = lm.bridge.original_model
    force = random_force(lm, units, seed)
    ordered = [texts[i] for b in batches for i in b.row_ids.tolist()]  # xlens sorts these into the same batches

    def texts_of(run_batches: list[Any]) -> list[str]:
        return ordered[: sum(len(b.row_ids) for b in run_batches)]

    def plain(run_batches: list[Any], module: Any) -> None:
        with torch.inference_mode():
            for b in run_batches:
                module(input_ids=b.tokens, attention_mask=b.mask.long(), use_cache=False)

    def embeddings(run_batches: list[Any], interventions: Sequence[Any] = ()) -> None:
        sentence_embeddings(lm, texts_of(run_batches), interventions=interventions, progress=False, **settings)

    def responses(run_batches: list[Any]) -> None:
        collect_responses(lm, texts_of(run_batches), progress=False, **settings)

    timings = {
        "a_plain_hf_forward": tokens_per_s(lambda bs: plain(bs, hf_model.base_model), batches, dev),
        "a_plain_hf_forward_with_unembedding": tokens_per_s(lambda bs: plain(bs, hf_model), batches, dev),
        "b_embeddings_all_layers": tokens_per_s(embeddings, batches, dev),
        "c_responses_all_mlp_units": tokens_per_s(responses, batches, dev),
        "d_embeddings_under_force": tokens_per_s(lambda bs: embeddings(bs, [force]), batches, dev),
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
        # TransformerBridge swaps its components into the Hugging Face model in place: (a) is that model's own
        # forward with no hook attached, so the ratios are what xlens' hooks and pooling add to it.
        "baseline": "the bridged Hugging Face body's forward, no hooks attached, no KV cache",
        **settings,
        "timings": timings,
        "ratios_vs_plain": {
            name: t["tokens_per_s"] / base for name, t in timings.items() if name != "a_plain_hf_forward"
        },
    }
