"""The experiment's config: nested sections, read from and written to TOML or YAML, validated before anything runs.

An example (every key is optional; the defaults are those of the dataclasses below):

.. code-block:: toml

    model = "gemma-3-270m"
    languages = ["en", "es", "de", "fr", "ja"]
    seed = 0

    [find]                      # where and how experts are found
    corpus = "builtin"
    sentences = 100             # per language
    units = "mlp"
    pooling = "mean"
    negatives = ["en"]          # optional: score against these languages only (default: all the others)

    [intervene]                 # the method (any registered one), its k values and its own settings
    method = "force"
    k = [200]
    value = "on_p50"

    [evaluate]                  # where the embedding space and retrieval are measured
    corpus = "builtin"
    sentences = 100
    pooling = "mean"
    layers = [0, 9, 18]         # embedding layers 0..n_layers (default: all)
    retrieval = "cosine"

    [runtime]
    max_tokens = 8192          # padded tokens per batch (batch_size caps sentences per batch)
    max_length = 128

Relative paths in corpus specs are resolved against the config file's folder. Every setting is checked when the
config is made (type, allowed values, ranges) and against the model's shape by :meth:`ExperimentConfig.check_model`
(from the model's config, without loading weights): an error names the field, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
import yaml

from xlens._io import atomic_write
from xlens._schema import conforms, field_types, from_mapping, to_mapping
from xlens.activations import POOLINGS
from xlens.data.languages import resolve_language
from xlens.data.loaders import resolve_spec_paths
from xlens.embeddings import EMBEDDING_POOLINGS
from xlens.errors import ConfigError, UnknownLanguageError
from xlens.interventions.methods import Force
from xlens.interventions.registry import spec_class
from xlens.interventions.spec import InterventionSpec
from xlens.metrics.retrieval import METHODS as RETRIEVAL_METHODS
from xlens.models.loading import BACKENDS
from xlens.models.shape import DTYPES

_DEVICE = re.compile(r"cpu|mps|(cuda|xpu)(:\d+)?")
RETRIEVAL_KNN = 10  # neighbourhood of CSLS and margin retrieval (xlens.metrics.retrieval's default)

# Keys of the flat config of xlens 0.1 and where they live now.
_MOVED = {
    "find_corpus": "find.corpus",
    "find_sentences": "find.sentences",
    "units": "find.units",
    "pooling": "find.pooling",
    "negatives": "find.negatives",
    "method": "intervene.method",
    "k": "intervene.k",
    "value": "intervene.value",
    "alpha": "intervene.alpha",
    "lape_top_rate": "intervene.top_rate",
    "eval_corpus": "evaluate.corpus",
    "eval_sentences": "evaluate.sentences",
    "embedding_pooling": "evaluate.pooling",
    "layers": "evaluate.layers",
    "retrieval_method": "evaluate.retrieval",
    "center": "evaluate.center",
    "batch_size": "runtime.batch_size",
    "max_length": "runtime.max_length",
    "device": "runtime.device",
    "dtype": "runtime.dtype",
}


def check_units_and_pooling(units: str, pooling: str, units_field: str, pooling_field: str) -> None:
    """The unit spec and the pooling experts are scored on (``units_field`` etc. name them in errors)."""
    counts = ("active", "gate_active")  # token counts, LAPE's input: not a response to score experts on
    if pooling not in POOLINGS or pooling in counts:
        allowed = ", ".join(p for p in POOLINGS if p not in counts)
        raise ConfigError(f"{pooling_field} = {pooling!r}: must be one of {allowed}")
    if units not in ("mlp", "linear", "resid") and not units.startswith("re:"):
        raise ConfigError(f"{units_field} = {units!r}: must be mlp, linear, resid or re:REGEX over hook names")


MIN_RETRIEVAL_SENTENCES = 4  # debiased CKA's minimum


def _at_least(section: str, name: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{section}.{name} = {value}: must be >= {low}")


TEMPLATE_FIELDS = ("source", "source_language", "target_language")


def check_template(template: str) -> None:
    """A prompt template must hold ``{source}`` and may use only ``{source_language}`` and ``{target_language}``
    besides (literal braces doubled: ``{{``)."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise ConfigError(
            f"evaluate.translation.template = {template!r} is no valid template ({err}); write literal braces as "
            "{{ and }}"
        ) from None
    unknown = sorted({name for name in fields if name not in TEMPLATE_FIELDS})
    if unknown:
        raise ConfigError(
            f"evaluate.translation.template = {template!r} has unknown placeholder(s) {unknown}: it may use "
            + ", ".join("{" + name + "}" for name in TEMPLATE_FIELDS)
        )
    if "source" not in fields:
        raise ConfigError(
            f"evaluate.translation.template = {template!r} has no {{source}} placeholder: the sentence to translate "
            "goes there, "
            "e.g. '{source_language}: {source}\\n{target_language}:'"
        )


def parse_direction(text: str) -> tuple[str, str]:
    """``"en-es"`` as FLORES codes ``("eng_Latn", "spa_Latn")``; codes may hold hyphens themselves (``zh-Hant-en``)
    as long as one split of the text gives two languages."""

    def code(part: str) -> str | None:
        try:
            return resolve_language(part).flores if part.strip() else None
        except UnknownLanguageError:
            return None

    cuts = [i for i, ch in enumerate(text) if ch == "-"]
    found = {(a, b) for i in cuts if (a := code(text[:i])) and (b := code(text[i + 1 :]))}
    if len(found) != 1:
        why = "names no two languages" if not found else f"is ambiguous ({sorted(found)})"
        raise ConfigError(
            f"translate direction {text!r} {why}: write SOURCE-TARGET, e.g. 'en-es' or 'eng_Latn-spa_Latn'"
        )
    src, tgt = found.pop()
    if src == tgt:
        raise ConfigError(f"translate direction {text!r}: source and target are the same language ({src})")
    return src, tgt


@dataclass(frozen=True)
class FindConfig:
    """Where and how experts are found."""

    corpus: str = "builtin"
    sentences: int = 50
    units: str = "mlp"
    pooling: str = "mean"
    negatives: list[str] | None = None
    languages: list[str] | None = None

    def __post_init__(self) -> None:
        _at_least("find", "sentences", self.sentences, 2)
        check_units_and_pooling(self.units, self.pooling, "find.units", "find.pooling")
        if self.negatives is not None and not self.negatives:
            raise ConfigError("find.negatives = []: give at least one language, or leave it out for all the others")


@dataclass(frozen=True)
class InterveneConfig:
    """The grid of interventions: ``method`` (one registered method or a list), each method's settings (a value,
    or a list of values: an axis of the grid, applied to the methods that take that setting), the ``k`` values
    (for the methods that take k; default ``[200]``) and whose experts (``languages``; default: every language
    experts are found for).

    ``grid`` holds ``method`` and the settings as given; :attr:`specs` expands it, one spec per combination.
    """

    grid: dict[str, Any] = field(default_factory=lambda: {"method": Force.name})
    k: list[int] | None = None
    languages: list[str] | None = None
    specs: tuple[InterventionSpec, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.k is not None and (any(x < 1 for x in self.k) or len(set(self.k)) != len(self.k)):
            raise ConfigError(f"intervene.k = {self.k}: every k must be >= 1 and listed once")
        object.__setattr__(self, "specs", expand_grid(self.grid))
        if self.k is not None and not any(spec.takes_k for spec in self.specs):
            methods = ", ".join(dict.fromkeys(spec.name for spec in self.specs))
            raise ConfigError(
                f"intervene.k = {self.k}: no method of the grid takes k ({methods}: one intervention per "
                "language each); remove intervene.k"
            )

    @classmethod
    def of(cls, spec: InterventionSpec, k: list[int] | None = None) -> InterveneConfig:
        """The one-point grid of ``spec``."""
        return cls(spec.to_dict(), k)

    @property
    def spec(self) -> InterventionSpec:
        """The spec of a one-point grid."""
        if len(self.specs) != 1:
            raise ConfigError(f"the grid has {len(self.specs)} specs: use .specs")
        return self.specs[0]

    @property
    def k_values(self) -> list[int]:
        """The k values of the methods that take k."""
        if self.k is not None:
            return list(self.k)
        return [200] if any(spec.takes_k for spec in self.specs) else []

    @property
    def lape_top_rates(self) -> list[float]:
        """The LAPE top rates the grid's methods rank units with (a run allows one)."""
        return self._lape_settings("top_rate")

    def _lape_settings(self, name: str) -> list[Any]:
        """The distinct values of setting ``name`` among the grid's methods that rank units by LAPE."""
        return sorted({spec.params()[name] for spec in self.specs if "lape" in spec.needs and name in spec.params()})

    @property
    def lape_top_rate(self) -> float | None:
        """The one LAPE top rate of the run, or None when no method ranks by LAPE."""
        rates = self.lape_top_rates
        return rates[0] if rates else None

    @property
    def lape_counts(self) -> str:
        """What makes a unit active for the run's LAPE ranking (``"gate"``, the reference's, unless its LAPE
        methods say ``counts = "post"``); a run ranks once, so its LAPE methods must agree."""
        found = self._lape_settings("counts")
        if len(found) > 1:
            raise ConfigError(f"intervene.counts = {found}: a run ranks its units by LAPE once, with one definition")
        return found[0] if found else "gate"

    def ks(self, spec: InterventionSpec) -> list[int | None]:
        """The k values ``spec`` runs with (``[None]`` for a method without k)."""
        return list(self.k_values) if spec.takes_k else [None]

    @classmethod
    def from_dict(cls, data: Any) -> InterveneConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"[intervene] must be a table of settings, got {type(data).__name__} {data!r}")
        grid = dict(data)
        k, languages = grid.pop("k", None), grid.pop("languages", None)
        grid.setdefault("method", Force.name)
        if k is not None and not (isinstance(k, list | tuple) and all(type(x) is int for x in k)):
            raise ConfigError(f"intervene.k = {k!r}: must be a list of integers")
        if languages is not None and not (
            isinstance(languages, list | tuple) and all(isinstance(x, str) for x in languages)
        ):
            raise ConfigError(f"intervene.languages = {languages!r}: must be a list of language codes")
        return cls(grid, None if k is None else list(k), None if languages is None else list(languages))

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.grid)
        if self.k is not None:
            out["k"] = list(self.k)
        if self.languages is not None:
            out["languages"] = list(self.languages)
        return out


