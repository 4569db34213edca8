"""Pooled responses: pooling vs brute force, padding never counted, unit index, save/load, cache reuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import xlens
from xlens.activations import (
    POOLINGS,
    Responses,
    UnitIndex,
    collect_corpus_responses,
    collect_responses,
    pool,
    resolve_units,
)
from xlens.artifacts import CorruptArtifactWarning
from xlens.data.corpus import ParallelCorpus
from xlens.errors import ArtifactError, InputError, InputIndexError, NonFiniteError
from xlens.models import LensModel

TEXTS = [
    "Hello world",
    "日本語のテキストです。とても長い文章",
    "Bonjour",
    "Un texte plus long en français, vraiment.",
    "Ein kurzer Satz.",
]


def brute_pool(acts: np.ndarray, pooling: str) -> np.ndarray:
    """Pool one sentence's real-token activations [pos, unit] with numpy."""
    if pooling == "mean":
        return acts.mean(0)
    if pooling == "max":
        return acts.max(0)
    if pooling == "last":
        return acts[-1]
    if pooling == "median":
        return np.median(acts, axis=0)
    if pooling == "weighted":
        weights = np.arange(1, len(acts) + 1, dtype=np.float64)
        return (acts * weights[:, None]).sum(0) / weights.sum()
    return (acts > 0).sum(0).astype(np.float64)


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 7), min_size=1, max_size=5),
    pooling=st.sampled_from(POOLINGS),
    seed=st.integers(0, 2**16),
)
def test_pool_matches_numpy_on_ragged_rows(lengths: list[int], pooling: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    width = max(lengths)
    # Integer-valued activations make ties (and exact medians) common.
    acts = rng.integers(-3, 4, size=(len(lengths), width, 6)).astype(np.float32)
    mask = np.arange(width)[None, :] < np.array(lengths)[:, None]
    padded = np.where(mask[..., None], acts, 1e6)  # garbage in padding must never leak in
    got = pool(torch.from_numpy(padded), torch.from_numpy(mask), pooling).numpy()
    for row, n in enumerate(lengths):
        np.testing.assert_allclose(got[row], brute_pool(acts[row, :n], pooling), rtol=1e-6, atol=1e-6)


def test_pool_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="unknown pooling"):
        pool(torch.zeros(1, 2, 3), torch.ones(1, 2, dtype=torch.bool), "mode")


def test_collect_matches_brute_force_cache(tiny_model: LensModel) -> None:
    # gate_active reads the gate hook on gated MLPs: tests/test_lape_reference.py checks it against the reference.
    poolings = [p for p in POOLINGS if p != "gate_active"]
    res = collect_responses(tiny_model, TEXTS, pooling=poolings, batch_size=2, progress=False)
    hooks = tiny_model.mlp_hooks
    assert res.units.hooks == tuple(hooks)
    for i, text in enumerate(TEXTS):
        batch = tiny_model.tokenize([text])
        with torch.inference_mode():
            _, cache = tiny_model.bridge.run_with_cache(batch.tokens, names_filter=hooks)
        assert res.token_counts[i] == batch.tokens.shape[1]
        full = torch.cat([cache[h][0] for h in hooks], dim=-1).double().numpy()
        for pooling in poolings:
            np.testing.assert_allclose(res[pooling][i].numpy(), brute_pool(full, pooling), rtol=1e-4, atol=1e-5)


def test_batch_size_does_not_change_results(tiny_model: LensModel) -> None:
    a = collect_responses(tiny_model, TEXTS, pooling=["mean", "last"], batch_size=5, progress=False)
    b = collect_responses(tiny_model, TEXTS, pooling=["mean", "last"], batch_size=1, progress=False)
    for p in ("mean", "last"):
        torch.testing.assert_close(a[p], b[p], atol=1e-5, rtol=1e-5)


def test_linear_and_headed_hooks_flatten(tiny_gpt2: LensModel) -> None:
    res = collect_responses(tiny_gpt2, TEXTS[:2], units="linear", progress=False)
    widths = dict(zip(res.units.hooks, res.units.widths, strict=True))
    assert widths["blocks.0.attn.q.hook_out"] == tiny_gpt2.d_model  # heads x d_head
    assert widths["blocks.0.mlp.in.hook_out"] == tiny_gpt2.d_mlp
    assert res["mean"].shape == (2, res.units.n_units)
    batch = tiny_gpt2.tokenize([TEXTS[0]])
    with torch.inference_mode():
        _, cache = tiny_gpt2.bridge.run_with_cache(batch.tokens, names_filter=["blocks.1.attn.q.hook_out"])
    q = cache["blocks.1.attn.q.hook_out"][0].reshape(batch.tokens.shape[1], -1).mean(0)
    start = res.units.unit("blocks.1.attn.q.hook_out", 0)
    torch.testing.assert_close(res["mean"][0, start : start + q.numel()], q, atol=1e-5, rtol=1e-5)


