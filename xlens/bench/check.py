"""The GPU proof behind ``xlens bench check`` (and ``scripts/gpu_check.sh``): one call that, on a CUDA machine,
checks xlens against the CPU and measures it at the paper's sizes, and writes one JSON.

Four sections, each a list of rows with a status (``passed``, ``failed``, ``skipped`` with its reason, ``error``
with its message) so that one broken part never hides the others:

1. ``correctness``: tiny random models of every architecture xlens claims (bloom, cohere, gpt2, gemma3 through the
   TransformerBridge; biogpt through the Hugging Face backend), on the device in float32 and bfloat16, against the
   same model on the CPU in float32: sentence embeddings at every layer, pooled responses of every MLP unit, the
   embeddings under a force and a diffmean intervention, expert scores (AP and AUROC), and greedy generation, whose
   KV-cached tokens must equal the full-forward loop's in float32. Then the CUDA-only tests of the suite (marked
   ``cuda``), which are skipped on machines without CUDA.
2. ``throughput``: :func:`xlens.bench.throughput` on random-weight models of the paper's shapes
   (:data:`xlens.models.memory.PAPER_CONFIGS`, built on the device) in bfloat16, with the peak GPU memory of the
   load and of each pass against :func:`xlens.models.memory.memory_table`'s prediction.
3. ``generation``: :func:`xlens.bench.generation_speed` (KV-cached against full-forward generation).
4. ``study``: a small sweep with a random control on a tiny model, on the device and on the CPU in float32, whose
   tables must agree within :data:`STUDY_ATOL`.

With ``cpu=True`` the same steps run on the CPU with the smallest shapes (the check of the check, run by CI): the
device is the CPU, so float32 rows compare the CPU with itself and bfloat16 rows measure CPU bfloat16.

A correctness or study row that misses its tolerance fails the check (exit code 1); throughput and generation
speeds are measurements, reported against their targets, never failures.
"""

from __future__ import annotations

import gc
import math
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from xlens._io import produced_by, write_json
from xlens.activations import Responses, collect_corpus_responses, corpus_texts
from xlens.bench.common import machine, sync
from xlens.bench.generate import TARGET_SPEEDUP_MIN, generation_speed
from xlens.bench.throughput import TARGET_RATIO_MIN, throughput, throughput_config, throughput_texts
from xlens.config import ExperimentConfig
from xlens.data import load_builtin
from xlens.data.corpus import ParallelCorpus
from xlens.embeddings import sentence_embeddings
from xlens.errors import InputError
from xlens.experts.scoring import one_vs_rest
from xlens.experts.sets import ExpertScores
from xlens.generation import BUILTIN_PROMPTS, generate
from xlens.interventions import DiffMean, Force
from xlens.models import HF_TINY_ARCHITECTURES, TINY_ARCHITECTURES, LensModel, load_model
from xlens.models.loading import random_model
from xlens.models.memory import GIB, PAPER_MODELS, memory_table, paper_config
from xlens.runs.study import run_experiment

CHECK_VERSION = 1
TINY_MODELS: tuple[str, ...] = tuple(f"tiny-{a}" for a in TINY_ARCHITECTURES + HF_TINY_ARCHITECTURES)
DTYPES: tuple[str, ...] = ("float32", "bfloat16")