def expand_grid(grid: Mapping[str, Any]) -> tuple[InterventionSpec, ...]:
    """One spec per combination of the grid's methods and setting values (see :class:`InterveneConfig`)."""
    from itertools import product

    methods = grid.get("method", Force.name)
    methods = [methods] if isinstance(methods, str) else methods
    if not isinstance(methods, list | tuple) or not methods or not all(isinstance(m, str) for m in methods):
        raise ConfigError(f"intervene.method = {methods!r}: must be a method name or a non-empty list of them")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"intervene.method = {list(methods)}: a method is listed twice")
    classes = [spec_class(m) for m in methods]
    settings = {key: value for key, value in grid.items() if key != "method"}
    reserved = sorted({"control", "seed"} & set(settings))
    if reserved:
        raise ConfigError(
            f"intervene.{reserved[0]}: controls are asked for in [controls] (random, random_per_block, neutral, "
            "seeds), so that each one is paired with the condition it controls"
        )
    taken = {f.name for cls in classes for f in dataclasses.fields(cls)}
    unknown = sorted(set(settings) - taken)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} in [intervene]: no method of the grid ({', '.join(methods)}) takes them; "
            f"their settings are: method, k, languages, {', '.join(sorted(taken))}"
        )
    specs: list[InterventionSpec] = []
    for cls in classes:
        types = field_types(cls)
        axes = []
        for key, value in settings.items():
            if key not in types:
                continue
            # A list where the setting takes one value is an axis of the grid; a list for a list setting is a value.
            is_axis = isinstance(value, list | tuple) and not conforms(value, types[key])
            if is_axis and (not value or len(set(map(repr, value))) != len(value)):
                raise ConfigError(f"intervene.{key} = {list(value)}: an axis needs distinct values")
            axes.append([(key, v) for v in value] if is_axis else [(key, value)])
        for combination in product(*axes):
            spec = cls.from_dict(dict(combination))
            if spec not in specs:
                specs.append(spec)
    return tuple(specs)


