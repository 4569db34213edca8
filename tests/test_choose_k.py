"""`xlens choose-k`: the paper's choice of k from sampled target-language rates and the perplexity cost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from xlens.cli import app
from xlens.data import load_builtin
from xlens.errors import SteeringError
from xlens.experts.sets import ExpertScores, find_experts
from xlens.generation import BUILTIN_PROMPTS, generate, perplexity, target_language_rate
from xlens.interventions import Force
from xlens.models import LensModel
from xlens.runs.steer import choose_k, pick_k, prepare_choose_k, wilson_interval
from xlens.viz.steering import choose_k_figure


@pytest.fixture(scope="module")
def gpt2_scores(tiny_gpt2: LensModel) -> ExpertScores:
    return find_experts(tiny_gpt2, load_builtin(["en", "es", "de"]).head(12), progress=False)


@pytest.mark.parametrize(("hits", "n"), [(0, 10), (3, 10), (10, 10), (1, 1), (37, 60), (0, 1)])
def test_wilson_interval_matches_scipy(hits: int, n: int) -> None:
    from scipy.stats import binomtest

    expected = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(hits, n)
    assert low == pytest.approx(expected.low, abs=1e-12)
    assert high == pytest.approx(expected.high, abs=1e-12)


rows_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "k": st.integers(0, 50),
            "target_rate": st.floats(0, 1),
            "worst_perplexity_ratio": st.floats(0.5, 3),
        }
    ),
    min_size=1,
    max_size=8,
)


@given(rows_strategy, st.floats(0.01, 1), st.floats(0.5, 3))
def test_pick_k_is_the_smallest_k_meeting_both_bounds(rows: list[dict[str, Any]], rate: float, ratio: float) -> None:
    brute = [r["k"] for r in rows if r["k"] > 0 and r["target_rate"] >= rate and r["worst_perplexity_ratio"] <= ratio]
    assert pick_k(rows, rate, ratio) == (min(brute) if brute else None)
    assert [r["meets"] for r in rows] == [
        r["target_rate"] >= rate and r["worst_perplexity_ratio"] <= ratio for r in rows
    ]


def test_choose_k_rates_and_ratios_match_direct_measurements(tiny_gpt2: LensModel, gpt2_scores: ExpertScores) -> None:
    options: dict[str, Any] = {"samples": 12, "max_new_tokens": 4, "eval_sentences": 5, "seed": 7}
    report = choose_k(tiny_gpt2, gpt2_scores, "es", [16, 4], min_rate=0.01, max_perplexity_ratio=100.0, **options)
    assert [row["k"] for row in report["rows"]] == [0, 4, 16]  # sorted, the baseline added
    plan = prepare_choose_k(gpt2_scores, "es", [4, 16], **options)
    prompts = [BUILTIN_PROMPTS[i % len(BUILTIN_PROMPTS)] for i in range(12)]
    assert plan.steer.prompts == prompts
    held_out = plan.steer.held_out
    base_ppl = {lang: perplexity(tiny_gpt2, held_out[lang]) for lang in plan.steer.langs}
    for row in report["rows"]:
        ivs = [Force().build(gpt2_scores, "es", row["k"], model=tiny_gpt2)] if row["k"] else []
        texts = generate(tiny_gpt2, prompts, 4, interventions=ivs, greedy=False, top_p=0.9, seed=7)
        assert row["target_rate"] == target_language_rate(texts, "es")
        for lang in plan.steer.langs:
            ratio = perplexity(tiny_gpt2, held_out[lang], interventions=ivs) / base_ppl[lang]
            assert row["perplexity_ratio"][lang] == pytest.approx(ratio, rel=1e-6)
        assert row["worst_perplexity_ratio"] == max(row["perplexity_ratio"].values())
        hits = round(row["target_rate"] * 12)
        assert row["target_rate_interval"] == pytest.approx(wilson_interval(hits, 12))
    assert report["chosen_k"] == pick_k(report["rows"], 0.01, 100.0)
    fig = choose_k_figure(report)
    assert [list(trace.x) for trace in fig.data] == [["0", "4", "16"]] * 2
    assert list(fig.data[0].y) == [row["target_rate"] for row in report["rows"]]


def test_choose_k_bad_input_gets_one_clear_error(gpt2_scores: ExpertScores) -> None:
    with pytest.raises(SteeringError, match="samples must be >= 1"):
        prepare_choose_k(gpt2_scores, "es", samples=0)
    with pytest.raises(SteeringError, match=r"min_rate must lie in \(0, 1\]"):
        prepare_choose_k(gpt2_scores, "es", min_rate=0)
    with pytest.raises(SteeringError, match="max_perplexity_ratio must be > 0"):
        prepare_choose_k(gpt2_scores, "es", max_perplexity_ratio=0)
    with pytest.raises(SteeringError, match="takes no k"):
        prepare_choose_k(gpt2_scores, "es", method="diffmean")


def test_choose_k_cli_checks_before_loading_and_writes_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_gpt2: LensModel
) -> None:
    runner = CliRunner()
    experts = tmp_path / "experts"
    made = runner.invoke(app, ["experts", "--model", "tiny-gpt2", "--langs", "en,es,de", "--per-lang", "12",
                               "--k", "16", "--out", str(experts)])  # fmt: skip
    assert made.exit_code == 0, made.output

    def no_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr("xlens.models.load_model", no_model)
    bad_figure = runner.invoke(app, ["choose-k", "--experts", str(experts), "--lang", "es", "--model", "tiny-gpt2",
                                     "--json", str(tmp_path / "a.json"),
                                     "--figure", str(tmp_path / "f.xyz")])  # fmt: skip
    assert bad_figure.exit_code != 0 and "cannot write f.xyz" in bad_figure.output
    bad_k = runner.invoke(app, ["choose-k", "--experts", str(experts), "--lang", "es", "--model", "tiny-gpt2",
                                "--k", "4,100000", "--json", str(tmp_path / "a.json")])  # fmt: skip
    assert bad_k.exit_code != 0 and "100000" in bad_k.output
    monkeypatch.undo()
    out = tmp_path / "choose.json"
    ok = runner.invoke(app, ["choose-k", "--experts", str(experts), "--lang", "es", "--model", "tiny-gpt2",
                             "--k", "4,16", "--samples", "6", "--max-new-tokens", "3", "--json", str(out),
                             "--figure", str(tmp_path / "k.html")])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    report = json.loads(out.read_text())
    assert [row["k"] for row in report["rows"]] == [0, 4, 16]
    assert (tmp_path / "k.html").stat().st_size > 1000
    again = runner.invoke(app, ["choose-k", "--experts", str(experts), "--lang", "es", "--json", str(out)])
    assert again.exit_code != 0 and "--force" in again.output  # an existing report is not overwritten


def test_choose_k_on_the_embedded_model(embedded: LensModel) -> None:
    scores = find_experts(embedded, load_builtin(["en", "es", "de"]).head(20), progress=False)
    report = choose_k(embedded, scores, "es", [300], samples=6, max_new_tokens=8, eval_sentences=3, min_rate=0.5)
    base, forced = report["rows"]
    assert base["perplexity_ratio"] == {"spa_Latn": 1.0, "eng_Latn": 1.0}
    # Forcing 300 Spanish experts to their mean costs perplexity on held-out text in both languages.
    assert min(forced["perplexity_ratio"].values()) > 1.0
    for row in report["rows"]:
        low, high = row["target_rate_interval"]
        assert 0 <= low <= row["target_rate"] <= high <= 1
    assert report["chosen_k"] == pick_k(report["rows"], 0.5, 1.5)
