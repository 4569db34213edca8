"""The HTML report of a real (tiny) run: what it reads back from the run folder, what the page holds, and that a
headless Chromium renders every figure with no console message."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import patch_everywhere
from jupyter_browser import CHROMIUM_FLAGS

from xlens.conditions import Condition
from xlens.config import ExperimentConfig
from xlens.embeddings import sentence_embeddings
from xlens.errors import ResultsError
from xlens.models import LensModel, loading
from xlens.report import build_report, run_figures, write_figures, write_report
from xlens.runs.results import RunResults, headline_lines, pair_change_lines
from xlens.runs.study import run_experiment
from xlens.viz.export import find_browser

LANGS = ["en", "es", "ja"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    config = ExperimentConfig.from_dict(
        {
            "model": "tiny-gpt2",
            "languages": LANGS,
            "find": {"sentences": 20},
            "intervene": {"k": [5]},
            "evaluate": {"sentences": 20},
            "runtime": {"device": "cpu"},
        }
    )
    run_experiment(config, out, progress=False)
    return out


@pytest.fixture(scope="module")
def report(run_dir: Path, tiny_gpt2: LensModel) -> Path:
    return write_report(RunResults.load(run_dir, model=tiny_gpt2))


def test_run_reads_back_the_cached_embeddings(run_dir: Path, tiny_gpt2: LensModel) -> None:
    run = RunResults.load(run_dir, model=tiny_gpt2)
    corpus = run.eval_corpus
    assert corpus is not None and run.languages == ["eng_Latn", "spa_Latn", "jpn_Jpan"]
    texts = [s for lang in run.languages for s in corpus[lang]]
    fresh = sentence_embeddings(tiny_gpt2, texts, layers=run.layers, max_length=128, progress=False)
    baseline = run.embeddings(None)
    assert baseline is not None
    torch.testing.assert_close(baseline, fresh, atol=1e-5, rtol=1e-5)
    for condition in run.interventions:
        after = run.embeddings(condition)
        assert after is not None and after.shape == baseline.shape and not torch.equal(after, baseline)
    with pytest.raises(ResultsError, match="condition 'force eng_Latn k=999' is not in these results"):
        run.embeddings(Condition("force", "eng_Latn", 999))
    assert run.responses is not None and run.find_texts is not None
    assert len(run.find_texts) == run.responses.n_sentences == 60


def test_missing_run_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="xlens run --out"):
        write_report(tmp_path)


def test_report_is_one_self_contained_page(report: Path, run_dir: Path) -> None:
    assert report == run_dir / "report.html"
    page = report.read_text()
    assert not re.search(r"<script[^>]*\bsrc=", page)  # nothing to fetch: opens offline
    # improvement, retrieval, cka, cosine, conditions, space, 3 expert figures, 3 cards
    assert page.count("Plotly.newPlot") == 12
    assert len(page) > 4_000_000 and page.count("plotly.js v") == 1  # plotly.js inlined once
    for section in ("headline", "retrieval", "alignment", "conditions", "space", "experts", "tables", "config"):
        assert f'<section id="{section}">' in page
    h = RunResults.load(run_dir).headline()
    for line in pair_change_lines(h):
        assert f"<p>{html.escape(line)}</p>" in page
    assert "largest pair ratio of" in page and "largest pair gain of" in page
    # The controlled verdicts lead the headline section; the largest pair comes after, as a detail.
    section = page[page.index('<section id="headline">') :]
    verdicts = [headline_lines(h)[0], *(e["verdict"] for e in h["conditions"] if "verdict" in e)]
    for line in verdicts:
        assert f"<p><b>{html.escape(line)}</b></p>" in section
    assert section.index(html.escape(verdicts[-1])) < section.index("Details: the largest single-pair changes")
    assert "retrieval top1 per layer</summary>" in page and "sha256" in page
    assert page.count('class="xlens-token"') >= 3 * 5 * 10  # three cards x five sentences with token spans


def test_report_without_cards_or_embeddings(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("embeddings-*", "report.html"))

    def no_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("cards=False must not load a model")

    patch_everywhere(monkeypatch, loading, "load_model", no_model)
    page = build_report(RunResults.load(copy), cards=False)
    assert "no cached baseline embeddings" in page
    assert page.count("Plotly.newPlot") == 8 and "neuron_" not in page


def test_cards_survive_a_model_that_cannot_load(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("hub unreachable")

    patch_everywhere(monkeypatch, loading, "load_model", broken)
    _, cards, notes = run_figures(RunResults.load(run_dir))
    assert len(cards) == 3 and all(not t.tokens for c in cards for t in c.top)
    assert any("hub unreachable" in n for n in notes)


def test_write_figures_shares_plotly_js(run_dir: Path, tmp_path: Path) -> None:
    paths = write_figures(run_dir, tmp_path / "assets", ("html",), cards=False)
    expected = ["improvement", "retrieval", "cka", "cosine", "conditions", "space"]
    assert sorted(p.stem for p in paths) == sorted([*expected, "expert_counts", "ap_distribution", "expert_overlap"])
    assert (tmp_path / "assets" / "plotly.min.js").is_file()
    assert all(p.stat().st_size < 1_000_000 for p in paths)


@pytest.mark.skipif(find_browser() is None, reason="no Chrome/Chromium (scripts/ci_system_deps.sh installs one)")
def test_chromium_renders_every_figure_without_console_messages(report: Path, tmp_path: Path) -> None:
    browser = find_browser()
    assert browser is not None
    proc = subprocess.run(
        [
            browser,
            "--headless",
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    # Every figure div got a rendered plot (plotly adds its SVG layers inside the div).
    divs = re.findall(r'<div id="plot-([\w]+)" class="plotly-graph-div[^"]*"', dom)
    assert len(divs) == 12
    rendered = re.findall(r'class="plot-container plotly".*?class="main-svg"', dom)
    assert len(rendered) == 12
    assert dom.count('class="heatmaplayer') >= 6  # cka, cosine (3 panels each) and the cards' token heatmaps
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
