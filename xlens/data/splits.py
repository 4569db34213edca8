"""The find and evaluation splits of a run: disjoint by content, whatever corpora they come from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from xlens.data.corpus import SAME_SENTENCE
from xlens.data.loaders import load_corpus
from xlens.errors import ConfigError


class _Part(Protocol):
    @property
    def corpus(self) -> str: ...

    @property
    def sentences(self) -> int: ...


class SplitSettings(Protocol):
    """What :func:`load_splits` reads of a run's config (:class:`xlens.config.ExperimentConfig` has it)."""

    @property
    def find(self) -> _Part: ...

    @property
    def evaluate(self) -> _Part: ...

    @property
    def seed(self) -> int: ...

    @property
    def find_languages(self) -> list[str]: ...

    @property
    def eval_languages(self) -> list[str]: ...


@dataclass(frozen=True)
class Splits:
    """The find and evaluation sentences of a run, and how they were made disjoint."""

    find: Any
    eval: Any
    how: str  # "split": one corpus cut into disjoint parts; "separate": two corpora, overlap removed
    eval_rows_removed: int  # evaluation rows dropped because they share a sentence with the find split

    def provenance(self) -> dict[str, Any]:
        return {
            "how": self.how,
            "eval_rows_removed_for_overlap": self.eval_rows_removed,
            "overlapping_rows": len(self.eval.overlapping_rows(self.find)),
            "same_sentence": SAME_SENTENCE,
        }


def load_splits(config: SplitSettings) -> Splits:
    """The find and evaluation corpora, disjoint by content whatever their specs.

    Two specs that load the same sentences are one corpus, cut into disjoint parts (``ParallelCorpus.split``).
    Otherwise the find sentences are sampled first and every evaluation row that shares a sentence with them, in
    any language both have, is removed before the evaluation sample is drawn.
    """
    n_find, n_eval, seed = config.find.sentences, config.evaluate.sentences, config.seed
    find_all = load_corpus(config.find.corpus, langs=config.find_languages)
    same = config.evaluate.corpus == config.find.corpus and config.eval_languages == config.find_languages
    eval_all = find_all if same else load_corpus(config.evaluate.corpus, langs=config.eval_languages)
    if eval_all.fingerprint() == find_all.fingerprint():
        find, evaluation = find_all.split(n_find, n_eval, seed=seed)
        return Splits(find, evaluation, "split", 0)
    if n_find > len(find_all):
        raise ConfigError(f"find.sentences = {n_find}: the find corpus {find_all.name!r} has {len(find_all)} rows")
    find = find_all.sample(n_find, seed=seed)
    overlap = set(eval_all.overlapping_rows(find))
    pool = eval_all if not overlap else eval_all.subset([i for i in range(len(eval_all)) if i not in overlap])
    if n_eval > len(pool):
        raise ConfigError(
            f"evaluate.sentences = {n_eval}: the evaluation corpus {eval_all.name!r} has {len(eval_all)} rows, "
            f"{len(overlap)} of them sharing a sentence with the find split, so {len(pool)} are left"
        )
    return Splits(find, pool.sample(n_eval, seed=seed), "separate", len(overlap))
