from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from xlens.data import load_builtin
from xlens.data.corpus import ParallelCorpus
from xlens.experts.sets import ExpertScores, ExpertSet, find_experts
from xlens.generation import BUILTIN_PROMPTS, generate, language_id, perplexity, target_language_rate
from xlens.interventions import Force, Steer, build_intervention
from xlens.models import LensModel
from xlens.steering import SteeringError, load_experts, run_steer

PROMPTS = ["The weather this morning was", "Hi there"]


@pytest.fixture(scope="module")
def scores(tiny_gpt2: LensModel) -> ExpertScores:
    return find_experts(tiny_gpt2, load_builtin(["en", "es", "de"]).head(12), progress=False)


@pytest.fixture(scope="module")
def eval_corpus() -> ParallelCorpus:
    return load_builtin(["en", "es"]).subset(range(100, 112))


@pytest.fixture(scope="module")
def experts_dir(tmp_path_factory: pytest.TempPathFactory, scores: ExpertScores) -> Path:
    """The layout `xlens experts --out DIR` writes."""
    out = tmp_path_factory.mktemp("experts")
    scores.save(out / "scores")
    for lang in scores.languages:
        scores.select(lang, 20).save(out / "experts" / lang)
    return out


def test_run_steer_reports_rates_perplexities_and_examples(
    tiny_gpt2: LensModel, experts_dir: Path, scores: ExpertScores, eval_corpus: ParallelCorpus
) -> None:
    report = run_steer(
        tiny_gpt2,
        experts_dir,
        "es",
        k_values=(0, 4, 30),
        prompts=PROMPTS,
        eval_corpus=eval_corpus,
        eval_sentences=5,
        max_new_tokens=4,
        n_examples=1,
    )
    assert json.loads(json.dumps(report)) == report  # JSON-ready
    assert [run["k"] for run in report["runs"]] == [4, 30]
    assert report["config"]["eval_langs"] == ["spa_Latn", "eng_Latn"]
    held_out = eval_corpus.sample(5, seed=0)

    base_texts = generate(tiny_gpt2, PROMPTS, 4)
    assert report["baseline"]["target_rate"] == target_language_rate(base_texts, "es")
    assert report["baseline"]["examples"] == [
        {"prompt": PROMPTS[0], "continuation": base_texts[0], "language": language_id(base_texts[:1])[0]}
    ]
    assert report["baseline"]["perplexity"]["eng_Latn"] == pytest.approx(perplexity(tiny_gpt2, held_out["en"]))

    force = Force.from_experts(scores.select("es", 30), None, "on_p50")
    run = report["runs"][1]
    forced_texts = generate(tiny_gpt2, PROMPTS, 4, interventions=[force])
    assert run["target_rate"] == target_language_rate(forced_texts, "es")
    assert sum(run["languages"].values()) == pytest.approx(1.0)
    forced_ppl = perplexity(tiny_gpt2, held_out["es"], interventions=[force])
    assert run["perplexity"]["spa_Latn"] == pytest.approx(forced_ppl)
    assert run["perplexity_ratio"]["spa_Latn"] == pytest.approx(
        forced_ppl / report["baseline"]["perplexity"]["spa_Latn"]
    )
    assert run["intervention"] == force.describe()


def test_run_steer_with_each_expert_method_and_an_expert_set(
    tiny_gpt2: LensModel, experts_dir: Path, scores: ExpertScores, eval_corpus: ParallelCorpus, tmp_path: Path
) -> None:
    for method in ("aura", "det0", "damp"):
        report = run_steer(
            tiny_gpt2, scores, "de", (5,), method, PROMPTS, eval_corpus.select(["en"]), eval_langs=["en"],
            eval_sentences=3, max_new_tokens=2,
        )  # fmt: skip
        expected = build_intervention(method, scores=scores, language="de", k=5).describe()
        assert report["runs"][0]["intervention"] == expected
    assert isinstance(load_experts(experts_dir, tiny_gpt2, "es"), ExpertScores)  # preferred: any k
    sets_only = tmp_path / "sets_only"
    shutil.copytree(experts_dir / "experts", sets_only / "experts")
    es_set = load_experts(sets_only, tiny_gpt2, "es")
    assert isinstance(es_set, ExpertSet) and es_set.language == "spa_Latn" and len(es_set) == 20
    report = run_steer(tiny_gpt2, es_set, "es", (3,), "force", PROMPTS, eval_corpus, eval_sentences=3, max_new_tokens=2)
    assert report["runs"][0]["intervention"]["n_units"] == 3
    with pytest.raises(SteeringError, match="k=21 is more than the 20 experts"):
        run_steer(tiny_gpt2, es_set, "es", (21,), "force", PROMPTS, eval_corpus, eval_sentences=3, max_new_tokens=1)
    with pytest.raises(SteeringError, match="for spa_Latn, not deu_Latn"):
        run_steer(tiny_gpt2, es_set, "de", (2,), "force", PROMPTS, load_builtin(["en", "de"]), eval_sentences=3)


