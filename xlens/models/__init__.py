"""Models: loading (offline-first), tiny random models of every claimed architecture, ``LensModel``, and the Hugging
Face backend for architectures TransformerLens lacks."""

from xlens.models.hf import DEFAULT_MODULE_PATHS, HFBridge, HookPoint
from xlens.models.lens import (
    DEFAULT_MAX_TOKENS,
    ForwardBatch,
    LensModel,
    Reader,
    TokenBatch,
    block_of,
)
from xlens.models.loading import (
    BACKENDS,
    EMBEDDED_MODEL,
    EMBEDDED_SHAPE,
    cache_dir,
    embedded_model_folder,
    gguf_model_folder,
    load_model,
    model_backend,
    model_shape,
)
from xlens.models.memory import (
    GPU_SIZES_GIB,
    PAPER_CONFIGS,
    PAPER_MODELS,
    bridge_extra_parameters,
    gpus_needed,
    memory_table,
    paper_config,
    parameter_count,
    resident_parameters,
)
from xlens.models.shape import (
    DTYPES,
    ModelShape,
    default_device,
    default_dtype,
    parse_dtype,
    shape_from_config,
)
from xlens.models.tiny import HF_TINY_ARCHITECTURES, TINY_ARCHITECTURES, tiny_config

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MODULE_PATHS",
    "DTYPES",
    "EMBEDDED_MODEL",
    "EMBEDDED_SHAPE",
    "GPU_SIZES_GIB",
    "HF_TINY_ARCHITECTURES",
    "PAPER_CONFIGS",
    "PAPER_MODELS",
    "TINY_ARCHITECTURES",
    "ForwardBatch",
    "HFBridge",
    "HookPoint",
    "LensModel",
    "ModelShape",
    "Reader",
    "TokenBatch",
    "block_of",
    "bridge_extra_parameters",
    "cache_dir",
    "default_device",
    "default_dtype",
    "embedded_model_folder",
    "gguf_model_folder",
    "gpus_needed",
    "load_model",
    "memory_table",
    "model_backend",
    "model_shape",
    "paper_config",
    "parameter_count",
    "parse_dtype",
    "resident_parameters",
    "shape_from_config",
    "tiny_config",
]
