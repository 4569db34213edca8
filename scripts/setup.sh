#!/usr/bin/env bash
# Make .venv with xlens and its dev tools. Safe to rerun; a fresh CPU machine needs nothing but Python >= 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first: left to the dependency resolver, a CPU machine would download a multi-GB CUDA build.
# On a GPU machine install the CUDA torch you want into .venv before running this script.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[dev]"
