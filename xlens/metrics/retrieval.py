"""Cross-lingual sentence retrieval (Sundar et al. 2025): find each sentence's translation among all candidates.

For every query ``x_i`` of the source language, all ``n`` sentences ``y_j`` of the target language are ranked by a
score; the translation ``y_i`` should come first. Scores:

- ``"cosine"``: ``cos(x, y)``.
- ``"csls"`` (Conneau et al. 2018): ``2 cos(x, y) - r_Y(x) - r_X(y)``, where ``r_Y(x)`` is the mean cosine of
  ``x`` with its ``knn`` nearest neighbours among the target sentences (``r_X(y)`` likewise among the sources).
- ``"margin"`` (Artetxe & Schwenk 2019, ratio margin): ``cos(x, y) / ((r_Y(x) + r_X(y)) / 2)``.

Ties count against the translation: its rank is the number of candidates scoring *at least* as high as it,
itself included (``1 + #{j != i: score_ij >= score_ii}``). So a translation tied with another candidate is not
ranked first, and collapsed embeddings (all rows equal) retrieve nothing instead of everything.

Scores are computed in float32 (float64 for float64 input) on the input's device, with no reduced-precision
matmul: on a CPU without AMX, bf16/fp16 matmuls are no faster than fp32, and the rigorous error bound of an int8
matmul is too loose to certify ranks (for random unit vectors in 640 dimensions it leaves ~40% of all candidates
to re-check in fp32).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from xlens.metrics.alignment import MetricInputError, _check, _check_pair, _unit_rows

__all__ = ["RetrievalScores", "retrieval", "retrieval_matrix", "retrieval_ranks"]

Method = Literal["cosine", "csls", "margin"]
METHODS: tuple[str, ...] = ("cosine", "csls", "margin")


@dataclass(frozen=True)
class RetrievalScores:
    """Fractions of queries whose translation ranks first (``top1``) or within 5 (``top5``); ``mrr`` is the mean
    reciprocal rank. All in ``[0, 1]``."""

    top1: float
    top5: float
    mrr: float

    @classmethod
    def of_ranks(cls, ranks: Int[Tensor, " sentence"]) -> RetrievalScores:
        """The scores of the translations' ranks (1 = best) of a set of queries."""
        top1, top5, mrr = _summaries(ranks, dim=0)
        return cls(top1=top1.item(), top5=top5.item(), mrr=mrr.item())


def _compute_dtype(*tensors: object) -> torch.dtype:
    return torch.float64 if any(getattr(t, "dtype", None) == torch.float64 for t in tensors) else torch.float32


def _check_method(method: str, knn: int, n: int) -> None:
    if method not in METHODS:
        raise MetricInputError(f"unknown retrieval method {method!r}; use one of {METHODS}")
    if method != "cosine" and not 1 <= knn <= n:
        raise MetricInputError(f"knn={knn} must be between 1 and the number of sentences ({n}) for {method}")


def _scores(sim: Float[Tensor, "src tgt_lang tgt"], method: Method, knn: int) -> Float[Tensor, "src tgt_lang tgt"]:
    """Retrieval scores from cosines of square blocks ``sim[:, b, :]`` (one per target language ``b``).

    CSLS and margin are symmetric in (query, candidate), so one score tensor serves both directions.
    """
    if method == "cosine":
        return sim
    r_src = sim.topk(knn, dim=2).values.mean(2)[:, :, None]  # r_Y(x_i), per target language
    r_tgt = sim.topk(knn, dim=0).values.mean(0)[None]  # r_X(y_j)
    if method == "csls":
        return 2 * sim - (r_src + r_tgt)
    if (r_src.amin(dim=(0, 2)) + r_tgt.amin(dim=(0, 2)) <= 0).any():  # per target language
        raise MetricInputError(
            "ratio margin needs positive neighbourhood similarities (r_Y(x) + r_X(y) > 0); use method='csls'"
        )
    return sim / ((r_src + r_tgt) / 2)


@contextmanager
def _maybe_pool(device: torch.device) -> Iterator[ThreadPoolExecutor | None]:
    """Threads for the numpy rank counting on CPU; none elsewhere (torch counts on the device)."""
    if device.type != "cpu":
        yield None
        return
    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        yield pool


