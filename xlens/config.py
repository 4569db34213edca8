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
    batch_size = 16
    max_length = 128

Relative paths in corpus specs are resolved against the config file's folder. Every setting is checked when the
config is made (type, allowed values, ranges) and against the model's shape by :meth:`ExperimentConfig.check_model`
(from the model's config, without loading weights): an error names the field, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlens._io import atomic_write
from xlens._schema import from_mapping, to_mapping
from xlens.errors import ConfigError
from xlens.interventions.specs import Force, InterventionSpec, spec_class

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
    from xlens.activations import POOLINGS

    if pooling not in POOLINGS or pooling == "active":
        allowed = ", ".join(p for p in POOLINGS if p != "active")
        raise ConfigError(f"{pooling_field} = {pooling!r}: must be one of {allowed}")
    if units not in ("mlp", "linear", "resid") and not units.startswith("re:"):
        raise ConfigError(f"{units_field} = {units!r}: must be mlp, linear, resid or re:REGEX over hook names")


def _at_least(section: str, name: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{section}.{name} = {value}: must be >= {low}")


@dataclass(frozen=True)
class FindConfig:
    """Where and how experts are found."""

    corpus: str = "builtin"
    sentences: int = 50
    units: str = "mlp"
    pooling: str = "mean"
    negatives: list[str] | None = None

    def __post_init__(self) -> None:
        _at_least("find", "sentences", self.sentences, 2)
        check_units_and_pooling(self.units, self.pooling, "find.units", "find.pooling")
        if self.negatives is not None and not self.negatives:
            raise ConfigError("find.negatives = []: give at least one language, or leave it out for all the others")


@dataclass(frozen=True)
class InterveneConfig:
    """The intervention method (a registered spec, with its own settings) and its k values.

    ``k`` is None for the method's default: ``[200]`` for methods that take k, none for the others (diffmean).
    """

    spec: InterventionSpec = field(default_factory=Force)
    k: list[int] | None = None

    def __post_init__(self) -> None:
        if self.k is not None and (any(x < 1 for x in self.k) or len(set(self.k)) != len(self.k)):
            raise ConfigError(f"intervene.k = {self.k}: every k must be >= 1 and listed once")

    @property
    def method(self) -> str:
        return self.spec.name

    @property
    def k_values(self) -> list[int]:
        if self.k is not None:
            return list(self.k)
        return [200] if self.spec.takes_k else []

    @classmethod
    def from_dict(cls, data: Any) -> InterveneConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"[intervene] must be a table of settings, got {type(data).__name__} {data!r}")
        rest = dict(data)
        method = rest.pop("method", Force.name)
        k = rest.pop("k", None)
        if k is not None and not (isinstance(k, list | tuple) and all(type(x) is int for x in k)):
            raise ConfigError(f"intervene.k = {k!r}: must be a list of integers")
        spec = spec_class(method).from_dict(rest)
        if k is not None and not spec.takes_k:
            raise ConfigError(
                f"intervene.k = {list(k)}: method {method!r} does not take k (it makes one intervention per "
                "language); remove intervene.k"
            )
        return cls(spec, None if k is None else list(k))

    def to_dict(self) -> dict[str, Any]:
        out = self.spec.to_dict()
        if self.k is not None:
            out["k"] = list(self.k)
        return out


@dataclass(frozen=True)
class EvaluateConfig:
    """Where and how the embedding space and retrieval are measured.

    ``layers`` are embedding layers ``0..n_layers`` (None: all); ``retrieval`` is cosine, csls or margin;
    ``center`` subtracts each language's mean embedding before measuring.
    """

    corpus: str = "builtin"
    sentences: int = 50
    pooling: str = "mean"
    layers: list[int] | None = None
    retrieval: str = "cosine"
    center: bool = False

    def __post_init__(self) -> None:
        from xlens.embeddings import EMBEDDING_POOLINGS
        from xlens.metrics.retrieval import METHODS as RETRIEVAL_METHODS

        _at_least("evaluate", "sentences", self.sentences, 2)
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


@dataclass(frozen=True)
class RuntimeConfig:
    """How the forward passes run. ``dtype`` and ``device`` default to bfloat16 on CUDA, float32 on CPU."""

    device: str | None = None
    dtype: str | None = None
    batch_size: int = 16
    max_length: int = 128

    def __post_init__(self) -> None:
        from xlens.models.loading import DTYPES

        _at_least("runtime", "batch_size", self.batch_size, 1)
        _at_least("runtime", "max_length", self.max_length, 2)
        if self.dtype is not None and self.dtype.lower() not in DTYPES:
            raise ConfigError(f"runtime.dtype = {self.dtype!r}: must be one of {', '.join(DTYPES)}")
        if self.device is not None and not _DEVICE.fullmatch(self.device):
            raise ConfigError(f"runtime.device = {self.device!r}: must be cpu, cuda, cuda:N, mps or xpu[:N]")


_SECTIONS: dict[str, Any] = {
    "find": FindConfig,
    "intervene": InterveneConfig,
    "evaluate": EvaluateConfig,
    "runtime": RuntimeConfig,
}


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a run (see the module docstring). Build it in Python, with :meth:`from_dict`, or
    :meth:`load` a TOML/YAML file; :meth:`override` applies dotted changes (``{"intervene.k": [100]}``)."""

    model: str = "gemma-3-270m"
    languages: list[str] = field(default_factory=lambda: ["en", "es", "de", "ja"])
    seed: int = 0
    find: FindConfig = field(default_factory=FindConfig)
    intervene: InterveneConfig = field(default_factory=InterveneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        from xlens.data.languages import resolve_language

        if len(self.languages) < 2:
            raise ConfigError(f"languages = {self.languages}: need at least two languages")
        codes = [resolve_language(code).flores for code in self.languages]  # UnknownLanguageError names the code
        if len(set(codes)) != len(codes):
            raise ConfigError(f"languages = {self.languages}: a language is listed twice ({codes})")
        negatives = [resolve_language(code).flores for code in self.find.negatives or []]
        missing = [code for code in negatives if code not in codes]
        if missing:
            raise ConfigError(f"find.negatives = {self.find.negatives}: {missing} are not among the languages {codes}")

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
        sections: dict[str, Any] = {}
        for name, kind in _SECTIONS.items():
            raw = data.get(name, {})
            corpus = raw.get("corpus") if isinstance(raw, Mapping) else None
            if name in ("find", "evaluate") and base is not None and isinstance(corpus, str):
                from xlens.data.loaders import resolve_spec_paths

                raw = {**raw, "corpus": resolve_spec_paths(corpus, base)}
            sections[name] = kind.from_dict(raw) if name == "intervene" else from_mapping(kind, raw, name)
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
                import yaml

                data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            else:
                raise ConfigError(f"config must be .toml, .yaml or .yml, got {p.name}")
        except ConfigError:
            raise
        except (tomllib.TOMLDecodeError, ValueError, yaml_error()) as err:
            raise ConfigError(f"{p} is not valid {p.suffix.lstrip('.').upper()}: {err}") from err
        try:
            return cls.from_dict(data, base=p.resolve().parent)
        except ConfigError as err:
            raise ConfigError(f"{p}: {err}") from err

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the config as TOML or YAML (by the file's suffix), atomically."""
        p = Path(path)
        if p.suffix == ".toml":
            import tomli_w

            text = tomli_w.dumps(self.to_dict())
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        else:
            raise ConfigError(f"config must be .toml, .yaml or .yml, got {p.name}")
        atomic_write(p, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return p

    def override(self, changes: Mapping[str, Any]) -> ExperimentConfig:
        """A copy with dotted keys changed (``{"model": "tiny-gpt2", "intervene.k": [8]}``); None values are
        skipped, so CLI options that were not given change nothing. Changing ``intervene.method`` keeps only the
        settings the new method takes."""
        data = to_mapping(self)
        for dotted, value in changes.items():
            if value is None:
                continue
            section, _, key = dotted.rpartition(".")
            target = data if not section else data.setdefault(section, {})
            if section and not isinstance(target, dict):
                raise ConfigError(f"cannot set {dotted}: {section} is not a section")
            if dotted == "intervene.method" and value != target.get("method"):
                allowed = {f.name for f in dataclasses.fields(spec_class(value))}
                for name in list(target):
                    if name not in allowed and name not in ("method", "k"):
                        del target[name]
                if not spec_class(value).takes_k:
                    target.pop("k", None)
            target[key] = value
        return ExperimentConfig.from_dict(_drop_none(data))

    # --- checks against the model ------------------------------------------------------------------------

    def check_model(self, shape: Any) -> None:
        """Settings against the model's shape (:class:`xlens.models.ModelShape`), before it is loaded."""
        self.intervene.spec.check(self.intervene.k_values, shape, self.find.units, self.languages)
        if self.evaluate.layers is not None:
            bad = [x for x in self.evaluate.layers if x > shape.n_layers]
            if bad:
                raise ConfigError(
                    f"evaluate.layers = {self.evaluate.layers}: {bad} out of range; {self.model} has embedding "
                    f"layers 0..{shape.n_layers} ({shape.n_layers} blocks)"
                )


def yaml_error() -> type[Exception]:
    import yaml

    return yaml.YAMLError


def _drop_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _drop_none(v) for k, v in data.items() if v is not None}
    return data
