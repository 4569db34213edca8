"""Steering runs: what an intervention on a language's experts does to generation and to perplexity, measured as
the ``fidelity`` task measures it (:func:`xlens.evaluation.fidelity.measure_writing`) over a range of strengths.

:func:`run_steer` continues prompts with and without the intervention at several strengths (``k`` experts, or
``alpha`` for a method without k, such as diffmean) and reports, as a JSON-ready dict, the rate of continuations in
the target language, the language mix, perplexity per language on held-out parallel sentences, and example
continuations. The intervention is built by the method's spec, exactly as in ``xlens run``.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xlens.data.languages import flores_code
from xlens.data.loaders import load_corpus
from xlens.errors import SteeringError
from xlens.evaluation.fidelity import measure_writing
from xlens.experts.sets import ExpertScores, ExpertSet
from xlens.generation import check_generation, load_prompts
from xlens.hooks import check_same_model
from xlens.interventions import ExpertMethod, Intervention, InterventionSpec, SteeringVector, spec_class
from xlens.models.lens import LensModel
from xlens.runs.results import RunResults

if TYPE_CHECKING:
    from xlens.data.corpus import ParallelCorpus
    from xlens.experts.sets import ExpertScores, ExpertSet


def load_experts(
    experts: str | os.PathLike[str] | ExpertScores | ExpertSet,
    model: LensModel | None,
    lang: str,
    *,
    lape: bool = False,
) -> ExpertScores | ExpertSet:
    """ExpertScores (or an ExpertSet) from an ``xlens experts`` or ``xlens run`` folder, or the object itself.

    Layouts: ``DIR/results.json`` (a run: its scores), ``DIR/scores`` (ExpertScores, any k), ``DIR/experts/<lang>``
    (an ExpertSet of a fixed k) and, for LAPE, ``DIR/lape/<lang>``. Scores are preferred because they allow any k.
    With ``model``, experts made with another model are refused.
    """
    if isinstance(experts, ExpertScores | ExpertSet):
        check_same_model(experts.model, model, "these experts")
        return experts
    folder = Path(experts)
    if (folder / "results.json").is_file():
        scores = RunResults.load(folder).scores
        if scores is None:
            raise SteeringError(f"the run in {folder} has no expert scores on disk")
        check_same_model(scores.model, model, f"the expert scores of {folder}")
        return scores
    for candidate in (folder / "scores", folder):
        if (candidate / "scores.json").is_file():
            scores = ExpertScores.load(candidate, model=model)
            if not lape or scores.lape is not None:
                return scores
    set_dir = folder / ("lape" if lape else "experts") / flores_code(lang)
    if (set_dir / "experts.json").is_file():
        return ExpertSet.load(set_dir, model=model)
    raise SteeringError(
        f"no expert scores in {folder}: expected {folder}/scores (ExpertScores) or {set_dir} (an ExpertSet), as "
        f"written by `xlens experts --out DIR{' --lape' if lape else ''}`"
    )


@dataclass
class SteerPlan:
    """A steering run with everything checked that can be checked without the model (see :func:`prepare_steer`);
    :meth:`run` generates and measures."""

    spec: InterventionSpec
    target: str
    strengths: list[Any]
    prompts: list[str]
    langs: list[str]
    held_out: ParallelCorpus
    vector_rows: ParallelCorpus
    source: ExpertScores | ExpertSet | None
    max_new_tokens: int
    n_examples: int
    generation: dict[str, Any]

    def run(self, model: LensModel) -> dict[str, Any]:
        if self.source is not None:
            check_same_model(self.source.model, model, "these experts")
        started = time.perf_counter()
        sweep = _sweep(self.spec, self.strengths, self.source, self.target, model, self.vector_rows)
        baseline = self.measure(model, None)
        runs: list[dict[str, Any]] = []
        for strength, intervention in sweep:
            row = {**strength, **self.measure(model, intervention)}
            row["perplexity_ratio"] = {c: row["perplexity"][c] / baseline["perplexity"][c] for c in self.langs}
            runs.append(row)
        return {
            "config": self.config(),
            "model": model.identity(),
            "baseline": baseline,
            "runs": runs,
            "seconds": time.perf_counter() - started,
        }

    def config(self) -> dict[str, Any]:
        return {
            "method": self.spec.name,
            "spec": self.spec.to_dict(),
            "lang": self.target,
            "k_values" if self.spec.takes_k else "alphas": self.strengths,
            "prompts": len(self.prompts),
            "max_new_tokens": self.max_new_tokens,
            **self.generation,
            "eval_corpus": self.held_out.name,
            "eval_sentences": len(self.held_out),
            "eval_langs": self.langs,
        }

    def measure(self, model: LensModel, intervention: Intervention | None) -> dict[str, Any]:
        """The fidelity task's measurement (:func:`xlens.evaluation.fidelity.measure_writing`) under one strength."""
        tick = time.perf_counter()
        written = measure_writing(
            model,
            self.prompts,
            {c: list(self.held_out[c]) for c in self.langs},
            [] if intervention is None else [intervention],
            max_new_tokens=self.max_new_tokens,
            **self.generation,
        )
        counts = Counter(written.found)
        n = len(written.texts)
        return {
            "target_rate": counts[self.target] / n,
            "languages": {code: c / n for code, c in counts.most_common()},
            "perplexity": {c: written.perplexity(c) for c in self.langs},
            "intervention": None if intervention is None else intervention.describe(),
            "examples": [
                {"prompt": p, "continuation": t, "language": f}
                for p, t, f in list(zip(self.prompts, written.texts, written.found, strict=True))[: self.n_examples]
            ],
            "seconds": {"total": time.perf_counter() - tick},
        }


