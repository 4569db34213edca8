"""Tiny randomly initialised models of the paper's architectures (Bloom, Cohere = Aya-23, GPT-2 = PolyLM) and of
Gemma-3, with a byte-level tokenizer: every architecture xlens claims, tested offline in seconds. ``tiny-biogpt`` is
an architecture TransformerLens has no adapter for, loaded by the Hugging Face backend (:mod:`xlens.models.hf`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from xlens._io import atomic_folder
from xlens.errors import ModelLoadError
from xlens.models.folders import complete, write_marker

TINY_ARCHITECTURES = ("bloom", "cohere", "gpt2", "gemma3")
HF_TINY_ARCHITECTURES = ("biogpt",)  # no TransformerLens adapter: the Hugging Face backend only
TINY_VERSION = "v1"  # bump when a tiny config changes: the cache folder is named after it


def tiny_config(arch: str) -> Any:
    """The Hugging Face config of ``tiny-<arch>``."""
    from transformers import BioGptConfig, BloomConfig, CohereConfig, Gemma3TextConfig, GPT2Config

    common: dict[str, Any] = {"vocab_size": 260, "bos_token_id": 256, "eos_token_id": 257, "pad_token_id": 258}
    if arch == "gpt2":
        return GPT2Config(n_layer=2, n_embd=32, n_head=2, n_inner=64, n_positions=256, **common)
    if arch == "bloom":
        return BloomConfig(n_layer=2, hidden_size=32, n_head=2, **common)
    if arch == "cohere":
        return CohereConfig(
            num_hidden_layers=2,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=256,
            **common,
        )
    if arch == "gemma3":
        return Gemma3TextConfig(
            num_hidden_layers=2,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=256,
            sliding_window=64,
            layer_types=["sliding_attention", "full_attention"],
            **common,
        )
    if arch == "biogpt":
        return BioGptConfig(
            num_hidden_layers=2,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            max_position_embeddings=256,
            **common,
        )
    known = ", ".join(TINY_ARCHITECTURES + HF_TINY_ARCHITECTURES)
    raise ModelLoadError(f"unknown tiny architecture {arch!r}; choose one of {known}")


def byte_tokenizer(prepend_bos: bool) -> Any:
    """A byte-level tokenizer (256 bytes + bos/eos/pad/unk) that needs no download and covers every script."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_to_unicode = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(byte_to_unicode))}
    vocab.update({"<bos>": 256, "<eos>": 257, "<pad>": 258, "<unk>": 259})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        add_bos_token=prepend_bos,
    )


def random_model_folder(config: Any, folder: Path, *, source: str, prepend_bos: bool, seed: int = 0) -> Path:
    """A randomly initialised model of ``config`` with the byte tokenizer, saved once as a Hugging Face folder
    (atomically; the folder's name is its revision)."""
    from transformers import AutoModelForCausalLM

    if complete(folder):
        return folder
    with atomic_folder(folder) as tmp:
        torch.manual_seed(seed)
        AutoModelForCausalLM.from_config(config).save_pretrained(tmp)
        byte_tokenizer(prepend_bos=prepend_bos).save_pretrained(tmp)
        write_marker(tmp, source=source, revision=folder.name)
    return folder


def tiny_model_folder(arch: str, cache: Path, seed: int = 0) -> Path:
    """``tiny-<arch>`` saved as a Hugging Face folder under ``cache`` (built once)."""
    folder = cache / f"tiny-{arch}-seed{seed}-{TINY_VERSION}"
    # Bloom is trained without BOS; the others expect one.
    return random_model_folder(tiny_config(arch), folder, source=f"tiny:{arch}", prepend_bos=arch != "bloom", seed=seed)
