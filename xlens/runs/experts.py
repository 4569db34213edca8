"""``xlens experts``: find every language's experts on a corpus and write them into a folder the job owns.

The folder holds ``scores`` (ExpertScores of every unit, with the LAPE ranking when asked), ``experts/<lang>``
(ExpertSets of the top k), ``lape/<lang>`` (LAPE units, lowest entropy first) and ``summary.json``. Settings are
checked, and the corpus loaded, before the model is; the pooled responses are a content-keyed artefact in
``cache/``, so a rerun of the same job is quick.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlens._io import own_path, write_json
from xlens.config import check_units_and_pooling
from xlens.data.languages import resolve_language
from xlens.data.loaders import load_corpus
from xlens.errors import ConfigError
from xlens.experts.lape import LAPE_COUNTS
from xlens.experts.sets import SELECTIONS, find_experts
from xlens.models import load_model
from xlens.models.loading import model_shape, resolved_numerics
from xlens.runs.folder import RunFolder

OUTPUTS = ("scores", "experts", "lape", "summary.json")


@dataclass(frozen=True)
class ExpertsJob:
    """The settings of one ``xlens experts`` run (the CLI's options)."""

    out: Path
    model: str | None = None
    corpus: str = "builtin"
    langs: tuple[str, ...] = ("en", "es", "de", "fr", "ja")
    per_lang: int = 200
    k: int = 1000
    select: str = "top"
    threshold: float | None = None
    units: str = "mlp"
    pooling: str = "mean"
    batch_size: int = 16
    seed: int = 0
    negatives: tuple[str, ...] | None = None
    lape: bool = False
    lape_top_rate: float = 0.01
    lape_counts: str = "gate"
    device: str | None = None
    dtype: str | None = None
    force: bool = False

    def record(self) -> dict[str, Any]:
        """What the folder's owner record holds: every setting that changes what is written, with the dtype and
        device kind the defaults resolve to."""
        skip = ("out", "force", "device", "dtype")
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        return {**settings, "numerics": resolved_numerics(self.device, self.dtype, self.model)}

    def check(self) -> Any:
        """Settings, the model's shape and the corpus, before any model is loaded; returns the sentences."""
        resolved_numerics(self.device, self.dtype)  # an unknown dtype is named here
        if self.select not in SELECTIONS:
            raise ConfigError(f"--select {self.select!r}: must be one of {', '.join(SELECTIONS)}")
        if self.select == "threshold" and (self.threshold is None or not 0 <= self.threshold <= 1):
            raise ConfigError(f"--select threshold needs --threshold AP in [0, 1], got {self.threshold}")
        check_units_and_pooling(self.units, self.pooling, "--units", "--pooling")
        if not 0 < self.lape_top_rate <= 1:
            raise ConfigError(f"--lape-top-rate {self.lape_top_rate}: must lie in (0, 1]")
        if self.lape_counts not in LAPE_COUNTS:
            raise ConfigError(f"--lape-counts {self.lape_counts!r}: must be one of {', '.join(sorted(LAPE_COUNTS))}")
        if self.lape and self.lape_counts == "gate" and self.units != "mlp":
            raise ConfigError(
                f"--lape counts MLP neurons by their gate (--lape-counts gate), but --units is {self.units!r}: use "
                "--units mlp, or --lape-counts post"
            )
        if self.per_lang < 0 or self.k < 1 or self.batch_size < 1:
            raise ConfigError("--per-lang must be >= 0, --k and --batch-size >= 1")
        languages = [resolve_language(code).flores for code in self.langs]
        missing = [code for code in self.negatives or () if resolve_language(code).flores not in languages]
        if missing:
            raise ConfigError(f"--negatives {','.join(missing)}: not among --langs {','.join(languages)}")
        shape = model_shape(self.model)
        n_units = shape.units(self.units)
        if n_units is not None and self.select != "threshold" and self.k > n_units:
            raise ConfigError(
                f"--k {self.k} is larger than the number of {self.units} units ({n_units}: {shape.n_layers} "
                f"blocks); choose k <= {n_units}"
            )
        data = load_corpus(self.corpus, langs=languages)
        return data.sample(self.per_lang, seed=self.seed) if self.per_lang else data

    def run(self) -> str:
        """Find, score and write; returns the summary text."""
        data = self.check()
        with RunFolder.open(self.out, "experts", self.record(), outputs=OUTPUTS, force=self.force) as folder:
            return self._write(folder, data, self._scores(folder, data))

    def _scores(self, folder: Any, data: Any) -> Any:
        return find_experts(
            load_model(self.model, device=self.device, dtype=self.dtype),
            data,
            units=self.units,
            pooling=self.pooling,
            negatives=list(self.negatives) if self.negatives else None,
            lape_top_rate=self.lape_top_rate if self.lape else None,
            lape_counts=self.lape_counts,
            cache=folder.artifacts.root,
            batch_size=self.batch_size,
        )

    def _write(self, folder: Any, data: Any, scores: Any) -> str:
        scores.save(own_path(folder.path, "scores"))
        sets = {
            lang: scores.select(lang, self.k, method=self.select, threshold=self.threshold)  # type: ignore[arg-type]
            for lang in scores.languages
        }
        for lang, expert_set in sets.items():
            expert_set.save(own_path(folder.path, f"experts/{lang}"))
        lape_sets = scores.lape_sets() if self.lape else {}
        for lang, lape_set in lape_sets.items():
            lape_set.save(own_path(folder.path, f"lape/{lang}"))
        summary = scores.summary()
        per_block = {lang: s.counts_per_block() for lang, s in sets.items()}
        write_json(
            own_path(folder.path, "summary.json"),
            {
                "model": scores.model,
                "settings": self.record(),
                "sentences_per_language": len(data),
                "languages": summary.to_dict(orient="records"),
                "experts_per_block": per_block,
                "lape_units": {lang: len(s) for lang, s in lape_sets.items()},
            },
        )
        lines = [summary.to_string(index=False), f"\nexperts per block (top {self.k}):"]
        lines += [f"  {lang}: " + " ".join(f"L{b}:{n}" for b, n in sorted(c.items())) for lang, c in per_block.items()]
        if lape_sets:
            lines.append("LAPE units: " + ", ".join(f"{lang}:{len(s)}" for lang, s in lape_sets.items()))
        lines.append(f"\nwrote {self.out}/scores, {self.out}/experts/<lang>, {self.out}/summary.json")
        return "\n".join(lines)
