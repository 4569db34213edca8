"""A run folder is untrusted input: a folder prepared by someone else makes xlens touch nothing outside it.

Each test plants something in a run folder (a symbolic link where xlens writes, locks, reads or deletes; an owner
record naming paths outside; a manifest naming files outside) and checks that a victim file or folder outside is
untouched and that xlens says what is wrong (see SECURITY.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xlens._io import own_path, remove_stale_temporaries, write_json
from xlens.cli import app
from xlens.config import ExperimentConfig
from xlens.errors import ArtifactError, RunFolderError
from xlens.models import LensModel
from xlens.report import write_report
from xlens.runs.folder import RunFolder
from xlens.runs.results import RunResults
from xlens.runs.study import run_experiment

CONFIG = ExperimentConfig.from_dict(
    {
        "model": "tiny-gpt2",
        "languages": ["en", "es"],
        "find": {"sentences": 6},
        "intervene": {"k": [4]},
        "controls": {"random": False},
        "evaluate": {"sentences": 6},
        "stats": {"resamples": 50},
    }
)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A folder outside the run folder with a file and a would-be temporary in it."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me", encoding="utf-8")
    (folder / ".precious.txt.tmp-1").write_text("keep me too", encoding="utf-8")
    return folder


def _intact(victim: Path) -> None:
    assert (victim / "precious.txt").read_text(encoding="utf-8") == "keep me"
    assert (victim / ".precious.txt.tmp-1").read_text(encoding="utf-8") == "keep me too"
    assert sorted(p.name for p in victim.iterdir()) == [".precious.txt.tmp-1", "precious.txt"]


def _run(out: Path, model: LensModel, force: bool = False) -> RunResults:
    return run_experiment(CONFIG, out, model=model, progress=False, force=force)


def test_an_owner_record_naming_paths_outside_deletes_nothing(
    tmp_path: Path, victim: Path, tiny_gpt2: LensModel
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    for outputs in (["../victim"], [str(victim)], ["figures/../../victim"], "../victim"):
        record = {"kind": "experiment", "fingerprint": "x", "config": {}, "outputs": outputs}
        (out / "run.json").write_text(json.dumps(record), encoding="utf-8")
        with pytest.raises(RunFolderError, match="not xlens's names inside the folder"):
            _run(out, tiny_gpt2, force=True)
        _intact(victim)


@pytest.mark.parametrize("name", ["cache", ".lock", "run.json", "results.json", "figures"])
def test_a_link_where_xlens_writes_is_refused_or_replaced_never_followed(
    name: str, tmp_path: Path, victim: Path, tiny_gpt2: LensModel
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    target = victim if name in ("cache", "figures") else victim / "precious.txt"
    (out / name).symlink_to(target)
    try:
        _run(out, tiny_gpt2, force=True)
    except RunFolderError as err:
        assert "symbolic link" in str(err) or "not xlens's names" in str(err) or "cannot lock" in str(err)
    else:
        # The run replaced the link with its own file (an atomic rename replaces a link, not its target).
        assert not (out / name).is_symlink()
    _intact(victim)


def test_a_link_inside_the_cache_is_refused(tmp_path: Path, victim: Path, tiny_gpt2: LensModel) -> None:
    out = tmp_path / "run"
    results = _run(out, tiny_gpt2)
    entry = next((out / "cache").glob("measured-*"))
    moved = tmp_path / "moved"
    entry.rename(moved)
    entry.symlink_to(victim)  # the artefact's name now points at the victim: read, "corrupt", deleted?
    with pytest.raises(RunFolderError, match="symbolic link"):
        _run(out, tiny_gpt2)
    _intact(victim)
    assert results.folder == out


def test_stale_temporaries_are_removed_only_inside_never_through_links(tmp_path: Path, victim: Path) -> None:
    folder = tmp_path / "run"
    (folder / "cache").mkdir(parents=True)
    (folder / "cache" / "elsewhere").symlink_to(victim)
    (folder / ".results.json.tmp-2").symlink_to(victim / "precious.txt")  # a temporary's name, a link's body
    own = folder / "cache" / ".tensors.safetensors.tmp-3"
    own.write_text("half written", encoding="utf-8")
    removed = remove_stale_temporaries(folder, all_writers=True)
    assert sorted(p.name for p in removed) == [".results.json.tmp-2", ".tensors.safetensors.tmp-3"]
    assert not own.exists() and not (folder / ".results.json.tmp-2").is_symlink()
    _intact(victim)


def test_a_manifest_naming_files_outside_is_refused_when_read(tmp_path: Path, tiny_gpt2: LensModel) -> None:
    out = tmp_path / "run"
    _run(out, tiny_gpt2)
    manifest = json.loads((out / "results.json").read_text(encoding="utf-8"))
    for bad in ("../elsewhere.parquet", "/etc/hostname"):
        manifest["tables"]["retrieval"]["file"] = bad
        (out / "results.json").write_text(json.dumps(manifest), encoding="utf-8")
        with pytest.raises(RunFolderError, match="is not a name inside"):
            RunResults.load(out)


def test_embeddings_and_scores_are_read_only_from_inside(tmp_path: Path, tiny_gpt2: LensModel) -> None:
    out = tmp_path / "run"
    results = _run(out, tiny_gpt2)
    baseline = results.conditions[0]
    results.embedding_files[baseline] = "../../outside.safetensors"
    with pytest.raises(RunFolderError, match="is not a name inside"):
        results.embeddings(baseline)
    results.scores_folder = "/tmp"
    with pytest.raises(RunFolderError, match="is not a name inside"):
        _ = results.scores


def test_own_path_accepts_only_plain_names_without_links(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert own_path(tmp_path, "real/file.json") == tmp_path / "real" / "file.json"
    for bad in ("../x", "/abs", "", ".", "real/../../x"):
        with pytest.raises(RunFolderError):
            own_path(tmp_path, bad)
    with pytest.raises(RunFolderError, match="symbolic link"):
        own_path(tmp_path, "link/file.json")


def test_the_lock_file_link_is_never_truncated(tmp_path: Path, victim: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").symlink_to(victim / "precious.txt")
    with pytest.raises(RunFolderError), RunFolder.open(out, "experiment", {}, outputs=()):
        pass
    _intact(victim)


def test_the_cli_names_a_hostile_folder_in_one_error_line(tmp_path: Path, victim: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "cache").symlink_to(victim)
    path = CONFIG.save(tmp_path / "c.toml")
    done = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--force", "--no-figures"])
    assert done.exit_code == 2 and "symbolic link" in done.output and "Traceback" not in done.output
    _intact(victim)
    assert os.path.islink(out / "cache")


def test_a_header_naming_tensors_outside_is_refused(tmp_path: Path, tiny_gpt2: LensModel) -> None:
    out = tmp_path / "run"
    results = _run(out, tiny_gpt2)
    assert results.scores_folder is not None
    header = out / results.scores_folder / "scores.json"
    data = json.loads(header.read_text(encoding="utf-8"))
    for bad in ("../../../victim.safetensors", "/etc/hostname", "other.safetensors"):
        data["tensors"] = bad
        header.write_text(json.dumps(data), encoding="utf-8")
        with pytest.raises(ArtifactError, match="not a file write_pair writes"):
            _ = RunResults.load(out).scores


def test_a_link_planted_at_a_temporary_name_is_not_written_through(tmp_path: Path, victim: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / f".results.json.tmp-{os.getpid()}").symlink_to(victim / "precious.txt")
    write_json(folder / "results.json", {"a": 1})
    assert json.loads((folder / "results.json").read_text(encoding="utf-8")) == {"a": 1}
    _intact(victim)


def test_a_link_at_the_reports_name_is_refused(tmp_path: Path, victim: Path, tiny_gpt2: LensModel) -> None:
    out = tmp_path / "run"
    results = _run(out, tiny_gpt2)
    (out / "report.html").symlink_to(victim / "precious.txt")
    with pytest.raises(RunFolderError, match="symbolic link"):
        write_report(results, cards=False)
    _intact(victim)
