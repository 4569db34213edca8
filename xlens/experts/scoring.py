"""Per-unit expertise scores: how well one unit's pooled response separates a language from the rest.

This is the numeric core of "finding experts" (Suau et al. 2022, apple/ml-selfcond), which scores every unit with
``sklearn.metrics.average_precision_score`` in a Python loop over units. Here the same numbers come out of one
sort per unit, shared by all languages, vectorised over chunks of units on the responses' device.

All scores are exact with ties (tied responses form one threshold, as in sklearn) and are returned in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from xlens.errors import ExpertInputError


@dataclass
class UnitStats:
    """Per-language summary of each unit's pooled responses (float64, shape ``[lang, unit]``).

    "on" = the language's sentences (positives), "off" = all other sentences (negatives), "all" = every sentence
    of every language (a language-neutral value: the same in every row). Percentiles use numpy's default linear
    interpolation (``np.median``, ``np.percentile(x, 90)``).
    """

    on_p50: Float[Tensor, "lang unit"]
    on_mean: Float[Tensor, "lang unit"]
    off_p50: Float[Tensor, "lang unit"]
    off_mean: Float[Tensor, "lang unit"]
    on_p90: Float[Tensor, "lang unit"]
    all_p50: Float[Tensor, "lang unit"]
    all_mean: Float[Tensor, "lang unit"]


def average_precision(
    responses: Float[Tensor, "sentence unit"],
    labels: Bool[Tensor, " sentence"],
    chunk_units: int | None = None,
) -> Float[Tensor, " unit"]:
    """Average precision of each unit as a detector of ``labels``.

    Equals ``sklearn.metrics.average_precision_score(labels, responses[:, u])`` for every unit ``u``, ties
    included. A constant unit scores the prevalence ``P / (P + N)``.

    Raises:
        ExpertInputError: labels lack positives or negatives, responses hold NaN/inf, or shapes disagree.
    """
    return one_vs_rest(responses, _binary_ids(labels), 2, "ap", chunk_units)[1]


def auroc(
    responses: Float[Tensor, "sentence unit"],
    labels: Bool[Tensor, " sentence"],
    chunk_units: int | None = None,
) -> Float[Tensor, " unit"]:
    """Area under the ROC curve of each unit as a detector of ``labels``.

    Equals ``sklearn.metrics.roc_auc_score(labels, responses[:, u])`` for every unit ``u`` (Mann-Whitney U with
    average ranks for ties). A constant unit scores 0.5.

    Raises:
        ExpertInputError: labels lack positives or negatives, responses hold NaN/inf, or shapes disagree.
    """
    return one_vs_rest(responses, _binary_ids(labels), 2, "auroc", chunk_units)[1]


def one_vs_rest(
    responses: Float[Tensor, "sentence unit"],
    lang_ids: Int[Tensor, " sentence"],
    n_langs: int,
    metric: Literal["ap", "auroc"] = "ap",
    chunk_units: int | None = None,
) -> Float[Tensor, "lang unit"]:
    """Score every unit for every language against all other languages.

    Row ``l`` equals ``average_precision`` (or ``auroc``) with labels ``lang_ids == l``. Each unit is sorted once
    for all languages; units are processed ``chunk_units`` at a time (default: 2**16 sentence-unit elements on
    CPU, to stay in cache, 2**24 on accelerators) on the device the responses live on, so memory stays bounded
    for any number of units. Constant units score the prevalence ``P / (P + N)`` (AP) or 0.5 (AUROC), as sklearn.

    Raises:
        ExpertInputError: a language has no sentences or all of them, ``lang_ids`` fall outside
            ``[0, n_langs)``, responses hold NaN/inf, shapes disagree, or ``metric`` is unknown.
    """
    if metric not in ("ap", "auroc"):
        raise ExpertInputError(f"metric must be 'ap' or 'auroc', got {metric!r}.")
    lang_ids, counts = _check_inputs(responses, lang_ids, n_langs)
    n_sentences, n_units = responses.shape
    chunk = _chunk_size(n_sentences, chunk_units, responses.device)
    out = torch.empty(n_langs, n_units, dtype=torch.float64, device=responses.device)
    for start in range(0, n_units, chunk):
        keys, _, langs = _sorted_chunk(responses[:, start : start + chunk], lang_ids)
        score = _ap_chunk if metric == "ap" else _auroc_chunk
        out[:, start : start + chunk] = score(keys, langs, counts).T
    return out


def unit_statistics(
    responses: Float[Tensor, "sentence unit"],
    lang_ids: Int[Tensor, " sentence"],
    n_langs: int,
    chunk_units: int | None = None,
) -> UnitStats:
    """Median, mean and 90th percentile of each unit's responses on each language, median/mean on the rest and
    on all sentences.

    Percentiles match numpy's default (linear interpolation; the median of an even count averages the two
    middle values, unlike ``torch.median``). One sort per unit serves all languages.

    Raises:
        ExpertInputError: as for ``one_vs_rest``.
    """
    lang_ids, counts = _check_inputs(responses, lang_ids, n_langs)
    n_sentences, n_units = responses.shape
    chunk = _chunk_size(n_sentences, chunk_units, responses.device)
    shape = (n_langs, n_units)
    stats = UnitStats(*(torch.empty(shape, dtype=torch.float64, device=responses.device) for _ in range(7)))
    for start in range(0, n_units, chunk):
        cols = slice(start, start + chunk)
        _, order, langs = _sorted_chunk(responses[:, cols], lang_ids)
        values = responses[:, cols].T.double().gather(1, order)
        on_sum = torch.zeros(values.shape[0], n_langs, dtype=torch.float64, device=values.device)
        on_sum.scatter_add_(1, langs, values)
        off_sum = values.sum(dim=1, keepdim=True) - on_sum
        stats.on_mean[:, cols] = (on_sum / counts).T
        stats.off_mean[:, cols] = (off_sum / (n_sentences - counts)).T
        # Running counts of positives/negatives locate order statistics without gathering each language.
        seen = torch.arange(1, n_sentences + 1, device=values.device)
        stats.all_mean[:, cols] = values.mean(dim=1)
        # The median of every sentence sits at fixed positions of the descending order (numpy's: mean of the two
        # middle values for an even count).
        middle = values[:, [n_sentences - 1 - (n_sentences - 1) // 2, n_sentences - 1 - n_sentences // 2]]
        stats.all_p50[:, cols] = middle.mean(dim=1)
        for lang, n_on in enumerate(counts.tolist()):
            on_seen = (langs == lang).cumsum(dim=1)
            off_seen = seen - on_seen
            stats.on_p50[lang, cols] = _quantile(values, on_seen, n_on, 0.5)
            stats.on_p90[lang, cols] = _quantile(values, on_seen, n_on, 0.9)
            stats.off_p50[lang, cols] = _quantile(values, off_seen, n_sentences - n_on, 0.5)
    return stats


def _ap_chunk(
    keys: Tensor, langs: Int[Tensor, "unit sentence"], counts: Int[Tensor, " lang"]
) -> Float[Tensor, "unit lang"]:
    """AP = (1/P) * sum over positives i of the precision at the end of i's tie group (keys sorted descending)."""
    _, group_end = _tie_groups(keys)
    true_pos = _own_language_counts(langs, group_end, len(counts))
    precision = true_pos.double().div_(group_end + 1)  # group_end + 1 sentences score >= this one
    out = torch.zeros(keys.shape[0], len(counts), dtype=torch.float64, device=keys.device)
    return out.scatter_add_(1, langs, precision) / counts


