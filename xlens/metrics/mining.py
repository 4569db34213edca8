"""Bitext mining as in BUCC (Zweigenbaum et al. 2017), scored by margin (Artetxe & Schwenk 2019).

Two monolingual sets ``X`` (source) and ``Y`` (target, e.g. English) hide some translation pairs among sentences
that have none. Each candidate pair is scored by the ratio margin

    margin(x, y) = cos(x, y) / ((r_Y(x) + r_X(y)) / 2)

where ``r_Y(x)`` is the mean cosine of ``x`` with its ``k`` nearest neighbours in ``Y`` (``r_X(y)`` likewise in
``X``). As in the LASER reference (facebookresearch/LASER, ``source/mine_bitexts.py``), each sentence proposes its
best-scoring neighbour among its ``k`` nearest in the other set (forward and backward), and:

- ``"max"`` (LASER's default): all proposals sorted by score, kept greedily so that no sentence is used twice;
- ``"intersect"``: the pairs proposed in both directions.

A threshold on the margin is chosen on a train part to maximise F1 against its gold pairs (LASER's
``tasks/bucc/bucc.py``: the midpoint between the best cut's score and the next one), then applied to the test part.

Neighbours are found block by block (:func:`knn`): memory holds ``block x len(Y)`` similarities, never ``X x Y``.
Scores are float32, or float64 for float64 input.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from xlens.metrics.alignment import MetricInputError, _check, _unit_rows

__all__ = ["Candidates", "MiningScores", "best_threshold", "knn", "mine", "mining_scores"]

Retrieval = Literal["max", "intersect"]
RETRIEVALS: tuple[str, ...] = ("max", "intersect")


def knn(
    X: Float[Tensor, "n d_model"], Y: Float[Tensor, "m d_model"], k: int, block: int = 4096
) -> tuple[Float[Tensor, "n k"], Int[Tensor, "n k"]]:
    """The ``k`` largest cosine similarities of each row of ``X`` with the rows of ``Y``, and their indices (in
    decreasing order), computed ``block`` rows of ``X`` at a time."""
    x, y = _unit_rows(X, "X"), _unit_rows(Y, "Y")
    if not 1 <= k <= y.shape[0]:
        raise MetricInputError(f"k={k} must be between 1 and the number of target sentences ({y.shape[0]})")
    sims, ids = [], []
    for start in range(0, x.shape[0], block):
        top = (x[start : start + block] @ y.T).topk(k, dim=1)
        sims.append(top.values)
        ids.append(top.indices)
    return torch.cat(sims), torch.cat(ids)


@dataclass(frozen=True)
class Candidates:
    """Mined pairs: source index, target index and margin score, in decreasing order of score."""

    src: Int[Tensor, " pair"]
    tgt: Int[Tensor, " pair"]
    score: Float[Tensor, " pair"]


def _proposals(
    sim: Tensor, ids: Tensor, r_own: Tensor, r_other: Tensor
) -> tuple[Float[Tensor, " n"], Int[Tensor, " n"]]:
    """Each row's best margin among its k nearest neighbours, and that neighbour."""
    margins = sim / ((r_own[:, None] + r_other[ids]) / 2)
    best = margins.argmax(dim=1)
    rows = torch.arange(sim.shape[0], device=sim.device)
    return margins[rows, best], ids[rows, best]


