"""How much memory the paper's models need, per dtype, and how many GPUs of a given size they take.

Parameter counts are exact: :func:`parameter_count` builds the Hugging Face model class from its config on the
``meta`` device (no weights, no memory, no hub) and counts its unique parameters, so tied input and output
embeddings count once. :data:`PAPER_CONFIGS` embeds the fields of the paper's models' hub ``config.json`` that
decide the parameter count, so :func:`memory_table` works offline. For your own model::

    from transformers import AutoConfig
    parameter_count(AutoConfig.from_pretrained(path))

The rule: ``weights_gib`` = parameters x bytes per parameter; ``resident_gib`` adds what TransformerBridge holds
beside them (:func:`bridge_extra_parameters`: Bloom's split attention weights); ``need_gib`` = resident x (1 +
:data:`OVERHEAD`), the headroom for activations of a forward batch, the CUDA context and the allocator;
``gpus_<size>gib`` = ceil(need / size), the model split over GPUs with ``device_map="auto"``. ``load_peak_gib`` =
resident x :data:`LOAD_PEAK`:
loading through TransformerBridge peaks near twice the weights (host memory while the Hugging Face model is built
on the CPU; the GPU when ``enable_compatibility_mode()`` processes the weights there, which copies the state dict
and unties tied embeddings).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from xlens.errors import InputError, InputTypeError
from xlens.models.shape import parse_dtype

# The fields of each hub config.json that decide the parameter count (the rest: dropout, token ids, rope and
# norm epsilons, do not), typed in from the public configs.
PAPER_CONFIGS: dict[str, dict[str, Any]] = {
    # BloomForCausalLM; the vocabulary is padded to 250880. Published: 7,069,016,064 parameters (model card).
    "bigscience/bloom-7b1": {
        "model_type": "bloom",
        "n_layer": 30,
        "hidden_size": 4096,
        "n_head": 32,
        "vocab_size": 250880,
    },
    # CohereForCausalLM (Aya-23 is Command-R's architecture: grouped-query attention, no QK norm, tied
    # embeddings, bias-free LayerNorm). Published: 8.03B (the hub's safetensors count).
    "CohereForAI/aya-23-8B": {
        "model_type": "cohere",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 256000,
        "tie_word_embeddings": True,
        "use_qk_norm": False,
    },
    # GPT-2 architecture (the hub config names custom code; its shapes are GPT-2's). Layers, width, heads and
    # the 2048 learned positions are those of PolyLM's Megatron training script, which sets no FFN size: the
    # Megatron default 4 x hidden = 20480, the same as GPT-2's default for a null n_inner. Less certain than the
    # other two (typed from memory of the hub config): n_inner, and tied embeddings (Megatron's default, and the
    # only reading under which PolyLM-1.7B's shapes give 1.7B). Published: "13B" is the name; this gives 13.9B.
    "DAMO-NLP-MT/polylm-13b": {
        "model_type": "gpt2",
        "n_embd": 5120,
        "n_layer": 40,
        "n_head": 40,
        "n_inner": 20480,
        "vocab_size": 256000,
        "n_positions": 2048,
    },
}
PAPER_MODELS: tuple[str, ...] = tuple(PAPER_CONFIGS)

OVERHEAD = 0.2
LOAD_PEAK = 2.0
# GiB as the driver reports them, rounded: A100 40GB, A100/H100 80GB, H200 (sold as 141 GB: about 140 GiB).
GPU_SIZES_GIB: tuple[float, ...] = (40, 80, 140)
GIB = 2**30


def paper_config(name: str) -> Any:
    """The Hugging Face config of one of :data:`PAPER_MODELS`, built from :data:`PAPER_CONFIGS` (offline)."""
    from transformers import AutoConfig

    if name not in PAPER_CONFIGS:
        raise InputError(f"no embedded config for {name!r}; known: {list(PAPER_MODELS)}, or pass a config")
    fields = dict(PAPER_CONFIGS[name])
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def parameter_count(config: Any, *, trust_remote_code: bool = False) -> int:
    """The number of unique parameters of the causal LM this Hugging Face config builds (tied weights once).

    The model is built on the ``meta`` device: shapes only, in well under a second for a 13B model.
    ``trust_remote_code`` is for configs whose model class is custom code (already in the local cache).
    """
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    # parameters() yields a shared (tied) Parameter once.
    return sum(parameter.numel() for parameter in model.parameters())


def bridge_extra_parameters(config: Any) -> int:
    """Parameters TransformerBridge holds beyond the Hugging Face model's own: it splits Bloom's fused
    ``query_key_value`` into q, k and v weights and biases that it keeps as copies beside the fused one
    (3 x (d^2 + d) per block; about 1.5B for Bloom-7B1, +21%). GPT-2's split parts are views of the fused weight,
    and the other architectures have separate projections already: nothing extra. Checked against the storage a
    loaded tiny model of each architecture really holds (tests/test_memory.py)."""
    if getattr(config, "model_type", None) != "bloom":
        return 0
    return int(config.n_layer) * 3 * (int(config.hidden_size) ** 2 + int(config.hidden_size))


def resident_parameters(model: torch.nn.Module) -> int:
    """Parameter elements ``model`` really holds in memory: each storage once, so views of one weight (GPT-2's
    split attention under TransformerBridge) and tied weights count once, and copies (Bloom's) twice."""
    storages: dict[tuple[torch.device, int], int] = {}
    for parameter in model.parameters():
        storage = parameter.untyped_storage()
        storages[(parameter.device, storage.data_ptr())] = storage.nbytes() // parameter.element_size()
    return sum(storages.values())


def gpus_needed(need_gib: float, gpu_gib: float) -> int:
    """How many GPUs of ``gpu_gib`` hold ``need_gib`` when the model is split across them."""
    if gpu_gib <= 0:
        raise InputError(f"a GPU size must be positive, got {gpu_gib}")
    return math.ceil(need_gib / gpu_gib)


def memory_table(
    models: Sequence[str] | Mapping[str, Any] = PAPER_MODELS,
    dtypes: Sequence[str] = ("float32", "bfloat16"),
    gpu_gib: Sequence[float] = GPU_SIZES_GIB,
    overhead: float = OVERHEAD,
) -> pd.DataFrame:
    """One row per model and dtype: ``model``, ``parameters``, ``bridge_extra_parameters``, ``dtype``,
    ``weights_gib``, ``resident_gib``, ``need_gib``, ``load_peak_gib`` and a ``gpus_<size>gib`` column per GPU size
    (the rule is in the module docstring).

    ``models`` are names in :data:`PAPER_CONFIGS`, or a mapping of names to Hugging Face configs of your own.
    """
    if isinstance(models, str):
        raise InputTypeError(f"models must be a list of names or a mapping of names to configs, not {models!r}")
    configs = models if isinstance(models, Mapping) else {name: paper_config(name) for name in models}
    counts = {name: parameter_count(config) for name, config in configs.items()}
    rows = []
    for name, count in counts.items():
        extra = bridge_extra_parameters(configs[name])
        for dtype in dtypes:
            size = parse_dtype(dtype, "cpu").itemsize
            resident = (count + extra) * size / GIB
            need = resident * (1 + overhead)
            row: dict[str, Any] = {
                "model": name,
                "parameters": count,
                "bridge_extra_parameters": extra,
                "dtype": dtype,
                "weights_gib": count * size / GIB,
                "resident_gib": resident,
                "need_gib": need,
                "load_peak_gib": resident * LOAD_PEAK,
            }
            row |= {f"gpus_{size:g}gib": gpus_needed(need, size) for size in gpu_gib}
            rows.append(row)
    return pd.DataFrame(rows)
