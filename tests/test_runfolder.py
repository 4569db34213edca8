"""A run folder owns its files: another config is refused by name, one process at a time, writes commit whole."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from xlens._io import atomic_write
from xlens.config import ExperimentConfig
from xlens.errors import ArtifactError, RunFolderError
from xlens.runs.folder import RunFolder, config_differences
from xlens.runs.results import RunResults
from xlens.runs.study import run_experiment

SMALL = ExperimentConfig.from_dict(
    {
        "model": "tiny-gpt2",
        "languages": ["en", "es"],
        "find": {"sentences": 8},
        "intervene": {"k": [4]},
        "controls": {"random": False},
        "evaluate": {"sentences": 8},
        "runtime": {"batch_size": 8},
    }
)


def test_another_config_is_refused_naming_the_difference_and_force_replaces(tmp_path: Path) -> None:
    """A rerun with another config used to replace results.json, the parquet files and the scores silently."""
    first = run_experiment(SMALL, tmp_path, progress=False)
    other = SMALL.override({"languages": ["en", "ja"], "intervene.k": [8]})
    with pytest.raises(RunFolderError, match=r"another config: intervene.k: \[4\] -> \[8\]; languages: \['en', 'es'\]"):
        run_experiment(other, tmp_path, progress=False)
    assert RunResults.load(tmp_path).config == SMALL  # untouched
    with pytest.raises(RunFolderError, match="another config: model: 'tiny-gpt2' -> 'tiny-bloom'"):
        run_experiment(SMALL.override({"model": "tiny-bloom"}), tmp_path, progress=False)
    replaced = run_experiment(other, tmp_path, progress=False, force=True)
    assert RunResults.load(tmp_path).config == other
    assert set(replaced.retrieval["expert_lang"].dropna()) == {"eng_Latn", "jpn_Jpan"}
    # The same config resumes: nothing is recomputed, the tables are identical.
    again = run_experiment(other, tmp_path, progress=False)
    pd.testing.assert_frame_equal(again.retrieval, replaced.retrieval, check_exact=True)
    assert first.embedding_files[first.conditions[0]] != replaced.embedding_files[replaced.conditions[0]]


def test_a_folder_with_foreign_files_or_an_old_run_is_refused(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"schema_version": 1}')  # what xlens 0.1 left
    with pytest.raises(RunFolderError, match=r"holds files that no xlens run of this version owns \(results.json\)"):
        run_experiment(SMALL, tmp_path, progress=False)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    run_experiment(SMALL, tmp_path, progress=False, force=True)
    assert notes.read_text() == "mine"  # force removes the run's own outputs only
    experts_folder = tmp_path / "experts-run"
    with RunFolder.open(experts_folder, "experts", {"k": 3}, outputs=("scores",)):
        pass
    with pytest.raises(RunFolderError, match="holds an `xlens experts` output, not an `xlens experiment` one"):
        run_experiment(SMALL, experts_folder, progress=False)


def test_a_second_process_fails_at_once_while_the_folder_is_in_use(tmp_path: Path) -> None:
    """Two runs into one folder used to both exit 0, the last writer winning."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from xlens.runs.folder import RunFolder
        with RunFolder.open({str(tmp_path)!r}, "experiment", {{"a": 1}}, outputs=()):
            print("locked", flush=True)
            sys.stdin.readline()
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with (
            pytest.raises(RunFolderError, match=rf"in use by another xlens process \(pid {holder.pid}, since"),
            RunFolder.open(tmp_path, "experiment", {"a": 1}, outputs=()),
        ):
            pass
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)
    with RunFolder.open(tmp_path, "experiment", {"a": 1}, outputs=()):  # the lock went with the process
        pass


