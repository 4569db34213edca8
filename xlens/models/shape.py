"""A model's shape and numerics from its config alone: blocks and widths (:class:`ModelShape`), dtypes and the
default device; nothing here loads weights."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xlens.errors import InputError, ModelLoadError

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    # Half precision pays on accelerators; on CPU float32 is both faster and exact.
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def parse_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    if dtype is None:
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype.lower()]
    except KeyError:
        raise InputError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}") from None


@dataclass(frozen=True)
class ModelShape:
    """Blocks and widths of a model, read from its config (no weights loaded)."""

    architecture: str
    n_layers: int
    d_model: int
    d_mlp: int
    context: int | None = None  # the longest sequence its positions take (None: the config does not say)

    def units(self, kind: str) -> int | None:
        """Number of units of a unit spec, where the config tells it (``mlp``, ``resid``), else None."""
        if kind == "mlp":
            return self.n_layers * self.d_mlp
        if kind == "resid":
            return self.n_layers * self.d_model
        return None


def shape_from_config(config: Any) -> ModelShape:
    """The shape TransformerLens gives a model with this Hugging Face config."""

    def first(*names: str) -> Any:
        for name in names:
            value = getattr(config, name, None)
            if value is not None:
                return int(value)
        return None

    n_layers = first("num_hidden_layers", "n_layer", "num_layers")
    d_model = first("hidden_size", "n_embd", "d_model")
    if n_layers is None or d_model is None:
        raise ModelLoadError(f"cannot read the number of blocks and the width from config {type(config).__name__}")
    d_mlp = first("intermediate_size", "n_inner", "ffn_dim") or 4 * d_model  # GPT-2 and Bloom default to 4x
    architectures = getattr(config, "architectures", None) or [type(config).__name__.removesuffix("Config")]
    context = first("max_position_embeddings", "n_positions", "seq_length")
    return ModelShape(str(architectures[0]), n_layers, d_model, d_mlp, context)


def takes_mask_positions(model: nn.Module) -> bool:
    """Whether a Hugging Face model should be given positions derived from the attention mask (``cumsum - 1``),
    so that a left-padded row's tokens sit at ``0..n-1`` as they do alone: it takes ``position_ids``, and derives
    neither 3-D (mRoPE) nor fairseq-style (``padding_idx``-offset) positions of its own.

    TransformerLens' check also leaves out models whose positional embedding takes the mask, trusting them to
    derive positions themselves; some do not (transformers 5's BioGPT computes an ``arange`` in the model and
    hands it to that embedding, so a left-padded row's logits depend on its batch). Their learned embeddings add
    their own offset to 0-based positions, so xlens passes the positions to them too.
    """
    parameters = inspect.signature(model.forward).parameters
    if "position_ids" not in parameters and not any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    ):
        return False
    for module in (model, getattr(model, "model", None), getattr(model, "language_model", None)):
        if module is not None and hasattr(module, "get_rope_index"):
            return False
    config = getattr(model, "config", None)
    for candidate in (config, getattr(config, "text_config", None)):
        scaling = getattr(candidate, "rope_scaling", None)
        if isinstance(scaling, dict) and "mrope_section" in scaling:
            return False
    return not any(callable(getattr(m, "create_position_ids_from_input_ids", None)) for m in model.modules())
