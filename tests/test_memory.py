"""Memory and GPU counts of the paper's models: exact parameter counts on the meta device, checked against closed
forms written out here and against the published sizes."""

from __future__ import annotations

import pandas as pd
import pytest
from transformers import AutoConfig, AutoModelForCausalLM

from xlens.errors import InputError, InputTypeError
from xlens.models import (
    PAPER_CONFIGS,
    PAPER_MODELS,
    TINY_ARCHITECTURES,
    bridge_extra_parameters,
    gpus_needed,
    load_model,
    memory_table,
    paper_config,
    parameter_count,
    resident_parameters,
    tiny_config,
)

BLOOM, AYA, POLYLM = PAPER_MODELS
# Independent references: Bloom's model card gives the exact count, the hub's safetensors metadata Aya's (8.03B).
PUBLISHED = {BLOOM: 7_069_016_064, AYA: 8.03e9}


def gpt2_closed_form(vocab: int, positions: int, d: int, layers: int, inner: int) -> int:
    """GPT-2 by hand: token and position embeddings (the head is tied to the former), per block two LayerNorms,
    the fused QKV and output projections and the two MLP matrices, all with biases, then the final LayerNorm."""
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * inner + inner) + (inner * d + d)
    return vocab * d + positions * d + layers * block + 2 * d


def bloom_closed_form(vocab: int, d: int, layers: int) -> int:
    """Bloom: tied embeddings and their LayerNorm; per block two LayerNorms, fused QKV, output, a 4x MLP."""
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    return vocab * d + 2 * d + layers * block + 2 * d


