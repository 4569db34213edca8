"""Language activation probability entropy (LAPE; Tang et al. 2024, "Language-Specific Neurons: The Key to
Multilingual Capabilities in LLMs").

A unit is language-specific when it fires (activation > 0) often on few languages: its activation probabilities
over languages, normalised into a distribution, have low entropy. Selection follows the reference code
(RUCAIBox/Language-Specific-Neurons, ``identify.py``):

1. ``p[l, u]`` = active tokens of language ``l`` / tokens of language ``l``. Active, as in the reference, means
   ``act_fn(gate_proj(x)) > 0`` on gated MLPs (Gemma, Llama, Aya/Cohere) and the MLP activation > 0 on the others
   (``counts = "gate"``, the default); ``counts = "post"`` counts the neuron ``act_fn(gate) * up > 0`` instead, a
   different definition on gated MLPs (recorded with the ranking, so results of the two never mix).
2. Discard units with no ``p`` above the filter threshold (the ``filter_quantile`` order statistic of all ``p``).
3. Keep ``round(top_rate * n_units)`` units with the lowest entropy among the rest: ``top_rate`` is a fraction of
   *all* units, as in the reference code (fewer are kept if fewer pass the filter).
4. Assign each kept unit to every language whose ``p`` exceeds the activation threshold (the
   ``activation_quantile`` order statistic of all ``p``).

Thresholds are order statistics like the reference's ``kthvalue(round(len(p) * q))``, not interpolated
quantiles, and comparisons are strict (``p > threshold``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from xlens.errors import ExpertInputError

# When a unit counts as active on a token: "gate", the reference's definition (``act_fn(gate_proj(x)) > 0`` on gated
# MLPs, the MLP activation > 0 elsewhere); "post", the MLP neuron (on gated MLPs ``act_fn(gate) * up``) > 0.
LAPE_COUNTS = {"gate": "gate_active", "post": "active"}  # the definition -> the pooling that counts it


@dataclass
class LapeResult:
    """Outcome of ``lape``.

    Attributes:
        probability: activation probability per language and unit (float64).
        entropy: LAPE entropy of each unit (natural log); NaN for a unit never active in any language, which has
            no distribution over languages and is never selected.
        selected: indices of the kept (lowest-entropy, unfiltered) units, lowest entropy first.
        assignment: ``assignment[l, u]`` is True when kept unit ``u`` is specific to language ``l``; a unit may
            belong to several languages.
        filter_threshold: activation probability a unit must exceed in some language to be considered.
        activation_threshold: activation probability that assigns a kept unit to a language.
    """

    probability: Float[Tensor, "lang unit"]
    entropy: Float[Tensor, " unit"]
    selected: Int[Tensor, " k"]
    assignment: Bool[Tensor, "lang unit"]
    filter_threshold: float
    activation_threshold: float
    top_rate: float = 0.01
    counts: str = "gate"  # what "active" meant: see LAPE_COUNTS

    def units_ranked(self, lang_index: int) -> Int[Tensor, " k"]:
        """The units of language ``lang_index``, lowest entropy first (ties: lower unit index first)."""
        units = self.units_for(lang_index)
        return units[self.entropy[units].argsort(stable=True)]

    def tensors(self) -> dict[str, Tensor]:
        return {
            "probability": self.probability,
            "entropy": self.entropy,
            "selected": self.selected,
            "assignment": self.assignment,
        }

    def settings(self) -> dict[str, Any]:
        return {
            "filter_threshold": self.filter_threshold,
            "activation_threshold": self.activation_threshold,
            "top_rate": self.top_rate,
            "counts": self.counts,
        }

    def units_for(self, lang_index: int) -> Int[Tensor, " k"]:
        """Sorted indices of the units assigned to language ``lang_index``."""
        n_langs = self.assignment.shape[0]
        if not 0 <= lang_index < n_langs:
            raise ExpertInputError(f"lang_index must lie in [0, {n_langs}), got {lang_index}.")
        return torch.nonzero(self.assignment[lang_index]).flatten()


def activation_probability(
    active_counts: Float[Tensor, "sentence unit"],
    token_counts: Int[Tensor, " sentence"],
    lang_ids: Int[Tensor, " sentence"],
    n_langs: int,
) -> Float[Tensor, "lang unit"]:
    """``p[l, u]`` = (tokens of language ``l`` on which unit ``u`` is active) / (tokens of language ``l``).

    Raises:
        ExpertInputError: shapes disagree, ids fall outside ``[0, n_langs)``, counts are negative, non-finite or
            exceed the sentence's token count, or a language has no tokens.
    """
    if active_counts.ndim != 2:
        raise ExpertInputError(f"active_counts must be [sentence, unit], got shape {tuple(active_counts.shape)}.")
    n_sentences = active_counts.shape[0]
    for name, ids in (("token_counts", token_counts), ("lang_ids", lang_ids)):
        if ids.ndim != 1 or len(ids) != n_sentences:
            raise ExpertInputError(
                f"{name} must be 1-D with one entry per sentence ({n_sentences}), got shape {tuple(ids.shape)}."
            )
        if ids.is_floating_point() or ids.is_complex():
            raise ExpertInputError(f"{name} must be an integer tensor, got {ids.dtype}.")
    device = active_counts.device
    lang_ids = lang_ids.to(device=device, dtype=torch.long)
    token_counts = token_counts.to(device=device, dtype=torch.float64)
    if n_sentences and (int(lang_ids.min()) < 0 or int(lang_ids.max()) >= n_langs):
        raise ExpertInputError(
            f"lang_ids must lie in [0, n_langs={n_langs}), got values in "
            f"[{int(lang_ids.min())}, {int(lang_ids.max())}]."
        )
    if n_sentences and float(token_counts.min()) < 0:
        raise ExpertInputError("token_counts must be >= 0; pass the number of tokens in each sentence.")
    tokens = torch.zeros(n_langs, dtype=torch.float64, device=device).index_add_(0, lang_ids, token_counts)
    empty = torch.nonzero(tokens == 0).flatten().tolist()
    if empty:
        raise ExpertInputError(
            f"languages {empty} have no tokens, so their activation probability is undefined: add text in those "
            "languages or drop them from n_langs/lang_ids."
        )
    active = torch.zeros(n_langs, active_counts.shape[1], dtype=torch.float64, device=device)
    # Chunk over units so the float64 copy of the counts stays small for big models.
    chunk = max(1, 2**24 // max(n_sentences, 1))
    for start in range(0, active_counts.shape[1], chunk):
        counts = active_counts[:, start : start + chunk].double()
        if not bool(torch.isfinite(counts).all()) or float(counts.min()) < 0:
            raise ExpertInputError("active_counts must be finite and >= 0 (counts of tokens with activation > 0).")
        if bool((counts > token_counts[:, None]).any()):
            raise ExpertInputError(
                "active_counts exceed token_counts for some sentence: a unit cannot be active on more tokens than "
                "the sentence has; check that both count the same tokens."
            )
        active[:, start : start + chunk].index_add_(0, lang_ids, counts)
    return active / tokens[:, None]


def lape(
    active_counts: Float[Tensor, "sentence unit"],
    token_counts: Int[Tensor, " sentence"],
    lang_ids: Int[Tensor, " sentence"],
    n_langs: int,
    top_rate: float = 0.01,
    filter_quantile: float = 0.95,
    activation_quantile: float = 0.95,
    counts: str = "gate",
) -> LapeResult:
    """Select language-specific units by activation probability entropy (see the module docstring).

    Args:
        active_counts: per sentence and unit, the number of the sentence's tokens with activation > 0.
        counts: what those counts counted (see :data:`LAPE_COUNTS`), recorded with the result.
        token_counts: tokens per sentence.
        lang_ids: language of each sentence, in ``[0, n_langs)``.
        top_rate: fraction of all units to keep (paper: 1%).
        filter_quantile: quantile of all activation probabilities that a unit must exceed in some language.
        activation_quantile: quantile of all activation probabilities above which a kept unit is assigned to a
            language.

    Raises:
        ExpertInputError: as for ``activation_probability``, or a rate/quantile outside ``[0, 1]``.
    """
    for name, value in (
        ("top_rate", top_rate),
        ("filter_quantile", filter_quantile),
        ("activation_quantile", activation_quantile),
    ):
        if not 0 <= value <= 1:
            raise ExpertInputError(f"{name} must lie in [0, 1], got {value}.")
    probability = activation_probability(active_counts, token_counts, lang_ids, n_langs)
    n_units = probability.shape[1]
    total = probability.sum(dim=0)
    normed = probability / total  # NaN for never-active units (0 / 0)
    # sum p log(1/p) with 0 log(1/0) = 0; never-active units (NaN columns) stay NaN.
    entropy = torch.where(normed > 0, normed * normed.reciprocal().log(), 0).sum(dim=0)
    entropy = entropy.where(total > 0, torch.nan)

    filter_threshold = _order_statistic(probability, filter_quantile)
    activation_threshold = _order_statistic(probability, activation_quantile)
    passes = (probability > filter_threshold).any(dim=0)  # never-active units never pass: 0 > threshold is False
    ranked = torch.where(passes, entropy, torch.inf)
    # Stable sort: ties in entropy go to the lower unit index.
    order = torch.sort(ranked, stable=True).indices
    n_keep = min(round(n_units * top_rate), int(passes.sum()))
    selected = order[:n_keep]
    assignment = torch.zeros_like(probability, dtype=torch.bool)
    assignment[:, selected] = probability[:, selected] > activation_threshold
    if counts not in LAPE_COUNTS:
        raise ExpertInputError(f"LAPE counts {counts!r}: use one of {sorted(LAPE_COUNTS)}")
    return LapeResult(
        probability, entropy, selected, assignment, filter_threshold, activation_threshold, top_rate, counts
    )


def _order_statistic(values: Tensor, quantile: float) -> float:
    """The reference's ``kthvalue(round(numel * quantile))`` with k clamped to ``[1, numel]``."""
    flat = values.flatten()
    k = min(max(round(flat.numel() * quantile), 1), flat.numel())
    return float(flat.kthvalue(k).values)
