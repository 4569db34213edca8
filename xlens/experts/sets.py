"""Expert scores for every unit and language, and the expert sets selected from them."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor

from xlens._io import atomic_write
from xlens.activations import Responses, UnitIndex
from xlens.experts.scoring import one_vs_rest, unit_statistics

STAT_NAMES = ("on_p50", "on_mean", "off_p50", "off_mean", "on_p90")
Selection = Literal["top", "per-layer", "top-bottom", "threshold"]


class ExpertSetMismatchError(ValueError):
    """An expert set was made for another model than the one it is used with."""


@dataclass
class ExpertScores:
    """AP, AUROC and response statistics of every unit for every language (one language vs the rest).

    Tensors are ``[lang, unit]``; ``languages[i]`` is the FLORES code of row i.
    """

    ap: Float[Tensor, "lang unit"]
    auroc: Float[Tensor, "lang unit"]
    stats: dict[str, Float[Tensor, "lang unit"]]
    units: UnitIndex
    languages: list[str]
    model: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

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
            raise ValueError("responses carry no language labels: collect them with collect_corpus_responses")
        if len(responses.languages) < 2:
            raise ValueError(
                f"need at least two languages to score experts (one vs the rest), got {responses.languages}"
            )
        from xlens.data.languages import resolve_language

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
        from xlens.data.languages import resolve_language

        code = resolve_language(language).flores
        if code not in self.languages:
            raise ValueError(f"language {code} was not scored; scored languages: {', '.join(self.languages)}")
        return self.languages.index(code)

    def select(
        self,
        language: str,
        k: int | None = None,
        *,
        method: Selection = "top",
        bottom_k: int | None = None,
        threshold: float | None = None,
    ) -> ExpertSet:
        """Select a language's experts.

        Methods:
            ``top``: the ``k`` units with the highest AP over all hooks and layers;
            ``per-layer``: the ``k`` best units of every layer;
            ``top-bottom``: the ``k`` highest-AP units plus the ``bottom_k`` (default ``k``) lowest-AP units,
            as Kojima et al. 2024 (bottom units respond *less* to the language than to others);
            ``threshold``: every unit with AP >= ``threshold``.
        """
        li = self.lang_index(language)
        ap = self.ap[li]
        n = ap.shape[0]
        if method in ("top", "per-layer", "top-bottom") and (k is None or k < 1):
            raise ValueError(f"method {method!r} needs k >= 1, got {k}")
        count = int(k or 0)
        sign = None
        if method == "top":
            _check_k(count, n, "units")
            chosen = _top(ap, count)
        elif method == "per-layer":
            layers = self.units.layers()
            chosen_parts = []
            for layer in layers.unique().tolist():
                members = (layers == layer).nonzero().squeeze(1)
                _check_k(count, len(members), f"units in layer {layer}")
                chosen_parts.append(members[_top(ap[members], count)])
            chosen = torch.cat(chosen_parts)
            chosen = chosen[ap[chosen].argsort(descending=True, stable=True)]
        elif method == "top-bottom":
            bk = count if bottom_k is None else bottom_k
            _check_k(count + bk, n, "units (top + bottom)")
            top = _top(ap, count)
            bottom = _top(-ap, bk)
            chosen = torch.cat([top, bottom])
            sign = torch.cat([torch.ones(count, dtype=torch.long), -torch.ones(bk, dtype=torch.long)])
        elif method == "threshold":
            if threshold is None:
                raise ValueError("method 'threshold' needs threshold=<AP value in [0, 1]>")
            chosen = (ap >= threshold).nonzero().squeeze(1)
            chosen = chosen[ap[chosen].argsort(descending=True, stable=True)]
            if len(chosen) == 0:
                raise ValueError(
                    f"no unit has AP >= {threshold} for {self.languages[li]} (best AP {ap.max().item():.4f})"
                )
        else:
            raise ValueError(f"unknown selection method {method!r}; use top, per-layer, top-bottom or threshold")
        return self.expert_set(
            language, chosen, method, sign=sign, meta={"k": k, "bottom_k": bottom_k, "threshold": threshold}
        )

    def expert_set(
        self,
        language: str,
        units: Int[Tensor, " k"],
        method: str,
        sign: Int[Tensor, " k"] | None = None,
        meta: dict[str, Any] | None = None,
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
            stats={name: self.stats[name][li, units] for name in STAT_NAMES},
            sign=torch.ones(len(units), dtype=torch.long) if sign is None else sign,
            model=self.model,
            method=method,
            meta={**self.meta, **(meta or {}), "languages": self.languages},
        )

    def lape_sets(self, responses: Responses, **lape_kwargs: Any) -> dict[str, ExpertSet]:
        """Language-specific units by LAPE (Tang et al. 2024), one ExpertSet per language (method ``lape``).

        Needs responses collected with the ``active`` pooling on the same units and sentences as these scores.
        """
        from xlens.experts.lape import lape

        if "active" not in responses.pooled:
            raise ValueError("LAPE needs responses collected with pooling including 'active'")
        if responses.units != self.units or responses.languages != self.languages:
            raise ValueError("responses and scores differ in units or languages: collect them together")
        assert responses.lang_ids is not None
        result = lape(
            responses["active"], responses.token_counts, responses.lang_ids, len(self.languages), **lape_kwargs
        )
        sets = {}
        for li, lang in enumerate(self.languages):
            units = result.units_for(li)
            sets[lang] = self.expert_set(lang, units, "lape", meta={"k": len(units), "lape": lape_kwargs})
        return sets

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
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"ap": self.ap, "auroc": self.auroc, **{f"stats.{k}": v for k, v in self.stats.items()}}
        header = {
            "kind": "xlens.ExpertScores",
            "units": self.units.to_dict(),
            "languages": self.languages,
            "model": self.model,
            "meta": self.meta,
        }
        _write_pair(folder, "scores", tensors, header)
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Any = None) -> ExpertScores:
        tensors, header = _read_pair(Path(path), "scores", "xlens.ExpertScores")
        if model is not None:
            check_model(header["model"], model, Path(path))
        return cls(
            ap=tensors["ap"],
            auroc=tensors["auroc"],
            stats={k.removeprefix("stats."): v for k, v in tensors.items() if k.startswith("stats.")},
            units=UnitIndex.from_dict(header["units"]),
            languages=list(header["languages"]),
            model=header["model"],
            meta=header["meta"],
        )


def _against_negatives(
    values: Tensor, ids: Tensor, languages: list[str], negatives: Sequence[str]
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """AP, AUROC and statistics of each language against a chosen set of negative languages."""
    from xlens.data.languages import resolve_language

    negative_ids = []
    for code in negatives:
        flores = resolve_language(code).flores
        if flores not in languages:
            raise ValueError(f"negative language {flores} is not among the collected languages {languages}")
        negative_ids.append(languages.index(flores))
    if not negative_ids:
        raise ValueError("negatives is empty: give at least one language, or None for one vs the rest")
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
    return (
        torch.stack(rows_ap),
        torch.stack(rows_auroc),
        {name: torch.stack(v) for name, v in rows_stats.items()},
    )


def _check_k(k: int, available: int, what: str) -> None:
    if k > available:
        raise ValueError(f"k={k} is larger than the number of {what} ({available}); choose k <= {available}")


def _top(values: Tensor, k: int) -> Int[Tensor, " k"]:
    # Stable sort: ties are broken by unit index, so the selection is deterministic.
    return values.argsort(descending=True, stable=True)[:k]


@dataclass
class ExpertSet:
    """The experts of one language: which units, their scores, and the statistics interventions use.

    ``units`` are flat indices into ``unit_index`` (hook, position); ``sign`` is +1 for units selected for a high
    AP and -1 for bottom units (top-bottom selection).
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

    def __len__(self) -> int:
        return int(self.units.shape[0])

    def head(self, k: int) -> ExpertSet:
        """The first ``k`` experts (the best ones for ``top``-style sets)."""
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
        )

    def by_hook(self) -> dict[str, Int[Tensor, " rows"]]:
        """Rows of this set grouped by hook name (what an intervention hook needs)."""
        hook_ids = self.unit_index.hook_ids()[self.units]
        return {self.unit_index.hooks[h]: (hook_ids == h).nonzero().squeeze(1) for h in hook_ids.unique().tolist()}

    def positions(self) -> Int[Tensor, " k"]:
        return self.unit_index.positions()[self.units]

    def layers(self) -> Int[Tensor, " k"]:
        return self.unit_index.layers()[self.units]

    def counts_per_layer(self) -> dict[int, int]:
        values, counts = self.layers().unique(return_counts=True)
        return dict(zip(values.tolist(), counts.tolist(), strict=True))

    def to_pandas(self) -> Any:
        """One row per expert: rank, unit label, layer, hook, position, AP, AUROC, statistics, sign."""
        import pandas as pd

        hooks = [self.unit_index.locate(int(u))[0] for u in self.units]
        return pd.DataFrame(
            {
                "rank": range(len(self)),
                "unit": self.units.tolist(),
                "label": self.unit_index.labels(self.units),
                "layer": self.layers().tolist(),
                "hook": hooks,
                "position": self.positions().tolist(),
                "ap": self.ap.tolist(),
                "auroc": self.auroc.tolist(),
                **{k: v.tolist() for k, v in self.stats.items()},
                "sign": self.sign.tolist(),
            }
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``experts.safetensors`` + ``experts.json`` into folder ``path``."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {
            "units": self.units,
            "ap": self.ap,
            "auroc": self.auroc,
            "sign": self.sign,
            **{f"stats.{k}": v for k, v in self.stats.items()},
        }
        header = {
            "kind": "xlens.ExpertSet",
            "language": self.language,
            "unit_index": self.unit_index.to_dict(),
            "model": self.model,
            "method": self.method,
            "meta": self.meta,
        }
        _write_pair(folder, "experts", tensors, header)
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Any = None) -> ExpertSet:
        """Load an expert set; with ``model``, refuse one made for a different model."""
        tensors, header = _read_pair(Path(path), "experts", "xlens.ExpertSet")
        if model is not None:
            check_model(header["model"], model, Path(path))
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
        )