def test_resolve_units(tiny_gpt2: LensModel) -> None:
    assert resolve_units(tiny_gpt2, "mlp") == tiny_gpt2.mlp_hooks
    assert resolve_units(tiny_gpt2, r"re:blocks\.1\.mlp\.hook_post") == ["blocks.1.mlp.hook_post"]
    assert resolve_units(tiny_gpt2, lambda n: n == "blocks.0.hook_resid_post") == ["blocks.0.hook_resid_post"]
    with pytest.raises(ValueError, match="unknown unit spec"):
        resolve_units(tiny_gpt2, "everything")
    with pytest.raises(ValueError, match="no hook name matches"):
        resolve_units(tiny_gpt2, "re:nothing")
    with pytest.raises(ValueError, match="unknown hook name"):
        resolve_units(tiny_gpt2, ["blocks.9.mlp.hook_post"])


def test_unit_index_round_trip() -> None:
    index = UnitIndex(("blocks.0.mlp.hook_post", "blocks.3.attn.q.hook_out"), (4, 6))
    assert index.n_units == 10
    for unit in range(10):
        hook, pos = index.locate(unit)
        assert index.unit(hook, pos) == unit
    assert index.blocks().tolist() == [0] * 4 + [3] * 6
    assert index.positions().tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4, 5]
    assert index.labels([1, 5]) == ["L0.mlp#1", "L3.attn.q#1"]
    assert UnitIndex.from_dict(index.to_dict()) == index
    with pytest.raises(IndexError):
        index.locate(10)
    with pytest.raises(ValueError, match="duplicate hook"):
        UnitIndex(("a", "a"), (1, 1))


def test_bad_input(tiny_gpt2: LensModel) -> None:
    with pytest.raises(ValueError, match="no sentences"):
        collect_responses(tiny_gpt2, [], progress=False)
    with pytest.raises(TypeError, match="not a single string"):
        collect_responses(tiny_gpt2, "one string", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown pooling"):
        collect_responses(tiny_gpt2, TEXTS, pooling="mode", progress=False)
    with pytest.raises(ValueError, match="lang_ids has 2 entries for 5"):
        collect_responses(tiny_gpt2, TEXTS, lang_ids=[0, 1], progress=False)


def test_save_load_and_cache_reuse(tiny_gpt2: LensModel, tmp_path: Path) -> None:
    corpus = ParallelCorpus(
        {"en": ["one cat", "two dogs", "three birds"], "es": ["un gato", "dos perros", "tres pájaros"]}
    )
    first = collect_corpus_responses(tiny_gpt2, corpus, cache=tmp_path, pooling="mean", progress=False)
    assert first.languages == ["eng_Latn", "spa_Latn"]
    assert first.lang_ids.tolist() == [0, 0, 0, 1, 1, 1]  # type: ignore[union-attr]
    saved = list(tmp_path.glob("responses-*"))
    assert len(saved) == 1
    # A rerun with the same inputs loads from disk: poison the saved tensor to prove it is what comes back.
    loaded = Responses.load(saved[0])
    loaded.pooled["mean"][0, 0] = 12345.0
    loaded.save(saved[0])
    again = collect_corpus_responses(tiny_gpt2, corpus, cache=tmp_path, pooling="mean", progress=False)
    assert again["mean"][0, 0].item() == 12345.0
    torch.testing.assert_close(again["mean"][1:], first["mean"][1:])
    # Showing a progress bar or staging on disk changes no value, so it hits the same cache entry.
    shown = collect_corpus_responses(
        tiny_gpt2, corpus, cache=tmp_path, pooling="mean", progress=True, offload=tmp_path / "staging"
    )
    assert shown["mean"][0, 0].item() == 12345.0
    assert len(list(tmp_path.glob("responses-*"))) == 1
    assert again.units == first.units
    # Different settings give a different key, so a fresh computation.
    other = collect_corpus_responses(tiny_gpt2, corpus, cache=tmp_path, pooling="max", progress=False)
    assert len(list(tmp_path.glob("responses-*"))) == 2
    assert other["max"][0, 0].item() != 12345.0
    with pytest.raises(ArtifactError, match=r"no xlens\.Responses in"):
        Responses.load(tmp_path / "nothing")


def test_a_corrupted_cache_entry_is_reported_and_recomputed(tiny_gpt2: LensModel, tmp_path: Path) -> None:
    corpus = ParallelCorpus({"en": ["one cat", "two dogs"], "es": ["un gato", "dos perros"]})
    first = collect_corpus_responses(tiny_gpt2, corpus, cache=tmp_path, progress=False)
    (entry,) = tmp_path.glob("responses-*")
    (tensors,) = entry.glob("responses-*.safetensors")
    tensors.write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match=rf"{tensors.name} is corrupted .*delete it and rerun"):
        Responses.load(entry)
    with pytest.warns(CorruptArtifactWarning, match=f"recomputing a corrupted cache entry: {tensors}"):
        again = collect_corpus_responses(tiny_gpt2, corpus, cache=tmp_path, progress=False)
    torch.testing.assert_close(again["mean"], first["mean"])
    assert Responses.load(entry)["mean"].shape == first["mean"].shape  # the entry was rewritten whole