# Against the CPU in float32. `relative_error` is the largest over layers (or hooks) of ||got - want|| / ||want||
# (Frobenius); `score_mean_abs` is the mean absolute difference of AP (and of AUROC) over all languages and units,
# whose order can flip between near-equal responses; generation must give identical greedy tokens in float32
# (bfloat16 rounding may flip a near-tie, so there its agreement is reported, not required).
# bfloat16 on 2 CPU cores gave relative errors of 0.003-0.006 and score differences of 0.001-0.002.
TOLERANCES: dict[str, dict[str, float]] = {
    "float32": {"relative_error": 1e-4, "score_mean_abs": 1e-3},
    "bfloat16": {"relative_error": 2e-2, "score_mean_abs": 1e-2},
}
# Each intervention must move the CPU reference's embeddings by more than this, so that a device that ignored it
# would miss the float32 tolerance by 10x.
MIN_EFFECT = 10 * TOLERANCES["float32"]["relative_error"]
SCORING_ATOL = 1e-6  # the scoring kernel on the device vs the CPU on the same float32 responses
STUDY_ATOL = 1e-4  # every float column of every table of the sweep, device vs CPU, float32
# The smallest shapes of the paper's architectures for `cpu=True`.
SMALL_OVERRIDES: dict[str, dict[str, int]] = {
    "bloom": {"n_layer": 2, "hidden_size": 64, "n_head": 2, "vocab_size": 512},
    "cohere": {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
               "num_key_value_heads": 1, "vocab_size": 512},
    "gpt2": {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_inner": 128, "vocab_size": 512},
}  # fmt: skip
CUDA_TEST_FILES: tuple[str, ...] = (
    "test_alignment.py",
    "test_batching.py",
    "test_device_map.py",
    "test_retrieval.py",
    "test_scoring.py",
)
STUDY: dict[str, Any] = {
    "model": "tiny-gpt2",
    "languages": ["en", "es", "ja"],
    "find": {"sentences": 16},
    "intervene": {"method": ["force", "diffmean"], "k": [8]},
    "controls": {"random": True, "seeds": 1},
    "evaluate": {"sentences": 12},
    "stats": {"resamples": 200},
    "runtime": {"batch_size": 8},
}


@dataclass
class CheckSettings:
    """What one check runs: ``cpu`` the smallest shapes on the CPU; else the paper's on CUDA."""

    cpu: bool = False
    budget_s: float = 420.0  # rows that would start after this many seconds are skipped, with the reason
    sentences: int = 512  # throughput: sentences of the built-in corpus, repeated
    units: int = 2000  # throughput: forced MLP units in (d)
    new_tokens: int = 64  # generation: tokens per prompt

    @classmethod
    def smallest(cls, budget_s: float = 420.0) -> CheckSettings:
        """The CPU check of the check (CI): every step, the smallest sizes."""
        return cls(cpu=True, budget_s=budget_s, sentences=64, units=2000, new_tokens=8)

    @property
    def device(self) -> str:
        return "cpu" if self.cpu else "cuda"

    def shapes(self) -> dict[str, Any]:
        """Name -> Hugging Face config of the throughput models."""
        configs = {name: paper_config(name) for name in PAPER_MODELS}
        if self.cpu:
            for config in configs.values():
                for key, value in SMALL_OVERRIDES[config.model_type].items():
                    setattr(config, key, value)
        return configs

    def generation_models(self) -> dict[str, Any]:
        if self.cpu:
            config = throughput_config("gemma3-tiny-shape")
            config.vocab_size = 512  # the real 262,144 would make the unembedding all of a CPU step
            return {"gemma3-tiny-shape": config}
        return {
            "gemma3-270m-shape": throughput_config("gemma3-270m-shape"),
            PAPER_MODELS[0]: paper_config(PAPER_MODELS[0]),  # Bloom-7B1, the smallest of the paper's models
        }


@dataclass
class Check:
    """The report being built; written atomically after every row, ``complete`` only at the end."""

    settings: CheckSettings
    path: Path
    started: float = field(default_factory=time.perf_counter)
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def log_path(self) -> Path:
        return self.path.with_suffix(".log")

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def log(self, line: str) -> None:
        """Print a line and append it to the log beside the JSON."""
        print(line, flush=True)
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(line + "\n")

    def add(self, section: str, row: dict[str, Any]) -> None:
        self.report["sections"].setdefault(section, []).append(row)
        shown = {k: v for k, v in row.items() if not isinstance(v, dict | list)}
        self.log(f"[{self.elapsed():6.1f}s] {section}: {shown}")
        for failure in row.get("failures", []):
            self.log(f"          FAILED: {failure}")
        self.save()

    def save(self) -> None:
        self.report["wall_s"] = self.elapsed()
        write_json(self.path, self.report)

    @contextmanager
    def row(self, section: str, **keys: Any) -> Iterator[dict[str, Any] | None]:
        """One row of a section, None past the time budget (the row then says so); an error in the body is
        recorded in the row rather than raised."""
        row: dict[str, Any] = dict(keys)
        if self.elapsed() > self.settings.budget_s:
            row.update(status="skipped", reason=f"time budget of {self.settings.budget_s:.0f} s spent")
            self.add(section, row)
            yield None
            return
        start = time.perf_counter()
        try:
            yield row
            row.setdefault("status", "passed" if not row.get("failures") else "failed")
        except torch.cuda.OutOfMemoryError as err:
            row.update(status="skipped", reason=f"out of GPU memory: {str(err).splitlines()[0]}")
        except Exception as err:
            row.update(status="error", error=f"{type(err).__name__}: {err}"[:2000])
        row["wall_s"] = time.perf_counter() - start
        self.add(section, row)
        free_device()


def free_device() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def device_slug(cpu: bool) -> str:
    """``h200`` for 'NVIDIA H200', ``cpu`` on the CPU: the name of the check's files."""
    if cpu or not torch.cuda.is_available():
        return "cpu"
    name = torch.cuda.get_device_name(0).lower().replace("nvidia", "")
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "gpu"


def relative_error(got: Tensor, want: Tensor, dim: int | None = None) -> float:
    """The largest over ``dim`` (or the whole) of ||got - want|| / ||want||."""
    got, want = got.double().cpu(), want.double().cpu()
    if dim is None:
        return float((got - want).norm() / want.norm().clamp_min(1e-30))
    parts = zip(got.unbind(dim), want.unbind(dim), strict=True)
    return max(float((g - w).norm() / w.norm().clamp_min(1e-30)) for g, w in parts)


# --- 1. correctness -------------------------------------------------------------------------------------


@dataclass
class Measured:
    """What one model gives on the check's corpus (all on the CPU, float32)."""

    embeddings: Float[Tensor, "sentence layer d_model"]
    responses: Float[Tensor, "sentence unit"]
    forced: Float[Tensor, "sentence layer d_model"]
    steered: Float[Tensor, "sentence layer d_model"]
    ap: Float[Tensor, "lang unit"]
    auroc: Float[Tensor, "lang unit"]
    cached: dict[str, list[str]]
    full: dict[str, list[str]]


def measure(
    lm: LensModel, corpus: ParallelCorpus, reference: ExpertScores, responses: Responses | None = None
) -> Measured:
    """Every quantity of the correctness section on one model (``responses``: its pooled responses where they were
    collected already); scores are computed on ``lm``'s device."""
    texts, lang_ids = corpus_texts(corpus, corpus.languages)
    options: dict[str, Any] = {"batch_size": 8, "progress": False}
    if responses is None:
        responses = collect_corpus_responses(lm, corpus, **options)
    target = reference.languages[1]
    force = Force(value="on_p50").build(reference, target, k=32, model=lm)
    steer = DiffMean().build(model=lm, corpus=corpus, language=target)
    values, ids = responses["mean"].to(lm.device), lang_ids.to(lm.device)
    interventions = {"none": [], "force": [force]}
    prompts = list(BUILTIN_PROMPTS[:4])
    runs = {
        loop: {
            name: generate(lm, prompts, 12, interventions=ivs, batch_size=4, stop_at_eos=False, kv_cache=loop)
            for name, ivs in interventions.items()
        }
        for loop in (True, False)
    }
    return Measured(
        embeddings=sentence_embeddings(lm, texts, **options),
        responses=responses["mean"],
        forced=sentence_embeddings(lm, texts, interventions=[force], **options),
        steered=sentence_embeddings(lm, texts, interventions=[steer], **options),
        ap=one_vs_rest(values, ids, len(corpus.languages), "ap").float().cpu(),
        auroc=one_vs_rest(values, ids, len(corpus.languages), "auroc").float().cpu(),
        cached=runs[True],
        full=runs[False],
    )


def compare(got: Measured, want: Measured, dtype: str) -> dict[str, Any]:
    """The correctness row's values and its failures against :data:`TOLERANCES`."""
    tol = TOLERANCES[dtype]
    values = {
        "embeddings_relative_error": relative_error(got.embeddings, want.embeddings, dim=1),
        "responses_relative_error": relative_error(got.responses, want.responses),
        "force_relative_error": relative_error(got.forced, want.forced, dim=1),
        "diffmean_relative_error": relative_error(got.steered, want.steered, dim=1),
        "ap_mean_abs_diff": float((got.ap - want.ap).abs().mean()),
        "auroc_mean_abs_diff": float((got.auroc - want.auroc).abs().mean()),
        "force_effect": relative_error(got.forced, got.embeddings, dim=1),
        "diffmean_effect": relative_error(got.steered, got.embeddings, dim=1),
        "cached_equals_full_forward": {k: got.cached[k] == got.full[k] for k in got.cached},
        "cpu_force_effect": relative_error(want.forced, want.embeddings, dim=1),
        "cpu_diffmean_effect": relative_error(want.steered, want.embeddings, dim=1),
        "generation_equals_cpu": {k: got.cached[k] == want.cached[k] for k in got.cached},
    }
    failures = [
        f"{name} {values[name]:.3g} <= {MIN_EFFECT:g}: the intervention barely acts, so the rows prove little"
        for name in ("cpu_force_effect", "cpu_diffmean_effect")
        if not values[name] > MIN_EFFECT
    ]
    failures += [
        f"{name} {values[name]:.3g} > {tol['relative_error']:g}"
        for name in [f"{part}_relative_error" for part in ("embeddings", "responses", "force", "diffmean")]
        if not values[name] <= tol["relative_error"]
    ]
    failures += [
        f"{name} {values[name]:.3g} > {tol['score_mean_abs']:g}"
        for name in ("ap_mean_abs_diff", "auroc_mean_abs_diff")
        if not values[name] <= tol["score_mean_abs"]
    ]
    if dtype == "float32":
        failures += [
            f"KV-cached greedy tokens differ from the full-forward loop's ({k})"
            for k, same in values["cached_equals_full_forward"].items()
            if not same
        ]
    return {**values, "failures": failures}


def correctness(check: Check) -> None:
    corpus = load_builtin(["en", "es", "de", "fr", "ja"]).head(8)
    for name in TINY_MODELS:
        want, reference = None, None
        with check.row("correctness", model=name, check="cpu reference, scoring kernel") as row:
            if row is None:
                continue
            cpu_model = load_model(name, device="cpu", dtype="float32")
            responses = collect_corpus_responses(cpu_model, corpus, batch_size=8, progress=False)
            reference = ExpertScores.from_responses(responses)
            row.update(backend=cpu_model.backend, **scoring_kernel(check, responses, reference))
            want = measure(cpu_model, corpus, reference, responses)
            del cpu_model
        if want is None or reference is None:
            continue  # the row above says why
        for dtype in DTYPES:
            with check.row("correctness", model=name, dtype=dtype) as row:
                if row is None:
                    continue
                lm = load_model(name, device=check.settings.device, dtype=dtype)
                row.update(backend=lm.backend, **compare(measure(lm, corpus, reference), want, dtype))
                row["tolerances"] = TOLERANCES[dtype]
                del lm
    cuda_tests(check)


def scoring_kernel(check: Check, responses: Responses, reference: ExpertScores) -> dict[str, Any]:
    """AP and AUROC on the device against the CPU's, on the same float32 responses."""
    values = responses["mean"].to(check.settings.device)
    ids = responses.lang_ids.to(check.settings.device)  # type: ignore[union-attr]
    n = len(reference.languages)
    ap, auroc = one_vs_rest(values, ids, n, "ap").cpu(), one_vs_rest(values, ids, n, "auroc").cpu()
    largest = max(float((ap - reference.ap).abs().max()), float((auroc - reference.auroc).abs().max()))
    failures = [] if largest <= SCORING_ATOL else [f"scoring max_abs_diff {largest:.3g} > {SCORING_ATOL:g}"]
    return {"scoring_max_abs_diff": largest, "scoring_atol": SCORING_ATOL, "failures": failures}


def cuda_tests(check: Check) -> None:
    """The suite's tests marked ``cuda`` (skipped without CUDA), run here with pytest."""
    tests = Path(__file__).resolve().parents[2] / "tests"
    with check.row("correctness", check="cuda tests") as row:
        if row is None:
            return
        if not tests.is_dir():
            row.update(status="skipped", reason=f"no tests folder at {tests} (xlens installed, not a checkout)")
            return
        files = [str(tests / f) for f in CUDA_TEST_FILES]
        command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "-rs", *files]
        done = subprocess.run(command, capture_output=True, text=True, cwd=tests.parent, timeout=600)
        summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]
        row.update(command=" ".join(command[1:]), exit_code=done.returncode, summary=summary)
        counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", summary)}
        row["counts"] = counts
        if check.settings.cpu:
            row.update(status="skipped", reason="no CUDA: the cuda tests skip themselves", counts=counts)
        elif done.returncode != 0 or counts.get("skipped") or not counts.get("passed"):
            row["failures"] = [f"pytest: {summary}", done.stdout[-1500:]]


