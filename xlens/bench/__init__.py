"""Benchmarks behind ``xlens bench``, one module each (each returns a JSON-ready dict of measurements, never
asserted in tests); :mod:`xlens.bench.check` is the GPU proof (``xlens bench check``, ``scripts/gpu_check.sh``).

Nothing is imported here: the GPU check must not pull in what only the other benchmarks need (the retrieval
benchmark's report needs plotly, which a bare GPU machine lacks)."""
