"""The Ray executor against the local one: identical tables, a killed worker retried, a failing condition reported
while the rest finish, reruns that skip what is done, and clear errors before any model loads."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from xlens.cli import app
from xlens.config import ExperimentConfig
from xlens.errors import ConditionsFailedError, ExecutorError
from xlens.experts.sets import ExpertSet
from xlens.interventions import Intervention, ScaleUnits, ScoredMethod, register
from xlens.runs.executors import RayExecutor, make_executor
from xlens.runs.results import RunResults
from xlens.runs.study import run_experiment

ray = pytest.importorskip("ray", reason="the ray executor's tests need xlens[ray]")
pytestmark = pytest.mark.ray

BASE = {
    "model": "tiny-gpt2",
    "languages": ["en", "es", "ja"],
    "find": {"sentences": 12},
    "intervene": {"method": ["force", "det0"], "k": [4, 8]},
    "controls": {"random": True, "mixed": True, "seeds": 1},
    "evaluate": {"sentences": 10},
    "stats": {"resamples": 200},
    "runtime": {"batch_size": 8, "device": "cpu"},
}


@register
@dataclass(frozen=True)
class CrashOnce(ScoredMethod):
    """Scale the experts by 2, but kill the worker process the first time (while ``marker`` does not exist)."""

    name: ClassVar[str] = "crash_once"
    marker: str = ""

    def on(self, experts: ExpertSet) -> Intervention:
        if self.marker and not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return ScaleUnits.of(experts, torch.full((len(experts),), 2.0), self.where)


@register
@dataclass(frozen=True)
class AlwaysFails(ScoredMethod):
    """A method whose every condition raises (a bug in a user's method)."""

    name: ClassVar[str] = "always_fails"

    def on(self, experts: ExpertSet) -> Intervention:
        raise RuntimeError("this method is broken on purpose")


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    # Workers import xlens from this checkout; the driver's own methods (above) travel by value.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> RunResults:
    return run_experiment(ExperimentConfig.from_dict(BASE), tmp_path_factory.mktemp("local"), progress=False)


def assert_same_tables(a: RunResults, b: RunResults) -> None:
    for name, frame in a.tables().items():
        pd.testing.assert_frame_equal(b.tables()[name], frame, check_exact=True)


def test_two_ray_workers_give_the_local_tables(cluster: None, local: RunResults, tmp_path: Path) -> None:
    executor = make_executor("ray", workers=2)
    results = run_experiment(local.config, tmp_path, executor=executor, progress=False)
    assert_same_tables(local, results)
    assert results.provenance["executor"] == {
        "executor": "ray",
        "workers": 2,
        "gpus_per_worker": 0.0,
        "keep_embeddings": False,
    }
    # Only rows travelled back: no embeddings (nor responses) were written by the workers.
    assert not list((tmp_path / "cache").glob("embeddings-*")) and not list((tmp_path / "cache").glob("responses-*"))
    assert results.embeddings(None) is None
    assert len(list((tmp_path / "cache").glob("measured-*"))) == len(local.conditions)


def test_a_plugin_task_and_a_builtin_one_on_ray_workers_give_the_local_tables(
    cluster: None, local: RunResults, tmp_path: Path
) -> None:
    """The toy task (registered by this driver, as a user's plug-in is) travels to the workers by value, beside
    mining: every table and the differences equal the local study's."""
    import toy_task  # noqa: F401  (registers the plug-in task)

    study = local.config.override(
        {
            "intervene.k": [4],
            "intervene.method": ["force"],
            "evaluate.tasks": ["norms", "mining"],
            "evaluate.norms": {"scale": 2.0},
            "evaluate.mining": {"gold": 3, "distractors": 1, "k": 2},
        }
    )
    here = run_experiment(study, tmp_path / "local", progress=False)
    there = run_experiment(study, tmp_path / "ray", executor=make_executor("ray", workers=2), progress=False)
    assert_same_tables(here, there)
    diffs: Any = there.differences
    assert set(diffs["task"]) == {"norms", "mining"} and len(there.task_tables["norms"]) == 7 * 3


def test_kept_embeddings_equal_the_local_ones(cluster: None, local: RunResults, tmp_path: Path) -> None:
    small = local.config.override({"intervene.k": [4], "intervene.method": ["force"]})
    results = run_experiment(small, tmp_path, executor=make_executor("ray", keep_embeddings=True), progress=False)
    assert set(results.embedding_files) == set(results.conditions)
    for condition in results.conditions:
        torch.testing.assert_close(results.embeddings(condition), local.embeddings(condition), rtol=0, atol=0)


def test_a_killed_worker_is_retried_and_the_table_is_unchanged(cluster: None, tmp_path: Path) -> None:
    marker = tmp_path / "killed"
    config = ExperimentConfig.from_dict(
        {
            **BASE,
            "intervene": {"method": ["crash_once"], "k": [4], "marker": str(marker)},
            "controls": {"random": False},
        }
    )
    results = run_experiment(config, tmp_path / "ray", executor=make_executor("ray", workers=2), progress=False)
    assert marker.exists()  # a worker did die mid-task
    killed = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)
    # The uninterrupted reference: the marker exists, so nothing dies here.
    reference = run_experiment(config, tmp_path / "local", progress=False)
    assert_same_tables(reference, results)
    assert [c.method for c in results.conditions] == ["none"] + ["crash_once"] * len(config.expert_languages)


