"""What the figures of one run need, read back from its folder: results, expert scores, responses, texts and
cached embeddings. Every piece is optional beyond ``results.json``; a missing one gives None, not an error."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from jaxtyping import Float
from torch import Tensor

from xlens.viz.alignment import Condition, conditions


class RunFolderError(ValueError):
    """A folder that holds no xlens run."""


@dataclass
class Run:
    """A finished run of :func:`xlens.experiment.run_experiment` in folder ``path``."""

    path: Path
    results: dict[str, Any]
    _model: Any = field(default=None, repr=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Any = None) -> Run:
        folder = Path(path)
        file = folder / "results.json"
        if not file.is_file():
            raise RunFolderError(f"{folder} holds no results.json: run `xlens run --out {folder}` first")
        return cls(folder, json.loads(file.read_text()), model)

    @property
    def config(self) -> dict[str, Any]:
        return self.results["config"]

    @property
    def languages(self) -> list[str]:
        return list(self.results["experts"])

    @property
    def conditions(self) -> list[Condition]:
        return conditions(self.results)

    @property
    def layers(self) -> list[int]:
        if self.config.get("layers") is not None:
            return [int(x) for x in self.config["layers"]]
        return list(range(int(self.results["provenance"]["model"]["n_layers"]) + 1))

    @cached_property
    def scores(self) -> Any:
        from xlens.experts.sets import ExpertScores

        folder = self.path / "experts" / "scores"
        return ExpertScores.load(folder) if (folder / "scores.json").is_file() else None

    @cached_property
    def responses(self) -> Any:
        """The pooled responses the experts were scored on (from the run's cache), or None."""
        from xlens.activations import Responses

        key = (self.scores.meta if self.scores is not None else {}).get("cache_key")
        folder = self.path / "cache" / f"responses-{key}"
        return Responses.load(folder) if key and (folder / "responses.json").is_file() else None

    @cached_property
    def _splits(self) -> tuple[Any, Any] | None:
        from xlens.experiment import ExperimentConfig, load_splits

        try:
            return load_splits(ExperimentConfig(**self.config))
        except (OSError, ValueError):  # the corpus is not on this machine any more
            return None

    def _split(self, which: int, provenance_key: str) -> Any:
        if self._splits is None:
            return None
        corpus = self._splits[which]
        # Texts shown must be the ones measured: a changed corpus file must not slip in.
        return corpus if corpus.fingerprint() == self.results["provenance"][provenance_key]["fingerprint"] else None

    @property
    def find_texts(self) -> list[str] | None:
        """Texts of the responses' rows (language after language), or None."""
        find, responses = self._split(0, "find_corpus"), self.responses
        if find is None or responses is None:
            return None
        return [s for lang in responses.languages for s in find[lang]]

    @property
    def eval_corpus(self) -> Any:
        return self._split(1, "eval_corpus")

    def embeddings(self, condition: Condition | None = None) -> Float[Tensor, "sentence layer d_model"] | None:
        """Cached evaluation embeddings of the baseline (``None``) or of one condition, or None if not cached."""
        from safetensors.torch import load_file

        method, lang, k = ("none", None, 0) if condition is None else condition
        for entry in self.results.get("embeddings", []):
            if (entry["intervention"], entry["expert_lang"], int(entry["k"])) == (method, lang, int(k)):
                path = self.path / entry["file"]
                break
        else:
            return None
        return load_file(str(path))["embeddings"] if path.is_file() else None

    @property
    def model(self) -> Any:
        """The run's model, loaded on first use."""
        if self._model is None:
            from xlens.models import load_model

            self._model = load_model(
                self.config["model"], device=self.config.get("device"), dtype=self.config.get("dtype")
            )
        return self._model
