"""Every kind of cache entry, damaged (cut short, emptied, overwritten with garbage), is measured again within the
same run, with a warning naming it, and the results equal an undamaged run's."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pandas as pd
import pytest

from xlens.artifacts import CorruptArtifactWarning
from xlens.config import ExperimentConfig
from xlens.errors import DiskFullError
from xlens.models import LensModel
from xlens.runs.results import RunResults
from xlens.runs.study import run_experiment

CONFIG = ExperimentConfig.from_dict(
    {
        "model": "tiny-gpt2",
        "languages": ["en", "es"],
        "find": {"sentences": 6},
        "intervene": {"k": [4]},
        "evaluate": {"sentences": 6},
        "stats": {"resamples": 50},
    }
)
# What a kind's entries are read for: measurements read the embeddings and the scores, which read the responses.
# Damaging a kind, the kinds read from it are removed, so that the damaged entries are read.
DOWNSTREAM = {"responses": ["scores", "measured", "embeddings"], "scores": ["measured"], "embeddings": ["measured"]}


@pytest.fixture(scope="module")
def reference(tiny_gpt2: LensModel, tmp_path_factory: pytest.TempPathFactory) -> RunResults:
    return run_experiment(CONFIG, tmp_path_factory.mktemp("reference"), model=tiny_gpt2, progress=False)


def _damage(file: Path, how: str) -> None:
    data = file.read_bytes()
    file.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "garbage": b"\x00{garbage" * 8}[how])


@pytest.mark.parametrize("how", ["truncate", "empty", "garbage"])
@pytest.mark.parametrize("kind", ["responses", "scores", "embeddings", "measured"])
def test_a_damaged_entry_is_measured_again_in_the_same_run(
    kind: str, how: str, reference: RunResults, tiny_gpt2: LensModel, tmp_path: Path
) -> None:
    assert reference.folder is not None
    out = tmp_path / "run"
    shutil.copytree(reference.folder, out)
    cache = out / "cache"
    entries = sorted(cache.glob(f"{kind}-*"))
    assert entries, f"the run kept no {kind}"
    for entry in entries:
        for file in sorted(p for p in entry.rglob("*") if p.is_file()):
            _damage(file, how)
    for other in DOWNSTREAM.get(kind, []):
        for entry in cache.glob(f"{other}-*"):
            shutil.rmtree(entry)
    with pytest.warns(CorruptArtifactWarning, match="recomputing a corrupted cache entry"):
        again = run_experiment(CONFIG, out, model=tiny_gpt2, progress=False)
    for name, table in reference.tables().items():
        pd.testing.assert_frame_equal(again.tables()[name], table, check_exact=False, rtol=1e-6)


def test_a_full_disk_stops_the_run_at_the_first_failure_naming_the_file(
    tiny_gpt2: LensModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.torch

    real = safetensors.torch.save_file
    attempts: list[str] = []

    def full(tensors: dict, path: str, *args: object, **kwargs: object) -> None:
        if "embeddings-" in path:  # the experts' files fit; the first embeddings do not
            attempts.append(path)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(
        DiskFullError, match=r"no space left on the device while writing .*cache/.*embeddings-.*tensors"
    ):
        run_experiment(CONFIG, tmp_path / "run", model=tiny_gpt2, progress=False)
    assert len(attempts) == 1  # not once per condition: the run stopped at the first
    assert not (tmp_path / "run" / "results.json").exists()