@dataclass(frozen=True)
class ControlsConfig:
    """Controls of every intervention, each a condition of its own (see :mod:`xlens.runs.study`).

    ``random`` (on by default): the same method on k units drawn uniformly from all units (the paper's control),
    with the same statistic or factor, over ``seeds`` seeds (1 by default); ``random_per_block``: as many random
    units in each block as the experts have there; ``neutral``: the methods that define ``neutral()`` (built in:
    force) also run with the experts (and, with ``random``, the random units too) set to their median over all
    languages' sentences (``all_p50``);
    ``mixed``: retrieval with the queries embedded without the intervention against candidates embedded with it,
    and the reverse (no extra forward passes).
    """

    random: bool = True  # on by default: no finding about experts without as many random units beside it
    random_per_block: bool = False
    neutral: bool = False
    seeds: int = 1
    mixed: bool = False

    def __post_init__(self) -> None:
        _at_least("controls", "seeds", self.seeds, 1)


@dataclass(frozen=True)
class RuntimeConfig:
    """How the forward passes run. ``dtype`` and ``device`` default to bfloat16 on CUDA, float32 on CPU."""

    device: str | None = None
    dtype: str | None = None
    batch_size: int | None = None  # sentences per batch at most; default 16 on CPU, 1024 on GPUs
    max_tokens: int = 8192  # padded tokens per batch at most (sentences are batched by length)
    max_length: int = 128
    backend: str = "auto"  # auto: the TransformerBridge where TransformerLens has an adapter, else Hugging Face

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"runtime.backend = {self.backend!r}: must be one of {', '.join(BACKENDS)}")
        if self.batch_size is not None:
            _at_least("runtime", "batch_size", self.batch_size, 1)
        _at_least("runtime", "max_tokens", self.max_tokens, 1)
        _at_least("runtime", "max_length", self.max_length, 2)
        if self.dtype is not None and self.dtype.lower() not in DTYPES:
            raise ConfigError(f"runtime.dtype = {self.dtype!r}: must be one of {', '.join(DTYPES)}")
        if self.device is not None and not _DEVICE.fullmatch(self.device):
            raise ConfigError(f"runtime.device = {self.device!r}: must be cpu, cuda, cuda:N, mps or xpu[:N]")