def _own_language_counts(
    langs: Int[Tensor, "unit sentence"], group_end: Int[Tensor, "unit sentence"], n_langs: int
) -> Int[Tensor, "unit sentence"]:
    """For each sorted position: how many sentences of its own language lie at or before ``group_end``."""
    # All languages are counted by one cumsum: each language owns a `width`-bit field of an int64 (counts stay
    # below 2**width, so fields never carry into each other). Many languages need several words.
    width = langs.shape[1].bit_length()
    per_word = 63 // width
    mask = (1 << width) - 1
    if n_langs <= per_word:
        field = langs * width
        packed = (torch.ones_like(langs) << field).cumsum(dim=1).gather(1, group_end)
        return (packed >> field) & mask
    counts = torch.zeros_like(langs)
    for first in range(0, n_langs, per_word):
        offset = langs - first
        in_word = (offset >= 0) & (offset < per_word)
        field = offset.clamp_(0, per_word - 1) * width
        packed = (in_word.long() << field).cumsum(dim=1).gather(1, group_end)
        counts = torch.where(in_word, (packed >> field) & mask, counts)
    return counts


def _auroc_chunk(
    keys: Tensor, langs: Int[Tensor, "unit sentence"], counts: Int[Tensor, " lang"]
) -> Float[Tensor, "unit lang"]:
    """Mann-Whitney: AUROC = (rank sum of positives - P(P+1)/2) / (P N), ranks ascending, ties averaged."""
    n_units, n_sentences = keys.shape
    group_start, group_end = _tie_groups(keys)
    # Keys are sorted descending, so descending positions start..end hold ascending ranks S-end..S-start.
    rank = n_sentences - (group_start + group_end).double() / 2
    rank_sum = torch.zeros(n_units, len(counts), dtype=torch.float64, device=keys.device)
    rank_sum.scatter_add_(1, langs, rank)
    n_pos = counts.double()
    n_neg = n_sentences - n_pos
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _tie_groups(keys: Tensor) -> tuple[Int[Tensor, "unit sentence"], Int[Tensor, "unit sentence"]]:
    """First and last position of the run of equal keys that each sorted position belongs to."""
    n_units, n_sentences = keys.shape
    position = torch.arange(n_sentences, device=keys.device).expand(n_units, -1)
    is_first = torch.ones_like(keys, dtype=torch.bool)
    is_first[:, 1:] = keys[:, 1:] != keys[:, :-1]
    if bool(is_first.all()):  # no ties: every run is one position long
        return position, position
    is_last = torch.ones_like(keys, dtype=torch.bool)
    is_last[:, :-1] = is_first[:, 1:]
    # Running max of run starts forwards, running min of run ends backwards.
    group_start = torch.where(is_first, position, 0).cummax(dim=1).values
    group_end = torch.where(is_last, position, n_sentences).flip(1).cummin(dim=1).values.flip(1)
    return group_start, group_end


