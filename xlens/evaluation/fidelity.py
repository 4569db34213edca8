"""The ``fidelity`` task: what the model writes under the intervention, as language-steering benchmarks measure it.
Greedy continuations of the prompts: the share written in the expert language (py3langid); and the perplexity of
held-out evaluation sentences in every evaluation language (what the steering costs in fluency). Settings:
``[evaluate.fidelity]`` (:class:`xlens.config.FidelityConfig`). ``xlens steer`` and ``xlens choose-k`` measure
with the same function (:func:`measure_writing`) over a range of strengths for one language.

Table ``fidelity``: ``{language, measure, score}`` with ``measure`` ``in_language`` (share of continuations
identified as ``language``; the baseline has one row per expert language, an intervention one for its own) and
``perplexity`` (on ``language``'s held-out sentences).
Items: ``in_language`` per prompt (groups ``{language}``) and ``log_perplexity`` per held-out sentence, its mean
token negative log-likelihood (groups ``{language}``; ``"mean"``: a sentence's mean over the languages, the
evaluation split being parallel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from xlens.conditions import Condition
from xlens.config import ExperimentConfig, FidelityConfig
from xlens.data.splits import Splits
from xlens.errors import ConfigError, ResultsError
from xlens.evaluation.base import ItemScores, Task, TaskContext, TaskOutput, language_frame, texts_fingerprint
from xlens.evaluation.registry import register_task
from xlens.generation import generate, language_id, load_prompts, token_nll
from xlens.models.lens import LensModel


@dataclass
class Writing:
    """What the model wrote under one intervention: its continuations and their languages (py3langid), and per
    held-out language, each sentence's summed token negative log-likelihood and its number of predicted tokens."""

    texts: list[str]
    found: list[str]
    nll: dict[str, tuple[Tensor, Tensor]]

    def in_language(self, lang: str) -> Float[Tensor, " prompt"]:
        """1 for each continuation identified as ``lang``."""
        return torch.tensor([float(code == lang) for code in self.found])

    def perplexity(self, lang: str) -> float:
        """Token-weighted perplexity of ``lang``'s held-out sentences."""
        total, count = self.nll[lang]
        return math.exp(float(total.sum() / count.sum()))

    def sentence_nll(self, lang: str) -> Float[Tensor, " sentence"]:
        """Each held-out sentence's mean token negative log-likelihood (its log-perplexity)."""
        total, count = self.nll[lang]
        return (total / count.clamp(min=1)).to(torch.float32)


def measure_writing(
    model: LensModel,
    prompts: Sequence[str],
    held_out: dict[str, list[str]],
    interventions: Sequence[Any],
    *,
    max_new_tokens: int,
    batch_size: int | None,
    max_length: int | None = 256,
    **sampling: Any,
) -> Writing:
    """Continue ``prompts`` under ``interventions`` (greedy unless ``sampling`` says otherwise: see
    :func:`xlens.generation.generate`), identify the continuations' languages and score the held-out sentences."""
    texts = generate(model, list(prompts), max_new_tokens, interventions=interventions, batch_size=batch_size,
                     **sampling)  # fmt: skip
    nll = {
        lang: token_nll(model, sentences, interventions=interventions, batch_size=batch_size, max_length=max_length)
        for lang, sentences in held_out.items()
    }
    return Writing(texts, language_id(texts), nll)


@register_task
class FidelityTask(Task):
    """See the module docstring."""

    name = "fidelity"
    version = 2  # 2: the score column, the expert languages in the key
    tables = ("fidelity",)
    metrics = ("in_language", "log_perplexity")
    packages = ("py3langid",)
    Settings = FidelityConfig

    def prepare(self, config: ExperimentConfig, splits: Splits) -> None:
        s: FidelityConfig = self.settings
        self.prompts = load_prompts(s.prompts)
        if s.held_out > len(splits.eval):
            raise ConfigError(
                f"evaluate.fidelity.held_out = {s.held_out}: the evaluation split has {len(splits.eval)} sentences "
                "per language; lower it or raise evaluate.sentences"
            )
        self.held_out = {lang: list(splits.eval[lang])[: s.held_out] for lang in config.eval_languages}
        self.expert_languages = config.expert_languages
        texts = [t for part in self.held_out.values() for t in part]
        self._key = ("fidelity", texts_fingerprint(self.prompts), texts_fingerprint(texts), self.expert_languages)

    def key(self) -> Any:
        return self._key

    @classmethod
    def per_language(cls, tables: dict[str, pd.DataFrame], metric: str) -> pd.DataFrame:
        """``in_language`` or ``perplexity`` per language (no layers)."""
        table: Any = tables["fidelity"]
        if metric not in set(table["measure"]):
            raise ResultsError(f"fidelity has no metric {metric!r}; it has {', '.join(sorted(set(table['measure'])))}")
        return language_frame(table[table["measure"] == metric], "score", "language", "fidelity")

    def measure(self, ctx: TaskContext, condition: Condition) -> TaskOutput:
        s: FidelityConfig = self.settings
        runtime = ctx.config.runtime
        written = measure_writing(
            ctx.model,
            self.prompts,
            self.held_out,
            ctx.interventions(condition),
            max_new_tokens=s.max_new_tokens,
            batch_size=runtime.batch_size,
            max_length=runtime.max_length,
        )
        languages = list(self.expert_languages) if condition.language is None else [condition.language]
        rows = [{"language": lang, "measure": "in_language", "score": float(written.in_language(lang).mean())}
                for lang in languages]  # fmt: skip
        rows += [
            {"language": lang, "measure": "perplexity", "score": written.perplexity(lang)} for lang in self.held_out
        ]
        nll = [written.sentence_nll(lang) for lang in self.held_out]
        ppl_groups = [{"language": lang} for lang in self.held_out]
        ppl_groups.append({"language": "mean"})  # the held-out sentences are parallel: a sentence's mean
        nll.append(torch.stack(nll).mean(dim=0))
        items = [
            ItemScores([{"language": lang} for lang in languages],
                       {"in_language": torch.stack([written.in_language(lang) for lang in languages])}),
            ItemScores(ppl_groups, {"log_perplexity": torch.stack(nll)}),
        ]  # fmt: skip
        return TaskOutput({"fidelity": rows}, items)