# --- 2. throughput and 3. generation --------------------------------------------------------------------


def predicted_memory(name: str, config: Any, dtype: str) -> dict[str, float]:
    row = memory_table({name: config}, dtypes=[dtype]).iloc[0]
    keys = ("parameters", "bridge_extra_parameters", "weights_gib", "resident_gib", "need_gib", "load_peak_gib")
    return {k: float(row[k]) for k in keys}


def fits(check: Check, predicted: dict[str, float]) -> str | None:
    """Why a model of this prediction cannot be built on the device, or None."""
    if check.settings.cpu:
        return None
    free, total = torch.cuda.mem_get_info()
    if predicted["load_peak_gib"] * GIB > free:
        return (
            f"predicted load peak {predicted['load_peak_gib']:.1f} GiB > {free / GIB:.1f} GiB free of "
            f"{total / GIB:.1f} GiB on the GPU"
        )
    return None


def build(check: Check, name: str, config: Any, row: dict[str, Any]) -> LensModel | None:
    """A random-weight model of ``config`` in bfloat16 on the device, its build time and load peak in ``row``;
    None (the row marked skipped) when the prediction says it does not fit. Built on the device, it never passes
    through the host, so its load peak is compared with the resident weights, not with the host-loading peak."""
    dtype = "bfloat16"
    row["predicted"] = predicted_memory(name, config, dtype)
    reason = fits(check, row["predicted"])
    if reason is not None:
        row.update(status="skipped", reason=reason)
        return None
    if not check.settings.cpu:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    lm = random_model(config, name, device=check.settings.device, dtype=dtype)
    sync(lm.device)
    row["build_s"] = time.perf_counter() - start
    if not check.settings.cpu:
        row["load_peak_gib"] = torch.cuda.max_memory_allocated() / GIB
        row["load_peak_over_resident"] = row["load_peak_gib"] / row["predicted"]["resident_gib"]
    return lm