@dataclass(frozen=True)
class StatsConfig:
    """The paired bootstrap over evaluation sentences behind every confidence interval."""

    resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95

    def __post_init__(self) -> None:
        _at_least("stats", "resamples", self.resamples, 10)
        if not 0 < self.confidence < 1:
            raise ConfigError(f"stats.confidence = {self.confidence}: must lie in (0, 1)")


@dataclass(frozen=True)
class TransferConfig:
    """``[evaluate.transfer]``, the transfer task: zero-shot cross-lingual transfer of a topic probe on SIB-200
    sentence embeddings.

    A logistic-regression probe is trained on the ``source`` language's train split (its strength ``C`` chosen among
    ``c_values`` on the source's dev split) and tested on the test split of the source and of every target, per
    embedding layer, under every condition of the run's grid applied as ``applied`` says: ``target`` (to the test
    inputs only) or ``all`` (to the probe's training inputs too). ``corpus`` is ``sib200:PATH`` (a folder in
    SIB-200's layout) or ``hf:DATASET`` (``hf:Davlan/sib200``); ``targets`` defaults to the run's languages
    (``"all"``: every language of the corpus), the source left out; ``layers`` to every embedding layer.
    ``sentences`` caps every split at that many rows (the same seeded sample in every language) for a quick look;
    ``test_sentences`` caps the test split only (over ``sentences`` there), for runs over many targets whose cost
    is their test sentences while the probe keeps its whole train split. The benchmark's numbers use all of them
    (701 / 99 / 204).
    """

    corpus: str | None = None
    source: str = "en"
    targets: list[str] | str | None = None
    layers: list[int] | None = None
    applied: list[str] = field(default_factory=lambda: ["target", "all"])
    c_values: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0, 100.0])
    pooling: str = "mean"
    sentences: int | None = None
    test_sentences: int | None = None

    def __post_init__(self) -> None:
        def code(name: str, given: str) -> str:
            try:
                return resolve_language(given).flores
            except UnknownLanguageError as err:
                raise ConfigError(f"evaluate.transfer.{name}: {err}") from err

        bad = [a for a in self.applied if a not in ("target", "all")]
        if bad or not self.applied or len(set(self.applied)) != len(self.applied):
            raise ConfigError(f"evaluate.transfer.applied = {self.applied}: 'target', 'all' or both, each listed once")
        if not self.c_values or any(c <= 0 for c in self.c_values) or len(set(self.c_values)) != len(self.c_values):
            raise ConfigError(
                f"evaluate.transfer.c_values = {self.c_values}: give at least one C > 0, each listed once"
            )
        code("source", self.source)
        if isinstance(self.targets, str) and self.targets != "all":
            raise ConfigError(f"evaluate.transfer.targets = {self.targets!r}: a list of languages, or 'all'")
        if isinstance(self.targets, list):
            if not self.targets:
                raise ConfigError("evaluate.transfer.targets = []: give at least one language, 'all', or leave it out")
            codes = [code("targets", given) for given in self.targets]
            if len(set(codes)) != len(codes):
                raise ConfigError(f"evaluate.transfer.targets = {self.targets}: a language is listed twice ({codes})")
        if self.layers is not None and (
            not self.layers or any(x < 0 for x in self.layers) or len(set(self.layers)) != len(self.layers)
        ):
            raise ConfigError(
                f"evaluate.transfer.layers = {self.layers}: distinct embedding layers >= 0, or leave it out"
            )
        if self.pooling not in EMBEDDING_POOLINGS:
            raise ConfigError(
                f"evaluate.transfer.pooling = {self.pooling!r}: must be one of {', '.join(EMBEDDING_POOLINGS)}"
            )
        for name in ("sentences", "test_sentences"):
            if getattr(self, name) is not None:
                _at_least("evaluate.transfer", name, getattr(self, name), 2)