def test_run_steer_diffmean_sweeps_alpha_with_one_vector(tiny_gpt2: LensModel, eval_corpus: ParallelCorpus) -> None:
    report = run_steer(
        tiny_gpt2, None, "es", method="diffmean", alphas=(0, 1.5, 3), prompts=PROMPTS, eval_corpus=eval_corpus,
        eval_sentences=4, diffmean_sentences=5, max_new_tokens=2, layer=0,
    )  # fmt: skip
    assert [run["alpha"] for run in report["runs"]] == [1.5, 3.0]
    # The vector comes from rows that are not held out for perplexity.
    held_ids = set(eval_corpus.sample(4, seed=0).ids)
    rows = [i for i, row_id in enumerate(eval_corpus.ids) if row_id not in held_ids][:5]
    vector_rows = eval_corpus.subset(rows)
    expected = Steer.mean_difference(tiny_gpt2, vector_rows["en"], vector_rows["es"], layer=0, alpha=3.0)
    assert report["runs"][1]["intervention"] == expected.describe()
    assert report["runs"][0]["intervention"]["vector_norm"] == pytest.approx(float(expected.vector.norm()), rel=1e-5)


def test_run_steer_errors(tiny_gpt2: LensModel, tmp_path: Path, eval_corpus: ParallelCorpus) -> None:
    with pytest.raises(SteeringError, match="unknown steering method"):
        run_steer(tiny_gpt2, tmp_path, "es", method="magic")
    with pytest.raises(SteeringError, match="no LAPE units"):
        run_steer(tiny_gpt2, tmp_path, "es", method="lape", prompts=PROMPTS, eval_corpus=eval_corpus, eval_sentences=2)
    with pytest.raises(SteeringError, match="no expert scores"):
        run_steer(tiny_gpt2, tmp_path, "es", prompts=PROMPTS, eval_corpus=eval_corpus, eval_sentences=2)
    with pytest.raises(SteeringError, match="needs experts"):
        run_steer(tiny_gpt2, None, "es", prompts=PROMPTS, eval_corpus=eval_corpus, eval_sentences=2)
    with pytest.raises(SteeringError, match="lacks"):
        run_steer(tiny_gpt2, tmp_path, "ja", prompts=PROMPTS, eval_corpus=eval_corpus, eval_sentences=2)
    with pytest.raises(SteeringError, match="eval_sentences=12"):
        run_steer(tiny_gpt2, None, "es", method="diffmean", prompts=PROMPTS, eval_corpus=eval_corpus, eval_sentences=12)


@pytest.mark.integration
def test_forcing_spanish_experts_makes_gemma_continue_in_spanish(embedded: LensModel) -> None:
    """Top-50 Spanish experts (found on 40 builtin sentences per language) forced to their median: greedy
    continuations of English prompts turn Spanish (measured: 0/6 -> 6/6; 200 experts also 6/6)."""
    scores = find_experts(embedded, load_builtin(["en", "es"]).head(40), progress=False)
    prompts = list(BUILTIN_PROMPTS[:6])
    force = Force.from_experts(scores.select("es", 50), None, "on_p50")
    before = target_language_rate(generate(embedded, prompts, 12), "es")
    after = target_language_rate(generate(embedded, prompts, 12, interventions=[force]), "es")
    assert before <= 1 / 6
    assert after >= 5 / 6


def test_run_steer_lape_zeroes_the_lowest_entropy_units(
    tiny_gpt2: LensModel, scores: ExpertScores, tmp_path: Path, eval_corpus: ParallelCorpus
) -> None:
    lape_set = scores.expert_set("es", scores.select("es", 6).units, "lape")
    lape_set.save(tmp_path / "lape" / "spa_Latn")
    report = run_steer(
        tiny_gpt2, tmp_path, "es", k_values=(0, 4), method="lape",
        prompts=PROMPTS, eval_corpus=eval_corpus, eval_sentences=2, max_new_tokens=2,
    )  # fmt: skip
    expected = build_intervention("det0", experts=lape_set, k=4)
    assert report["runs"][0]["intervention"] == expected.describe()
    with pytest.raises(SteeringError, match="more than the 6 experts"):
        run_steer(
            tiny_gpt2, tmp_path, "es", k_values=(7,), method="lape", prompts=PROMPTS, eval_corpus=eval_corpus,
            eval_sentences=2, max_new_tokens=2,
        )  # fmt: skip
