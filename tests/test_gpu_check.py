"""The GPU check's own parts, checked on the CPU: its error measures against brute-force numpy, its pass/fail rules
on hand-built measurements, its report rows on disk, its refusals without CUDA, the random models of the paper's
shapes against the memory table, the wrapper script's early failures, and `xlens bench check` on the study section.
The full `--cpu` check is run by CI separately."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from typer.testing import CliRunner

from xlens.bench.check import (
    CUDA_TEST_FILES,
    MIN_EFFECT,
    STUDY,
    TOLERANCES,
    Check,
    CheckSettings,
    Measured,
    compare,
    device_slug,
    fits,
    relative_error,
    run_check,
    table_differences,
)
from xlens.cli import app
from xlens.errors import InputError
from xlens.models.loading import random_model
from xlens.models.memory import PAPER_MODELS, memory_table, resident_parameters
from xlens.runs.results import TABLES

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
GIB = 2**30


# --- relative_error -------------------------------------------------------------------------------------


def _relative_error_numpy(got: np.ndarray, want: np.ndarray, dim: int | None) -> float:
    """max over the slices along ``dim`` (or the whole) of ||got - want||_F / ||want||_F, one slice at a time."""
    got, want = got.astype(np.float64), want.astype(np.float64)
    if dim is None:
        return float(np.linalg.norm((got - want).ravel()) / max(np.linalg.norm(want.ravel()), 1e-30))
    ratios = []
    for i in range(got.shape[dim]):
        g, w = np.take(got, i, axis=dim), np.take(want, i, axis=dim)
        ratios.append(np.linalg.norm((g - w).ravel()) / max(np.linalg.norm(w.ravel()), 1e-30))
    return float(max(ratios))


@st.composite
def _pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int | None]:
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    elements = st.floats(-100, 100, width=32, allow_nan=False)
    got = draw(hnp.arrays(np.float32, shape, elements=elements))
    want = draw(hnp.arrays(np.float32, shape, elements=elements))
    dim = draw(st.one_of(st.none(), st.integers(0, len(shape) - 1)))
    return got, want, dim


@settings(max_examples=60, deadline=None)
@given(_pairs())
def test_relative_error_matches_numpy(pair: tuple[np.ndarray, np.ndarray, int | None]) -> None:
    """Random float32 arrays of 1-3 dims, with and without ``dim``: the same value as the numpy brute force."""
    got, want, dim = pair
    expected = _relative_error_numpy(got, want, dim)
    assert relative_error(torch.from_numpy(got), torch.from_numpy(want), dim=dim) == pytest.approx(expected, rel=1e-9)
    assert relative_error(torch.from_numpy(want), torch.from_numpy(want), dim=dim) == 0.0


def test_relative_error_takes_the_worst_slice() -> None:
    """Only layer 1 of 3 off by 50%: 0.5 over layers, 0.5/sqrt(3) over the whole; identical tensors give 0."""
    want = torch.ones(2, 3, 4)
    got = want.clone()
    got[:, 1] *= 1.5
    assert relative_error(got, want, dim=1) == pytest.approx(0.5, rel=1e-12)
    assert relative_error(got, want) == pytest.approx(0.5 / math.sqrt(3), rel=1e-12)
    assert relative_error(want, want.clone(), dim=1) == 0.0 and relative_error(want, want.clone()) == 0.0


# --- table_differences ----------------------------------------------------------------------------------


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "lang": ["eng_Latn", "spa_Latn", "jpn_Jpan"],
            "layer": [0, 1, 2],
            "value": [0.1, math.nan, 0.3],
            "other": [1.0, 2.0, 3.0],
        }
    )


def test_table_differences_equal_tables_with_nan_in_both() -> None:
    """Equal tables, with a NaN at the same place in both: no difference, no problems."""
    assert table_differences(_table(), _table()) == (0.0, [])


def test_table_differences_changed_float() -> None:
    """A changed float gives exactly that absolute difference; a NaN in one table only gives NaN (so it fails)."""
    got = _table()
    got.loc[2, "value"] = 0.35
    largest, problems = table_differences(got, _table())
    assert largest == abs(0.35 - 0.3) and problems == []
    got.loc[0, "other"] = 1.0 + 0.7
    assert table_differences(got, _table())[0] == abs(1.7 - 1.0)
    one_nan = _table()
    one_nan.loc[0, "value"] = math.nan
    assert math.isnan(table_differences(one_nan, _table())[0])


def test_table_differences_reports_other_columns() -> None:
    """A changed string (or integer) column is reported by name; the floats still compare equal."""
    got = _table()
    got.loc[1, "lang"] = "deu_Latn"
    assert table_differences(got, _table()) == (0.0, ["column lang differs"])
    got.loc[0, "layer"] = 5
    assert table_differences(got, _table()) == (0.0, ["column lang differs", "column layer differs"])
    strings = pd.DataFrame({"lang": ["a", "b"]})
    assert table_differences(strings, pd.DataFrame({"lang": ["a", "c"]})) == (0.0, ["column lang differs"])


def test_table_differences_different_shapes() -> None:
    """Different shapes or column names: inf and a problem naming the shapes."""
    largest, problems = table_differences(_table().iloc[:2], _table())
    assert largest == math.inf and len(problems) == 1 and "(2, 4) vs (3, 4)" in problems[0]
    largest, problems = table_differences(_table().rename(columns={"other": "else"}), _table())
    assert largest == math.inf and len(problems) == 1


# --- compare --------------------------------------------------------------------------------------------


def _measured(seed: int = 0) -> Measured:
    """A CPU reference by hand: both interventions move the embeddings far beyond MIN_EFFECT."""
    g = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(6, 3, 8, generator=g)
    tokens = {"none": ["the cat", "a dog"], "force": ["el gato", "un perro"]}
    return Measured(
        embeddings=embeddings,
        responses=torch.randn(6, 10, generator=g),
        forced=embeddings + 0.5 * torch.randn(6, 3, 8, generator=g),
        steered=embeddings + 0.3 * torch.randn(6, 3, 8, generator=g),
        ap=torch.rand(2, 10, generator=g),
        auroc=torch.rand(2, 10, generator=g),
        cached={k: list(v) for k, v in tokens.items()},
        full={k: list(v) for k, v in tokens.items()},
    )


def test_compare_identical_measurements_pass() -> None:
    """The same measurements with a real intervention effect: no failures, zero errors, effects as numpy has them."""
    want = _measured()
    values = compare(_measured(), want, "float32")
    assert values["failures"] == []
    for name in ("embeddings", "responses", "force", "diffmean"):
        assert values[f"{name}_relative_error"] == 0.0
    assert values["ap_mean_abs_diff"] == 0.0 and values["auroc_mean_abs_diff"] == 0.0
    force = _relative_error_numpy(want.forced.numpy(), want.embeddings.numpy(), 1)
    diffmean = _relative_error_numpy(want.steered.numpy(), want.embeddings.numpy(), 1)
    assert values["cpu_force_effect"] == pytest.approx(force, rel=1e-9) and force > MIN_EFFECT
    assert values["cpu_diffmean_effect"] == pytest.approx(diffmean, rel=1e-9) and diffmean > MIN_EFFECT
    assert values["force_effect"] == pytest.approx(force, rel=1e-9)
    assert values["cached_equals_full_forward"] == {"none": True, "force": True}
    assert values["generation_equals_cpu"] == {"none": True, "force": True}


def test_compare_embeddings_beyond_float32_tolerance() -> None:
    """Embeddings off by 1e-3 relative: fails float32 (1e-4) naming embeddings_relative_error, passes bfloat16."""
    want = _measured()
    got = replace(_measured(), embeddings=want.embeddings * (1 + 1e-3))
    assert TOLERANCES["float32"]["relative_error"] < 1e-3 < TOLERANCES["bfloat16"]["relative_error"]
    float32 = compare(got, want, "float32")
    assert float32["embeddings_relative_error"] == pytest.approx(1e-3, rel=1e-3)
    assert len(float32["failures"]) == 1 and float32["failures"][0].startswith("embeddings_relative_error ")
    assert compare(got, want, "bfloat16")["failures"] == []


def test_compare_scores_against_their_tolerance() -> None:
    """AP off by 0.005 everywhere: its mean absolute difference is 0.005, a failure in float32 only."""
    want = _measured()
    got = replace(_measured(), ap=want.ap + 0.005)
    float32 = compare(got, want, "float32")
    assert float32["ap_mean_abs_diff"] == pytest.approx(0.005, rel=1e-4)
    assert len(float32["failures"]) == 1 and float32["failures"][0].startswith("ap_mean_abs_diff ")
    assert compare(got, want, "bfloat16")["failures"] == []


def test_compare_kv_cache_must_equal_full_loop_in_float32() -> None:
    """KV-cached tokens that differ from the full-forward loop fail float32, are only reported in bfloat16."""
    want = _measured()
    got = _measured()
    got.full["force"] = ["el perro", "un perro"]
    float32 = compare(got, want, "float32")
    assert float32["cached_equals_full_forward"] == {"none": True, "force": False}
    assert float32["failures"] == ["KV-cached greedy tokens differ from the full-forward loop's (force)"]
    bfloat16 = compare(got, want, "bfloat16")
    assert bfloat16["failures"] == [] and bfloat16["cached_equals_full_forward"]["force"] is False


@pytest.mark.parametrize(("field", "name"), [("forced", "cpu_force_effect"), ("steered", "cpu_diffmean_effect")])
def test_compare_reference_without_effect_fails(field: str, name: str) -> None:
    """A CPU reference whose intervened embeddings equal its clean ones: the row fails, the intervention barely
    acting, in either dtype."""
    want = replace(_measured(), **{field: _measured().embeddings.clone()})
    for dtype in ("float32", "bfloat16"):
        values = compare(want, want, dtype)
        assert values[name] == 0.0
        assert len(values["failures"]) == 1
        assert values["failures"][0].startswith(f"{name} 0 <=") and "barely acts" in values["failures"][0]


# --- Check.row ------------------------------------------------------------------------------------------


def _check(path: Path, budget_s: float = 420.0) -> Check:
    check = Check(CheckSettings.smallest(budget_s), path)
    check.report = {"sections": {"x": []}}
    check.log_path.parent.mkdir(parents=True, exist_ok=True)
    return check


def _on_disk(check: Check) -> list[dict[str, Any]]:
    return json.loads(check.path.read_text())["sections"]["x"]


def _log_rows(check: Check) -> list[str]:
    return [line for line in check.log_path.read_text().splitlines() if "] x: " in line]


def test_check_row_records_every_outcome(tmp_path: Path) -> None:
    """Error, failure, pass, a status the body set, out of GPU memory: each row recorded with its status, in the
    JSON on disk and in the log after each, and no exception escapes."""
    check = _check(tmp_path / "r.json")
    with check.row("x", model="m0") as row:
        raise ValueError("boom")
    assert _on_disk(check)[-1]["status"] == "error" and _on_disk(check)[-1]["error"] == "ValueError: boom"
    assert _on_disk(check)[-1]["model"] == "m0" and len(_log_rows(check)) == 1

    with check.row("x", model="m1") as row:
        assert row is not None
        row["failures"] = ["too far"]
    assert _on_disk(check)[-1]["status"] == "failed" and len(_log_rows(check)) == 2
    assert "FAILED: too far" in check.log_path.read_text()

    with check.row("x", model="m2") as row:
        assert row is not None
        row["value"] = 1.5
    assert _on_disk(check)[-1]["status"] == "passed" and _on_disk(check)[-1]["value"] == 1.5

    with check.row("x", model="m3") as row:
        assert row is not None
        row.update(status="skipped", reason="does not fit")
    assert _on_disk(check)[-1]["status"] == "skipped" and _on_disk(check)[-1]["reason"] == "does not fit"

    with check.row("x", model="m4"):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
    assert _on_disk(check)[-1]["status"] == "skipped"
    assert _on_disk(check)[-1]["reason"] == "out of GPU memory: CUDA out of memory. Tried to allocate 2.00 GiB"

    rows = _on_disk(check)
    assert [r["model"] for r in rows] == ["m0", "m1", "m2", "m3", "m4"]
    assert [r["status"] for r in rows] == ["error", "failed", "passed", "skipped", "skipped"]
    assert all(r["wall_s"] >= 0 for r in rows) and rows == check.report["sections"]["x"]
    logged = _log_rows(check)
    assert len(logged) == 5 and all(f"'model': 'm{i}'" in line for i, line in enumerate(logged))


def test_check_row_past_budget_is_skipped(tmp_path: Path) -> None:
    """With a budget of 0 s the row is yielded as None and recorded skipped, the reason naming the budget."""
    check = _check(tmp_path / "r.json", budget_s=0)
    yielded: list[Any] = []
    with check.row("x", model="late") as row:
        yielded.append(row)
    assert yielded == [None]
    (on_disk,) = _on_disk(check)
    assert on_disk["status"] == "skipped" and on_disk["model"] == "late"
    assert "time budget of 0 s" in on_disk["reason"]
    assert len(_log_rows(check)) == 1 and "skipped" in _log_rows(check)[0]


# --- run_check, device_slug, fits -----------------------------------------------------------------------


def test_run_check_refuses_without_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cpu=False without CUDA: InputError, and a JSON (and log) saying passed False with the error."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = tmp_path / "sub" / "gpu.json"
    with pytest.raises(InputError, match="no CUDA"):
        run_check(path, CheckSettings())
    report = json.loads(path.read_text())
    assert report["passed"] is False and report["complete"] is True and "no CUDA" in report["error"]
    assert "error: no CUDA" in path.with_suffix(".log").read_text()


def test_run_check_unknown_sections_write_nothing(tmp_path: Path) -> None:
    """An unknown section name: InputError naming it, before any file is written."""
    path = tmp_path / "gpu.json"
    with pytest.raises(InputError, match="bogus"):
        run_check(path, CheckSettings.smallest(), sections=["study", "bogus"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("NVIDIA H200", "h200"),
        ("NVIDIA A100-SXM4-80GB", "a100-sxm4-80gb"),
        ("NVIDIA GeForce RTX 4090", "geforce-rtx-4090"),
        ("NVIDIA", "gpu"),
    ],
)
def test_device_slug(name: str, slug: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The device name as a file name; ``cpu`` with cpu=True even where CUDA is."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert device_slug(False) == slug
    assert device_slug(True) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_slug(False) == "cpu"


def test_fits_against_free_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """10 GiB free of 80: a predicted load peak of 12 GiB gives the reason with both numbers, 8 (or 10) None;
    on the CPU there is nothing to ask."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * GIB, 80 * GIB))
    check = Check(CheckSettings(), tmp_path / "r.json")
    reason = fits(check, {"load_peak_gib": 12.0})
    assert reason is not None and "12.0 GiB" in reason and "10.0 GiB free" in reason and "80.0 GiB" in reason
    assert fits(check, {"load_peak_gib": 8.0}) is None
    assert fits(check, {"load_peak_gib": 10.0}) is None

    def no_gpu(device: Any = None) -> tuple[int, int]:
        raise AssertionError("the CPU check must not ask the GPU")

    monkeypatch.setattr(torch.cuda, "mem_get_info", no_gpu)
    assert fits(Check(CheckSettings.smallest(), tmp_path / "r.json"), {"load_peak_gib": 1e6}) is None