def test_a_killed_run_leaves_no_half_artefact_and_its_temporaries_are_removed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from xlens import _io
        from xlens.config import ExperimentConfig
        from xlens.runs.study import run_experiment

        real = _io.save_tensors
        def save_and_die(path, tensors):  # the first embeddings are half-written when the process is killed
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).with_name(f".{{Path(path).name}}.tmp-{{os.getpid()}}").write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
        import xlens.artifacts
        xlens.artifacts.save_tensors = save_and_die
        run_experiment(ExperimentConfig.from_dict({SMALL.to_dict()!r}), {str(tmp_path)!r}, progress=False)
        """
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    leftovers = [p for p in tmp_path.rglob(".*") if ".tmp-" in p.name]
    assert leftovers  # the killed writer's temporaries
    assert not (tmp_path / "results.json").exists()
    assert list((tmp_path / "cache").glob("embeddings-*")) == []  # no artefact was committed half-way
    results = run_experiment(SMALL, tmp_path, progress=False)  # resumes: scores reused, embeddings computed
    assert not [p for p in tmp_path.rglob(".*") if ".tmp-" in p.name]
    assert len(results.retrieval) == 3 * 3 * 2


def test_tables_that_do_not_match_the_manifest_are_reported(tmp_path: Path) -> None:
    run_experiment(SMALL, tmp_path, progress=False)
    frame = pd.read_parquet(tmp_path / "retrieval.parquet")
    atomic_write(tmp_path / "retrieval.parquet", lambda p: frame.head(3).to_parquet(p))  # a newer, partial write
    with pytest.raises(
        ArtifactError, match=r"retrieval\.parquet does not match .*results\.json .*run the same command"
    ):
        RunResults.load(tmp_path)


def test_config_differences_lists_dotted_keys() -> None:
    old = {"model": "a", "find": {"corpus": "builtin", "sentences": 10}}
    new = {"model": "a", "find": {"corpus": "builtin", "sentences": 20, "negatives": ["en"]}}
    assert config_differences(old, new) == ["find.negatives: '(default)' -> ['en']", "find.sentences: 10 -> 20"]


def test_an_unwritable_or_file_target_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        run_experiment(SMALL, target, progress=False)
    assert os.path.isfile(target)


def test_a_rerun_that_would_compute_in_another_dtype_is_another_run(tmp_path: Path) -> None:
    """With dtype left to its default, a rerun on another device used to resume and overwrite the results."""
    from xlens.errors import ModelMismatchError
    from xlens.models import load_model

    run_experiment(SMALL, tmp_path, progress=False)  # float32 on this CPU
    half = load_model("tiny-gpt2", device="cpu", dtype="bfloat16")
    with pytest.raises(RunFolderError, match=r"numerics.dtype: 'float32' -> 'bfloat16'"):
        run_experiment(SMALL, tmp_path, model=half, progress=False)
    same = load_model("tiny-gpt2", device="cpu", dtype="float32")
    run_experiment(SMALL.override({"runtime.dtype": "fp32"}), tmp_path / "fp32", model=same, progress=False)
    with pytest.raises(ModelMismatchError, match="the model given runs in bfloat16, the config asks for float32"):
        run_experiment(SMALL.override({"runtime.dtype": "float32"}), tmp_path / "other", model=half, progress=False)
    with pytest.raises(ModelMismatchError, match="the model given \\('tiny-gpt2'\\) is not the config's model"):
        run_experiment(SMALL.override({"model": "tiny-bloom"}), tmp_path / "bloom", model=same, progress=False)


def test_force_over_another_kind_of_run_removes_its_outputs_and_a_corrupt_owner_is_named(tmp_path: Path) -> None:
    with RunFolder.open(tmp_path, "experts", {"k": 3}, outputs=("scores", "summary.json")):
        (tmp_path / "scores").mkdir()
        (tmp_path / "summary.json").write_text("{}")
    run_experiment(SMALL, tmp_path, progress=False, force=True)
    assert not (tmp_path / "scores").exists() and not (tmp_path / "summary.json").exists()
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(RunFolderError, match=r"run.json is corrupted .*pass --force"):
        run_experiment(SMALL, tmp_path, progress=False)
    run_experiment(SMALL, tmp_path, progress=False, force=True)
    assert RunResults.load(tmp_path).config == SMALL


def test_the_report_is_written_under_the_folder_lock(tmp_path: Path) -> None:
    from xlens.report import write_report

    results = run_experiment(SMALL, tmp_path, progress=False)
    with RunFolder.writing(tmp_path), pytest.raises(RunFolderError, match="in use by another xlens process"):
        write_report(results, cards=False)
    assert write_report(results, cards=False) == tmp_path / "report.html"
