"""Retrieval ranks and scores against brute-force loops, ties, and the all-pairs matrix against pairwise calls."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xlens.metrics import MetricInputError, RetrievalScores, retrieval, retrieval_matrix, retrieval_ranks
from xlens.metrics.retrieval import _ranks, _scores

METHODS = ("cosine", "csls", "margin")

# ---- brute-force reference --------------------------------------------------------------------------------


def ref_scores(X: np.ndarray, Y: np.ndarray, method: str, knn: int) -> np.ndarray:
    n = len(X)
    cos = np.array([[X[i] @ Y[j] / (np.linalg.norm(X[i]) * np.linalg.norm(Y[j])) for j in range(n)] for i in range(n)])
    if method == "cosine":
        return cos
    r_y = [np.mean(sorted(cos[i, :], reverse=True)[:knn]) for i in range(n)]  # neighbours of x_i among Y
    r_x = [np.mean(sorted(cos[:, j], reverse=True)[:knn]) for j in range(n)]  # neighbours of y_j among X
    out = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            if method == "csls":
                out[i, j] = 2 * cos[i, j] - r_y[i] - r_x[j]
            else:
                out[i, j] = cos[i, j] / ((r_y[i] + r_x[j]) / 2)
    return out


def ref_ranks(X: np.ndarray, Y: np.ndarray, method: str = "cosine", knn: int = 10) -> np.ndarray:
    """Rank of y_i for query x_i: candidates scoring at least as high, the translation itself included."""
    s = ref_scores(X, Y, method, knn)
    return np.array([sum(s[i, j] >= s[i, i] for j in range(len(X))) for i in range(len(X))])


def ref_summary(ranks: np.ndarray) -> tuple[float, float, float]:
    return float(np.mean(ranks == 1)), float(np.mean(ranks <= 5)), float(np.mean(1 / ranks))


def translations(n: int, d: int, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Y = noisy X with a shared positive offset (so margin denominators are positive)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) + 1.5
    return X, X + noise * rng.normal(size=(n, d)) + 0.3 * rng.normal(size=d)


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a)


# ---- pairwise retrieval vs brute force --------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 14),
    st.integers(2, 6),
    st.integers(0, 2**32 - 1),
    st.sampled_from(METHODS),
    st.integers(1, 14),
    st.sampled_from([0.3, 1.0, 3.0]),
)
def test_ranks_match_brute_force(n: int, d: int, seed: int, method: str, knn: int, noise: float) -> None:
    X, Y = translations(n, d, seed, noise)
    knn = min(knn, n)
    if method == "margin" and (ref_scores(X, Y, "cosine", knn) < 0).any():
        # Negative cosines can make a neighbourhood mean non-positive; then the ratio margin must refuse.
        r_y = np.sort(ref_scores(X, Y, "cosine", knn), axis=1)[:, -knn:].mean(1)
        r_x = np.sort(ref_scores(X, Y, "cosine", knn), axis=0)[-knn:].mean(0)
        if r_y.min() + r_x.min() <= 0:
            with pytest.raises(MetricInputError, match="positive neighbourhood"):
                retrieval_ranks(t(X), t(Y), "margin", knn)
            return
    expected = ref_ranks(X, Y, method, knn)
    got = retrieval_ranks(t(X), t(Y), method, knn)  # type: ignore[arg-type]
    assert got.dtype == torch.int64
    assert got.tolist() == expected.tolist()
    s = retrieval(t(X), t(Y), method, knn)  # type: ignore[arg-type]
    assert (s.top1, s.top5, s.mrr) == pytest.approx(ref_summary(expected), abs=1e-15)


def test_known_values_and_float32_path() -> None:
    X, Y = translations(40, 8, seed=0, noise=2.0)
    expected = ref_ranks(X, Y)
    assert expected.max() > 1 and expected.min() == 1  # a case that is neither perfect nor hopeless
    s = retrieval(t(X).float(), t(Y).float())
    assert isinstance(s, RetrievalScores)
    assert (s.top1, s.top5, s.mrr) == pytest.approx(ref_summary(expected), abs=1e-12)


def test_ties_count_against_the_translation() -> None:
    eye = np.eye(3)
    X, Y = eye, eye[[0, 0, 2]]  # y_1 duplicates y_0; x_1 matches nothing (all cosines 0)
    for method in ("cosine", "csls"):
        assert retrieval_ranks(t(X), t(Y), method, knn=1).tolist() == [2, 3, 1]
        assert ref_ranks(X, Y, method, knn=1).tolist() == [2, 3, 1]
    s = retrieval(t(X), t(Y))
    assert (s.top1, s.top5, s.mrr) == pytest.approx((1 / 3, 1.0, (1 / 2 + 1 / 3 + 1) / 3))
    # Collapsed embeddings retrieve nothing: every candidate ties with the translation.
    same = torch.ones(7, 4)
    assert retrieval_ranks(same, same).tolist() == [7] * 7
    assert retrieval(same, same).top1 == 0.0


def test_identity_rotation_permutation_and_chance() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 32))
    Q, _ = np.linalg.qr(rng.normal(size=(32, 32)))
    Y = X + 2.0 * rng.normal(size=X.shape)
    for method in METHODS[:2]:
        assert retrieval(t(X), t(3 * X), method) == RetrievalScores(1.0, 1.0, 1.0)  # type: ignore[arg-type]
        # Rotating both languages keeps every cosine, so every rank.
        ranks = retrieval_ranks(t(X), t(Y), method)  # type: ignore[arg-type]
        assert retrieval_ranks(t(X @ Q), t(Y @ Q), method).tolist() == ranks.tolist()  # type: ignore[arg-type]
    # Permuting the sentences of both languages permutes the ranks.
    p = rng.permutation(200)
    assert retrieval_ranks(t(X[p]), t(Y[p])).tolist() == retrieval_ranks(t(X), t(Y))[p].tolist()
    # Misaligned rows: y_i = x_{p(i)} with p a derangement, so x_i's own copy always outranks "its translation".
    shift = np.roll(np.arange(200), 1)
    assert retrieval(t(X), t(X[shift])).top1 == 0.0
    # Independent embeddings: chance level, mean reciprocal rank of a uniform rank is H_n / n ≈ 0.029.
    s = retrieval(t(X), t(rng.normal(size=(200, 32))))
    assert s.top1 <= 0.04 and s.top5 <= 0.08 and 0.005 < s.mrr < 0.07


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_rank_like_their_float32_values(dtype: torch.dtype) -> None:
    X, Y = translations(30, 8, seed=2, noise=2.0)
    x, y = t(X).to(dtype), t(Y).to(dtype)
    assert retrieval_ranks(x, y).tolist() == retrieval_ranks(x.float(), y.float()).tolist()
    assert retrieval_ranks(x, y).tolist() == ref_ranks(x.double().numpy(), y.double().numpy()).tolist()


# ---- the all-pairs matrix ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("block_langs", [1, 2, 16])
def test_matrix_equals_pairwise_retrieval(method: str, block_langs: int) -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=(11, 5)) + 1.0
    E = t(np.stack([base + rng.normal(size=base.shape) * (0.5 + a / 2) for a in range(5)]))
    out = retrieval_matrix(E, method, knn=3, block_langs=block_langs)  # type: ignore[arg-type]
    assert set(out) == {"top1", "top5", "mrr"}
    for a in range(5):
        for b in range(5):
            if a == b:
                assert all(torch.isnan(out[k][a, a]) for k in out)
                continue
            expected = ref_summary(ref_ranks(E[a].numpy(), E[b].numpy(), method, 3))
            got = (out["top1"][a, b].item(), out["top5"][a, b].item(), out["mrr"][a, b].item())
            assert got == pytest.approx(expected, abs=1e-15), (a, b)


def test_matrix_float32_equals_pairwise_float32() -> None:
    E = torch.nn.functional.normalize(torch.randn(4, 30, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    E = E + 0.3 * E[0]
    out = retrieval_matrix(E)
    for a in range(4):
        for b in range(4):
            if a != b:
                s = retrieval(E[a], E[b])
                assert (out["top1"][a, b], out["top5"][a, b], out["mrr"][a, b]) == pytest.approx(
                    (s.top1, s.top5, s.mrr), abs=1e-12
                )


def test_numpy_and_torch_rank_counting_agree() -> None:
    # Coarse integer scores, so ties are everywhere; the torch path is the one used on accelerators.
    g = torch.Generator().manual_seed(0)
    score = torch.randint(0, 4, (9, 3, 9), generator=g).float()
    rows, cols = _ranks(score, None)
    with ThreadPoolExecutor(2) as pool:
        rows_np, cols_np = _ranks(score, pool)
    assert torch.equal(rows.long(), rows_np.long()) and torch.equal(cols.long(), cols_np.long())
    s = score.numpy()
    for b in range(3):
        for i in range(9):
            assert rows[i, b] == sum(s[i, b, j] >= s[i, b, i] for j in range(9))
            assert cols[b, i] == sum(s[j, b, i] >= s[i, b, i] for j in range(9))


def test_margin_checks_each_target_language_on_its_own() -> None:
    # knn=1: each block's denominators are positive (min row max + min column max > 0), but mixing block 0's
    # smallest r_Y(x) with block 1's smallest r_X(y) would not be; the blocked scores must equal per-block ones.
    block = torch.tensor([[0.5, 0.5], [-0.1, -0.2]])
    sim = torch.stack([block, block.T], dim=1)  # [src, tgt_lang, tgt]
    got = _scores(sim, "margin", knn=1)
    for b in range(2):
        assert torch.equal(got[:, b], _scores(sim[:, b : b + 1], "margin", knn=1)[:, 0])
    assert torch.allclose(got[:, 0], block / (torch.tensor([[0.5], [-0.1]]) + torch.tensor([[0.5, 0.5]])) * 2)


# ---- bad input --------------------------------------------------------------------------------------------


def test_bad_inputs_raise_one_clear_error() -> None:
    X = torch.randn(6, 3)
    cases = [
        (lambda: retrieval(X, X[:5]), "same shape"),
        (lambda: retrieval(X, X, "dot"), "unknown retrieval method"),  # type: ignore[arg-type]
        (lambda: retrieval(X, X, "csls", knn=7), "knn=7"),
        (lambda: retrieval(X, X, "csls", knn=0), "knn=0"),
        (lambda: retrieval(X, torch.cat([X[:5], torch.zeros(1, 3)])), "all-zero row"),
        (lambda: retrieval(X, X / 0), "NaN or inf"),
        (lambda: retrieval(X.abs(), -X.abs(), "margin", knn=2), "positive neighbourhood"),
        (lambda: retrieval_matrix(X), "3-D"),
        (lambda: retrieval_matrix(X[None].expand(2, 6, 3), block_langs=0), "block_langs"),
    ]
    for call, message in cases:
        with pytest.raises(MetricInputError, match=message):
            call()


@pytest.mark.cuda
@pytest.mark.parametrize("method", METHODS)
def test_cuda_matches_cpu(method: str) -> None:
    rng = np.random.default_rng(4)
    E = t(np.stack([rng.normal(size=(20, 6)) + 1.0 for _ in range(3)]))
    cpu, gpu = retrieval_matrix(E, method, knn=3), retrieval_matrix(E.cuda(), method, knn=3)  # type: ignore[arg-type]
    for k in cpu:
        assert gpu[k].device.type == "cuda"
        assert torch.allclose(gpu[k].cpu(), cpu[k], equal_nan=True)