def prepare_steer(
    experts: str | os.PathLike[str] | ExpertScores | ExpertSet | None,
    lang: str,
    k_values: Sequence[int] = (0, 50, 200, 1000),
    method: str | InterventionSpec = "force",
    prompts: str | os.PathLike[str] | Sequence[str] = "builtin",
    eval_corpus: str | ParallelCorpus = "builtin",
    *,
    eval_langs: Sequence[str] | None = None,
    eval_sentences: int = 50,
    max_new_tokens: int = 20,
    alphas: Sequence[float] = (0.0, 1.0, 2.0, 4.0),
    vector_sentences: int = 100,
    greedy: bool = True,
    temperature: float = 1.0,
    top_p: float | None = None,
    seed: int = 0,
    n_examples: int = 3,
    batch_size: int | None = None,
) -> SteerPlan:
    """Check a steering run's inputs without a model: the method and its strengths, the prompts, the perplexity
    sentences, the experts and every k against them. See :func:`run_steer` for the arguments."""
    spec = method if isinstance(method, InterventionSpec) else spec_class(method)()
    target = flores_code(lang)
    strengths = _strengths(spec, k_values, alphas)
    generation = {"greedy": greedy, "temperature": temperature, "top_p": top_p, "seed": seed, "batch_size": batch_size}
    check_generation(max_new_tokens, batch_size, greedy, temperature, top_p)
    langs = list(dict.fromkeys(flores_code(code) for code in (eval_langs or [target, "eng_Latn"])))
    held_out, rest = _held_out(eval_corpus, spec, target, langs, eval_sentences, seed)
    source = None
    if "experts" in spec.needs:
        if experts is None:
            raise SteeringError(
                f"method {spec.name!r} needs experts (an `xlens experts` folder, ExpertScores or ExpertSet)"
            )
        source = load_experts(experts, None, target, lape="lape" in spec.needs)
        if isinstance(spec, ExpertMethod):
            for k in strengths:  # every k against the experts there are, before any generation
                if k:
                    spec.experts(source, target, k)
    return SteerPlan(
        spec, target, strengths, load_prompts(prompts), langs, held_out, rest.head(vector_sentences), source,
        max_new_tokens, n_examples, generation,
    )  # fmt: skip


def run_steer(
    model: LensModel,
    experts: str | os.PathLike[str] | ExpertScores | ExpertSet | None,
    lang: str,
    k_values: Sequence[int] = (0, 50, 200, 1000),
    method: str | InterventionSpec = "force",
    prompts: str | os.PathLike[str] | Sequence[str] = "builtin",
    eval_corpus: str | ParallelCorpus = "builtin",
    **options: Any,
) -> dict[str, Any]:
    """Generate with and without the intervention of ``method`` on language ``lang`` and measure its effect.

    Args:
        experts: an ``xlens experts`` or ``xlens run`` folder, ExpertScores or an ExpertSet (not needed for methods
            without experts, such as diffmean).
        k_values: numbers of experts, for methods that take k; ``0`` is the baseline (no intervention), which is
            always run. For methods without k the sweep is over ``alphas`` instead (``0`` = baseline).
        method: a registered method's name (its default settings) or a spec with settings, e.g.
            ``Force(value="on_mean")``.
        prompts: ``"builtin"`` (English openings), a text file with one prompt per line, or a list.
        eval_corpus: parallel sentences for perplexity (a ParallelCorpus or a corpus spec). ``eval_sentences``
            rows are sampled (seeded) for perplexity; a method that needs sentences (diffmean's vector) gets up to
            ``vector_sentences`` OTHER rows of it. Use a corpus the experts were not found on to keep the
            perplexity sentences held out.
        options: ``eval_langs`` (languages to measure perplexity on; default ``lang`` and English),
            ``eval_sentences``, ``max_new_tokens``, ``alphas``, ``vector_sentences``, ``greedy``, ``temperature``,
            ``top_p``, ``seed``, ``n_examples``, ``batch_size`` (see :func:`prepare_steer`).

    Returns:
        ``{"config", "model", "baseline", "runs", "seconds"}``; ``baseline`` and every entry of ``runs`` hold
        ``target_rate``, ``languages`` (identified language -> share), ``perplexity`` (per eval language),
        ``perplexity_ratio`` (vs baseline; runs only), ``intervention`` (its description) and ``examples``.
    """
    return prepare_steer(experts, lang, k_values, method, prompts, eval_corpus, **options).run(model)


