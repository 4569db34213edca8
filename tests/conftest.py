"""Shared fixtures: tiny random models of every architecture, the embedded model, and the shared corpora."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from xlens.models import TINY_ARCHITECTURES, LensModel, load_model

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` skip themselves without a CUDA device (the GPU check runs them where there is one)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (scripts/gpu_check.sh runs it on a GPU)")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "flores200" / "devtest").is_dir():
        raise FileNotFoundError(f"the shared corpora are expected at {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session", params=TINY_ARCHITECTURES)
def tiny_model(request: pytest.FixtureRequest) -> LensModel:
    """A tiny random model of each architecture the paper uses (bloom, cohere, gpt2) and of gemma3."""
    return load_model(f"tiny-{request.param}", device="cpu")


@pytest.fixture(scope="session")
def tiny_gpt2() -> LensModel:
    return load_model("tiny-gpt2", device="cpu")


@pytest.fixture(scope="session")
def embedded() -> LensModel:
    """The real embedded Gemma-3-270M (dequantized into the cache on first use, about a minute)."""
    return load_model(device="cpu")


def patch_everywhere(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str, replacement: Any) -> None:
    """Replace ``module.name`` and every xlens module's binding of the same object (modules import their
    dependencies at the top, so patching the defining module alone would miss them)."""
    original = getattr(module, name)
    for loaded in list(sys.modules.values()):
        if getattr(loaded, "__name__", "").startswith("xlens") and getattr(loaded, name, None) is original:
            monkeypatch.setattr(loaded, name, replacement)
