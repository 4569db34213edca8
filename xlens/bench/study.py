"""``xlens bench study``: what one study of several tasks costs against the one-task studies run separately.

Each study runs in a fresh folder with the same model (loaded once, outside the timings): the study of all the
tasks, then one study per task. Recorded per study: wall seconds, seconds in forward passes, and the embedding
artefacts its cache holds (one per forward pass over a set of texts under a condition): tasks that read the same
texts under the same condition share them, so the study of all the tasks holds fewer than the one-task studies
together."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from xlens.bench.common import machine, peak_rss_mb
from xlens.config import ExperimentConfig
from xlens.models.lens import LensModel
from xlens.models.loading import load_model
from xlens.runs.study import run_experiment


def _one(config: ExperimentConfig, tasks: list[str], model: LensModel, folder: Path) -> dict[str, Any]:
    study = config.override({"evaluate.tasks": tasks})
    tick = time.perf_counter()
    results = run_experiment(study, folder, model=model, progress=False)
    wall = time.perf_counter() - tick
    timings = results.provenance["timings"]
    return {
        "tasks": tasks,
        "wall_s": wall,
        "embeddings_s": timings.get("embeddings_s", 0.0),
        "embedding_artifacts": sum(1 for _ in (folder / "cache").glob("embeddings-*")),
        "conditions": len(results.conditions),
    }


def bench_study(config: ExperimentConfig, tasks: list[str]) -> dict[str, Any]:
    """The study of ``tasks`` on ``config`` against one study per task (see the module docstring)."""
    runtime = config.runtime
    model = load_model(config.model, device=runtime.device, dtype=runtime.dtype, backend=runtime.backend)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="xlens-bench-study-") as root:
        together = _one(config, tasks, model, Path(root) / "together")
        apart = [_one(config, [task], model, Path(root) / task) for task in tasks]
    summed = {key: sum(run[key] for run in apart) for key in ("wall_s", "embeddings_s", "embedding_artifacts")}
    return {
        "machine": machine(),
        "config": config.to_dict(),
        "together": together,
        "apart": apart,
        "apart_total": summed,
        "wall_ratio": together["wall_s"] / summed["wall_s"],
        "peak_rss_mb": peak_rss_mb(),
    }