def test_float16_storage(tiny_gpt2: LensModel) -> None:
    half = collect_responses(tiny_gpt2, TEXTS, dtype=torch.float16, progress=False)
    full = collect_responses(tiny_gpt2, TEXTS, progress=False)
    assert half["mean"].dtype == torch.float16
    torch.testing.assert_close(half["mean"].float(), full["mean"], atol=2e-3, rtol=2e-3)


def test_offload_to_memory_mapped_files(tiny_gpt2: LensModel, tmp_path: Path) -> None:
    in_ram = collect_responses(tiny_gpt2, TEXTS, pooling=["mean", "max"], progress=False)
    on_disk = collect_responses(tiny_gpt2, TEXTS, pooling=["mean", "max"], progress=False, offload=tmp_path)
    n_units = in_ram.units.n_units
    assert (tmp_path / "mean.bin").stat().st_size == len(TEXTS) * n_units * 4
    for p in ("mean", "max"):
        torch.testing.assert_close(on_disk[p], in_ram[p])
        from_file = torch.from_numpy(np.fromfile(tmp_path / f"{p}.bin", dtype=np.float32)).view(len(TEXTS), n_units)
        torch.testing.assert_close(from_file, in_ram[p])


def test_callable_unit_filters_are_keyed_by_the_hooks_they_pick(tiny_gpt2: LensModel, tmp_path: Path) -> None:
    corpus = ParallelCorpus({"en": ["one cat", "two dogs"], "es": ["un gato", "dos perros"]})
    first = collect_corpus_responses(
        tiny_gpt2, corpus, cache=tmp_path, units=lambda name: name == "blocks.0.mlp.hook_post", progress=False
    )
    second = collect_corpus_responses(
        tiny_gpt2, corpus, cache=tmp_path, units=lambda name: name == "blocks.1.mlp.hook_post", progress=False
    )
    assert first.units.hooks == ("blocks.0.mlp.hook_post",) and second.units.hooks == ("blocks.1.mlp.hook_post",)
    assert len(list(tmp_path.glob("responses-*"))) == 2
    same = collect_corpus_responses(tiny_gpt2, corpus, cache=tmp_path, units=["blocks.0.mlp.hook_post"], progress=False)
    assert len(list(tmp_path.glob("responses-*"))) == 2 and torch.equal(same["mean"], first["mean"])


def test_an_entry_missing_what_its_loader_needs_is_recomputed(tiny_gpt2: LensModel, tmp_path: Path) -> None:
    import json

    corpus = ParallelCorpus({"en": ["one cat", "two dogs"], "es": ["un gato", "dos perros"]})
    first = collect_corpus_responses(tiny_gpt2, corpus, cache=tmp_path, progress=False)
    (entry,) = tmp_path.glob("responses-*")
    header = json.loads((entry / "responses.json").read_text())
    del header["units"]
    (entry / "responses.json").write_text(json.dumps(header))
    with pytest.raises(ArtifactError, match=r"does not hold a complete artefact \(KeyError: 'units'\)"):
        Responses.load(entry)
    with pytest.warns(CorruptArtifactWarning):
        again = collect_corpus_responses(tiny_gpt2, corpus, cache=tmp_path, progress=False)
    torch.testing.assert_close(again["mean"], first["mean"])


def test_unit_labels_parse_back_to_their_units() -> None:
    index = UnitIndex(("blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post", "blocks.1.attn.hook_z"), (4, 3, 6))
    every = list(range(index.n_units))
    assert [index.parse(label) for label in index.labels(every)] == every
    assert [index.parse(str(u)) for u in every] == every
    assert index.parse(" L0.3 ") == 3  # block 0 has one hook: the short form is enough
    with pytest.raises(InputError, match=r"block 1 has 2 hooks here: name one, e\.g\. L1\.mlp#0"):
        index.parse("L1.2")
    with pytest.raises(InputError, match=r"no hook of block 1 named mlp_out \(blocks: \[0, 1\]\)"):
        index.parse("L1.mlp_out#2")
    with pytest.raises(InputIndexError, match="position 4 out of range"):
        index.parse("L0.4")
    with pytest.raises(InputIndexError, match=r"unit 13 out of range \[0, 13\)"):
        index.parse("13")


def test_non_finite_activations_are_named_where_they_first_appear() -> None:
    broken = xlens.load_model("tiny-gpt2", device="cpu")
    with torch.no_grad():
        for path, weight in broken.bridge.original_model.named_parameters():
            if "h.1." in path and "c_fc" in path and path.endswith("weight"):
                weight.fill_(float("inf"))
    with pytest.raises(NonFiniteError, match=r"at blocks\.1\.mlp\.hook_post in float32: check the model's weights"):
        collect_responses(broken, TEXTS[:2], progress=False)
