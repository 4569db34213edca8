"""The paper's experiment, end to end: find experts, intervene, and measure the embedding space and retrieval.

``run_experiment(config, out)`` finds the experts of every language on one set of sentences, embeds a disjoint
evaluation set at every layer with no intervention and with each language's intervention for each k, and writes
``results.json`` (and parquet tables) with provenance. Every expensive step is cached in ``out/cache`` under a key
of what produced it, so an interrupted run resumes where it stopped and a rerun with the same config is identical.

Schema of ``results.json`` (``schema_version`` 1):

- ``config``: the ExperimentConfig; ``provenance``: model name/revision/architecture, corpus specs, files and
  sha256, corpus fingerprints, package versions, machine, seed, timings;
- ``experts``: per language, best AP and the number of experts per layer for the largest k;
- ``embeddings``: per condition ``{intervention, expert_lang, k, file}``, the cached ``[sentence, layer, d_model]``
  embeddings (sentences grouped by language in config order), relative to the run folder;
- ``retrieval``: rows ``{intervention, expert_lang, k, layer, src, tgt, top1, top5, mrr}`` for every ordered
  pair src != tgt; ``intervention`` is ``none`` (baseline; ``expert_lang`` null, ``k`` 0) or the method;
- ``alignment``: rows ``{intervention, expert_lang, k, layer, lang_a, lang_b, cosine_parallel, cosine_random,
  cosine_gap, cka, cka_debiased, centroid_distance}`` for every unordered pair lang_a < lang_b.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from xlens._io import atomic_write

SCHEMA_VERSION = 1
METHODS = ("force", "aura", "det0", "damp", "lape", "diffmean")


@dataclass
class ExperimentConfig:
    """Everything that defines a run. Load from TOML/YAML with :meth:`load`; CLI options override fields."""

    model: str = "gemma-3-270m"
    languages: list[str] = field(default_factory=lambda: ["en", "es", "de", "fr", "ja"])
    # Where experts are found and where they are evaluated. The same spec for both gives disjoint splits.
    find_corpus: str = "builtin"
    find_sentences: int = 100
    eval_corpus: str = "builtin"
    eval_sentences: int = 200
    units: str = "mlp"
    pooling: str = "mean"
    negatives: list[str] | None = None  # score experts against these languages only (default: all the others)
    method: str = "force"
    value: str = "on_p50"
    alpha: float | None = None  # damp factor, or the scale of the diffmean vector
    lape_top_rate: float = 0.01  # LAPE: share of all units kept as language-specific (Tang et al. 2024)
    k: list[int] = field(default_factory=lambda: [100, 1000])
    embedding_pooling: str = "mean"
    layers: list[int] | None = None
    retrieval_method: str = "cosine"
    center: bool = False
    seed: int = 0
    batch_size: int = 16
    max_length: int = 128
    device: str | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; use one of {', '.join(METHODS)}")
        if not self.k or any(k < 1 for k in self.k):
            raise ValueError(f"k values must be >= 1, got {self.k}")
        if len(self.languages) < 2:
            raise ValueError(f"need at least two languages, got {self.languages}")
        if self.find_sentences < 2 or self.eval_sentences < 2:
            raise ValueError("find_sentences and eval_sentences must be >= 2")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ExperimentConfig:
        """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file whose keys are this class's fields."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        if p.suffix == ".toml":
            data = tomllib.loads(p.read_text())
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(p.read_text()) or {}
        else:
            raise ValueError(f"config must be .toml, .yaml or .yml, got {p.name}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown} in {p}; known keys: {sorted(known)}")
        return cls(**data)

    def replace(self, **changes: Any) -> ExperimentConfig:
        return ExperimentConfig(**{**asdict(self), **{k: v for k, v in changes.items() if v is not None}})


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_hashes(sources: dict[str, str]) -> dict[str, dict[str, str]]:
    """sha256 of every source file; builtin sources are files inside the installed package."""
    from importlib.resources import files

    out = {}
    for lang, src in sources.items():
        path = files("xlens.data").joinpath(src) if src.startswith("builtin/") else Path(src)
        if path.is_file():
            out[lang] = {"file": src, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        else:
            out[lang] = {"source": src}
    return out


def _corpus_provenance(spec: str, corpus: Any) -> dict[str, Any]:
    return {
        "spec": spec,
        "fingerprint": corpus.fingerprint(),
        "files": _file_hashes(corpus.sources),
        "sentences": len(corpus),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("xlens", "torch", "transformers", "transformer-lens", "numpy", "scikit-learn"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def load_splits(config: ExperimentConfig) -> tuple[Any, Any]:
    """The find and eval corpora; disjoint splits of one corpus when both specs are equal."""
    from xlens.data.loaders import load_corpus

    find_all = load_corpus(config.find_corpus, langs=config.languages)
    if config.find_corpus == config.eval_corpus:
        find, evaluation = find_all.split(config.find_sentences, config.eval_sentences, seed=config.seed)
    else:
        find = find_all.sample(config.find_sentences, seed=config.seed)
        evaluation = load_corpus(config.eval_corpus, langs=config.languages).sample(
            config.eval_sentences, seed=config.seed
        )
    return find, evaluation


def run_experiment(config: ExperimentConfig, out: str | os.PathLike[str], progress: bool = True) -> dict[str, Any]:
    """Run the whole experiment and write ``out/results.json``, ``out/retrieval.parquet``, ``out/alignment.parquet``."""
    from xlens.activations import collect_corpus_responses
    from xlens.embeddings import sentence_embeddings
    from xlens.experts.sets import ExpertScores
    from xlens.models import load_model

    started = time.perf_counter()
    out_dir = Path(out)
    cache = out_dir / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    find, evaluation = load_splits(config)
    languages = list(find.languages)
    model = load_model(config.model, device=config.device, dtype=config.dtype)

    # 1. Experts: pooled responses on the find split, scored for every language against the others.
    tick = time.perf_counter()
    poolings = [config.pooling, "active"] if config.method == "lape" else [config.pooling]
    responses = collect_corpus_responses(
        model,
        find,
        languages,
        cache=cache,
        units=config.units,
        pooling=poolings,
        batch_size=config.batch_size,
        max_length=config.max_length,
        progress=progress,
    )
    scores_dir = out_dir / "experts" / "scores"
    scores_key = _key(responses.meta.get("cache_key"), config.pooling, config.negatives)
    # The key covers the model identity (via the responses key), so a match is this model's scores.
    saved = ExpertScores.load(scores_dir) if (scores_dir / "scores.json").is_file() else None
    if saved is not None and saved.meta.get("key") == scores_key:
        scores = saved
    else:
        scores = ExpertScores.from_responses(responses, pooling=config.pooling, negatives=config.negatives)
        scores.meta["key"] = scores_key
        scores.save(scores_dir)
    timings["experts_s"] = time.perf_counter() - tick

    # 2. Embeddings of the eval split, baseline and under each language's intervention for each k.
    texts = [s for lang in languages for s in evaluation[lang]]
    n_eval = len(evaluation)
    n_layers = model.n_layers + 1
    layers = list(range(n_layers)) if config.layers is None else list(config.layers)
    emb_settings = (
        model.identity(),
        evaluation.fingerprint(),
        languages,
        config.embedding_pooling,
        layers,
        config.max_length,
    )

    embedding_files: list[dict[str, Any]] = []

    def embed(label: str, interventions: list[Any], key_extra: Any) -> torch.Tensor:
        path = cache / f"emb-{_key(emb_settings, key_extra)}.safetensors"
        embedding_files.append({"file": str(path.relative_to(out_dir))})
        if path.is_file():
            return load_file(str(path))["embeddings"]
        emb = sentence_embeddings(
            model,
            texts,
            layers=layers,
            pooling=config.embedding_pooling,
            interventions=interventions,
            batch_size=config.batch_size,
            max_length=config.max_length,
            progress=progress,
            desc=label,
        )
        atomic_write(path, lambda p: save_file({"embeddings": emb.contiguous()}, str(p)))
        return emb

    tick = time.perf_counter()
    conditions: list[tuple[str, str | None, int, torch.Tensor]] = [
        ("none", None, 0, embed("embeddings: baseline", [], "none"))
    ]
    embedding_files[-1].update({"intervention": "none", "expert_lang": None, "k": 0})
    lape_result = None
    if config.method == "lape":
        from xlens.experts.lape import lape

        assert responses.lang_ids is not None
        lape_result = lape(
            responses["active"],
            responses.token_counts,
            responses.lang_ids,
            len(languages),
            top_rate=config.lape_top_rate,
        )
    # diffmean steers with one vector per language: k does not apply.
    k_values = [0] if config.method == "diffmean" else config.k
    for lang in tqdm(languages, desc="interventions", unit="lang", disable=not progress):
        for k in k_values:
            iv = build_run_intervention(config, model, scores, responses, find, lang, k, lape_result)
            label = f"embeddings: {config.method} {lang} k={k}"
            key_extra = (config.method, config.value, config.alpha, config.lape_top_rate, lang, k, scores_key)
            conditions.append((config.method, lang, k, embed(label, [iv], key_extra)))
            embedding_files[-1].update({"intervention": config.method, "expert_lang": lang, "k": k})
    timings["embeddings_s"] = time.perf_counter() - tick

    # 3. Metrics per condition and layer.
    tick = time.perf_counter()
    retrieval_rows, alignment_rows = [], []
    for method, expert_lang, k, emb in conditions:
        per_lang = emb.view(len(languages), n_eval, len(layers), -1)
        r_rows, a_rows = layer_metrics(per_lang, languages, layers, config)
        for row in r_rows + a_rows:
            row.update({"intervention": method, "expert_lang": expert_lang, "k": k})
        retrieval_rows += r_rows
        alignment_rows += a_rows
    timings["metrics_s"] = time.perf_counter() - tick
    timings["total_s"] = time.perf_counter() - started

    summary = scores.summary()
    experts_info = {
        row["language"]: {
            "best_ap": row["best_ap"],
            "best_unit": row["best_unit"],
            "n_ap_ge_0.95": row["n_ap_ge_0.95"],
            "experts_per_layer_at_max_k": {
                str(layer): n for layer, n in scores.select(row["language"], max(config.k)).counts_per_layer().items()
            },
        }
        for row in summary.to_dict(orient="records")
    }
    results = {
        "schema_version": SCHEMA_VERSION,
        "config": asdict(config),
        "provenance": {
            "model": model.identity(),
            "find_corpus": _corpus_provenance(config.find_corpus, find),
            "eval_corpus": _corpus_provenance(config.eval_corpus, evaluation),
            "disjoint_splits": config.find_corpus == config.eval_corpus,
            "versions": _versions(),
            "machine": {
                "platform": platform.platform(),
                "device": str(model.device),
                "threads": torch.get_num_threads(),
            },
            "seed": config.seed,
            "timings": timings,
        },
        "experts": experts_info,
        "embeddings": embedding_files,
        "retrieval": retrieval_rows,
        "alignment": alignment_rows,
    }
    write_results(results, out_dir)
    return results


def layer_metrics(
    per_lang: torch.Tensor, languages: list[str], layers: list[int], config: ExperimentConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Retrieval rows (ordered pairs) and alignment rows (unordered pairs) of one condition at every layer."""
    from xlens.metrics.alignment import (
        centroid_distance_matrix,
        cka_matrix,
        cosine_parallel_matrix,
        cosine_random_matrix,
        mean_center,
    )
    from xlens.metrics.retrieval import retrieval_matrix

    retrieval_rows, alignment_rows = [], []
    n = len(languages)
    for slot, layer in enumerate(layers):
        E = per_lang[:, :, slot].double()
        if config.center:
            E = mean_center(E)
        ret = retrieval_matrix(E, method=config.retrieval_method)  # type: ignore[arg-type]
        cos_par = cosine_parallel_matrix(E)
        cos_rand = cosine_random_matrix(E)
        cka = cka_matrix(E)
        cka_d = cka_matrix(E, debiased=True)
        centroid = centroid_distance_matrix(E)
        for i in range(n):
            for j in range(n):
                if i == j:
                    continue
                retrieval_rows.append(
                    {
                        "layer": layer,
                        "src": languages[i],
                        "tgt": languages[j],
                        "top1": float(ret["top1"][i, j]),
                        "top5": float(ret["top5"][i, j]),
                        "mrr": float(ret["mrr"][i, j]),
                    }
                )
                if i < j:
                    alignment_rows.append(
                        {
                            "layer": layer,
                            "lang_a": languages[i],
                            "lang_b": languages[j],
                            "cosine_parallel": float(cos_par[i, j]),
                            "cosine_random": float(cos_rand[i, j]),
                            "cosine_gap": float(cos_par[i, j] - cos_rand[i, j]),
                            "cka": float(cka[i, j]),
                            "cka_debiased": float(cka_d[i, j]),
                            "centroid_distance": float(centroid[i, j]),
                        }
                    )
    return retrieval_rows, alignment_rows


def build_run_intervention(
    config: ExperimentConfig,
    model: Any,
    scores: Any,
    responses: Any,
    find: Any,
    lang: str,
    k: int,
    lape_result: Any = None,
) -> Any:
    """The intervention of ``config.method`` for language ``lang`` with ``k`` units (diffmean: k unused)."""
    from xlens.interventions import build_intervention

    return build_intervention(
        config.method,
        model=model,
        scores=scores,
        language=lang,
        k=None if config.method == "diffmean" else k,
        value=config.value,
        alpha=config.alpha,
        responses=responses,
        corpus=find,
        lape_result=lape_result,
        languages=scores.languages,
    )


def write_results(results: dict[str, Any], out_dir: Path) -> None:
    import pandas as pd

    atomic_write(out_dir / "results.json", lambda p: p.write_text(json.dumps(results, indent=1)))
    for table in ("retrieval", "alignment"):
        frame = pd.DataFrame(results[table])
        atomic_write(out_dir / f"{table}.parquet", lambda p, f=frame: f.to_parquet(p, index=False))


def results_tables(results: dict[str, Any]) -> dict[str, Any]:
    """The ``retrieval`` and ``alignment`` rows of a results dict (or a results.json path) as pandas tables."""
    import pandas as pd

    return {name: pd.DataFrame(results[name]) for name in ("retrieval", "alignment")}


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The numbers the paper reports: baseline top-1 per pair at the best and last layer, each intervention's
    top-1 there, the best improvement ratio, and how cosine and CKA moved (means over language pairs)."""
    tables = results_tables(results)
    ret, ali = tables["retrieval"], tables["alignment"]
    base = ret[ret["intervention"] == "none"]
    by_layer = base.groupby("layer")["top1"].mean()
    best_layer, last_layer = int(by_layer.idxmax()), int(by_layer.index.max())
    pairs = (
        base[base["layer"].isin([best_layer, last_layer])]
        .pivot_table(index=["src", "tgt"], columns="layer", values="top1")
        .rename(columns={best_layer: "baseline_best_layer", last_layer: "baseline_last_layer"})
    )
    conditions = []
    interventions = ret[ret["intervention"] != "none"]
    for (method, lang, k), group in interventions.groupby(["intervention", "expert_lang", "k"]):
        mean_by_layer = group.groupby("layer")["top1"].mean()
        ratio = mean_by_layer / by_layer.loc[mean_by_layer.index]
        align = ali[(ali["intervention"] == method) & (ali["expert_lang"] == lang) & (ali["k"] == k)]
        align_base = ali[ali["intervention"] == "none"]
        entry = {
            "intervention": method,
            "expert_lang": lang,
            "k": int(k),
            "top1_best_layer": float(mean_by_layer.loc[best_layer]),
            "top1_last_layer": float(mean_by_layer.loc[last_layer]),
            "best_ratio": float(ratio.max()),
            "best_ratio_layer": int(ratio.idxmax()),
        }
        for metric in ("cosine_parallel", "cosine_gap", "cka"):
            for name, layer in (("best", best_layer), ("last", last_layer)):
                after = align[align["layer"] == layer][metric].mean()
                before = align_base[align_base["layer"] == layer][metric].mean()
                entry[f"delta_{metric}_{name}_layer"] = float(after - before)
        conditions.append(entry)
    # Per-pair changes: the largest ratio (a near-zero baseline inflates it, so before/after come with it) and the
    # largest absolute gain in top-1.
    pairs_changed = []
    for (method, lang, k, layer), group in interventions.groupby(["intervention", "expert_lang", "k", "layer"]):
        merged = group.merge(base[base["layer"] == layer], on=["src", "tgt"], suffixes=("", "_base"))
        for row in merged.itertuples():
            pairs_changed.append(
                {
                    "intervention": method,
                    "expert_lang": lang,
                    "k": int(k),
                    "layer": int(layer),
                    "src": row.src,
                    "tgt": row.tgt,
                    "before": float(row.top1_base),
                    "after": float(row.top1),
                }
            )
    with_ratio = [{**p, "ratio": p["after"] / p["before"]} for p in pairs_changed if p["before"] > 0]
    best_gain = max(pairs_changed, key=lambda p: p["after"] - p["before"], default=None)
    return {
        "best_layer": best_layer,
        "last_layer": last_layer,
        "baseline_mean_top1_by_layer": {int(k): float(v) for k, v in by_layer.items()},
        "baseline_pairs": pairs.reset_index().to_dict(orient="records"),
        "conditions": conditions,
        "best_pair_ratio": max(with_ratio, key=lambda p: p["ratio"], default=None),
        "best_pair_gain": None
        if best_gain is None
        else {**best_gain, "gain": best_gain["after"] - best_gain["before"]},
    }


def pair_change_lines(h: dict[str, Any]) -> list[str]:
    """The best per-pair ratio and the largest per-pair gain of a :func:`headline`, one line each, with the
    top-1 before and after (none without interventions)."""
    lines = []
    for title, key in (("best pair improvement", "best_pair_ratio"), ("largest pair gain", "best_pair_gain")):
        if b := h[key]:
            change = f"x{b['ratio']:.2f}" if key == "best_pair_ratio" else f"+{b['gain']:.3f}"
            lines.append(
                f"{title}: {change}, top-1 {b['before']:.3f} -> {b['after']:.3f} ({b['src']}->{b['tgt']}, "
                f"layer {b['layer']}, {b['intervention']} {b['expert_lang']} k={b['k']})"
            )
    return lines


def summarize(results: dict[str, Any]) -> str:
    """A plain-text report of :func:`headline` for the terminal."""
    import pandas as pd

    h = headline(results)
    lines = [
        "baseline mean top-1 by layer: "
        + " ".join(f"L{k}:{v:.3f}" for k, v in h["baseline_mean_top1_by_layer"].items()),
        f"best layer {h['best_layer']}, last layer {h['last_layer']}",
        "",
        "baseline top-1 per pair:",
        pd.DataFrame(h["baseline_pairs"]).to_string(index=False, float_format="%.3f"),
    ]
    if h["conditions"]:
        lines += ["", "after intervention (mean over pairs):"]
        lines.append(pd.DataFrame(h["conditions"]).to_string(index=False, float_format="%.3f"))
    changes = pair_change_lines(h)
    if changes:
        lines += ["", *changes]
    return "\n".join(lines)
