"""Models spread over a device map (CPU-only maps here: no GPU in CI), and the errors of maps that cannot work."""

from __future__ import annotations

import pytest
import torch

from xlens.activations import collect_responses
from xlens.embeddings import sentence_embeddings
from xlens.errors import ModelLoadError
from xlens.interventions import SetUnits
from xlens.models import LensModel, load_model

TEXTS = ["a first sentence", "another, rather longer sentence than the first", "short"]


def block_map(model: LensModel, blocks: tuple[str, ...] = ("cpu",), rest: str = "cpu") -> dict[str, str]:
    """Every module of the Hugging Face model on its own entry: each block (in turn on the devices of ``blocks``),
    the embeddings, the final norm and the head (on ``rest``): what a multi-GPU map spells out."""
    hf = model.bridge.original_model
    prefix = hf.base_model_prefix
    out: dict[str, str] = {}
    for name, child in hf.base_model.named_children():
        if isinstance(child, torch.nn.ModuleList):
            out |= {f"{prefix}.{name}.{i}": blocks[i % len(blocks)] for i in range(len(child))}
        else:
            out[f"{prefix}.{name}"] = rest
    out |= {name: rest for name, _ in hf.named_children() if name != prefix}
    return out


def force_on(model: LensModel) -> SetUnits:
    return SetUnits(
        {model.mlp_hook(0): torch.tensor([1, 5]), model.mlp_hook(1): torch.tensor([0])},
        {model.mlp_hook(0): torch.tensor([2.0, -1.0]), model.mlp_hook(1): torch.tensor([3.0])},
    )


@pytest.mark.parametrize("arch", ["bloom", "cohere", "gpt2"])
@pytest.mark.parametrize("backend", ["bridge", "hf"])
def test_a_model_over_a_device_map_computes_what_it_computes_in_one_piece(arch: str, backend: str) -> None:
    whole = load_model(f"tiny-{arch}", device="cpu", backend=backend)
    spread = load_model(f"tiny-{arch}", device_map=block_map(whole), backend=backend)
    assert spread.device.type == "cpu"
    assert len(block_map(whole)) >= whole.n_layers + 3
    for interventions in ([], [force_on(whole)]):
        want = sentence_embeddings(whole, TEXTS, interventions=interventions, progress=False)
        got = sentence_embeddings(spread, TEXTS, interventions=interventions, progress=False)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    changed = sentence_embeddings(spread, TEXTS, interventions=[force_on(spread)], progress=False)
    assert not torch.allclose(changed[:, -1], sentence_embeddings(spread, TEXTS, progress=False)[:, -1])
    a = collect_responses(whole, TEXTS, progress=False)
    b = collect_responses(spread, TEXTS, progress=False)
    torch.testing.assert_close(b.pooled["mean"], a.pooled["mean"], rtol=0, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.parametrize("arch", ["bloom", "cohere", "gpt2"])
@pytest.mark.parametrize("backend", ["bridge", "hf"])
def test_a_model_over_a_gpu_device_map_computes_what_it_computes_on_the_cpu(arch: str, backend: str) -> None:
    """Every module on its own map entry, blocks alternately on the first two GPUs (one GPU: all on it):
    embeddings, responses and a forced intervention equal the model's in one piece on the CPU, to float32
    rounding. TransformerLens refuses maps that mix a GPU with the CPU (tested below)."""
    whole = load_model(f"tiny-{arch}", device="cpu", backend=backend)
    gpus = tuple(f"cuda:{i}" for i in range(min(2, torch.cuda.device_count())))
    spread = load_model(f"tiny-{arch}", device_map=block_map(whole, gpus, "cuda:0"), dtype="float32", backend=backend)
    assert spread.device.type == "cuda"
    for interventions in ([], [force_on(whole)]):
        want = sentence_embeddings(whole, TEXTS, interventions=interventions, progress=False)
        got = sentence_embeddings(spread, TEXTS, interventions=interventions, progress=False)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    a = collect_responses(whole, TEXTS, progress=False)
    b = collect_responses(spread, TEXTS, progress=False)
    torch.testing.assert_close(b.pooled["mean"], a.pooled["mean"], rtol=1e-4, atol=1e-5)


def test_auto_map_with_room_loads_and_a_map_that_cannot_work_is_refused() -> None:
    roomy = load_model("tiny-gpt2", device_map="auto", max_memory={"cpu": "1GiB"})
    assert roomy.device.type == "cpu"
    params = sum(p.numel() for p in roomy.bridge.original_model.parameters())
    with pytest.raises(
        ModelLoadError, match=r"does not fit: .* take 0\.0 GiB in float32, and max_memory allows"
    ) as err:
        load_model("tiny-gpt2", device_map="auto", max_memory={"cpu": "10KB"})
    assert f"{params / 1e9:.2f}B parameters" in str(err.value) and "load in bfloat16" in str(err.value)
    gpus = torch.cuda.device_count()
    with pytest.raises(ModelLoadError, match=rf"device_map\[''\] = 'cuda:{gpus}': this machine has"):
        load_model("tiny-gpt2", device_map={"": f"cuda:{gpus}"})
    with pytest.raises(ModelLoadError, match="both on a GPU and on cpu: TransformerLens does not run such mixed maps"):
        load_model("tiny-gpt2", device_map={"transformer.h": 0, "transformer.wte": "cpu"})
    with pytest.raises(ModelLoadError, match="max_memory key 99"):
        load_model("tiny-gpt2", device_map="auto", max_memory={99: "1GiB"})
