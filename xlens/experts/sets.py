"""Expert scores for every unit and language, and the expert sets selected from them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from xlens._display import html_card, html_frame
from xlens._io import read_pair, reading, write_pair
from xlens.activations import Responses, UnitIndex, UnitSpec, collect_corpus_responses
from xlens.data.corpus import ParallelCorpus
from xlens.data.languages import resolve_language
from xlens.errors import ExpertInputError
from xlens.experts.lape import LAPE_COUNTS, LapeResult, lape
from xlens.experts.scoring import one_vs_rest, unit_statistics
from xlens.hooks import check_same_model
from xlens.models.lens import LensModel

STAT_NAMES = ("on_p50", "on_mean", "off_p50", "off_mean", "on_p90", "all_p50", "all_mean")
Selection = Literal["top", "per-block", "top-bottom", "threshold"]
SELECTIONS: tuple[str, ...] = ("top", "per-block", "top-bottom", "threshold")
RankBy = Literal["ap", "auroc"]
RANK_BY: tuple[str, ...] = ("ap", "auroc")


@dataclass
class ExpertScores:
    """AP, AUROC and response statistics of every unit for every language (one language vs the rest).

    Tensors are ``[lang, unit]``; ``languages[i]`` is the FLORES code of row i. ``lape`` is the LAPE ranking of
    the same units when computed (:meth:`with_lape`), saved with the scores.
    """

    ap: Float[Tensor, "lang unit"]
    auroc: Float[Tensor, "lang unit"]
    stats: dict[str, Float[Tensor, "lang unit"]]
    units: UnitIndex
    languages: list[str]
    model: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    lape: LapeResult | None = None

    @classmethod
    def from_responses(
        cls, responses: Responses, pooling: str = "mean", negatives: Sequence[str] | None = None
    ) -> ExpertScores:
        """Score every unit of ``responses`` for each of its languages against the others.

        By default each language is scored against all the other languages (one vs the rest). With ``negatives``
        (language codes), each language is scored against those languages only, e.g. ``["en"]`` finds what makes
        a language differ from English; a language that is itself among the negatives is scored against the
        remaining negatives, or against all other languages when none remain. The ``off_*`` statistics then
        describe the negatives used.
        """
        if responses.lang_ids is None or not responses.languages:
            raise ExpertInputError("responses carry no language labels: collect them with collect_corpus_responses")
        if len(responses.languages) < 2:
            raise ExpertInputError(
                f"need at least two languages to score experts (one vs the rest), got {responses.languages}"
            )

        values = responses[pooling]
        ids = responses.lang_ids
        n_langs = len(responses.languages)
        if negatives is None:
            ap = one_vs_rest(values, ids, n_langs, metric="ap")
            auroc = one_vs_rest(values, ids, n_langs, metric="auroc")
            st = unit_statistics(values, ids, n_langs)
            stats = {name: getattr(st, name) for name in STAT_NAMES}
        else:
            ap, auroc, stats = _against_negatives(values, ids, list(responses.languages), negatives)
        return cls(
            ap=ap.float().cpu(),
            auroc=auroc.float().cpu(),
            stats={name: v.float().cpu() for name, v in stats.items()},
            units=responses.units,
            languages=list(responses.languages),
            model=dict(responses.meta.get("model", {})),
            meta={
                **{k: v for k, v in responses.meta.items() if k != "model"},
                "scored_pooling": pooling,
                "negatives": None if negatives is None else [resolve_language(c).flores for c in negatives],
            },
        )

    def lang_index(self, language: str) -> int:
        """The row of ``language`` (any code :func:`resolve_language` reads) in the score tensors; an error naming the
        scored languages if it was not scored."""
        code = resolve_language(language).flores
        if code not in self.languages:
            raise ExpertInputError(f"language {code} was not scored; scored languages: {', '.join(self.languages)}")
        return self.languages.index(code)

    def select(
        self,
        language: str,
        k: int | None = None,
        *,
        method: Selection = "top",
        by: RankBy = "ap",
        bottom_k: int | None = None,
        threshold: float | None = None,
    ) -> ExpertSet:
        """Select a language's experts, ranked by ``by`` (``ap`` or ``auroc``), best first.

        Args:
            language: the language whose experts are selected (any code :func:`resolve_language` reads).
            k: how many (per block with ``per-block``; optional with ``threshold``).
            method: ``top``, the ``k`` best units over all hooks and blocks; ``per-block``, the ``k`` best units
                of every block; ``top-bottom``, the ``k`` best units plus the ``bottom_k`` (default ``k``) worst
                ones, as Kojima et al. 2024 (bottom units respond *less* to the language than to the others);
                ``threshold``, every unit whose score is at least ``threshold`` (with ``k``: the ``k`` best of
                them, and an error if fewer pass).
            by: the score experts are ranked by, ``ap`` or ``auroc``.
            bottom_k: with ``top-bottom``, how many of the worst units.
            threshold: with ``threshold``, the lowest score kept.
        """
        if by not in RANK_BY:
            raise ExpertInputError(f"unknown ranking {by!r}; rank experts by one of {', '.join(RANK_BY)}")
        li = self.lang_index(language)
        score = (self.ap if by == "ap" else self.auroc)[li]
        n = score.shape[0]
        if method in ("top", "per-block", "top-bottom") and (k is None or k < 1):
            raise ExpertInputError(f"method {method!r} needs k >= 1, got {k}")
        count = int(k or 0)
        sign = None
        if method == "top":
            _check_k(count, n, "units")
            chosen = _top(score, count)
        elif method == "per-block":
            chosen = _top_per_block(score, self.units.blocks(), count)
        elif method == "top-bottom":
            chosen, sign = _top_and_bottom(score, count, count if bottom_k is None else bottom_k)
        elif method == "threshold":
            chosen = _above_threshold(score, threshold, count, by, self.languages[li])
        else:
            raise ExpertInputError(f"unknown selection method {method!r}; use one of {', '.join(SELECTIONS)}")
        meta = {"k": k, "by": by, "bottom_k": bottom_k, "threshold": threshold}
        return self.expert_set(language, chosen, method, sign=sign, meta=meta)

    def expert_set(
        self,
        language: str,
        units: Int[Tensor, " k"],
        method: str,
        sign: Int[Tensor, " k"] | None = None,
        meta: dict[str, Any] | None = None,
        entropy: Float[Tensor, " k"] | None = None,
    ) -> ExpertSet:
        """An ExpertSet of the given units of ``language``, carrying their scores and statistics."""
        li = self.lang_index(language)
        units = torch.as_tensor(units, dtype=torch.long)
        return ExpertSet(
            language=self.languages[li],
            units=units,
            unit_index=self.units,
            ap=self.ap[li, units],
            auroc=self.auroc[li, units],
            stats={name: values[li, units] for name, values in self.stats.items()},
            sign=torch.ones(len(units), dtype=torch.long) if sign is None else sign,
            model=self.model,
            method=method,
            meta={**self.meta, **(meta or {}), "languages": self.languages},
            entropy=entropy,
        )

    def with_lape(
        self,
        responses: Responses,
        top_rate: float = 0.01,
        filter_quantile: float = 0.95,
        activation_quantile: float = 0.95,
        counts: str = "gate",
    ) -> ExpertScores:
        """These scores with the LAPE ranking of their units (Tang et al. 2024, see :func:`xlens.experts.lape.lape`),
        computed from ``responses`` collected on the same units and sentences with the pooling that counts
        ``counts`` (``gate_active`` for ``"gate"``, the reference's definition; ``active`` for ``"post"``)."""
        from dataclasses import replace

        if counts not in LAPE_COUNTS:
            raise ExpertInputError(f"LAPE counts {counts!r}: use one of {sorted(LAPE_COUNTS)}")
        pooling = LAPE_COUNTS[counts]
        if pooling not in responses.pooled:
            raise ExpertInputError(
                f"LAPE with counts = {counts!r} needs responses collected with the {pooling!r} pooling"
            )
        if responses.units != self.units or responses.languages != self.languages:
            raise ExpertInputError("responses and scores differ in units or languages: collect them together")
        assert responses.lang_ids is not None
        result = lape(
            responses[pooling],
            responses.token_counts,
            responses.lang_ids,
            len(self.languages),
            top_rate=top_rate,
            filter_quantile=filter_quantile,
            activation_quantile=activation_quantile,
            counts=counts,
        )
        return replace(self, lape=result)

    def lape_set(self, language: str, top_rate: float | None = None, counts: str | None = None) -> ExpertSet:
        """The LAPE units of ``language``, lowest entropy first (``head(k)`` takes the k most specific); with
        ``top_rate`` or ``counts``, checked to be those the ranking was made with."""
        if self.lape is None:
            raise ExpertInputError(
                "these scores carry no LAPE ranking: compute it with scores.with_lape(responses), from responses "
                "collected with the 'gate_active' pooling (xlens experts --lape)"
            )
        if counts is not None and counts != self.lape.counts:
            raise ExpertInputError(
                f"the scores' LAPE ranking counts a unit active by {self.lape.counts!r}, not {counts!r}: recompute it "
                f"with with_lape(responses, counts={counts!r}) (the two definitions differ on gated MLPs)"
            )
        if top_rate is not None and top_rate != self.lape.top_rate:
            raise ExpertInputError(
                f"the scores' LAPE ranking keeps top_rate={self.lape.top_rate}, not {top_rate}: recompute it with "
                f"with_lape(responses, top_rate={top_rate})"
            )
        li = self.lang_index(language)
        units = self.lape.units_ranked(li)
        entropy = self.lape.entropy[units].float()
        meta = {"k": len(units), "lape": self.lape.settings()}
        return self.expert_set(language, units, "lape", meta=meta, entropy=entropy)

    def lape_sets(self) -> dict[str, ExpertSet]:
        """:meth:`lape_set` of every language."""
        return {lang: self.lape_set(lang) for lang in self.languages}

    def summary(self) -> Any:
        """A pandas table: per language, the best AP and the number of units above AP 0.9 / 0.95 / 0.99."""
        import pandas as pd

        rows = []
        for li, lang in enumerate(self.languages):
            ap = self.ap[li]
            best = int(ap.argmax())
            rows.append(
                {
                    "language": lang,
                    "best_ap": float(ap[best]),
                    "best_unit": self.units.labels([best])[0],
                    "n_ap_ge_0.9": int((ap >= 0.9).sum()),
                    "n_ap_ge_0.95": int((ap >= 0.95).sum()),
                    "n_ap_ge_0.99": int((ap >= 0.99).sum()),
                    "mean_ap": float(ap.mean()),
                }
            )
        return pd.DataFrame(rows)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``scores.json`` and its tensors into folder ``path`` (one atomic commit)."""
        folder = Path(path)
        tensors = {"ap": self.ap, "auroc": self.auroc, **{f"stats.{k}": v for k, v in self.stats.items()}}
        header: dict[str, Any] = {
            "kind": "xlens.ExpertScores",
            "units": self.units.to_dict(),
            "languages": self.languages,
            "model": self.model,
            "meta": self.meta,
        }
        if self.lape is not None:
            tensors.update({f"lape.{k}": v for k, v in self.lape.tensors().items()})
            header["lape"] = self.lape.settings()
        write_pair(folder, "scores", tensors, header)
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: LensModel | None = None) -> ExpertScores:
        """Load scores; with ``model``, refuse scores made with a different model."""
        tensors, header = read_pair(Path(path), "scores", "xlens.ExpertScores")
        with reading(Path(path)):
            check_same_model(header["model"], model, f"the expert scores in {path}")
            lape = None
            if "lape" in header:
                parts = {k.removeprefix("lape."): v for k, v in tensors.items() if k.startswith("lape.")}
                # Rankings saved before the counts were recorded counted the neuron ("post").
                lape = LapeResult(**parts, **{"counts": "post", **header["lape"]})  # type: ignore[arg-type]
            return cls(
                ap=tensors["ap"],
                auroc=tensors["auroc"],
                stats={k.removeprefix("stats."): v for k, v in tensors.items() if k.startswith("stats.")},
                units=UnitIndex.from_dict(header["units"]),
                languages=list(header["languages"]),
                model=header["model"],
                meta=header["meta"],
                lape=lape,
            )

    def __repr__(self) -> str:
        return (
            f"ExpertScores({len(self.languages)} languages x {self.units.n_units} units, "
            f"model {self.model.get('name')!r}, negatives {self.meta.get('negatives') or 'the rest'}"
            + (", with LAPE" if self.lape is not None else "")
            + ")"
        )

    def _repr_html_(self) -> str:
        facts = {
            "languages x units": f"{len(self.languages)} x {self.units.n_units}",
            "model": self.model.get("name"),
            "scored against": ", ".join(self.meta.get("negatives") or []) or "the other languages",
            "LAPE ranking": "yes" if self.lape is not None else "no",
        }
        return html_card("ExpertScores", facts, html_frame(self.summary()))


def _against_negatives(
    values: Tensor, ids: Tensor, languages: list[str], negatives: Sequence[str]
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """AP, AUROC and statistics of each language against a chosen set of negative languages."""
    negative_ids = []
    for code in negatives:
        flores = resolve_language(code).flores
        if flores not in languages:
            raise ExpertInputError(f"negative language {flores} is not among the collected languages {languages}")
        negative_ids.append(languages.index(flores))
    if not negative_ids:
        raise ExpertInputError("negatives is empty: give at least one language, or None for one vs the rest")
    rows_ap, rows_auroc, rows_stats = [], [], {name: [] for name in STAT_NAMES}
    for li in range(len(languages)):
        against = [j for j in negative_ids if j != li] or [j for j in range(len(languages)) if j != li]
        rows = (ids == li) | torch.isin(ids, torch.tensor(against, device=ids.device))
        binary = (ids[rows] == li).long()  # 1 = the target language, 0 = its negatives
        rows_ap.append(one_vs_rest(values[rows], binary, 2, metric="ap")[1])
        rows_auroc.append(one_vs_rest(values[rows], binary, 2, metric="auroc")[1])
        st = unit_statistics(values[rows], binary, 2)
        for name in STAT_NAMES:
            rows_stats[name].append(getattr(st, name)[1])
    stats = {name: torch.stack(v) for name, v in rows_stats.items()}
    # "all" means every sentence of every language, whatever each language was scored against.
    everything = unit_statistics(values, ids, len(languages))
    stats.update(all_p50=everything.all_p50, all_mean=everything.all_mean)
    return torch.stack(rows_ap), torch.stack(rows_auroc), stats


def _top_per_block(score: Float[Tensor, " unit"], blocks: Int[Tensor, " unit"], k: int) -> Int[Tensor, " k"]:
    """The ``k`` best units of every block, best first over all blocks."""
    chosen_parts = []
    for block in blocks.unique().tolist():
        members = (blocks == block).nonzero().squeeze(1)
        _check_k(k, len(members), f"units in block {block}")
        chosen_parts.append(members[_top(score[members], k)])
    chosen = torch.cat(chosen_parts)
    return chosen[score[chosen].argsort(descending=True, stable=True)]


def _top_and_bottom(
    score: Float[Tensor, " unit"], k: int, bottom_k: int
) -> tuple[Int[Tensor, " k"], Int[Tensor, " k"]]:
    """The ``k`` best units then the ``bottom_k`` worst ones, and their signs (+1 top, -1 bottom)."""
    _check_k(k + bottom_k, score.shape[0], "units (top + bottom)")
    top = _top(score, k)
    bottom = _top(-score, bottom_k)
    sign = torch.cat([torch.ones(k, dtype=torch.long), -torch.ones(bottom_k, dtype=torch.long)])
    return torch.cat([top, bottom]), sign


def _above_threshold(
    score: Float[Tensor, " unit"], threshold: float | None, k: int, by: str, language: str
) -> Int[Tensor, " k"]:
    """Every unit scoring at least ``threshold``, best first (with ``k``: the ``k`` best, which must all pass)."""
    if threshold is None:
        raise ExpertInputError(f"method 'threshold' needs threshold=<{by.upper()} value in [0, 1]>")
    chosen = (score >= threshold).nonzero().squeeze(1)
    chosen = chosen[score[chosen].argsort(descending=True, stable=True)]
    if len(chosen) == 0 or len(chosen) < k:
        wanted = f"fewer than the k={k} asked for" if k else "none"
        raise ExpertInputError(
            f"{len(chosen)} units have {by.upper()} >= {threshold} for {language} (best "
            f"{score.max().item():.4f}): {wanted}; lower the threshold{' or k' if k else ''}"
        )
    return chosen[:k] if k else chosen


def _check_k(k: int, available: int, what: str) -> None:
    if k > available:
        raise ExpertInputError(f"k={k} is larger than the number of {what} ({available}); choose k <= {available}")


def _top(values: Tensor, k: int) -> Int[Tensor, " k"]:
    # Stable sort: ties are broken by unit index, so the selection is deterministic.
    return values.argsort(descending=True, stable=True)[:k]


@dataclass
class ExpertSet:
    """The experts of one language: which units, their scores, and the statistics interventions use.

    ``units`` are flat indices into ``unit_index`` (hook, position), best first; ``sign`` is +1 for units selected
    for a high AP and -1 for bottom units (top-bottom selection). LAPE sets (``method="lape"``) are ordered by
    ``entropy``, lowest first, so ``head(k)`` takes the k most language-specific units.
    """

    language: str
    units: Int[Tensor, " k"]
    unit_index: UnitIndex
    ap: Float[Tensor, " k"]
    auroc: Float[Tensor, " k"]
    stats: dict[str, Float[Tensor, " k"]]
    sign: Int[Tensor, " k"]
    model: dict[str, Any]
    method: str = "top"
    meta: dict[str, Any] = field(default_factory=dict)
    entropy: Float[Tensor, " k"] | None = None

    def __len__(self) -> int:
        return int(self.units.shape[0])

    def head(self, k: int) -> ExpertSet:
        """The first ``k`` experts (the best ones for ``top``-style sets, the lowest-entropy ones for LAPE)."""
        _check_k(k, len(self), f"experts in this set for {self.language}")
        return self._subset(torch.arange(k))

    def _subset(self, rows: Tensor) -> ExpertSet:
        return ExpertSet(
            language=self.language,
            units=self.units[rows],
            unit_index=self.unit_index,
            ap=self.ap[rows],
            auroc=self.auroc[rows],
            stats={k: v[rows] for k, v in self.stats.items()},
            sign=self.sign[rows],
            model=self.model,
            method=self.method,
            meta={**self.meta, "k": len(rows)},
            entropy=None if self.entropy is None else self.entropy[rows],
        )

    def by_hook(self) -> dict[str, Int[Tensor, " rows"]]:
        """Rows of this set grouped by hook name (what an intervention hook needs)."""
        hook_ids = self.unit_index.hook_ids()[self.units]
        return {self.unit_index.hooks[h]: (hook_ids == h).nonzero().squeeze(1) for h in hook_ids.unique().tolist()}

    def positions(self) -> Int[Tensor, " k"]:
        """Each expert's position within its hook's width (its neuron index in the block)."""
        return self.unit_index.positions()[self.units]

    def blocks(self) -> Int[Tensor, " k"]:
        """The block of each expert."""
        return self.unit_index.blocks()[self.units]

    def counts_per_block(self) -> dict[int, int]:
        """How many of the experts each block holds (blocks without one left out)."""
        values, counts = self.blocks().unique(return_counts=True)
        return dict(zip(values.tolist(), counts.tolist(), strict=True))

    def to_pandas(self) -> Any:
        """One row per expert: rank, unit label, block, hook, position, AP, AUROC, statistics, sign (, entropy)."""
        import pandas as pd

        hooks = [self.unit_index.locate(int(u))[0] for u in self.units]
        columns = {
            "rank": range(len(self)),
            "unit": self.units.tolist(),
            "label": self.unit_index.labels(self.units),
            "block": self.blocks().tolist(),
            "hook": hooks,
            "position": self.positions().tolist(),
            "ap": self.ap.tolist(),
            "auroc": self.auroc.tolist(),
            **{k: v.tolist() for k, v in self.stats.items()},
            "sign": self.sign.tolist(),
        }
        if self.entropy is not None:
            columns["entropy"] = self.entropy.tolist()
        return pd.DataFrame(columns)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``experts.json`` and its tensors into folder ``path`` (one atomic commit)."""
        folder = Path(path)
        tensors = {
            "units": self.units,
            "ap": self.ap,
            "auroc": self.auroc,
            "sign": self.sign,
            **{f"stats.{k}": v for k, v in self.stats.items()},
        }
        if self.entropy is not None:
            tensors["entropy"] = self.entropy
        header = {
            "kind": "xlens.ExpertSet",
            "language": self.language,
            "unit_index": self.unit_index.to_dict(),
            "model": self.model,
            "method": self.method,
            "meta": self.meta,
        }
        write_pair(folder, "experts", tensors, header)
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: LensModel | None = None) -> ExpertSet:
        """Load an expert set; with ``model``, refuse one made with a different model (interventions built from
        the set check again when applied)."""
        tensors, header = read_pair(Path(path), "experts", "xlens.ExpertSet")
        with reading(Path(path)):
            check_same_model(header["model"], model, f"the expert set in {path}")
            return cls(
                language=header["language"],
                units=tensors["units"],
                unit_index=UnitIndex.from_dict(header["unit_index"]),
                ap=tensors["ap"],
                auroc=tensors["auroc"],
                stats={k.removeprefix("stats."): v for k, v in tensors.items() if k.startswith("stats.")},
                sign=tensors["sign"],
                model=header["model"],
                method=header["method"],
                meta=header["meta"],
                entropy=tensors.get("entropy"),
            )

    def __repr__(self) -> str:
        return (
            f"ExpertSet({self.language}, {len(self)} {self.method} experts of model {self.model.get('name')!r}, "
            f"blocks {sorted(self.counts_per_block())})"
        )

    def _repr_html_(self) -> str:
        facts = {
            "language": self.language,
            "experts": f"{len(self)} ({self.method})",
            "model": self.model.get("name"),
            "per block": " ".join(f"L{b}:{n}" for b, n in sorted(self.counts_per_block().items())),
        }
        return html_card("ExpertSet", facts, html_frame(self.to_pandas(), max_rows=5))


