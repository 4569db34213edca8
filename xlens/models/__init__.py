"""Models: loading (offline-first), tiny random models of every claimed architecture, and ``LensModel``."""

from xlens.models.lens import (
    ForwardBatch,
    LensModel,
    Reader,
    TokenBatch,
    block_of,
    check_same_model,
    identity_differences,
)
from xlens.models.loading import (
    DTYPES,
    EMBEDDED_MODEL,
    EMBEDDED_SHAPE,
    ModelShape,
    cache_dir,
    default_device,
    default_dtype,
    embedded_model_folder,
    gguf_model_folder,
    load_model,
    model_shape,
    parse_dtype,
    shape_from_config,
)
from xlens.models.tiny import TINY_ARCHITECTURES, tiny_config

__all__ = [
    "DTYPES",
    "EMBEDDED_MODEL",
    "EMBEDDED_SHAPE",
    "TINY_ARCHITECTURES",
    "ForwardBatch",
    "LensModel",
    "ModelShape",
    "Reader",
    "TokenBatch",
    "block_of",
    "cache_dir",
    "check_same_model",
    "default_device",
    "default_dtype",
    "embedded_model_folder",
    "gguf_model_folder",
    "identity_differences",
    "load_model",
    "model_shape",
    "parse_dtype",
    "shape_from_config",
    "tiny_config",
]