@dataclass(frozen=True)
class TranslateConfig:
    """``[evaluate.translation]``, the translation task: few-shot translation of FLORES-200 devtest sentences,
    greedy, before and after each intervention of the run's grid; chrF++ and BLEU (sacrebleu) and the share of
    outputs in the target language.

    ``template`` is one example of the prompt; it must hold ``{source}`` and may name the languages (by their
    English names) with ``{source_language}`` and ``{target_language}``; no other placeholder (write literal braces
    as ``{{``). A shot is the template followed by a space and its reference; the test sentence's template ends
    the prompt, and the output is cut at its first line break. ``directions`` are ``SOURCE-TARGET`` language codes
    (``en-es``). Shots and test sentences are distinct rows drawn with the config's top-level ``seed``; rows that
    share a sentence with the find split are left out. See :mod:`xlens.evaluation.translation`.
    """

    corpus: str | None = None  # flores:PATH[:SPLIT]
    directions: list[str] | None = None  # "en-es", ...; default: English to and from every other run language
    shots: int = 5
    sentences: int = 50  # test sentences per direction
    template: str = "{source_language}: {source}\n{target_language}:"
    max_new_tokens: int = 64
    experts: str = "target"  # whose interventions a direction gets: the target language's, or "all" conditions

    def __post_init__(self) -> None:
        _at_least("evaluate.translation", "shots", self.shots, 0)
        _at_least("evaluate.translation", "sentences", self.sentences, 1)
        _at_least("evaluate.translation", "max_new_tokens", self.max_new_tokens, 1)
        check_template(self.template)
        if self.experts not in ("target", "all"):
            raise ConfigError(f"evaluate.translation.experts = {self.experts!r}: must be 'target' or 'all'")
        if self.directions is not None:
            if not self.directions:
                raise ConfigError(
                    "evaluate.translation.directions = []: give at least one, or leave it out for the default"
                )
            pairs = [parse_direction(d) for d in self.directions]
            if len(set(pairs)) != len(pairs):
                raise ConfigError(f"evaluate.translation.directions = {self.directions}: a direction is listed twice")


@dataclass(frozen=True)
class MiningConfig:
    """The ``mining`` task: BUCC-style bitext mining between each language and the ``pivot`` (ratio margin over
    ``k`` nearest neighbours both ways, Artetxe & Schwenk 2019; ``retrieval`` ``max`` or ``intersect``), the
    threshold chosen on one part, precision/recall/F1 on another. ``corpus``: ``bucc:PATH`` (a folder in the BUCC
    layout, ``<lang>-en.<part>.<lang>``, ``.en``, ``.gold``; ``parts``: the threshold's part and the scored one,
    by default BUCC 2018's ``sample`` and ``training``, whose gold pairs are public), or None: both parts built
    from the evaluation split, its rows halved, each half with ``gold`` pairs and ``distractors`` unpaired
    sentences on each side (so the evaluation split's embeddings serve retrieval and mining alike).
    ``languages``: default every evaluation language but the pivot."""

    corpus: str | None = None
    pivot: str = "en"
    languages: list[str] | None = None
    gold: int = 16
    distractors: int = 4
    k: int = 4
    retrieval: str = "max"
    parts: list[str] = field(default_factory=lambda: ["sample", "training"])

    def __post_init__(self) -> None:
        if len(self.parts) != 2 or self.parts[0] == self.parts[1]:
            raise ConfigError(f"evaluate.mining.parts = {self.parts}: two parts, the threshold's and the scored one")
        _at_least("evaluate.mining", "gold", self.gold, 2)
        _at_least("evaluate.mining", "distractors", self.distractors, 0)
        _at_least("evaluate.mining", "k", self.k, 1)
        if self.retrieval not in ("max", "intersect"):
            raise ConfigError(f"evaluate.mining.retrieval = {self.retrieval!r}: must be 'max' or 'intersect'")
        if self.corpus is not None and not self.corpus.startswith("bucc:"):
            raise ConfigError(f"evaluate.mining.corpus = {self.corpus!r}: give bucc:PATH, or leave it out")


@dataclass(frozen=True)
class FidelityConfig:
    """The ``fidelity`` task: what the model writes under the intervention, as language-steering benchmarks
    measure it: greedy continuations of ``prompts`` (``builtin``, a file, see :func:`xlens.generation.load_prompts`)
    of ``max_new_tokens`` tokens, the share written in the expert language (py3langid), and the perplexity of
    ``held_out`` evaluation sentences per language (the fluency cost)."""

    prompts: str = "builtin"
    max_new_tokens: int = 20
    held_out: int = 20

    def __post_init__(self) -> None:
        _at_least("evaluate.fidelity", "max_new_tokens", self.max_new_tokens, 1)
        _at_least("evaluate.fidelity", "held_out", self.held_out, 2)