# --- random_model at the smallest paper shapes ----------------------------------------------------------


def _hf_parameters(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.nn.Parameter]:
    """The Hugging Face model's own parameters under a TransformerBridge: through a bridge component only its
    ``_original_component`` (the bridge adds split q/k/v beside a fused qkv), unique by identity."""
    original = module._modules.get("_original_component")
    if original is not None:
        return _hf_parameters(original, prefix)
    found = {f"{prefix}{n}": p for n, p in module.named_parameters(recurse=False)}
    for name, child in module.named_children():
        found |= _hf_parameters(child, f"{prefix}{name}.")
    unique: dict[int, tuple[str, torch.nn.Parameter]] = {}
    for name, parameter in found.items():
        unique.setdefault(id(parameter), (name, parameter))
    return dict(unique.values())


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_random_model_has_the_predicted_shape(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each paper architecture at the CPU check's shape: 2 layers, float32 on the CPU, as many parameters as the
    memory table predicts; the same seed gives the same weights, another seed others."""
    monkeypatch.setenv("XLENS_CACHE", str(tmp_path))
    config = CheckSettings.smallest().shapes()[name]
    lm = random_model(config, name, device="cpu", dtype="float32")
    assert lm.n_layers == 2 and lm.name == name and lm.source == "random"
    weights = _hf_parameters(lm.bridge.original_model)
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in weights.values())
    predicted = memory_table({name: config}).iloc[0]
    assert predicted["parameters"] == sum(p.numel() for p in weights.values())
    held = predicted["parameters"] + predicted["bridge_extra_parameters"]  # Bloom's split q, k, v copies
    assert resident_parameters(lm.bridge.original_model) == held

    same = _hf_parameters(
        random_model(CheckSettings.smallest().shapes()[name], name, device="cpu").bridge.original_model
    )
    assert same.keys() == weights.keys()
    assert all(torch.equal(same[k], weights[k]) for k in weights)
    other = _hf_parameters(
        random_model(
            CheckSettings.smallest().shapes()[name], name, device="cpu", dtype="float32", seed=1
        ).bridge.original_model
    )
    matrices = [k for k, p in weights.items() if p.ndim == 2]
    assert matrices and all(not torch.equal(other[k], weights[k]) for k in matrices)


# --- the cuda marker ------------------------------------------------------------------------------------


def test_every_cuda_test_file_is_run_by_the_check() -> None:
    """Every test file marked ``cuda`` is in CUDA_TEST_FILES, and every listed file exists and has the mark."""
    tests = REPO / "tests"
    mark = re.compile(r"pytest\.mark\.cuda\b")
    marked = {
        p.relative_to(tests).as_posix()
        for p in tests.rglob("*.py")
        if p.resolve() != Path(__file__).resolve() and mark.search(p.read_text(encoding="utf-8"))
    }
    assert marked, "no test is marked cuda: the check's cuda row would run nothing"
    assert marked == set(CUDA_TEST_FILES)
    assert len(CUDA_TEST_FILES) == len(set(CUDA_TEST_FILES))


# --- scripts/gpu_check.sh -------------------------------------------------------------------------------


def _tools(folder: Path, nvidia_smi: str | None = None) -> Path:
    """A PATH of only what the script's early steps need (and a fake nvidia-smi printing ``nvidia_smi``)."""
    folder.mkdir()
    (folder / "python3").symlink_to(sys.executable)
    for tool in ("bash", "tee", "mkdir", "ls", "dirname"):
        found = shutil.which(tool)
        assert found is not None, tool
        (folder / tool).symlink_to(found)
    if nvidia_smi is not None:
        fake = folder / "nvidia-smi"
        fake.write_text(f"#!/bin/sh\necho '{nvidia_smi}'\n")
        fake.chmod(0o755)
    return folder


def _script(script: Path, cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run(
        [bash, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _fake_repo(root: Path) -> Path:
    (root / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "scripts" / "gpu_check.sh")
    return root / "scripts" / "gpu_check.sh"


WHEELS = re.search(r"^WHEELS=\((.*)\)$", SCRIPT.read_text(), re.MULTILINE)


def test_script_rejects_unknown_options(tmp_path: Path) -> None:
    """An unknown option: exit 2 with the usage line, nothing written."""
    env = {"PATH": str(_tools(tmp_path / "bin")), "HOME": str(tmp_path), "XLENS_CHECK_DIR": str(tmp_path / "out")}
    done = _script(SCRIPT, tmp_path, env, "--bogus")
    assert done.returncode == 2
    assert "usage: bash scripts/gpu_check.sh [--cpu | --fetch-wheels]" in done.stderr
    assert not (tmp_path / "out").exists()


def test_script_without_nvidia_smi_writes_an_error_report(tmp_path: Path) -> None:
    """GPU mode where nvidia-smi is not found: exit 2, gpu-check-error.json (passed False) and .log in the
    check folder."""
    out = tmp_path / "out"
    env = {"PATH": str(_tools(tmp_path / "bin")), "HOME": str(tmp_path), "XLENS_CHECK_DIR": str(out)}
    done = _script(SCRIPT, tmp_path, env)
    assert done.returncode == 2, done.stderr
    report = json.loads((out / "gpu-check-error.json").read_text())
    assert report["passed"] is False and report["complete"] is True and report["benchmark"] == "gpu-check"
    assert "nvidia-smi" in report["error"]
    assert report["error"] in (out / "gpu-check-error.log").read_text()
    assert "nvidia-smi" in done.stderr


def test_script_names_missing_wheels(tmp_path: Path) -> None:
    """A GPU (a fake nvidia-smi) but no .whl in the repository: exit 2, the error (in $OUT, the device tool's
    folder) names every wheel and --fetch-wheels."""
    assert WHEELS is not None
    script = _fake_repo(tmp_path / "repo")
    out = tmp_path / "out"
    env = {"PATH": str(_tools(tmp_path / "bin", "NVIDIA H200, 143771 MiB")), "HOME": str(tmp_path), "OUT": str(out)}
    done = _script(script, tmp_path, env)
    assert done.returncode == 2, done.stderr
    assert "NVIDIA H200" in done.stdout
    error = json.loads((out / "gpu-check-error.json").read_text())["error"]
    assert "--fetch-wheels" in error
    specs = WHEELS.group(1).split()
    assert len(specs) == 4 and all(spec in error for spec in specs)


def test_script_names_only_the_missing_wheel(tmp_path: Path) -> None:
    """Three of the four wheels carried (named as pip names them, dashes as underscores): only the fourth is
    named, and with neither $XLENS_CHECK_DIR nor $OUT the report goes to the repository's bench/."""
    assert WHEELS is not None
    repo = tmp_path / "repo"
    script = _fake_repo(repo)
    specs = WHEELS.group(1).split()
    (repo / ".whl").mkdir()
    for spec in specs[:-1]:
        name, version = spec.split("==")
        (repo / ".whl" / f"{name.replace('-', '_')}-{version}-py3-none-any.whl").write_bytes(b"")
    env = {"PATH": str(_tools(tmp_path / "bin", "NVIDIA H200, 143771 MiB")), "HOME": str(tmp_path)}
    done = _script(script, tmp_path, env)
    assert done.returncode == 2, done.stderr
    error = json.loads((repo / "bench" / "gpu-check-error.json").read_text())["error"]
    assert f"missing carried wheels {specs[-1]}:" in error
    assert not any(spec in error for spec in specs[:-1])


def _carried_repo(root: Path, python3: str) -> tuple[Path, dict[str, str]]:
    """A fake repository with every wheel carried, a fake GPU, and ``python3`` replaced by a shell script whose
    body is ``python3`` (it may call the real interpreter, ``$REAL``)."""
    assert WHEELS is not None
    script = _fake_repo(root / "repo")
    (root / "repo" / ".whl").mkdir()
    for spec in WHEELS.group(1).split():
        name, version = spec.split("==")
        (root / "repo" / ".whl" / f"{name.replace('-', '_')}-{version}-py3-none-any.whl").write_bytes(b"")
    tools = _tools(root / "bin", "NVIDIA H200, 143771 MiB")
    (tools / "python3").unlink()
    (tools / "python3").write_text(f"#!/bin/sh\nREAL={sys.executable}\n{python3}\n")
    (tools / "python3").chmod(0o755)
    for tool in ("timeout", "mktemp", "find", "rm", "tail", "paste", "cat", "echo"):
        found = shutil.which(tool)
        if found is not None and not (tools / tool).exists():
            (tools / tool).symlink_to(found)
    return script, {"PATH": str(tools), "HOME": str(root), "OUT": str(root / "out")}


@pytest.mark.parametrize(
    ("check_import", "check_run", "expected"),
    [
        # Wheels installed but the check cannot be imported (a package the machine lacks): stopped before the run.
        (
            """echo "ModuleNotFoundError: No module named 'plotly'" >&2; exit 1""",
            'echo "the check ran" >&2; exit 0',
            "xlens.bench.check does not import: ModuleNotFoundError: No module named 'plotly'",
        ),
        # The check exits without writing its report (a crash): the script still leaves one saying so.
        (
            "exit 0",
            'echo "Segmentation fault" >&2; exit 139',
            "xlens bench check exited with 139 before writing its report: see the output above",
        ),
    ],
)
def test_script_reports_a_check_that_leaves_no_report(
    tmp_path: Path, check_import: str, check_run: str, expected: str
) -> None:
    """Exit 2 and gpu-check-error.json naming what went wrong, whenever the check itself writes no report."""
    fake = f"""case "$1 $2" in
  "-m pip") exit 0 ;;
  "-c import xlens.bench.check") {check_import} ;;
  "-m xlens") {check_run} ;;
esac
exec "$REAL" "$@"
"""
    script, env = _carried_repo(tmp_path, fake)
    done = _script(script, tmp_path, env)
    assert done.returncode == 2, done.stderr
    error = json.loads((tmp_path / "out" / "gpu-check-error.json").read_text())["error"]
    assert error == expected
    assert "the check ran" not in done.stderr


# --- xlens bench check ----------------------------------------------------------------------------------


def test_cli_bench_check_study(tmp_path: Path) -> None:
    """`bench check --cpu --sections study`: exit 0, a complete passing report with one study row covering every
    table; again without --force: exit 2 (the file exists); an unknown section: exit 2 naming it."""
    runner = CliRunner()
    out = tmp_path / "c.json"
    args = ["bench", "check", "--cpu", "--json", str(out), "--sections", "study"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["complete"] is True and report["passed"] is True and report["mode"] == "cpu"
    assert report["failed"] == [] and report["errors"] == [] and list(report["sections"]) == ["study"]
    (row,) = report["sections"]["study"]
    assert row["status"] == "passed" and row["failures"] == []
    assert set(row["max_abs_diff"]) == set(TABLES)
    assert all(0.0 <= v <= row["tolerance"] for v in row["max_abs_diff"].values())
    languages, methods = len(STUDY["languages"]), len(STUDY["intervene"]["method"])
    assert len(row["conditions"]) == 1 + languages * methods * 2  # baseline, then each with its random control
    assert "] study: " in out.with_suffix(".log").read_text()

    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "exists" in again.output and "--force" in again.output
    assert json.loads(out.read_text()) == report

    bogus = tmp_path / "b.json"
    bad = runner.invoke(app, ["bench", "check", "--cpu", "--json", str(bogus), "--sections", "bogus"])
    assert bad.exit_code == 2 and "unknown sections ['bogus']" in bad.output
    assert not bogus.exists()
