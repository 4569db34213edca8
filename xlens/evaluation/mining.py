"""The ``mining`` task: BUCC-style bitext mining between each language and a pivot, per embedding layer. Candidate
pairs are scored by ratio margin over k nearest neighbours in both directions (Artetxe & Schwenk 2019,
:func:`xlens.metrics.mining.mine`); the threshold that maximises F1 on the train part is applied to the test part.
Settings: ``[evaluate.mining]`` (:class:`xlens.config.MiningConfig`); without a ``corpus`` both parts are built
from the evaluation split (its rows halved), whose embeddings the retrieval task computes already.

Table ``mining``: ``{layer, src, tgt, precision, recall, f1, margin_threshold, mined, gold, sentences}``. Items: one per
test source sentence, ``decision`` 1 when what was mined for it is right (its gold partner, or nothing when it
has none); groups ``{layer, src, tgt}``. F1 is no mean over sentences, so its change has no paired interval; the
decision accuracy does.
"""

from __future__ import annotations

import random
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from xlens.activations import corpus_texts
from xlens.conditions import Condition
from xlens.config import ExperimentConfig, MiningConfig
from xlens.data.languages import flores_code
from xlens.data.mining import MiningSet, load_bucc, mining_set
from xlens.data.splits import Splits
from xlens.errors import ConfigError
from xlens.evaluation.base import ItemScores, Task, TaskContext, TaskOutput, language_frame, texts_fingerprint
from xlens.evaluation.registry import register_task
from xlens.metrics.mining import Candidates, best_threshold, mine, mining_scores

PARTS = ("train", "test")


def decisions(candidates: Candidates, threshold: float, gold: set[tuple[int, int]], n_src: int) -> Tensor:
    """Per source row, 1 when the pair mined for it at ``threshold`` is its gold pair, or nothing was mined for a
    row without one; else 0."""
    kept = candidates.score >= threshold
    mined = dict(zip(candidates.src[kept].tolist(), candidates.tgt[kept].tolist(), strict=True))
    partner = dict(gold)
    return torch.tensor([float(mined.get(i) == partner.get(i)) for i in range(n_src)])