def cohere_closed_form(vocab: int, d: int, layers: int, heads: int, kv_heads: int, inner: int) -> int:
    """Cohere: tied embeddings; per block one bias-free LayerNorm (attention and MLP run in parallel), bias-free
    Q/K/V/O with grouped K/V, a gated MLP (gate, up, down); a final bias-free LayerNorm."""
    kv = kv_heads * (d // heads)
    block = d + d * d + 2 * d * kv + d * d + 3 * d * inner
    return vocab * d + layers * block + d


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return memory_table()


def test_counts_match_closed_forms(table: pd.DataFrame) -> None:
    counts = dict(zip(table["model"], table["parameters"], strict=False))
    assert counts[POLYLM] == gpt2_closed_form(256000, 2048, 5120, 40, 20480)
    assert counts[BLOOM] == bloom_closed_form(250880, 4096, 30)
    assert counts[AYA] == cohere_closed_form(256000, 4096, 32, 32, 8, 14336)


def test_counts_match_published_sizes(table: pd.DataFrame) -> None:
    counts = dict(zip(table["model"], table["parameters"], strict=False))
    for name, published in PUBLISHED.items():
        assert counts[name] == pytest.approx(published, rel=0.02), name
    # PolyLM publishes no count, only the names "1.7B" and "13B": the 13B rounds down to its name (untied
    # embeddings would give 15.2B), and the same GPT-2 rule on PolyLM-1.7B's shapes gives 1.7B.
    assert 13e9 <= counts[POLYLM] < 14e9
    assert gpt2_closed_form(256000, 2048, 2048, 24, 8192) == pytest.approx(1.7e9, rel=0.03)


def test_meta_count_equals_a_real_model() -> None:
    config = tiny_config("gpt2")
    real = AutoModelForCausalLM.from_config(config)
    assert parameter_count(config) == sum(p.numel() for p in real.parameters())
    assert parameter_count(config) == gpt2_closed_form(260, 256, 32, 2, 64)


def test_tied_embeddings_count_once() -> None:
    fields = {**PAPER_CONFIGS[AYA], "tie_word_embeddings": False}
    untied = AutoConfig.for_model(fields.pop("model_type"), **fields)
    assert parameter_count(untied) - parameter_count(paper_config(AYA)) == 256000 * 4096


def test_memory_rule(table: pd.DataFrame) -> None:
    assert list(table.columns) == [
        "model",
        "parameters",
        "bridge_extra_parameters",
        "dtype",
        "weights_gib",
        "resident_gib",
        "need_gib",
        "load_peak_gib",
        "gpus_40gib",
        "gpus_80gib",
        "gpus_140gib",
    ]
    assert list(zip(table["model"], table["dtype"], strict=True)) == [
        (name, dtype) for name in PAPER_MODELS for dtype in ("float32", "bfloat16")
    ]
    bloom_fp32 = table.iloc[0]
    assert bloom_fp32["weights_gib"] == pytest.approx(7_069_016_064 * 4 / 2**30)
    # TransformerBridge's copies of Bloom's split q, k, v: 30 blocks x 3 x (4096^2 + 4096).
    assert bloom_fp32["bridge_extra_parameters"] == 30 * 3 * (4096**2 + 4096)
    assert bloom_fp32["resident_gib"] == pytest.approx((7_069_016_064 + 30 * 3 * (4096**2 + 4096)) * 4 / 2**30)
    assert bloom_fp32["need_gib"] == pytest.approx(bloom_fp32["resident_gib"] * 1.2)
    assert bloom_fp32["load_peak_gib"] == pytest.approx(bloom_fp32["resident_gib"] * 2)
    assert table[table["model"] != BLOOM]["bridge_extra_parameters"].eq(0).all()
    fp32, bf16 = table[table["dtype"] == "float32"], table[table["dtype"] == "bfloat16"]
    assert list(bf16["weights_gib"]) == pytest.approx(list(fp32["weights_gib"] / 2))
    # PolyLM in float32: 51.8 GiB of weights, 62.2 GiB with the overhead, more than one 40 GiB GPU.
    polylm = table[table["model"] == POLYLM].set_index("dtype")
    assert polylm.loc["float32", "need_gib"] == pytest.approx(62.17, abs=0.01)
    assert polylm.loc["float32", ["gpus_40gib", "gpus_80gib", "gpus_140gib"]].tolist() == [2, 1, 1]
    assert polylm.loc["bfloat16", "gpus_40gib"] == 1


def test_own_configs_gpu_sizes_and_errors() -> None:
    table = memory_table({"tiny": tiny_config("gpt2")}, dtypes=("float16",), gpu_gib=(24,), overhead=0.5)
    assert table.to_dict("records") == [
        {
            "model": "tiny",
            "parameters": gpt2_closed_form(260, 256, 32, 2, 64),
            "bridge_extra_parameters": 0,
            "dtype": "float16",
            "weights_gib": pytest.approx(gpt2_closed_form(260, 256, 32, 2, 64) * 2 / 2**30),
            "resident_gib": pytest.approx(gpt2_closed_form(260, 256, 32, 2, 64) * 2 / 2**30),
            "need_gib": pytest.approx(gpt2_closed_form(260, 256, 32, 2, 64) * 3 / 2**30),
            "load_peak_gib": pytest.approx(gpt2_closed_form(260, 256, 32, 2, 64) * 4 / 2**30),
            "gpus_24gib": 1,
        }
    ]
    assert [gpus_needed(need, 80) for need in (79.9, 80, 80.1, 161)] == [1, 1, 2, 3]
    with pytest.raises(InputError, match="no embedded config"):
        memory_table(["gpt2-xl"])
    with pytest.raises(InputTypeError):
        memory_table(BLOOM)
    with pytest.raises(InputError, match="unknown dtype"):
        memory_table([BLOOM], dtypes=("int3",))
    with pytest.raises(InputError, match="positive"):
        gpus_needed(1.0, 0)


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_resident_parameters_are_predicted_for_every_architecture(arch: str) -> None:
    """What a model loaded through TransformerBridge really holds (each storage once) equals the Hugging Face count
    plus :func:`bridge_extra_parameters`: the prediction follows the bridge, copies and views alike."""
    lm = load_model(f"tiny-{arch}", device="cpu")
    config = lm.bridge.original_model.config
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in lm.bridge.parameters()}
    held = sum(storages.values()) // 4  # float32
    assert resident_parameters(lm.bridge.original_model) == held
    assert held == parameter_count(config) + bridge_extra_parameters(config)
    assert (bridge_extra_parameters(config) > 0) == (arch == "bloom")
