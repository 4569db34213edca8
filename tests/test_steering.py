from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from xlens.activations import collect_corpus_responses
from xlens.data import load_builtin
from xlens.data.corpus import ParallelCorpus
from xlens.errors import ConfigError, InterventionError
from xlens.experts.sets import ExpertScores, ExpertSet, find_experts
from xlens.generation import BUILTIN_PROMPTS, generate, language_id, perplexity, target_language_rate
from xlens.interventions import DiffMean, Force, Lape, ScaleUnits, SteeringVector, spec_class
from xlens.models import LensModel
from xlens.runs.steer import SteeringError, load_experts, run_steer

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

    force = Force().build(scores.select("es", 30))
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
        expected = spec_class(method)().build(scores, "de", 5).describe()
        assert report["runs"][0]["intervention"] == expected
    assert isinstance(load_experts(experts_dir, tiny_gpt2, "es"), ExpertScores)  # preferred: any k
    sets_only = tmp_path / "sets_only"
    shutil.copytree(experts_dir / "experts", sets_only / "experts")
    es_set = load_experts(sets_only, tiny_gpt2, "es")
    assert isinstance(es_set, ExpertSet) and es_set.language == "spa_Latn" and len(es_set) == 20
    report = run_steer(tiny_gpt2, es_set, "es", (3,), "force", PROMPTS, eval_corpus, eval_sentences=3, max_new_tokens=2)
    assert report["runs"][0]["intervention"]["n_units"] == 3
    with pytest.raises(InterventionError, match="k=21 is more than the 20 experts"):
        run_steer(tiny_gpt2, es_set, "es", (21,), "force", PROMPTS, eval_corpus, eval_sentences=3, max_new_tokens=1)
    with pytest.raises(InterventionError, match="for spa_Latn, not deu_Latn"):
        run_steer(tiny_gpt2, es_set, "de", (2,), "force", PROMPTS, load_builtin(["en", "de"]), eval_sentences=3)


def test_run_steer_diffmean_sweeps_alpha_with_one_vector(tiny_gpt2: LensModel, eval_corpus: ParallelCorpus) -> None:
    report = run_steer(
        tiny_gpt2, None, "es", method=DiffMean(block=0), alphas=(0, 1.5, 3), prompts=PROMPTS,
        eval_corpus=eval_corpus, eval_sentences=4, vector_sentences=5, max_new_tokens=2,
    )  # fmt: skip
    assert [run["alpha"] for run in report["runs"]] == [1.5, 3.0]
    # The vector comes from rows that are not held out for perplexity.
    held_ids = set(eval_corpus.sample(4, seed=0).ids)
    rows = [i for i, row_id in enumerate(eval_corpus.ids) if row_id not in held_ids][:5]
    vector_rows = eval_corpus.subset(rows)
    expected = SteeringVector.mean_difference(tiny_gpt2, vector_rows["en"], vector_rows["es"], block=0, alpha=3.0)
    assert report["runs"][1]["intervention"] == expected.describe()
    assert report["runs"][0]["intervention"]["vector_norm"] == pytest.approx(float(expected.vector.norm()), rel=1e-5)


def test_run_steer_errors(tiny_gpt2: LensModel, tmp_path: Path, eval_corpus: ParallelCorpus) -> None:
    with pytest.raises(ConfigError, match="unknown intervention method 'magic'"):
        run_steer(tiny_gpt2, tmp_path, "es", method="magic")
    with pytest.raises(SteeringError, match=r"no expert scores.*--lape"):
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
    force = Force(value="on_p50").build(scores, "es", 50, model=embedded)
    before = target_language_rate(generate(embedded, prompts, 12), "es")
    after = target_language_rate(generate(embedded, prompts, 12, interventions=[force]), "es")
    assert before <= 1 / 6
    assert after >= 5 / 6


def test_run_steer_lape_zeroes_the_k_lowest_entropy_units(
    tiny_gpt2: LensModel, tmp_path: Path, eval_corpus: ParallelCorpus
) -> None:
    """`xlens steer --method lape --k 4` used to zero the 4 earliest-index LAPE units (the saved set was in unit
    order and had no entropy); it must zero the 4 lowest-entropy ones, as `xlens run` does."""
    responses = collect_corpus_responses(
        tiny_gpt2, load_builtin(["en", "es", "de"]).head(12), pooling=["mean", "gate_active"], progress=False
    )
    ranked = ExpertScores.from_responses(responses).with_lape(responses, top_rate=0.3)
    assert ranked.lape is not None
    li = ranked.lang_index("es")
    members = ranked.lape.units_for(li).numpy()
    entropy = ranked.lape.entropy.numpy()
    lowest = members[np.argsort(entropy[members], kind="stable")][:4]
    assert sorted(lowest.tolist()) != sorted(members.tolist())[:4]  # the old bug would pick other units
    only_sets = tmp_path / "sets"
    for lang, lape_set in ranked.lape_sets().items():
        lape_set.save(only_sets / "lape" / lang)
    with_scores = tmp_path / "scores"
    ranked.save(with_scores / "scores")
    for folder in (only_sets, with_scores):
        source = load_experts(folder, tiny_gpt2, "es", lape=True)
        built = Lape(top_rate=0.3).build(source, "es", 4)
        assert isinstance(built, ScaleUnits)
        zeroed = {ranked.units.unit(h, int(p)) for h, pos in built.units.items() for p in pos}
        assert zeroed == set(lowest.tolist())
        report = run_steer(
            tiny_gpt2, folder, "es", k_values=(0, 4), method=Lape(top_rate=0.3),
            prompts=PROMPTS, eval_corpus=eval_corpus, eval_sentences=2, max_new_tokens=2,
        )  # fmt: skip
        assert report["runs"][0]["intervention"] == built.describe()
    with pytest.raises(InterventionError, match=f"LAPE gave spa_Latn only {len(members)} units"):
        run_steer(
            tiny_gpt2, only_sets, "es", k_values=(len(members) + 1,), method="lape", prompts=PROMPTS,
            eval_corpus=eval_corpus, eval_sentences=2, max_new_tokens=2,
        )  # fmt: skip
    # A LAPE set saved before sets carried their entropy (unit-index order) is refused, not misused.
    old = ExpertScores.from_responses(responses).expert_set("es", ranked.lape.units_for(li), "lape")
    old.save(tmp_path / "old" / "lape" / "spa_Latn")
    with pytest.raises(InterventionError, match="without its entropy ranking: run `xlens experts --lape` again"):
        run_steer(tiny_gpt2, tmp_path / "old", "es", k_values=(0, 2), method="lape", prompts=PROMPTS,
                  eval_corpus=eval_corpus, eval_sentences=2, max_new_tokens=1)  # fmt: skip