def check_model(saved: dict[str, Any], model: Any, where: Path) -> None:
    """Raise ExpertSetMismatchError unless ``model`` is the model ``saved`` describes."""
    current = model.identity() if hasattr(model, "identity") else dict(model)
    keys = ("architecture", "n_layers", "d_model", "d_mlp", "name", "revision")
    diffs = {k: (saved.get(k), current.get(k)) for k in keys if saved.get(k) != current.get(k)}
    if diffs:
        detail = "; ".join(f"{k}: saved {a!r} vs model {b!r}" for k, (a, b) in diffs.items())
        raise ExpertSetMismatchError(
            f"{where} was made for model {saved.get('name')!r}, not {current.get('name')!r} ({detail}). "
            "Find experts again with this model."
        )


def _write_pair(folder: Path, stem: str, tensors: dict[str, Tensor], header: dict[str, Any]) -> None:
    atomic_write(
        folder / f"{stem}.safetensors",
        lambda p: save_file({k: v.contiguous() for k, v in tensors.items()}, str(p)),
    )
    atomic_write(folder / f"{stem}.json", lambda p: p.write_text(json.dumps(header, indent=1, default=str)))


def _read_pair(folder: Path, stem: str, kind: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    meta, data = folder / f"{stem}.json", folder / f"{stem}.safetensors"
    if not meta.is_file() or not data.is_file():
        raise FileNotFoundError(f"no {kind} in {folder}: expected {meta.name} and {data.name}")
    header = json.loads(meta.read_text())
    if header.get("kind") != kind:
        raise ValueError(f"{meta} holds a {header.get('kind')!r}, not a {kind}")
    return load_file(str(data)), header


def find_experts(
    model: Any,
    corpus: Any,
    languages: Sequence[str] | None = None,
    *,
    units: Any = "mlp",
    pooling: str = "mean",
    negatives: Sequence[str] | None = None,
    cache: str | os.PathLike[str] | None = None,
    **collect_kwargs: Any,
) -> ExpertScores:
    """Collect pooled responses on ``corpus`` and score every unit for every language (one vs the rest, or
    against ``negatives``: see :meth:`ExpertScores.from_responses`)."""
    from xlens.activations import collect_corpus_responses

    responses = collect_corpus_responses(
        model, corpus, languages, cache=cache, units=units, pooling=pooling, **collect_kwargs
    )
    return ExpertScores.from_responses(responses, pooling=pooling, negatives=negatives)
