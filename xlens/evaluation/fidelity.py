"""The ``fidelity`` task: what the model writes under the intervention, as language-steering benchmarks measure it.
Greedy continuations of the prompts: the share written in the expert language (py3langid); the perplexity of
held-out evaluation sentences in every evaluation language (what the steering costs in fluency); and their
combination, the share in the expert language discounted by the perplexity increase on that language. Settings:
``[evaluate.fidelity]`` (:class:`xlens.config.FidelityConfig`). ``xlens steer`` and ``xlens choose-k`` measure
the same two quantities over a range of strengths for one language.

Table ``fidelity``: ``{language, measure, score}`` with ``measure`` ``in_language`` (share of continuations
identified as ``language``; the baseline has one row per expert language, an intervention one for its own),
``perplexity`` (on ``language``'s held-out sentences) and ``examples`` rows are left to ``xlens steer``.
Items: ``in_language`` per prompt (groups ``{language}``) and ``log_perplexity`` per held-out sentence, its mean
token negative log-likelihood (groups ``{language}``; ``"mean"``: a sentence's mean over the languages, the
evaluation split being parallel).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch

from xlens.conditions import Condition
from xlens.config import ExperimentConfig, FidelityConfig
from xlens.data.splits import Splits
from xlens.errors import ConfigError, ResultsError
from xlens.evaluation.base import ItemScores, Task, TaskContext, TaskOutput, language_frame, texts_fingerprint
from xlens.evaluation.registry import register_task
from xlens.generation import generate, language_id, load_prompts, token_nll


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
        interventions = ctx.interventions(condition)
        written = generate(
            ctx.model, self.prompts, s.max_new_tokens, interventions=interventions, batch_size=runtime.batch_size
        )
        found = language_id(written)
        languages = self.expert_languages if condition.is_baseline else [condition.language]
        rows, share_groups, shares = [], [], []
        for lang in languages:
            hits = torch.tensor([float(code == lang) for code in found])
            rows.append({"language": lang, "measure": "in_language", "score": float(hits.mean())})
            share_groups.append({"language": lang})
            shares.append(hits)
        ppl_groups, nll = [], []
        for lang, texts in self.held_out.items():
            total, count = token_nll(
                ctx.model,
                texts,
                interventions=interventions,
                batch_size=runtime.batch_size,
                max_length=runtime.max_length,
            )
            rows.append(
                {"language": lang, "measure": "perplexity", "score": math.exp(float(total.sum() / count.sum()))}
            )
            ppl_groups.append({"language": lang})
            nll.append((total / count.clamp(min=1)).to(torch.float32))
        ppl_groups.append({"language": "mean"})  # the held-out sentences are parallel: a sentence's mean
        nll.append(torch.stack(nll).mean(dim=0))
        items = [
            ItemScores(share_groups, {"in_language": torch.stack(shares)}),
            ItemScores(ppl_groups, {"log_perplexity": torch.stack(nll)}),
        ]
        return TaskOutput({"fidelity": rows}, items)