def _sorted_chunk(
    chunk: Float[Tensor, "sentence unit"], lang_ids: Int[Tensor, " sentence"]
) -> tuple[Tensor, Int[Tensor, "unit sentence"], Int[Tensor, "unit sentence"]]:
    """Sort each unit's responses in descending order.

    Returns tie keys (equal exactly where the sorted responses are equal), the sentence order, and the language
    of each sorted sentence.
    """
    x = chunk.T.contiguous()  # rows of sentences, so each unit's sort runs over contiguous memory
    n_sentences = x.shape[1]
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        values, order = torch.sort(x.double(), dim=1, descending=True)
        return values, order, _languages(lang_ids, order)
    # Pack (descending value, sentence) into one int64 and sort the keys alone: several times faster than an
    # argsort (numpy's SIMD sort on CPU). Widening to float32 is exact; "+ 0.0" turns -0.0 into +0.0 so they tie.
    bits = (x.float() + 0.0).view(torch.int32)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # compares as int32 exactly as the floats compare
    index_bits = max(1, (n_sentences - 1).bit_length())
    sentence = torch.arange(n_sentences, device=x.device)
    packed = _sort_rows(((2**31 - 1 - ordered.long()) << index_bits) | sentence)
    order = packed & ((1 << index_bits) - 1)
    return packed >> index_bits, order, _languages(lang_ids, order)


def _languages(lang_ids: Int[Tensor, " sentence"], order: Int[Tensor, "unit sentence"]) -> Int[Tensor, "unit sentence"]:
    # gather on an expanded view is several times faster than lang_ids[order] on CPU.
    return lang_ids.expand_as(order).gather(1, order)


def _sort_rows(keys: Int[Tensor, "unit sentence"]) -> Int[Tensor, "unit sentence"]:
    if keys.device.type == "cpu":
        return torch.from_numpy(np.sort(keys.numpy(), axis=1))
    return torch.sort(keys, dim=1).values


def _quantile(
    descending: Float[Tensor, "unit sentence"], seen: Int[Tensor, "unit sentence"], n: int, q: float
) -> Float[Tensor, " unit"]:
    """numpy's default ('linear') quantile of the ``n`` members of a subset of each row.

    ``descending`` holds each row sorted in descending order; ``seen[:, i]`` counts the subset's members at
    positions ``<= i``.
    """
    index = q * (n - 1)
    lo = int(index)
    t = index - lo
    # The j-th smallest member (0-based) is the (n - j)-th largest: the first position where seen reaches it.
    ranks = torch.tensor([n - lo, n - min(lo + 1, n - 1)], device=seen.device)
    position = torch.searchsorted(seen, ranks.expand(seen.shape[0], 2).contiguous())
    a, b = descending.gather(1, position).unbind(dim=1)
    # numpy's _lerp: interpolate from the nearer end for accuracy.
    return a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t)