@dataclass(frozen=True)
class EvaluateConfig:
    """What a study measures: its ``tasks`` (registered names, :mod:`xlens.evaluation`; default: ``["retrieval"]``),
    each with its sub-table of settings (``[evaluate.transfer]``, ``[evaluate.translation]``,
    ``[evaluate.mining]``, ``[evaluate.fidelity]``, or a plugin task's own), and the settings every task embeds
    with, which are the retrieval task's own: the evaluation ``corpus`` and ``sentences`` per language, ``pooling``
    and embedding ``layers`` ``0..n_layers`` (None: all); ``retrieval`` is cosine, csls or margin; ``center``
    subtracts each language's mean embedding before measuring; ``pivot_pairs`` a folder of ``<lang>-<pivot>`` pairs
    retrieved within each pair too.
    """

    corpus: str = "builtin"
    sentences: int = 50
    pooling: str = "mean"
    layers: list[int] | None = None
    retrieval: str = "cosine"
    center: bool = False
    languages: list[str] | None = None
    tasks: list[str] = field(default_factory=lambda: ["retrieval"])
    pivot_pairs: str | None = None
    transfer: TransferConfig = field(default_factory=lambda: TransferConfig())
    translation: TranslateConfig = field(default_factory=lambda: TranslateConfig())
    mining: MiningConfig = field(default_factory=lambda: MiningConfig())
    fidelity: FidelityConfig = field(default_factory=lambda: FidelityConfig())
    plugins: dict[str, Any] = field(default_factory=dict)  # sub-tables of tasks registered outside xlens

    def __post_init__(self) -> None:
        _at_least("evaluate", "sentences", self.sentences, 2)
        if "retrieval" in self.tasks and self.sentences < MIN_RETRIEVAL_SENTENCES:
            raise ConfigError(
                f"evaluate.sentences = {self.sentences}: the retrieval task needs at least {MIN_RETRIEVAL_SENTENCES} "
                "sentences per language (debiased CKA is defined from 4)"
            )
        if self.pooling not in EMBEDDING_POOLINGS:
            raise ConfigError(f"evaluate.pooling = {self.pooling!r}: must be one of {', '.join(EMBEDDING_POOLINGS)}")
        if self.retrieval not in RETRIEVAL_METHODS:
            raise ConfigError(f"evaluate.retrieval = {self.retrieval!r}: must be one of {', '.join(RETRIEVAL_METHODS)}")
        if self.retrieval != "cosine" and self.sentences < RETRIEVAL_KNN:
            raise ConfigError(
                f"evaluate.sentences = {self.sentences}: {self.retrieval} retrieval averages over each sentence's "
                f"{RETRIEVAL_KNN} nearest neighbours, so it needs at least {RETRIEVAL_KNN} sentences"
            )
        if self.layers is not None:
            if not self.layers:
                raise ConfigError("evaluate.layers = []: give at least one embedding layer, or leave it out for all")
            if len(set(self.layers)) != len(self.layers) or any(x < 0 for x in self.layers):
                raise ConfigError(f"evaluate.layers = {self.layers}: must be distinct embedding layers >= 0")
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"evaluate.tasks = {self.tasks}: give at least one task, each listed once")

    @classmethod
    def from_dict(cls, data: Any, base: str | os.PathLike[str] | None = None) -> EvaluateConfig:
        """``[evaluate]`` with its task sub-tables; relative paths resolved against ``base``."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"[evaluate] must be a table of settings, got {type(data).__name__} {data!r}")
        own = {
            k: v
            for k, v in data.items()
            if k not in TASK_SETTINGS and not (k not in _EVALUATE_KEYS and isinstance(v, Mapping))
        }
        given: dict[str, Any] = {}
        for name, kind in TASK_SETTINGS.items():
            given[name] = from_mapping(kind, _resolved(data.get(name, {}), base, ("corpus",)), f"evaluate.{name}")
        given["plugins"] = {k: dict(v) for k, v in data.items() if k not in _EVALUATE_KEYS and isinstance(v, Mapping)}
        own.pop("plugins", None)
        return from_mapping(cls, _resolved(own, base, ("corpus",)), "evaluate", given=given)

    def to_dict(self) -> dict[str, Any]:
        """The section as given: task sub-tables left at their defaults are left out."""
        out = to_mapping(self)
        defaults = {name: to_mapping(kind()) for name, kind in TASK_SETTINGS.items()}
        kept = {k: v for k, v in out.items() if k != "plugins" and not (k in defaults and v == defaults[k])}
        return {**kept, **self.plugins}

    def settings_of(self, task: str) -> dict[str, Any]:
        """The sub-table of settings of ``task`` as given (``{}`` for a task without one)."""
        if task in TASK_SETTINGS:
            return to_mapping(getattr(self, task))
        return dict(self.plugins.get(task, {}))


_SECTIONS: dict[str, Any] = {
    "find": FindConfig,
    "intervene": InterveneConfig,
    "controls": ControlsConfig,
    "evaluate": EvaluateConfig,
    "stats": StatsConfig,
    "runtime": RuntimeConfig,
}
# Sections of xlens 0.2 that are sub-tables of [evaluate] now.
_MOVED_SECTIONS = {"transfer": "evaluate.transfer", "translate": "evaluate.translation"}


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a run (see the module docstring). Build it in Python, with :meth:`from_dict`, or
    :meth:`load` a TOML/YAML file; :meth:`override` applies dotted changes (``{"intervene.k": [100]}``)."""

    model: str = "gemma-3-270m"
    languages: list[str] = field(default_factory=lambda: ["en", "es", "de", "ja"])
    seed: int = 0
    find: FindConfig = field(default_factory=FindConfig)
    intervene: InterveneConfig = field(default_factory=InterveneConfig)
    controls: ControlsConfig = field(default_factory=ControlsConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        for name, given in (
            ("languages", self.languages),
            ("find.languages", self.find.languages),
            ("evaluate.languages", self.evaluate.languages),
        ):
            if given is not None:
                _codes(name, given, at_least=2)
        finding = self.find_languages
        for name, given in (("find.negatives", self.find.negatives), ("intervene.languages", self.intervene.languages)):
            missing = [code for code in _codes(name, given or [], at_least=0) if code not in finding]
            if missing:
                raise ConfigError(
                    f"{name} = {given}: {missing} are not among the languages experts are found for {finding}"
                )
        self._check_controls()

    @property
    def transfer(self) -> TransferConfig:
        """The transfer task's settings (``[evaluate.transfer]``)."""
        return self.evaluate.transfer

    @property
    def translate(self) -> TranslateConfig:
        """The translation task's settings (``[evaluate.translation]``)."""
        return self.evaluate.translation

    @property
    def find_languages(self) -> list[str]:
        """The languages experts are scored among (FLORES codes)."""
        return _codes("find.languages", self.find.languages or self.languages, at_least=2)

    @property
    def eval_languages(self) -> list[str]:
        """The languages the embedding space and retrieval are measured on."""
        return _codes("evaluate.languages", self.evaluate.languages or self.languages, at_least=2)

    @property
    def expert_languages(self) -> list[str]:
        """The languages whose experts are intervened on."""
        return _codes("intervene.languages", self.intervene.languages or self.find_languages, at_least=1)

    def _check_controls(self) -> None:
        specs, controls = self.intervene.specs, self.controls
        rates = self.intervene.lape_top_rates
        if len(rates) > 1:
            raise ConfigError(f"intervene.top_rate = {rates}: a run ranks its units by LAPE once, with one top_rate")
        _ = self.intervene.lape_counts  # one definition of "active" per run
        wanted = {
            "controls.random": (controls.random, lambda spec: "random" in spec.controls),
            "controls.random_per_block": (controls.random_per_block, lambda spec: "random-per-block" in spec.controls),
            "controls.neutral": (controls.neutral, lambda spec: spec.neutral() is not None),
        }
        for name, (on, applies) in wanted.items():
            if on and not any(applies(spec) for spec in specs):
                methods = ", ".join(dict.fromkeys(spec.name for spec in specs))
                raise ConfigError(f"{name} = true: no method of the grid ({methods}) has this control")

    # --- reading and writing -----------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: str | os.PathLike[str] | None = None) -> ExperimentConfig:
        """A config from nested dicts (as in TOML/YAML); relative corpus paths are resolved against ``base``."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a config must be a table of settings, got {type(data).__name__}")
        moved = {k: _MOVED[k] for k in data if k in _MOVED}
        if moved:
            listed = ", ".join(f"{old} -> [{new.split('.')[0]}] {new.split('.')[1]}" for old, new in moved.items())
            raise ConfigError(f"config keys are nested in sections now: {listed}")
        moved_sections = [f"[{k}] -> [{v}]" for k, v in _MOVED_SECTIONS.items() if k in data]
        if moved_sections:
            raise ConfigError(f"task settings are sub-tables of [evaluate] now: {', '.join(moved_sections)}")
        sections: dict[str, Any] = {}
        for name, kind in _SECTIONS.items():
            raw = data.get(name, {})
            if name == "intervene":
                sections[name] = kind.from_dict(raw)
            elif name == "evaluate":
                sections[name] = kind.from_dict(raw, base)
            else:
                sections[name] = from_mapping(kind, _resolved(raw, base, ("corpus",)), name)
        top = {k: v for k, v in data.items() if k not in _SECTIONS}
        return from_mapping(cls, top, "top level", given=sections)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dicts; ``from_dict(to_dict())`` gives an equal config. None values are left out (TOML has
        no null; a missing key means the default)."""
        return _drop_none(to_mapping(self))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ExperimentConfig:
        """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file; corpus paths are relative to its folder."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            if p.suffix == ".toml":
                data = tomllib.loads(p.read_text(encoding="utf-8"))
            elif p.suffix in (".yaml", ".yml"):
                data = yaml.load(p.read_text(encoding="utf-8"), Loader=UniqueKeyLoader) or {}
            else:
                raise ConfigError(f"config must be .toml, .yaml or .yml, got {p.name}")
        except ConfigError:
            raise
        except (tomllib.TOMLDecodeError, ValueError, yaml.YAMLError) as err:
            raise ConfigError(f"{p} is not valid {p.suffix.lstrip('.').upper()}: {err}") from err
        try:
            return cls.from_dict(data, base=p.resolve().parent)
        except ConfigError as err:
            raise ConfigError(f"{p}: {err}") from err

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the config as TOML or YAML (by the file's suffix), atomically."""
        p = Path(path)
        if p.suffix == ".toml":
            text = tomli_w.dumps(self.to_dict())
        elif p.suffix in (".yaml", ".yml"):
            text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        else:
            raise ConfigError(f"config must be .toml, .yaml or .yml, got {p.name}")
        atomic_write(p, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return p

    def override(self, changes: Mapping[str, Any]) -> ExperimentConfig:
        """A copy with dotted keys changed (``{"model": "tiny-gpt2", "intervene.k": [8]}``); None values are
        skipped, so CLI options that were not given change nothing. Changing ``intervene.method`` keeps only the
        settings the new methods take."""
        data = to_mapping(self)
        for dotted, value in changes.items():
            if value is None:
                continue
            section, _, key = dotted.rpartition(".")
            target = data
            for part in section.split(".") if section else []:
                target = target.setdefault(part, {}) if isinstance(target, dict) else None
            if not isinstance(target, dict):
                raise ConfigError(f"cannot set {dotted}: {section} is not a section")
            if dotted == "intervene.method" and value != target.get("method"):
                classes = [spec_class(m) for m in ([value] if isinstance(value, str) else value)]
                allowed = {f.name for cls in classes for f in dataclasses.fields(cls)} | {"method", "k", "languages"}
                for name in [name for name in target if name not in allowed]:
                    del target[name]
                if not any(cls.takes_k for cls in classes):
                    target.pop("k", None)
            target[key] = value
        return ExperimentConfig.from_dict(_drop_none(data))

    # --- checks against the model ------------------------------------------------------------------------

    def check_model(self, shape: Any) -> None:
        """Settings against the model's shape (:class:`xlens.models.ModelShape`), before it is loaded."""
        for spec in self.intervene.specs:
            ks = [k for k in self.intervene.ks(spec) if k is not None]
            spec.check(ks, shape, self.find.units, self.find_languages)
        context = getattr(shape, "context", None)
        if context is not None and self.runtime.max_length > context:
            raise ConfigError(
                f"runtime.max_length = {self.runtime.max_length} exceeds {self.model or 'the model'}'s context of "
                f"{context} tokens (its config): lower runtime.max_length"
            )
        if self.evaluate.layers is not None:
            bad = [x for x in self.evaluate.layers if x > shape.n_layers]
            if bad:
                raise ConfigError(
                    f"evaluate.layers = {self.evaluate.layers}: {bad} out of range; {self.model} has embedding "
                    f"layers 0..{shape.n_layers} ({shape.n_layers} blocks)"
                )


TASK_SETTINGS: dict[str, type] = {
    "transfer": TransferConfig,
    "translation": TranslateConfig,
    "mining": MiningConfig,
    "fidelity": FidelityConfig,
}
_EVALUATE_KEYS = {f.name for f in dataclasses.fields(EvaluateConfig)}
# The settings of [evaluate] every task embeds with (the retrieval task's own): what its sub-tables are not.
RETRIEVAL_SETTINGS = tuple(sorted(_EVALUATE_KEYS - set(TASK_SETTINGS) - {"tasks", "plugins"}))


def _resolved(raw: Any, base: str | os.PathLike[str] | None, keys: tuple[str, ...]) -> Any:
    """``raw`` with the corpus specs and paths of ``keys`` resolved against ``base`` (a config file's folder)."""
    if base is None or not isinstance(raw, Mapping):
        return raw
    out = {k: resolve_spec_paths(v, base) if k in keys and isinstance(v, str) else v for k, v in raw.items()}
    if isinstance(out.get("pivot_pairs"), str):  # a plain folder, no scheme
        out["pivot_pairs"] = str(Path(base) / Path(out["pivot_pairs"]).expanduser())
    return out


def _codes(name: str, given: list[str], at_least: int) -> list[str]:
    """FLORES codes of a language list (UnknownLanguageError names a bad code)."""
    if len(given) < at_least:
        raise ConfigError(f"{name} = {given}: need at least {at_least} languages")
    codes = [resolve_language(code).flores for code in given]
    if len(set(codes)) != len(codes):
        raise ConfigError(f"{name} = {given}: a language is listed twice ({codes})")
    return codes


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (TOML refuses it; YAML would keep the last)."""


def _unique_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if isinstance(key, str | int | float | bool) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice (lines {seen[key]} and {line}): keep one", key_node.start_mark
            )
        seen[key] = line
    return loader.construct_mapping(node, deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _drop_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _drop_none(v) for k, v in data.items() if v is not None}
    return data
