"""What every benchmark records: the machine, peak memory, and device synchronisation around timings."""

from __future__ import annotations

import os
import platform
import resource
import sys
from importlib import metadata
from typing import Any

import torch

from xlens.interventions import SetUnits
from xlens.models.lens import LensModel


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_force(lm: LensModel, units: int, seed: int) -> SetUnits:
    """``units`` MLP units drawn uniformly from the whole model, each set to a standard-normal value: the
    intervention the benchmarks time."""
    generator = torch.Generator().manual_seed(seed)
    flat = torch.randperm(lm.n_layers * lm.d_mlp, generator=generator)[:units]
    positions = {lm.mlp_hook(b): flat[flat // lm.d_mlp == b] % lm.d_mlp for b in range(lm.n_layers)}
    positions = {h: p for h, p in positions.items() if p.numel()}
    force = SetUnits(positions, {h: torch.randn(p.numel(), generator=generator) for h, p in positions.items()})
    return force


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """The machine a benchmark ran on: CPUs, torch threads, platform, Python, package versions, the GPU."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {n: _version(n) for n in ("torch", "transformers", "transformer-lens", "accelerate", "numpy")},
    }
    info["float32_matmul_precision"] = torch.get_float32_matmul_precision()  # "highest": no TF32
    if torch.cuda.is_available():
        info["cuda_matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        total = torch.cuda.mem_get_info()[1]
        info |= {"gpu": torch.cuda.get_device_name(0), "gpu_total_gib": total / 2**30, "cuda": torch.version.cuda}
    return info
