"""The notebooks are stored without outputs and use the top-level API; tests/test_browser.py runs each of them in a
real JupyterLab on the embedded default model."""

from __future__ import annotations

from pathlib import Path

import nbformat

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_notebooks_are_stored_without_outputs() -> None:
    assert [p.stem for p in NOTEBOOKS] == ["01_quickstart", "02_experts", "03_embedding_spaces", "04_paper_experiment"]
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), path.name


def test_notebooks_use_the_top_level_api() -> None:
    for path in NOTEBOOKS:
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert "import xlens" in code, path.name
        deep = [line for line in code.splitlines() if line.startswith("from xlens.") and "viz" not in line]
        assert deep in ([], ["from xlens.metrics import cka_matrix, cosine_parallel_matrix"]), (path.name, deep)