def renamed(result: dict[str, Any]) -> dict[str, Any]:
    """A bench result for a row whose ``model`` is the model's name: its identity as ``identity``."""
    return {("identity" if k == "model" else k): v for k, v in result.items()}


# The throughput passes of xlens (their peak is what the memory prediction is about); the reference pass with the
# unembedding holds [batch, pos, vocab] logits that xlens never computes.
XLENS_PASSES = ("b_embeddings_all_layers", "c_responses_all_mlp_units", "d_embeddings_under_force")


def throughput_row(check: Check, name: str, config: Any, texts: list[str], row: dict[str, Any]) -> None:
    """One throughput row (its own frame, so an error frees the model with the frame)."""
    lm = build(check, name, config, row)
    if lm is None:
        return
    units = min(check.settings.units, lm.n_layers * lm.d_mlp // 2)
    result = throughput(lm, texts, units, {"batch_size": None, "max_tokens": 8192, "max_length": 128}, seed=0)
    del lm
    row.update(renamed(result))
    if not check.settings.cpu:
        peak = max(result["timings"][p]["peak_gpu_mb"] for p in XLENS_PASSES) / 1024
        row["pass_peak_gib"] = peak
        row["pass_peak_over_need"] = peak / row["predicted"]["need_gib"]
    row["meets_ratio_target"] = {p: result["ratios_vs_plain"][p] >= TARGET_RATIO_MIN for p in XLENS_PASSES}


def throughputs(check: Check) -> None:
    texts = throughput_texts(check.settings.sentences)
    for name, config in check.settings.shapes().items():
        with check.row("throughput", model=name, dtype="bfloat16") as row:
            if row is not None:
                throughput_row(check, name, config, texts, row)


def generation_row(check: Check, name: str, config: Any, row: dict[str, Any]) -> None:
    """One generation row (its own frame, so an error frees the model with the frame)."""
    lm = build(check, name, config, row)
    if lm is None:
        return
    row.update(renamed(generation_speed(lm, 8, check.settings.new_tokens, 8, 3)))
    del lm
    row["meets_speedup_target"] = {
        f"{regime}/{run}": row["regimes"][regime][run]["speedup"] >= TARGET_SPEEDUP_MIN
        for regime in ("short", "few_shot")
        for run in ("none", "force_200_units")
    }


def generations(check: Check) -> None:
    for name, config in check.settings.generation_models().items():
        with check.row("generation", model=name, dtype="bfloat16") as row:
            if row is not None:
                generation_row(check, name, config, row)


# --- 4. a study end to end ------------------------------------------------------------------------------


def table_differences(got: pd.DataFrame, want: pd.DataFrame) -> tuple[float, list[str]]:
    """The largest absolute difference of the float columns of two tables, and what else differs."""
    if got.shape != want.shape or list(got.columns) != list(want.columns):
        return math.inf, [f"shape {got.shape} vs {want.shape} or columns differ"]
    floats = [c for c in want.columns if pd.api.types.is_float_dtype(want[c])]
    others = [c for c in want.columns if c not in floats]
    problems = [f"column {c} differs" for c in others if not got[c].astype(str).equals(want[c].astype(str))]
    if not floats:
        return 0.0, problems
    a, b = got[floats].to_numpy(dtype=float), want[floats].to_numpy(dtype=float)
    both_nan = (a != a) & (b != b)
    diff = abs(a - b)
    diff[both_nan] = 0.0
    return float(diff.max()) if diff.size else 0.0, problems


def study(check: Check) -> None:
    with check.row("study", model=STUDY["model"], dtype="float32") as row:
        if row is None:
            return
        tables, ap = {}, {}
        with tempfile.TemporaryDirectory(prefix="xlens-check-") as scratch:
            for device in ("cpu", check.settings.device):
                config = {**STUDY, "runtime": {**STUDY["runtime"], "device": device, "dtype": "float32"}}
                out = Path(scratch) / f"run-{device}-{len(tables)}"
                results = run_experiment(ExperimentConfig.from_dict(config), out, progress=False)
                ap[len(tables)] = results.scores.ap if results.scores is not None else torch.zeros(0)
                tables[len(tables)] = results.tables()
        row["conditions"] = [c.label for c in results.conditions]
        # Where the tables differ, this tells a near-tie among the experts' scores (other units chosen) from a bug.
        row["ap_max_abs_diff"] = float((ap[1] - ap[0]).abs().max()) if ap[0].numel() else None
        row["max_abs_diff"], row["failures"] = {}, []
        for table, want in tables[0].items():
            largest, problems = table_differences(tables[1][table], want)
            row["max_abs_diff"][table] = largest
            row["failures"] += [f"{table}: {p}" for p in problems]
            if not largest <= STUDY_ATOL:
                row["failures"].append(f"{table}: max_abs_diff {largest:.3g} > {STUDY_ATOL:g}")
        row["tolerance"] = STUDY_ATOL


# --- the check ------------------------------------------------------------------------------------------


SECTIONS: dict[str, Callable[[Check], None]] = {
    "correctness": correctness,
    "study": study,
    "throughput": throughputs,
    "generation": generations,
}


def run_check(
    path: Path,
    settings: CheckSettings,
    *,
    sections: Sequence[str] = tuple(SECTIONS),
    commit: str | None = None,
) -> dict[str, Any]:
    """Run the check's ``sections`` and write the report to ``path`` (after every row; ``complete`` at the end) and
    its log beside it. Without a CUDA device (and without ``cpu``) the report says so and
    :class:`~xlens.errors.InputError` is raised before any work."""
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise InputError(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    check = Check(settings, path)
    check.log_path.parent.mkdir(parents=True, exist_ok=True)
    check.log_path.write_text("", encoding="utf-8")
    if not settings.cpu and not torch.cuda.is_available():
        error = "no CUDA device: torch.cuda.is_available() is False. Run it on a GPU, or pass --cpu"
        check.report = {"benchmark": "gpu-check", "complete": True, "passed": False, "error": error}
        check.log(f"error: {error}")
        check.save()
        raise InputError(error)
    check.report = {
        "benchmark": "gpu-check",
        "check_version": CHECK_VERSION,
        "complete": False,
        "mode": "cpu" if settings.cpu else "cuda",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        **produced_by(commit),
        "settings": asdict(settings),
        "machine": machine(),
        "tolerances": {"per_dtype": TOLERANCES, "scoring_atol": SCORING_ATOL, "study_atol": STUDY_ATOL},
        "targets": {"throughput_ratio_min": TARGET_RATIO_MIN, "generation_speedup_min": TARGET_SPEEDUP_MIN},
        "sections": {s: [] for s in sections},
    }
    check.save()
    for section in sections:
        SECTIONS[section](check)
    rows = [row for section in sections for row in check.report["sections"][section]]
    failing = [s for s in ("correctness", "study") if s in sections]
    check.report["failed"] = [
        {k: row.get(k) for k in ("model", "dtype", "check", "status", "error", "failures")}
        for section in failing
        for row in check.report["sections"][section]
        if row["status"] in ("failed", "error")
    ]
    check.report["errors"] = [row for row in rows if row["status"] == "error"]
    check.report["passed"] = not check.report["failed"] and not check.report["errors"]
    check.report["complete"] = True
    check.save()
    return check.report
