"""A toy evaluation task, added the way a user adds one: this file and its registration, nothing else.

``norms``: per evaluation sentence and layer, the length of its embedding, scaled by ``scale``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from xlens.activations import corpus_texts
from xlens.conditions import Condition
from xlens.evaluation import ItemScores, Task, TaskContext, TaskOutput, register_task


@dataclass(frozen=True)
class NormSettings:
    scale: float = 1.0


@register_task
class Norms(Task):
    name = "norms"
    tables = ("norms",)
    metrics = ("norm",)
    Settings = NormSettings

    def key(self) -> Any:
        return ("norms", 1)

    def measure(self, ctx: TaskContext, condition: Condition) -> TaskOutput:
        texts, _ = corpus_texts(ctx.splits.eval, ctx.config.eval_languages)
        norms = ctx.embed(texts, condition).norm(dim=-1).T * self.settings.scale  # [layer, sentence]
        rows = [{"layer": layer, "norm": float(norms[i].mean())} for i, layer in enumerate(ctx.layers)]
        groups = [{"layer": layer} for layer in ctx.layers]
        return TaskOutput({"norms": rows}, [ItemScores(groups, {"norm": norms.to(torch.float32)})])