def _sweep(
    spec: InterventionSpec,
    strengths: list[Any],
    source: ExpertScores | ExpertSet | None,
    target: str,
    model: LensModel,
    rows: ParallelCorpus,
) -> list[tuple[dict[str, Any], Intervention]]:
    """Every intervention of the sweep, built before anything is generated, so a bad k fails at once."""
    if spec.takes_k:
        return [({"k": k}, spec.build(source, target, k, model=model)) for k in strengths if k != 0]
    direction = spec.build(None, target, model=model, corpus=rows)
    if not isinstance(direction, SteeringVector):
        raise SteeringError(f"method {spec.name!r} has no k and no scale to sweep: give it k, or use `xlens run`")
    return [({"alpha": a}, direction.scaled(a)) for a in strengths if a != 0]


def _strengths(spec: InterventionSpec, k_values: Sequence[int], alphas: Sequence[float]) -> list[Any]:
    strengths = [int(k) for k in k_values] if spec.takes_k else [float(a) for a in alphas]
    if any(s < 0 for s in strengths):
        raise SteeringError(f"k / alpha values must be >= 0, got {strengths}")
    return strengths


def _held_out(
    eval_corpus: str | ParallelCorpus,
    spec: InterventionSpec,
    target: str,
    langs: list[str],
    eval_sentences: int,
    seed: int,
) -> tuple[ParallelCorpus, ParallelCorpus]:
    """The perplexity sentences (sampled rows of the eval corpus) and the other rows (for methods that need
    sentences of their own)."""
    sources = [flores_code(s) for s in spec.params().get("source") or []]
    needs_rows = "corpus" in spec.needs
    needed = list(dict.fromkeys(langs + ([target, *sources] if needs_rows else [])))
    corpus = load_corpus(eval_corpus) if isinstance(eval_corpus, str) else eval_corpus
    missing = [code for code in needed if code not in corpus]
    if missing:
        raise SteeringError(f"the eval corpus {corpus.name!r} lacks {missing}; it has {corpus.languages}")
    corpus = corpus.select(needed)
    spare = 1 if needs_rows else 0
    if not 1 <= eval_sentences <= len(corpus) - spare:
        raise SteeringError(
            f"eval_sentences={eval_sentences} must lie in 1..{len(corpus) - spare} for the {len(corpus)}-row eval "
            f"corpus{f' ({spec.name} needs other rows for itself)' if spare else ''}"
        )
    held_out = corpus.sample(eval_sentences, seed=seed)
    held = set(held_out.ids)
    rest = [i for i, row_id in enumerate(corpus.ids) if row_id not in held]
    return held_out, (corpus.subset(rest) if rest else held_out)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial rate (sound at rates near 0 or 1, where the normal one is not)."""
    from statistics import NormalDist

    if n < 1 or not 0 <= successes <= n:
        raise SteeringError(f"a rate needs 0 <= successes <= n and n >= 1, got {successes} of {n}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class ChooseKPlan:
    """A choose-k run checked without the model (see :func:`prepare_choose_k`); :meth:`run` measures and picks."""

    steer: SteerPlan
    min_rate: float
    max_perplexity_ratio: float

    def run(self, model: LensModel) -> dict[str, Any]:
        report = self.steer.run(model)
        n = len(self.steer.prompts)
        rows = []
        for entry in [report["baseline"], *report["runs"]]:
            hits = round(entry["target_rate"] * n)
            ratios = entry.get("perplexity_ratio", dict.fromkeys(self.steer.langs, 1.0))
            worst = max(ratios.values())
            rows.append(
                {
                    "k": entry.get("k", 0),
                    "target_rate": entry["target_rate"],
                    "target_rate_interval": wilson_interval(hits, n),
                    "perplexity_ratio": ratios,
                    "worst_perplexity_ratio": worst,
                }
            )
        chosen = pick_k(rows, self.min_rate, self.max_perplexity_ratio)
        return {
            "lang": self.steer.target,
            "rule": {"min_rate": self.min_rate, "max_perplexity_ratio": self.max_perplexity_ratio},
            "chosen_k": chosen,
            "why": _why(rows, chosen, self.min_rate, self.max_perplexity_ratio),
            "rows": rows,
            "steer": report,
        }


def pick_k(rows: Sequence[dict[str, Any]], min_rate: float, max_perplexity_ratio: float) -> int | None:
    """The smallest k > 0 whose ``target_rate`` reaches ``min_rate`` with ``worst_perplexity_ratio`` at most the
    bound (None if none does); marks each row's ``meets``."""
    for row in rows:
        row["meets"] = row["target_rate"] >= min_rate and row["worst_perplexity_ratio"] <= max_perplexity_ratio
    return min((row["k"] for row in rows if row["k"] and row["meets"]), default=None)


