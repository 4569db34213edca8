"""Batching by a token budget, and the once-per-batch copy of pooled values to the host."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xlens.activations import collect_responses
from xlens.embeddings import sentence_embeddings
from xlens.errors import InputError
from xlens.models import LensModel
from xlens.models.lens import ForwardBatch, _budgeted

TEXTS = [
    "a",
    "a short one",
    "a considerably longer sentence than the others here",
    "mid length sentence",
    "x" * 70,
    "two words",
    "another sentence of some length",
    "y" * 33,
]


def reference_batches(lengths: list[int], limit: int, max_tokens: int | None) -> list[list[int]]:
    """Brute force: the longest-first order, then each batch grown while the padded size (rows x first row's
    length) and the row count allow it."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    out: list[list[int]] = []
    while order:
        take = 1
        while take < len(order) and take < limit:
            if max_tokens is not None and (take + 1) * lengths[order[0]] > max_tokens:
                break
            take += 1
        out.append(order[:take])
        order = order[take:]
    return out


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 50), min_size=1, max_size=40),
    limit=st.integers(1, 12),
    max_tokens=st.one_of(st.none(), st.integers(1, 200)),
)
def test_budgeted_batches_match_the_brute_force_reference(
    lengths: list[int], limit: int, max_tokens: int | None
) -> None:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    got = list(_budgeted(order, lengths, limit, max_tokens))
    assert got == reference_batches(lengths, limit, max_tokens)
    for rows in got:
        assert len(rows) <= limit
        assert len(rows) == 1 or max_tokens is None or len(rows) * max(lengths[i] for i in rows) <= max_tokens


def test_model_batches_respect_the_token_budget(tiny_gpt2: LensModel) -> None:
    batches = list(tiny_gpt2.batches(TEXTS, batch_size=8, max_tokens=100, max_length=64))
    shapes = [tuple(b.tokens.shape) for b in batches]
    # Byte tokens + BOS, longest first: 64 (71 truncated), 52, 34, 32, 20, 12, 10, 2; two rows of 64 or 52 (or
    # three of 34) would pass 100 padded tokens, four rows of 20 do not.
    assert shapes == [(1, 64), (1, 52), (2, 34), (4, 20)]
    assert sorted(i for b in batches for i in b.row_ids.tolist()) == list(range(len(TEXTS)))
    assert [tuple(b.tokens.shape) for b in tiny_gpt2.batches(TEXTS, batch_size=3, max_tokens=None)] == [
        (3, 71),
        (3, 32),
        (2, 10),
    ]


def test_bad_budgets_are_refused(tiny_gpt2: LensModel) -> None:
    with pytest.raises(InputError, match="max_tokens must be >= 1, got 0"):
        list(tiny_gpt2.batches(TEXTS, max_tokens=0))
    with pytest.raises(InputError, match="batch_size must be >= 1, got 0"):
        list(tiny_gpt2.batches(TEXTS, batch_size=0))


def test_default_batch_limit_follows_the_device(tiny_gpt2: LensModel) -> None:
    assert tiny_gpt2.batch_limit(None) == 16  # a CPU model
    assert tiny_gpt2.batch_limit(5) == 5


def test_results_do_not_depend_on_the_budget(tiny_model: LensModel) -> None:
    """Right padding with the mask: the same embeddings and responses whatever the batches."""
    wide = sentence_embeddings(tiny_model, TEXTS, batch_size=8, max_tokens=None, progress=False)
    for budget in (1, 40, 150):
        narrow = sentence_embeddings(tiny_model, TEXTS, batch_size=8, max_tokens=budget, progress=False)
        torch.testing.assert_close(narrow, wide, atol=1e-5, rtol=1e-4)
    a = collect_responses(tiny_model, TEXTS, pooling=["mean", "max"], max_tokens=None, progress=False)
    b = collect_responses(tiny_model, TEXTS, pooling=["mean", "max"], max_tokens=30, progress=False)
    for p in ("mean", "max"):
        torch.testing.assert_close(a.pooled[p], b.pooled[p], atol=1e-5, rtol=1e-4)
    assert torch.equal(a.token_counts, b.token_counts)
    assert a.token_counts.tolist() == [len(tiny_model.tokenize([t]).tokens[0]) for t in TEXTS]


def test_store_writes_rows_at_their_positions() -> None:
    mask = torch.ones((3, 2), dtype=torch.bool)
    batch = ForwardBatch(torch.zeros((3, 2), dtype=torch.long), mask, torch.tensor([4, 0, 2]))
    target = torch.zeros((5, 2, 3))
    batch.store(target, torch.arange(9, dtype=torch.float64).view(3, 3), 1)
    batch.flush()
    assert target.dtype == torch.float32
    assert target[:, 1].tolist() == [[3, 4, 5], [0, 0, 0], [6, 7, 8], [0, 0, 0], [0, 1, 2]]
    assert target[:, 0].abs().sum() == 0


@pytest.mark.cuda
def test_cuda_pooling_matches_cpu() -> None:
    """On a GPU the pooled values stay on the device until the batch ends, then reach the same host rows."""
    from xlens.models import load_model

    cpu = load_model("tiny-gemma3", device="cpu")
    gpu = load_model("tiny-gemma3", device="cuda", dtype="float32")
    want = sentence_embeddings(cpu, TEXTS, progress=False)
    got = sentence_embeddings(gpu, TEXTS, max_tokens=64, progress=False)
    assert got.device.type == "cpu"
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)
    a = collect_responses(cpu, TEXTS, progress=False)
    b = collect_responses(gpu, TEXTS, max_tokens=64, progress=False)
    torch.testing.assert_close(b.pooled["mean"], a.pooled["mean"], atol=1e-4, rtol=1e-3)
    bf16 = load_model("tiny-gemma3", device="cuda")
    assert bf16.dtype == torch.bfloat16
    assert sentence_embeddings(bf16, TEXTS, progress=False).dtype == torch.float32