def _ranks(
    score: Float[Tensor, "src tgt_lang tgt"], pool: ThreadPoolExecutor | None
) -> tuple[Int[Tensor, "src tgt_lang"], Int[Tensor, "tgt_lang tgt"]]:
    """Pessimistic ranks of the translations in square score blocks, in both retrieval directions.

    ``rows[i, b] = #{j: score[i, b, j] >= score[i, b, i]}`` ranks target ``b``'s sentence ``i`` for source
    query ``i``; ``cols[b, j] = #{i: score[i, b, j] >= score[j, b, j]}`` ranks source sentence ``j`` for
    target ``b``'s query ``j``.
    """
    diag = score.diagonal(dim1=0, dim2=2)  # [tgt_lang, n]: diag[b, i] = score[i, b, i]
    if pool is None:
        return (score >= diag.T[:, :, None]).sum(2), (score >= diag[None]).sum(0)
    # On CPU numpy's compare and uint8 sums run ~4x faster than torch's; numpy releases the GIL, so threads
    # split the source rows.
    s = score.numpy()
    d_rows, d_cols = diag.T.contiguous().numpy(), diag.contiguous().numpy()
    mask = np.empty(s.shape, dtype=np.bool_)

    def count(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        m = mask[lo:hi]
        np.greater_equal(s[lo:hi], d_rows[lo:hi, :, None], out=m)
        rows = m.view(np.uint8).sum(2, dtype=np.int32)
        np.greater_equal(s[lo:hi], d_cols[None], out=m)
        return rows, np.add.reduce(m.view(np.uint8), axis=0, dtype=np.int32)

    bounds = np.linspace(0, s.shape[0], max(1, torch.get_num_threads()) + 1).astype(int)
    rows, cols = zip(*pool.map(count, bounds[:-1], bounds[1:]), strict=True)
    return torch.from_numpy(np.concatenate(rows)), torch.from_numpy(np.add.reduce(cols))


def _summaries(ranks: Tensor, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """(top1, top5, mrr) of integer ranks along ``dim``, as float64."""
    r = ranks.to(torch.float64)
    return (r == 1).to(r.dtype).mean(dim), (r <= 5).to(r.dtype).mean(dim), (1 / r).mean(dim)


def retrieval_ranks(
    X: Float[Tensor, "sentence d_model"],
    Y: Float[Tensor, "sentence d_model"],
    method: Method = "cosine",
    knn: int = 10,
) -> Int[Tensor, " sentence"]:
    """Rank (1 = best) of translation ``Y[i]`` among all rows of ``Y`` for query ``X[i]``; ties count against it.

    Raises:
        MetricInputError: shapes differ, NaN/inf or all-zero rows, unknown method, ``knn`` outside ``[1, n]``.
    """
    dtype = _compute_dtype(X, Y)
    x, y = _check_pair(X, Y, min_rows=1, dtype=dtype)
    _check_method(method, knn, x.shape[0])
    sim = (_unit_rows(x, "X") @ _unit_rows(y, "Y").T)[:, None]
    with _maybe_pool(sim.device) as pool:
        rows, _ = _ranks(_scores(sim, method, knn), pool)
    return rows[:, 0].to(device=x.device, dtype=torch.int64)


def retrieval(
    X: Float[Tensor, "sentence d_model"],
    Y: Float[Tensor, "sentence d_model"],
    method: Method = "cosine",
    knn: int = 10,
) -> RetrievalScores:
    """Top-1, top-5 accuracy and MRR of retrieving each ``Y[i]`` for query ``X[i]`` among all rows of ``Y``."""
    return RetrievalScores.of_ranks(retrieval_ranks(X, Y, method, knn))


def retrieval_matrix(
    E: Float[Tensor, "lang sentence d_model"],
    method: Method = "cosine",
    knn: int = 10,
    block_langs: int = 16,
    ranks: bool = False,
) -> dict[str, Tensor]:
    """``retrieval(E[src], E[tgt], method, knn)`` for every ordered pair of distinct languages.

    Returns float64 ``[lang, lang]`` tables ``"top1"``, ``"top5"``, ``"mrr"`` on ``E``'s device, indexed
    ``[src, tgt]``; the diagonal (a language retrieving itself) is NaN. Each unordered pair's cosines are computed
    once and serve both directions; a source language is scored against ``block_langs`` target languages per
    matmul (memory: about ``6 * block_langs * sentence²`` bytes in float32). The cost is the matmuls,
    ``lang² sentence² d_model`` flops: all 204 FLORES languages x 985 (deduplicated) sentences x 640 dims is
    25.7 TFLOP, 110 s on two CPU cores whose fp32 matmul runs at about 300 GFLOPS (``xlens bench retrieval``).

    With ``ranks``, also ``"ranks"``: the int32 ``[src, tgt, sentence]`` rank of every query's translation (what
    a paired bootstrap over sentences needs); the diagonal is 0.
    """
    dtype = _compute_dtype(E)
    e = _check(E, "E", 3, min_rows=1, dtype=dtype)
    n_lang, n, d_model = e.shape
    _check_method(method, knn, n)
    if block_langs < 1:
        raise MetricInputError(f"block_langs={block_langs} must be at least 1")
    flat = _unit_rows(e, "E").reshape(n_lang * n, d_model)
    out = {
        k: torch.full((n_lang, n_lang), torch.nan, dtype=torch.float64, device=e.device)
        for k in ("top1", "top5", "mrr")
    }
    per_query = torch.zeros((n_lang, n_lang, n) if ranks else (0,), dtype=torch.int32)
    block = min(block_langs, max(n_lang - 1, 1))
    buf = torch.empty(n * block * n, dtype=dtype, device=e.device)  # reused: fresh 64 MB buffers cost page faults
    with _maybe_pool(e.device) as pool:
        for src in range(n_lang - 1):
            for t0 in range(src + 1, n_lang, block):
                t1 = min(t0 + block, n_lang)
                sim = buf[: n * (t1 - t0) * n].view(n, (t1 - t0) * n)
                torch.matmul(flat[src * n : (src + 1) * n], flat[t0 * n : t1 * n].T, out=sim)
                rows, cols = _ranks(_scores(sim.view(n, t1 - t0, n), method, knn), pool)
                if ranks:
                    per_query[src, t0:t1] = rows.T.to("cpu", torch.int32)
                    per_query[t0:t1, src] = cols.to("cpu", torch.int32)
                fwd, bwd = _summaries(rows, dim=0), _summaries(cols, dim=1)
                for key, f, b in zip(("top1", "top5", "mrr"), fwd, bwd, strict=True):
                    out[key][src, t0:t1] = f.to(e.device)
                    out[key][t0:t1, src] = b.to(e.device)
    return {**out, "ranks": per_query} if ranks else dict(out)