def _why(rows: list[dict[str, Any]], chosen: int | None, min_rate: float, max_ratio: float) -> str:
    if chosen is not None:
        return f"k = {chosen} is the smallest k with target rate >= {min_rate} and perplexity ratio <= {max_ratio}"
    best = max(rows[1:] or rows, key=lambda row: row["target_rate"])
    return (
        f"no k meets target rate >= {min_rate} with perplexity ratio <= {max_ratio}; the highest rate is "
        f"{best['target_rate']:.3f} at k = {best['k']} (perplexity ratio {best['worst_perplexity_ratio']:.3f})"
    )


def prepare_choose_k(
    experts: str | os.PathLike[str] | ExpertScores | ExpertSet,
    lang: str,
    k_values: Sequence[int] = (0, 50, 200, 1000, 3000),
    *,
    samples: int = 60,
    min_rate: float = 0.5,
    max_perplexity_ratio: float = 1.5,
    method: str | InterventionSpec = "force",
    prompts: str | os.PathLike[str] | Sequence[str] = "builtin",
    eval_corpus: str | ParallelCorpus = "builtin",
    temperature: float = 1.0,
    top_p: float | None = 0.9,
    **options: Any,
) -> ChooseKPlan:
    """Check a choose-k run without a model. See :func:`choose_k`."""
    if samples < 1:
        raise SteeringError(f"samples must be >= 1, got {samples}")
    if not 0 < min_rate <= 1:
        raise SteeringError(f"min_rate must lie in (0, 1], got {min_rate}")
    if max_perplexity_ratio <= 0:
        raise SteeringError(f"max_perplexity_ratio must be > 0, got {max_perplexity_ratio}")
    spec = method if isinstance(method, InterventionSpec) else spec_class(method)()
    if not spec.takes_k:
        raise SteeringError(f"method {spec.name!r} takes no k: choose-k sweeps the number of experts")
    openings = load_prompts(prompts)
    cycled = [openings[i % len(openings)] for i in range(samples)]  # each draw of a repeated prompt is a new sample
    ks = sorted({0, *(int(k) for k in k_values)})
    plan = prepare_steer(
        experts, lang, ks, spec, cycled, eval_corpus, greedy=False, temperature=temperature, top_p=top_p, **options
    )
    return ChooseKPlan(plan, min_rate, max_perplexity_ratio)


def choose_k(
    model: LensModel,
    experts: str | os.PathLike[str] | ExpertScores | ExpertSet,
    lang: str,
    k_values: Sequence[int] = (0, 50, 200, 1000, 3000),
    **options: Any,
) -> dict[str, Any]:
    """The paper's choice of k: for each k, the target-language rate of ``samples`` sampled continuations (seeded;
    the built-in prompts cycled) and the perplexity ratio against no intervention on held-out text; the chosen k is
    the smallest whose rate reaches ``min_rate`` with every perplexity ratio at most ``max_perplexity_ratio``.

    ``options``: ``samples``, ``min_rate``, ``max_perplexity_ratio``, ``method``, ``prompts``, ``eval_corpus``,
    ``temperature``, ``top_p`` and the options of :func:`run_steer` (``eval_langs``, ``eval_sentences``,
    ``max_new_tokens``, ``seed``, ``batch_size``, ...).

    Returns:
        ``{"lang", "rule", "chosen_k" (None if no k qualifies), "why", "rows", "steer"}``; each row holds ``k``,
        ``target_rate`` with its 95% Wilson interval, ``perplexity_ratio`` per language, ``worst_perplexity_ratio``
        and ``meets``; ``steer`` is the full :func:`run_steer` report (examples, language mixes).
    """
    return prepare_choose_k(experts, lang, k_values, **options).run(model)