def mine(
    X: Float[Tensor, "n d_model"],
    Y: Float[Tensor, "m d_model"],
    k: int = 4,
    retrieval: Retrieval = "max",
    block: int = 4096,
) -> Candidates:
    """Candidate translation pairs between ``X`` and ``Y`` with their margin scores (see the module docstring).

    Raises:
        MetricInputError: NaN/inf or all-zero rows, widths that differ, ``k`` outside ``[1, min(n, m)]``, an
            unknown ``retrieval``.
    """
    if retrieval not in RETRIEVALS:
        raise MetricInputError(f"unknown retrieval {retrieval!r}; use one of {RETRIEVALS}")
    dtype = torch.float64 if torch.float64 in (X.dtype, Y.dtype) else torch.float32
    x, y = _check(X, "X", 2, 1, dtype), _check(Y, "Y", 2, 1, dtype)
    if x.shape[1] != y.shape[1] or x.device != y.device:
        raise MetricInputError(f"X {tuple(x.shape)} on {x.device} and Y {tuple(y.shape)} on {y.device} must share "
                               "their width and device")  # fmt: skip
    if not 1 <= k <= min(x.shape[0], y.shape[0]):
        raise MetricInputError(f"k={k} must be between 1 and the smaller set's size ({min(x.shape[0], y.shape[0])})")
    fwd_sim, fwd_ids = knn(x, y, k, block)
    bwd_sim, bwd_ids = knn(y, x, k, block)
    r_x, r_y = fwd_sim.mean(dim=1), bwd_sim.mean(dim=1)
    fwd_score, fwd_best = _proposals(fwd_sim, fwd_ids, r_x, r_y)
    bwd_score, bwd_best = _proposals(bwd_sim, bwd_ids, r_y, r_x)
    src_x, src_y = torch.arange(x.shape[0], device=x.device), torch.arange(y.shape[0], device=y.device)
    if retrieval == "intersect":
        agree = bwd_best[fwd_best] == src_x
        src, tgt, score = src_x[agree], fwd_best[agree], fwd_score[agree]
        order = score.argsort(descending=True, stable=True)
        return Candidates(src[order].cpu(), tgt[order].cpu(), score[order].cpu())
    src = torch.cat([src_x, bwd_best]).tolist()
    tgt = torch.cat([fwd_best, src_y]).tolist()
    score = torch.cat([fwd_score, bwd_score])
    kept: list[int] = []
    seen_src, seen_tgt = set(), set()
    for i in score.argsort(descending=True, stable=True).tolist():
        if src[i] not in seen_src and tgt[i] not in seen_tgt:
            seen_src.add(src[i])
            seen_tgt.add(tgt[i])
            kept.append(i)
    index = torch.tensor(kept, dtype=torch.long)
    return Candidates(torch.tensor(src)[index], torch.tensor(tgt)[index], score.cpu()[index])


def _is_gold(candidates: Candidates, gold: Collection[tuple[int, int]]) -> list[bool]:
    pairs = set(gold)
    return [(s, t) in pairs for s, t in zip(candidates.src.tolist(), candidates.tgt.tolist(), strict=True)]


def best_threshold(candidates: Candidates, gold: Collection[tuple[int, int]]) -> float:
    """The margin threshold that maximises F1 of the candidates above it against ``gold`` (pairs of indices):
    midway between the best cut's score and the next candidate's (LASER's ``bucc.py``). As there, 0.0 when no
    candidate is a gold pair (no cut has an F1 above 0)."""
    if not gold:
        raise MetricInputError("no gold pairs to choose a threshold on")
    correct = _is_gold(candidates, gold)
    scores = candidates.score.tolist()
    best_f1, threshold, hits = 0.0, 0.0, 0
    for i, hit in enumerate(correct):
        hits += hit
        if hits == 0:
            continue
        precision, recall = hits / (i + 1), hits / len(gold)
        f1 = 2 * precision * recall / (precision + recall)
        if f1 > best_f1:
            best_f1 = f1
            threshold = (scores[i] + scores[i + 1]) / 2 if i + 1 < len(scores) else scores[i]
    return threshold


@dataclass(frozen=True)
class MiningScores:
    """Precision, recall and F1 of the candidates at or above ``threshold`` against the gold pairs."""

    precision: float
    recall: float
    f1: float
    threshold: float
    mined: int
    gold: int


def mining_scores(candidates: Candidates, gold: Collection[tuple[int, int]], threshold: float) -> MiningScores:
    """Score the candidates whose margin is at least ``threshold`` against ``gold`` (pairs of indices)."""
    if not gold:
        raise MetricInputError("no gold pairs to score against")
    keep = (candidates.score >= threshold).tolist()
    correct = _is_gold(candidates, gold)
    mined = sum(keep)
    hits = sum(c for c, k in zip(correct, keep, strict=True) if k)
    precision = hits / mined if mined else 0.0
    recall = hits / len(set(gold))
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return MiningScores(precision, recall, f1, threshold, mined, len(set(gold)))