@register_task
class MiningTask(Task):
    """See the module docstring."""

    name = "mining"
    version = 3  # 2: margin_threshold; 3: threshold 0.0 (as LASER) when no candidate is gold
    tables = ("mining",)
    metrics = ("decision",)
    Settings = MiningConfig

    def prepare(self, config: ExperimentConfig, splits: Splits) -> None:
        s: MiningConfig = self.settings
        pivot = flores_code(s.pivot)
        built = s.corpus is None
        langs = (
            [flores_code(c) for c in s.languages] if s.languages else [c for c in config.eval_languages if c != pivot]
        )
        if not langs or pivot in langs:
            raise ConfigError(
                f"evaluate.mining.languages = {langs}: give languages to mine against the pivot {pivot}, not the pivot"
            )
        self.from_eval = built
        if built:
            missing = [c for c in [pivot, *langs] if c not in config.eval_languages]
            if missing:
                raise ConfigError(
                    f"evaluate.mining: {missing} are not evaluation languages; without evaluate.mining.corpus the "
                    f"mining parts are built from the evaluation split ({config.eval_languages})"
                )
            self.parts = self._from_eval(splits, langs, pivot, config.seed)
        else:
            folder = str(s.corpus).removeprefix("bucc:")
            self.parts = {
                lang: {
                    role: load_bucc(folder, lang, part, pivot=s.pivot)
                    for role, part in zip(PARTS, s.parts, strict=True)
                }
                for lang in langs
            }
        texts = [t for parts in self.parts.values() for part in parts.values() for t in part.src_texts + part.tgt_texts]
        golds = {lang: {p: sorted(part.gold) for p, part in parts.items()} for lang, parts in self.parts.items()}
        self._key = ("mining", texts_fingerprint(texts), golds)

    def _from_eval(self, splits: Splits, langs: list[str], pivot: str, seed: int) -> dict[str, dict[str, MiningSet]]:
        s: MiningConfig = self.settings
        corpus = splits.eval
        rows = list(range(len(corpus)))
        random.Random(seed).shuffle(rows)
        half = len(rows) // 2
        need = s.gold + 2 * s.distractors
        if need > half:
            raise ConfigError(
                f"evaluate.mining: gold + 2 x distractors = {need} sentences per part, but the evaluation split's "
                f"{len(corpus)} rows make parts of {half}: lower gold or distractors, or raise evaluate.sentences"
            )
        halves = {"train": corpus.subset(sorted(rows[:half])), "test": corpus.subset(sorted(rows[half:]))}
        return {
            lang: {p: mining_set(halves[p], lang, pivot, s.gold, s.distractors, seed + i) for i, p in enumerate(PARTS)}
            for lang in langs
        }

    def key(self) -> Any:
        return self._key

    @classmethod
    def per_language(cls, tables: dict[str, pd.DataFrame], metric: str) -> pd.DataFrame:
        return language_frame(tables["mining"], metric, "src", "mining")

    def sides(
        self, ctx: TaskContext, part: MiningSet, condition: Condition, split: tuple[Tensor, dict] | None
    ) -> tuple[Tensor, Tensor]:
        """Both sides' embeddings: from ``split`` (the evaluation split's embeddings and each (language, text)'s row
        there) when the parts were built from it, else embedded."""
        if split is None:
            return ctx.embed(part.src_texts, condition), ctx.embed(part.tgt_texts, condition)
        emb, row = split
        src = torch.tensor([row[(part.src, t)] for t in part.src_texts])
        tgt = torch.tensor([row[(part.tgt, t)] for t in part.tgt_texts])
        return emb[src], emb[tgt]

    def eval_split(self, ctx: TaskContext, condition: Condition) -> tuple[Tensor, dict] | None:
        """The evaluation split embedded under ``condition`` (the retrieval task's forward pass) and each
        (language, text)'s row, when the parts were built from it."""
        if not self.from_eval:
            return None
        langs = ctx.config.eval_languages
        texts, _ = corpus_texts(ctx.splits.eval, langs)
        per_lang = len(ctx.splits.eval)
        return ctx.embed(texts, condition), {(langs[i // per_lang], t): i for i, t in enumerate(texts)}

    def measure(self, ctx: TaskContext, condition: Condition) -> TaskOutput:
        s: MiningConfig = self.settings
        rows, blocks = [], []
        split = self.eval_split(ctx, condition)
        for lang, parts in self.parts.items():
            train, test = parts["train"], parts["test"]
            x_train, y_train = self.sides(ctx, train, condition, split)
            x_test, y_test = self.sides(ctx, test, condition, split)
            gold_train, gold_test = train.gold_indices(), test.gold_indices()
            groups, decided = [], []
            for slot, layer in enumerate(ctx.layers):
                k_train = min(s.k, len(train.src_texts), len(train.tgt_texts))
                k_test = min(s.k, len(test.src_texts), len(test.tgt_texts))
                threshold = best_threshold(mine(x_train[:, slot], y_train[:, slot], k_train, s.retrieval), gold_train)  # type: ignore[arg-type]
                found = mine(x_test[:, slot], y_test[:, slot], k_test, s.retrieval)  # type: ignore[arg-type]
                got = mining_scores(found, gold_test, threshold)
                rows.append(
                    {"layer": layer, "src": lang, "tgt": test.tgt, "precision": got.precision, "recall": got.recall,
                     "f1": got.f1, "margin_threshold": got.threshold, "mined": got.mined, "gold": got.gold,
                     "sentences": len(test.src_texts)}
                )  # fmt: skip
                groups.append({"layer": layer, "src": lang, "tgt": test.tgt})
                decided.append(decisions(found, threshold, gold_test, len(test.src_texts)))
            blocks.append(ItemScores(groups, {"decision": torch.stack(decided)}))
        return TaskOutput({"mining": rows}, blocks)