def _binary_ids(labels: Bool[Tensor, " sentence"]) -> Int[Tensor, " sentence"]:
    if labels.ndim != 1:
        raise ExpertInputError(f"labels must be 1-D (one per sentence), got shape {tuple(labels.shape)}.")
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == len(labels):
        missing = "positives" if n_pos == 0 else "negatives"
        raise ExpertInputError(
            f"labels have no {missing} ({n_pos} of {len(labels)} sentences are positive); AP and AUROC need "
            "both classes, so add sentences of the missing class."
        )
    return labels.long()


def _check_inputs(
    responses: Tensor, lang_ids: Tensor, n_langs: int
) -> tuple[Int[Tensor, " sentence"], Int[Tensor, " lang"]]:
    """Validate shapes, language ids and finiteness; return lang_ids on the responses' device and per-language
    sentence counts."""
    if responses.ndim != 2:
        raise ExpertInputError(f"responses must be [sentence, unit], got shape {tuple(responses.shape)}.")
    if lang_ids.ndim != 1 or len(lang_ids) != responses.shape[0]:
        raise ExpertInputError(
            f"lang_ids must be 1-D with one id per sentence ({responses.shape[0]}), got shape {tuple(lang_ids.shape)}."
        )
    if lang_ids.is_floating_point() or lang_ids.is_complex():
        raise ExpertInputError(f"lang_ids must be an integer tensor, got {lang_ids.dtype}.")
    lang_ids = lang_ids.to(device=responses.device, dtype=torch.long)
    if len(lang_ids) and (int(lang_ids.min()) < 0 or int(lang_ids.max()) >= n_langs):
        raise ExpertInputError(
            f"lang_ids must lie in [0, n_langs={n_langs}), got values in "
            f"[{int(lang_ids.min())}, {int(lang_ids.max())}]."
        )
    counts = torch.bincount(lang_ids, minlength=n_langs)
    n_sentences = len(lang_ids)
    for lang, count in enumerate(counts.tolist()):
        if count == 0:
            raise ExpertInputError(
                f"language {lang} has no sentences (no positives): add sentences in that language or drop it "
                "from n_langs/lang_ids."
            )
        if count == n_sentences:
            raise ExpertInputError(
                f"language {lang} has all {n_sentences} sentences (no negatives to score against): add sentences "
                "in at least one other language."
            )
    _check_finite(responses)
    return lang_ids, counts


def _check_finite(responses: Tensor) -> None:
    if not responses.is_floating_point():
        return
    n_sentences, n_units = responses.shape
    chunk = max(1, 2**22 // max(n_sentences, 1))
    sum_dtype = torch.float32 if responses.dtype in (torch.float16, torch.bfloat16) else None
    # Column sums are cheap and finite unless the column holds NaN/inf or the sum overflowed; only suspect
    # chunks get the exact (slower) elementwise check.
    suspects = [
        start
        for start in range(0, n_units, chunk)
        if not bool(torch.isfinite(responses[:, start : start + chunk].sum(dim=0, dtype=sum_dtype)).all())
    ]
    n_bad, units = 0, []
    for start in suspects:
        finite = torch.isfinite(responses[:, start : start + chunk])
        n_bad += int((~finite).sum())
        units += (torch.nonzero(~finite.all(dim=0)).flatten() + start).tolist()
    if n_bad:
        shown = ", ".join(map(str, units[:10])) + (", ..." if len(units) > 10 else "")
        raise ExpertInputError(
            f"responses hold {n_bad} NaN/inf values in {len(units)} units ({shown}): fix or drop those units "
            "(e.g. responses[:, keep]) before scoring."
        )


def _chunk_size(n_sentences: int, chunk_units: int | None, device: torch.device) -> int:
    if chunk_units is not None:
        if chunk_units < 1:
            raise ExpertInputError(f"chunk_units must be >= 1, got {chunk_units}.")
        return chunk_units
    # Small chunks stay in CPU cache; on accelerators big chunks amortise kernel launches.
    elements = 2**16 if device.type == "cpu" else 2**24
    return max(1, elements // max(n_sentences, 1))
