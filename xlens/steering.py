"""Steering runs: what an intervention on a language's experts does to generation and to perplexity.

:func:`run_steer` continues prompts with and without the intervention at several strengths (``k`` experts, or
``alpha`` for a residual steering vector) and reports, as a JSON-ready dict, the rate of continuations in the target
language, the language mix, perplexity per language on held-out parallel sentences, and example continuations.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xlens.generation import generate, language_id, load_prompts, perplexity
from xlens.interventions import METHODS, Intervention, Steer, Where, build_intervention

if TYPE_CHECKING:
    from xlens.data.corpus import ParallelCorpus
    from xlens.experts.sets import ExpertScores, ExpertSet
    from xlens.models import LensModel

STEER_METHODS: tuple[str, ...] = METHODS


class SteeringError(ValueError):
    """A steering run asked with inputs that do not fit together."""


def load_experts(experts: str | os.PathLike[str] | ExpertScores | ExpertSet, model: Any, lang: str) -> Any:
    """ExpertScores (or an ExpertSet) from an ``xlens experts`` output folder, or the object itself.

    The folder layout is ``DIR/scores`` (ExpertScores) and ``DIR/experts/<lang>`` (ExpertSets of a fixed k);
    scores are preferred because they allow any k. Both are checked against ``model``.
    """
    from xlens.data.languages import flores_code
    from xlens.experts.sets import ExpertScores, ExpertSet

    if isinstance(experts, ExpertScores | ExpertSet):
        return experts
    folder = Path(experts)
    if (folder / "scores" / "scores.json").is_file():
        return ExpertScores.load(folder / "scores", model=model)
    if (folder / "scores.json").is_file():
        return ExpertScores.load(folder, model=model)
    set_dir = folder / "experts" / flores_code(lang)
    if (set_dir / "experts.json").is_file():
        return ExpertSet.load(set_dir, model=model)
    raise SteeringError(
        f"no expert scores in {folder}: expected {folder}/scores (ExpertScores) or {set_dir} (an ExpertSet), as "
        "written by `xlens experts --out DIR`"
    )


def run_steer(
    model: LensModel,
    experts: str | os.PathLike[str] | ExpertScores | ExpertSet | None,
    lang: str,
    k_values: Sequence[int] = (0, 50, 200, 1000),
    method: str = "force",
    prompts: str | os.PathLike[str] | Sequence[str] = "builtin",
    eval_corpus: str | ParallelCorpus = "builtin",
    *,
    eval_langs: Sequence[str] | None = None,
    eval_sentences: int = 50,
    max_new_tokens: int = 20,
    value: str = "on_p50",
    alpha: float | None = None,
    alphas: Sequence[float] = (0.0, 1.0, 2.0, 4.0),
    layer: int | None = None,
    source_lang: str = "eng_Latn",
    diffmean_sentences: int = 100,
    where: Where = "all",
    greedy: bool = True,
    temperature: float = 1.0,
    top_p: float | None = None,
    seed: int = 0,
    n_examples: int = 3,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Generate with and without the intervention of ``method`` on language ``lang`` and measure its effect.

    Args:
        experts: an ``xlens experts`` folder, ExpertScores or an ExpertSet (not needed for ``diffmean``).
        k_values: numbers of experts for force / aura / det0 / damp; ``0`` is the baseline (no intervention),
            which is always run. For ``diffmean`` the sweep is over ``alphas`` instead (``0`` = baseline).
        prompts: ``"builtin"`` (English openings), a text file with one prompt per line, or a list.
        eval_corpus: parallel sentences for perplexity (a ParallelCorpus or a corpus spec). ``eval_sentences``
            rows are sampled (seeded) for perplexity; for ``diffmean`` the steering vector comes from up to
            ``diffmean_sentences`` OTHER rows of it. Use a corpus the experts were not found on to keep the
            perplexity sentences held out.
        eval_langs: languages to measure perplexity on (default: ``lang`` and English).
        value: what force sets the experts to (``on_p50``, ``on_mean``, ``zero``, ...).
        alpha: the factor of ``damp``.
        layer, source_lang: ``diffmean`` adds ``alpha * (mean(lang) - mean(source_lang))`` after block ``layer``
            (default: the middle block).
        where: tokens the intervention acts on: ``all``, ``prompt`` or ``last`` (see xlens.interventions).

    Returns:
        ``{"config", "model", "baseline", "runs", "seconds"}``; ``baseline`` and every entry of ``runs`` hold
        ``target_rate``, ``languages`` (identified language -> share), ``perplexity`` (per eval language),
        ``perplexity_ratio`` (vs baseline; runs only), ``intervention`` (its description) and ``examples``.
    """
    from xlens.data.languages import flores_code
    from xlens.data.loaders import load_corpus

    if method not in STEER_METHODS:
        raise SteeringError(f"unknown steering method {method!r}; use one of {', '.join(STEER_METHODS)}")
    target = flores_code(lang)
    source = flores_code(source_lang)
    langs = [flores_code(code) for code in (eval_langs or [target, "eng_Latn"])]
    langs = list(dict.fromkeys(langs))
    strengths = [float(a) for a in alphas] if method == "diffmean" else [int(k) for k in k_values]
    if any(s < 0 for s in strengths):
        raise SteeringError(f"k / alpha values must be >= 0, got {strengths}")
    prompt_list = load_prompts(prompts)
    needed = langs + ([target, source] if method == "diffmean" else [])
    corpus = load_corpus(eval_corpus) if isinstance(eval_corpus, str) else eval_corpus
    missing = [code for code in dict.fromkeys(needed) if code not in corpus]
    if missing:
        raise SteeringError(f"the eval corpus {corpus.name!r} lacks {missing}; it has {corpus.languages}")
    corpus = corpus.select(list(dict.fromkeys(needed)))
    spare = 1 if method == "diffmean" else 0  # diffmean's vector needs rows outside the held-out ones
    if not 1 <= eval_sentences <= len(corpus) - spare:
        raise SteeringError(
            f"eval_sentences={eval_sentences} must lie in 1..{len(corpus) - spare} for the {len(corpus)}-row eval "
            f"corpus{' (diffmean needs other rows for its vector)' if spare else ''}"
        )
    held_out = corpus.sample(eval_sentences, seed=seed)
    held_ids = set(held_out.ids)
    rest_rows = [i for i, row_id in enumerate(corpus.ids) if row_id not in held_ids]
    if method == "diffmean":
        source_experts = None
    elif method == "lape":
        source_experts = load_lape_set(_required(experts, method), model, target)
    else:
        source_experts = load_experts(_required(experts, method), model, target)
    started = time.perf_counter()

    def measure(intervention: Intervention | None) -> dict[str, Any]:
        tick = time.perf_counter()
        ivs = [] if intervention is None else [intervention]
        texts = generate(
            model,
            prompt_list,
            max_new_tokens,
            interventions=ivs,
            greedy=greedy,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            batch_size=batch_size,
        )
        found = language_id(texts)
        counts = Counter(found)
        generated = time.perf_counter()
        ppl = {code: perplexity(model, held_out[code], interventions=ivs, batch_size=batch_size) for code in langs}
        return {
            "target_rate": counts[target] / len(texts),
            "languages": {code: n / len(texts) for code, n in counts.most_common()},
            "perplexity": ppl,
            "intervention": None if intervention is None else intervention.describe(),
            "examples": [
                {"prompt": p, "continuation": t, "language": f}
                for p, t, f in list(zip(prompt_list, texts, found, strict=True))[:n_examples]
            ],
            "seconds": {"generate": generated - tick, "total": time.perf_counter() - tick},
        }

    baseline = measure(None)
    direction = None
    if method == "diffmean":  # one vector, scaled by each alpha
        direction = build_intervention(
            "diffmean",
            model=model,
            corpus=corpus.subset(rest_rows[:diffmean_sentences]),
            language=target,
            source_language=source,
            layer=layer,
            where=where,
        )
    runs: list[dict[str, Any]] = []
    for strength in strengths:
        if strength == 0:
            continue
        if isinstance(direction, Steer):
            iv: Intervention = Steer(direction.layer, direction.vector, strength, where)
            row: dict[str, Any] = {"alpha": strength}
        else:
            # LAPE deactivation zeroes the language's k lowest-entropy LAPE units: det0 on the LAPE set.
            iv_method = "det0" if method == "lape" else method
            iv = _expert_intervention(iv_method, source_experts, target, int(strength), value, alpha, where)
            row = {"k": int(strength)}
        row.update(measure(iv))
        row["perplexity_ratio"] = {code: row["perplexity"][code] / baseline["perplexity"][code] for code in langs}
        runs.append(row)

    return {
        "config": {
            "method": method,
            "lang": target,
            "k_values" if method != "diffmean" else "alphas": strengths,
            "value": value if method == "force" else None,
            "alpha": alpha,
            "layer": (model.n_layers // 2 if layer is None else layer) if method == "diffmean" else None,
            "source_lang": source if method == "diffmean" else None,
            "where": where,
            "prompts": len(prompt_list),
            "max_new_tokens": max_new_tokens,
            "greedy": greedy,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
            "eval_corpus": corpus.name,
            "eval_sentences": len(held_out),
            "eval_langs": langs,
        },
        "model": model.identity(),
        "baseline": baseline,
        "runs": runs,
        "seconds": time.perf_counter() - started,
    }


def load_lape_set(experts: str | os.PathLike[str] | ExpertSet, model: Any, lang: str) -> ExpertSet:
    """The LAPE units of ``lang`` (lowest entropy first) written by ``xlens experts --lape --out DIR``."""
    from xlens.data.languages import flores_code
    from xlens.experts.sets import ExpertSet

    if isinstance(experts, ExpertSet):
        if experts.method != "lape":
            raise SteeringError(f"method 'lape' needs a LAPE unit set, got a {experts.method!r} expert set")
        return experts
    if not isinstance(experts, str | os.PathLike):
        raise SteeringError("method 'lape' needs an `xlens experts --lape` folder or a LAPE ExpertSet")
    set_dir = Path(experts) / "lape" / flores_code(lang)
    if not (set_dir / "experts.json").is_file():
        raise SteeringError(f"no LAPE units in {set_dir}: run `xlens experts --lape --out DIR` first")
    return ExpertSet.load(set_dir, model=model)


def _required(experts: Any, method: str) -> Any:
    if experts is None:
        raise SteeringError(f"method {method!r} needs experts (an `xlens experts` folder, ExpertScores or ExpertSet)")
    return experts


def _expert_intervention(
    method: str, source: Any, lang: str, k: int, value: str, alpha: float | None, where: Where
) -> Intervention:
    from xlens.experts.sets import ExpertSet

    if isinstance(source, ExpertSet):
        if source.language != lang:
            raise SteeringError(f"the expert set is for {source.language}, not {lang}")
        if k > len(source):
            raise SteeringError(
                f"k={k} is more than the {len(source)} experts saved for {lang}; pass the folder's scores "
                "(DIR/scores) to select any k"
            )
        return build_intervention(method, experts=source, k=k, value=value, alpha=alpha, where=where)
    return build_intervention(method, scores=source, language=lang, k=k, value=value, alpha=alpha, where=where)
