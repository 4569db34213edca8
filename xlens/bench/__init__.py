"""Benchmarks behind ``xlens bench``: each returns a JSON-ready dict of measurements (never asserted in tests);
:mod:`xlens.bench.check` is the GPU proof (``xlens bench check``, ``scripts/gpu_check.sh``)."""

from xlens.bench.experts import bench_experts
from xlens.bench.generate import bench_generate, generation_speed
from xlens.bench.retrieval import bench_retrieval
from xlens.bench.sweep import bench_sweep
from xlens.bench.throughput import (
    THROUGHPUT_SHAPES,
    bench_gpu,
    throughput,
    throughput_config,
    throughput_model_folder,
)

__all__ = [
    "THROUGHPUT_SHAPES",
    "bench_experts",
    "bench_generate",
    "bench_gpu",
    "bench_retrieval",
    "bench_sweep",
    "generation_speed",
    "throughput",
    "throughput_config",
    "throughput_model_folder",
]