def test_a_failing_condition_is_reported_the_rest_finish_and_a_rerun_skips_them(
    cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = ExperimentConfig.from_dict(
        {**BASE, "intervene": {"method": ["force", "always_fails"], "k": [4]}, "controls": {"random": False}}
    )
    asked: list[list[str]] = []
    evaluate = RayExecutor.evaluate

    def spy(self: RayExecutor, inputs: Any, todo: Any, *args: Any) -> Any:
        asked.append([c.label for c, _ in todo])
        return evaluate(self, inputs, todo, *args)

    monkeypatch.setattr(RayExecutor, "evaluate", spy)
    with pytest.raises(ConditionsFailedError) as failure:
        run_experiment(config, tmp_path, executor=make_executor("ray", workers=2), progress=False)
    message = str(failure.value)
    langs = config.expert_languages
    assert f"{len(langs)} of {1 + 2 * len(langs)} conditions failed" in message
    for lang in langs:
        assert f"always_fails {lang} k=4: RuntimeError: this method is broken on purpose" in message
    assert "force" not in message and "Traceback" not in message
    assert not (tmp_path / "results.json").exists()
    assert len(list((tmp_path / "cache").glob("measured-*"))) == 1 + len(langs)  # the baseline and every force
    # The rerun without the broken method computes nothing: every condition left is done.
    fixed = config.override({"intervene.method": ["force"]})
    results = run_experiment(fixed, tmp_path, executor=make_executor("ray", workers=2), progress=False, force=True)
    assert asked[-1] == []
    assert [c.label for c in results.conditions] == ["baseline"] + [f"force {lang} k=4" for lang in langs]


def test_bad_executor_settings_fail_before_any_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ExecutorError, match=r"no Ray cluster answers at 127\.0\.0\.1:9 .*ray start --head --port 9"):
        make_executor("ray", address="127.0.0.1:9").connect()
    with pytest.raises(ExecutorError, match="is not host:port"):
        make_executor("ray", address="nowhere").connect()
    with pytest.raises(ExecutorError, match="unknown executor 'dask'; use one of local, ray"):
        make_executor("dask")
    with pytest.raises(ExecutorError, match="settings of the ray executor: add --executor ray"):
        make_executor("local", workers=4)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ExecutorError, match=r"needs Ray, which is not installed: pip install -e '\.\[ray\]'"):
        make_executor("ray").connect()
    # The command line says the same, before the run folder or a model is touched.
    path = ExperimentConfig.from_dict(BASE).save(tmp_path / "grid.toml")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["sweep", str(path), "--out", str(out), "--executor", "ray", "--no-figures"])
    assert result.exit_code == 2 and "pip install -e '.[ray]'" in result.output
    assert not out.exists()
