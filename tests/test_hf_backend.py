"""The Hugging Face backend: the same numbers as the TransformerBridge, an architecture TransformerLens lacks, the
backend choice and its errors, and hooks that leave the model as they found it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from xlens.activations import collect_responses
from xlens.embeddings import sentence_embeddings
from xlens.errors import InputError, ModelLoadError, UnsupportedModelError
from xlens.generation import generate
from xlens.interventions import SetUnits, SteeringVector, TokenPositions, apply, token_positions
from xlens.models import HFBridge, LensModel, load_model, model_backend
from xlens.models.loading import bridge_supports, pick_backend, resolved_numerics

TEXTS = ["The bakery on the corner opens early.", "Hi there", "Could you pass me the salt?", "短い文です。"]
ATOL = 1e-5  # float32; measured differences are below 2e-7


def force(model: LensModel) -> SetUnits:
    """Units of both blocks set to fixed values."""
    first, second = model.mlp_hook(0), model.mlp_hook(1)
    return SetUnits(
        {first: torch.tensor([1, 5]), second: torch.tensor([0, 7, 9])},
        {first: torch.tensor([3.0, -2.0]), second: torch.tensor([1.5, 4.0, -0.5])},
    )


def outputs(model: LensModel, *interventions: Any) -> dict[str, torch.Tensor]:
    """Embeddings at every layer, pooled responses of every MLP unit and logits, under ``interventions``."""
    with apply(model, *interventions):
        emb = sentence_embeddings(model, TEXTS, progress=False)
        resp = collect_responses(model, TEXTS, pooling=["mean", "max"], progress=False)
    batch = model.tokenize(TEXTS)
    with torch.inference_mode(), apply(model, *interventions), token_positions(batch.mask):
        logits = model.bridge(batch.tokens, attention_mask=batch.mask.long())
    return {"embeddings": emb, "mean": resp["mean"], "max": resp["max"], "logits": logits[batch.mask]}


@pytest.fixture(scope="module", params=["gpt2", "gemma3", "bloom", "cohere"])
def both(request: pytest.FixtureRequest) -> tuple[LensModel, LensModel]:
    name = f"tiny-{request.param}"
    return load_model(name, device="cpu", backend="bridge"), load_model(name, device="cpu", backend="hf")


@pytest.fixture(scope="module")
def biogpt() -> LensModel:
    return load_model("tiny-biogpt", device="cpu")


# --- the same numbers as the bridge ---------------------------------------------------------------------------


def test_backends_describe_the_same_model(both: tuple[LensModel, LensModel]) -> None:
    bridge, hf = both
    assert (bridge.backend, hf.backend) == ("bridge", "hf")
    assert isinstance(hf.bridge, HFBridge)
    assert hf.identity() == bridge.identity()
    assert hf.prepend_bos == bridge.prepend_bos
    # Both backends run the same weights, but a cache made with one is not taken for the other's.
    assert hf.numerics() == {**bridge.numerics(), "backend": "hf"}
    assert resolved_numerics("cpu", None, hf.name, backend="hf") == hf.numerics()
    assert resolved_numerics("cpu", None, bridge.name) == bridge.numerics()


@pytest.mark.parametrize("intervened", [False, True], ids=["plain", "forced"])
def test_backends_agree(both: tuple[LensModel, LensModel], intervened: bool) -> None:
    bridge, hf = both
    ivs = [force(bridge)] if intervened else []
    expected, got = outputs(bridge, *ivs), outputs(hf, *ivs)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, atol=ATOL, rtol=0, msg=key)
    if intervened:
        # The intervention took effect on the HF backend too: max pooling of a forced unit is its value.
        width = hf.d_mlp
        forced = torch.tensor([3.0, -2.0, 1.5, 4.0]).expand(len(TEXTS), 4)
        assert torch.equal(got["max"][:, [1, 5, width + 0, width + 7]], forced)
        plain = outputs(hf)
        assert torch.equal(got["embeddings"][:, 0], plain["embeddings"][:, 0])
        assert not torch.allclose(got["embeddings"][:, 2], plain["embeddings"][:, 2])


def test_left_padded_last_logits_agree(both: tuple[LensModel, LensModel]) -> None:
    bridge, hf = both
    batch = hf.tokenize(TEXTS, padding="left")
    with torch.inference_mode():
        got = hf.logits_at_last(batch)
        torch.testing.assert_close(got, bridge.logits_at_last(batch), atol=ATOL, rtol=0)
        # Positions come from the mask: a left-padded row gives the logits of the row alone.
        for i, text in enumerate(TEXTS):
            torch.testing.assert_close(got[i], hf.logits_at_last(hf.tokenize([text]))[0], atol=ATOL, rtol=0)


def test_down_projection_output_matches_the_bridge(both: tuple[LensModel, LensModel]) -> None:
    bridge, hf = both
    # The gate projection too, on gated MLPs, as the bridge has it (LAPE counts it as its reference does).
    gated = bridge.gate_hook(0) is not None
    assert (hf.gate_hook(0) is not None) == gated
    parts = ("gate", "out") if gated else ("out",)
    names = [f"blocks.{b}.mlp.{part}.hook_out" for b in range(hf.n_layers) for part in parts]
    assert hf.linear_hooks() == names
    tokens = hf.tokenize(TEXTS[:1]).tokens
    with torch.inference_mode():
        _, expected = bridge.bridge.run_with_cache(tokens, names_filter=names)
        _, got = hf.bridge.run_with_cache(tokens, names_filter=names)
    for name in names:
        torch.testing.assert_close(got[name], expected[name], atol=ATOL, rtol=0)


# --- an architecture TransformerLens lacks ----------------------------------------------------------------------


def test_unsupported_architecture_loads_with_the_hf_backend(biogpt: LensModel) -> None:
    assert biogpt.backend == "hf" and biogpt.architecture == "BioGptForCausalLM"
    assert model_backend("tiny-biogpt") == "hf" and model_backend("tiny-gpt2") == "bridge"
    expected = {"dtype": "float32", "device": "cpu", "backend": "hf"}
    assert resolved_numerics("cpu", None, "tiny-biogpt") == biogpt.numerics() == expected
    assert "backend='hf'" in repr(biogpt) and "hf" in biogpt._repr_html_()
    with pytest.raises(UnsupportedModelError, match="backend='hf'"):
        load_model("tiny-biogpt", device="cpu", backend="bridge")


def test_unsupported_architecture_embeddings_match_hidden_states(biogpt: LensModel) -> None:
    emb = sentence_embeddings(biogpt, TEXTS, progress=False)
    assert emb.shape == (len(TEXTS), biogpt.n_layers + 1, biogpt.d_model)
    for i, text in enumerate(TEXTS):
        tokens = biogpt.tokenize([text]).tokens
        with torch.inference_mode():
            states = biogpt.bridge.original_model(input_ids=tokens, output_hidden_states=True).hidden_states
        # HF's last hidden state is after the final norm; the ones before are the residual stream xlens reads.
        expected = torch.stack([h[0].mean(0) for h in states[:-1]])
        torch.testing.assert_close(emb[i, :-1], expected, atol=ATOL, rtol=0)


def test_unsupported_architecture_intervention_changes_only_later_layers(biogpt: LensModel) -> None:
    plain = sentence_embeddings(biogpt, TEXTS, progress=False)
    hook = biogpt.mlp_hook(1)
    forced_iv = SetUnits({hook: torch.tensor([2, 3])}, {hook: torch.tensor([5.0, -5.0])})
    forced = sentence_embeddings(biogpt, TEXTS, interventions=[forced_iv], progress=False)
    assert torch.equal(forced[:, :2], plain[:, :2])  # the input of block 0 and the output of block 0
    assert not torch.allclose(forced[:, 2], plain[:, 2])
    resp = collect_responses(biogpt, TEXTS, progress=False)["mean"]
    with forced_iv.apply(biogpt):
        forced_resp = collect_responses(biogpt, TEXTS, progress=False)["mean"]
    width = biogpt.d_mlp
    assert resp.shape == (len(TEXTS), 2 * width)
    assert torch.equal(forced_resp[:, :width], resp[:, :width])
    assert torch.equal(forced_resp[:, [width + 2, width + 3]], torch.tensor([5.0, -5.0]).expand(len(TEXTS), 2))


def test_unsupported_architecture_generates_as_a_manual_loop(biogpt: LensModel) -> None:
    prompts = ["The weather this morning was", "Hi", "My neighbour has a dog"]
    ivs = [SteeringVector(0, torch.linspace(-4, 4, biogpt.d_model))]
    got = generate(biogpt, prompts, 5, interventions=ivs, stop_at_eos=False)
    hooks = ivs[0].hooks(biogpt)
    for prompt, text in zip(prompts, got, strict=True):
        tokens = biogpt.tokenize([prompt]).tokens
        width = tokens.shape[1]
        with torch.inference_mode(), token_positions(TokenPositions.generating(width, 1)):
            for _ in range(5):
                logits = biogpt.bridge.run_with_hooks(tokens, fwd_hooks=hooks)
                tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        assert text == biogpt.tokenizer.decode(tokens[0, width:], skip_special_tokens=True)
    assert got != generate(biogpt, prompts, 5, stop_at_eos=False)


# --- choosing the backend ----------------------------------------------------------------------------------------

REMOTE_CODE_CONFIG = {
    # PolyLM-13B's shape: a GPT-2 model type (which TransformerLens maps to GPT-2) with its own code.
    "architectures": ["PolyLMHeadModel"],
    "model_type": "gpt2",
    "auto_map": {"AutoConfig": "configuration_polylm.PolyLMConfig", "AutoModelForCausalLM": "modeling.PolyLMHeadModel"},
}


def test_remote_code_needs_trust_remote_code(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(REMOTE_CODE_CONFIG))  # no weights: the error comes first
    for backend in ("auto", "bridge", "hf"):
        with pytest.raises(ModelLoadError, match=r"trust_remote_code=True.*Hugging Face backend") as err:
            load_model(tmp_path, device="cpu", backend=backend)  # type: ignore[arg-type]
        assert "runs Python code from the model's repository" in str(err.value)
    # TransformerLens would take it for GPT-2; auto gives it to the Hugging Face backend.
    assert bridge_supports(REMOTE_CODE_CONFIG)
    assert pick_backend(REMOTE_CODE_CONFIG, "auto", "polylm") == "hf"
    assert model_backend(tmp_path) == "hf"
    assert pick_backend({**REMOTE_CODE_CONFIG, "auto_map": None}, "auto", "gpt2") == "bridge"


def test_unknown_backend_is_named() -> None:
    with pytest.raises(InputError, match="unknown backend 'onnx'; use one of auto, bridge, hf"):
        load_model("tiny-gpt2", device="cpu", backend="onnx")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown backend"):
        model_backend("tiny-gpt2", backend="onnx")


def test_module_paths_override() -> None:
    with pytest.raises(ModelLoadError, match=r"no module for the MLP down projection.*GPT2LMHeadModel") as err:
        load_model("tiny-gpt2", device="cpu", module_paths={"down_proj": r"mlp\.nowhere"})
    assert "mlp.c_proj" in str(err.value) and "module_paths={'down_proj'" in str(err.value)
    with pytest.raises(ModelLoadError, match=r"no ModuleList of decoder blocks.*transformer\.h"):
        load_model("tiny-gpt2", device="cpu", module_paths={"blocks": r"decoder\.layers"})
    with pytest.raises(InputError, match=r"unknown module_paths role\(s\) \['mlp'\]"):
        load_model("tiny-gpt2", device="cpu", module_paths={"mlp": "x"})
    with pytest.raises(InputError, match="invalid regular expression"):
        load_model("tiny-gpt2", device="cpu", module_paths={"down_proj": "("})
    with pytest.raises(InputError, match="backend='hf'"):
        load_model("tiny-gpt2", device="cpu", backend="bridge", module_paths={"down_proj": "fc2"})
    # A pattern that points elsewhere moves the hook: the attention's output projection is d_model wide.
    moved = load_model("tiny-gpt2", device="cpu", module_paths={"down_proj": r"attn\.c_proj"})
    assert moved.backend == "hf" and (moved.d_mlp, moved.d_model) == (32, 32)
    assert moved.hook_widths([moved.mlp_hook(0)]) == {moved.mlp_hook(0): 32}


# Layouts the tiny models do not cover, with each config's MLP width.
LAYOUTS = {
    "llama": lambda c: c.intermediate_size,
    "falcon": lambda c: c.ffn_hidden_size or 4 * c.hidden_size,
    "mpt": lambda c: c.expansion_ratio * c.d_model,
    "gpt_neox": lambda c: c.intermediate_size,
    "opt": lambda c: c.ffn_dim,
    "gptj": lambda c: c.n_inner or 4 * c.n_embd,
    "phi": lambda c: c.intermediate_size,
}


@pytest.mark.parametrize("model_type", sorted(LAYOUTS))
def test_default_module_paths_find_common_layouts(model_type: str) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from xlens.models.tiny import byte_tokenizer

    config = AutoConfig.for_model(model_type, num_hidden_layers=3)
    with torch.device("meta"):  # the module tree without weights
        model = AutoModelForCausalLM.from_config(config)
    hf = HFBridge(model, byte_tokenizer(prepend_bos=True))
    assert (hf.cfg.n_layers, hf.cfg.d_mlp) == (3, LAYOUTS[model_type](config))
    gated = any(path.endswith("mlp.gate_proj") for path, _ in model.named_modules())
    assert len(hf.hook_dict) == 3 * (7 + gated)
    assert (hf.hook_dict.get("blocks.2.mlp.gate.hook_out") is not None) == gated


def test_a_mixture_of_experts_is_named_not_guessed() -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from xlens.models.tiny import byte_tokenizer

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model("mixtral", num_hidden_layers=1))
    with pytest.raises(ModelLoadError, match=r"no module for the MLP down projection.*MixtralForCausalLM.*experts"):
        HFBridge(model, byte_tokenizer(prepend_bos=True))


# --- hooks leave the model as they found it ------------------------------------------------------------------------


def _torch_hooks(model: torch.nn.Module) -> int:
    # transformers registers hooks of its own (output recorders): compare counts, do not expect zero.
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_compose_in_order_and_are_removed(biogpt: LensModel) -> None:
    hf = biogpt.bridge
    assert hf.hook_dict["blocks.0.hook_out"] is hf.hook_dict["blocks.0.hook_resid_post"]
    assert hf.hook_dict["blocks.1.mlp.hook_post"] is hf.hook_dict["blocks.1.mlp.out.hook_in"]
    tokens = biogpt.tokenize(TEXTS[:2]).tokens
    unhooked = _torch_hooks(hf.original_model)
    seen: dict[str, torch.Tensor] = {}

    def read(act: torch.Tensor, hook: Any) -> None:
        seen[hook.name] = act.clone()

    with torch.inference_mode():
        before = hf(tokens)
        with hf.hooks([("blocks.0.hook_resid_post", read)]):
            hf(tokens)
        base = seen["blocks.0.hook_out"]
        twice = ("blocks.0.hook_resid_post", lambda act, hook: act * 2)
        plus_one = ("blocks.0.hook_out", lambda act, hook: act + 1)
        with hf.hooks([twice, plus_one, ("blocks.0.hook_out", read)]):
            inside = hf(tokens)
        torch.testing.assert_close(seen["blocks.0.hook_out"], base * 2 + 1)
        with hf.hooks([plus_one, twice, ("blocks.0.hook_out", read)]):
            hf(tokens)
        torch.testing.assert_close(seen["blocks.0.hook_out"], (base + 1) * 2)
        assert not torch.allclose(inside, before)
        assert torch.equal(hf(tokens), before)
    assert _torch_hooks(hf.original_model) == unhooked
    assert all(point.n_hooks == 0 for point in hf.hook_dict.values())


def test_a_raising_hook_stops_the_pass_and_is_removed(biogpt: LensModel) -> None:
    hf = biogpt.bridge
    tokens = biogpt.tokenize(TEXTS[:2]).tokens
    unhooked = _torch_hooks(hf.original_model)
    reached: list[str] = []

    def stop(act: torch.Tensor, hook: Any) -> None:
        raise RuntimeError("stop here")

    with torch.inference_mode():
        before = hf(tokens)
        hooks = [
            ("blocks.0.hook_in", lambda act, hook: act + 1),
            ("blocks.0.hook_out", stop),
            ("blocks.1.mlp.hook_post", lambda act, hook: reached.append(hook.name)),
        ]
        with pytest.raises(RuntimeError, match="stop here"), hf.hooks(hooks):
            hf(tokens)
        assert reached == []  # block 1 never ran
        assert _torch_hooks(hf.original_model) == unhooked
        assert torch.equal(hf(tokens), before)
    with pytest.raises(InputError, match="unknown hook name 'hook_embed'"), hf.hooks([("hook_embed", stop)]):
        pass
    assert _torch_hooks(hf.original_model) == unhooked