def find_experts(
    model: LensModel,
    corpus: ParallelCorpus,
    languages: Sequence[str] | None = None,
    *,
    units: UnitSpec = "mlp",
    pooling: str = "mean",
    negatives: Sequence[str] | None = None,
    lape_top_rate: float | None = None,
    lape_counts: str = "gate",
    cache: str | os.PathLike[str] | None = None,
    **collect_kwargs: Any,
) -> ExpertScores:
    """Collect pooled responses on ``corpus`` and score every unit for every language (one vs the rest, or
    against ``negatives``: see :meth:`ExpertScores.from_responses`); with ``lape_top_rate``, also rank the units
    by LAPE (:meth:`ExpertScores.with_lape`, active as ``lape_counts`` says). ``collect_kwargs`` go to
    :func:`xlens.activations.collect_corpus_responses` (``batch_size``, ``max_length``, ``progress``, ...); with
    ``cache``, the responses are cached there."""
    if lape_counts not in LAPE_COUNTS:
        raise ExpertInputError(f"lape_counts = {lape_counts!r}: use one of {sorted(LAPE_COUNTS)}")
    poolings = [pooling] if lape_top_rate is None else [pooling, LAPE_COUNTS[lape_counts]]
    responses = collect_corpus_responses(
        model, corpus, languages, cache=cache, units=units, pooling=poolings, **collect_kwargs
    )
    scores = ExpertScores.from_responses(responses, pooling=pooling, negatives=negatives)
    return scores if lape_top_rate is None else scores.with_lape(responses, top_rate=lape_top_rate, counts=lape_counts)
