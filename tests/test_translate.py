"""The translation task (`xlens translate`, its study alone): few-shot prompts, scores against sacrebleu itself,
and studies on a tiny model (outputs, resume, ownership, the command) and on the embedded Gemma-3-270M."""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sacrebleu
from conftest import patch_everywhere
from typer.testing import CliRunner

import xlens.generation
import xlens.runs.executors
from xlens.cli import app
from xlens.config import ExperimentConfig, check_template, parse_direction
from xlens.data.corpus import ParallelCorpus
from xlens.data.loaders import load_corpus
from xlens.errors import ConfigError, CorpusError, MissingDependencyError, RunFolderError
from xlens.evaluation.translation import (
    bleu,
    bleu_tokenizer,
    chrf,
    cut,
    empty_share,
    few_shot_prompts,
    target_share,
)
from xlens.experts.sets import ExpertScores
from xlens.generation import generate
from xlens.interventions import Force
from xlens.models import LensModel
from xlens.runs.results import RunResults
from xlens.runs.study import run_experiment

runner = CliRunner()
EN = [f"Sentence number {i} in English." for i in range(30)]
ES = [f"Frase número {i} en español." for i in range(30)]
TEMPLATE = "{source_language}: {source}\n{target_language}:"


@pytest.fixture(scope="module")
def corpus() -> ParallelCorpus:
    return ParallelCorpus({"en": EN, "es": ES}, name="hand-made")


# --- prompts -----------------------------------------------------------------------------------------------------


def test_every_row_in_order_without_shots_gives_the_exact_prompts() -> None:
    small = ParallelCorpus({"en": ["A cat.", "A dog."], "es": ["Un gato.", "Un perro."]}, name="two")
    plan = few_shot_prompts(small, "en", "es", 0, 2, TEMPLATE, seed=0)
    assert plan.prompts == ["English: A cat.\nSpanish:", "English: A dog.\nSpanish:"]
    assert plan.references == ["Un gato.", "Un perro."] and plan.shot_ids == [] and plan.test_ids == [0, 1]


def test_the_prompt_text_with_shots(corpus: ParallelCorpus) -> None:
    plan = few_shot_prompts(corpus, "en", "es", 2, 3, TEMPLATE, seed=4)
    a, b = plan.shot_ids
    shots = f"English: {EN[a]}\nSpanish: {ES[a]}\nEnglish: {EN[b]}\nSpanish: {ES[b]}\n"
    assert plan.prompts == [shots + f"English: {EN[i]}\nSpanish:" for i in plan.test_ids]
    assert plan.sources == [EN[i] for i in plan.test_ids] and plan.references == [ES[i] for i in plan.test_ids]
    # The other way round, the names and the sentences swap.
    back = few_shot_prompts(corpus, "es", "en", 1, 1, TEMPLATE, seed=4)
    (s,), (t,) = back.shot_ids, back.test_ids
    assert back.prompts == [f"Spanish: {ES[s]}\nEnglish: {EN[s]}\nSpanish: {ES[t]}\nEnglish:"]


def test_a_template_ending_in_whitespace_gets_no_extra_space(corpus: ParallelCorpus) -> None:
    plan = few_shot_prompts(corpus, "en", "es", 1, 1, "Q ({target_language}): {source}\nA: ", seed=0)
    (s,), (t,) = plan.shot_ids, plan.test_ids
    assert plan.prompts == [f"Q (Spanish): {EN[s]}\nA: {ES[s]}\nQ (Spanish): {EN[t]}\nA: "]


def test_shots_and_tests_are_disjoint_shared_and_seeded(corpus: ParallelCorpus) -> None:
    plan = few_shot_prompts(corpus, "en", "es", 5, 20, TEMPLATE, seed=1)
    assert len(plan.shot_ids) == 5 and len(plan.test_ids) == 20 == len(set(plan.test_ids))
    assert not set(plan.shot_ids) & set(plan.test_ids)
    shots = "".join(f"English: {EN[i]}\nSpanish: {ES[i]}\n" for i in plan.shot_ids)
    assert all(p.startswith(shots) and p.count("\n") == 2 * 5 + 1 for p in plan.prompts)
    assert few_shot_prompts(corpus, "en", "es", 5, 20, TEMPLATE, seed=1) == plan
    others = [few_shot_prompts(corpus, "en", "es", 5, 20, TEMPLATE, seed=s) for s in (2, 3)]
    assert any(o.test_ids != plan.test_ids for o in others) and any(o.shot_ids != plan.shot_ids for o in others)
    # The test rows do not depend on the number of shots (runs with other shots compare the same sentences).
    assert few_shot_prompts(corpus, "en", "es", 0, 20, TEMPLATE, seed=1).test_ids == plan.test_ids


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("en", "es", 10, 21), CorpusError, r"has 30 rows, fewer than .* 10 \+ 21 = 31"),
        (("en", "de", 1, 2), CorpusError, r"lacks deu_Latn .*it has eng_Latn, spa_Latn"),
        (("es", "spa_Latn", 1, 2), ConfigError, "same language"),
    ],
)
def test_bad_prompt_inputs(corpus: ParallelCorpus, args: tuple, error: type, message: str) -> None:
    src, tgt, shots, sentences = args
    with pytest.raises(error, match=message):
        few_shot_prompts(corpus, src, tgt, shots, sentences, TEMPLATE, seed=0)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{source_language}: text\n{target_language}:", r"no \{source\} placeholder"),
        ("{source} in {language}:", r"unknown placeholder\(s\) \['language'\]"),
        ("{source} {", "no valid template"),
    ],
)
def test_bad_templates(corpus: ParallelCorpus, template: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        few_shot_prompts(corpus, "en", "es", 1, 1, template, seed=0)
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.from_dict({"evaluate": {"translation": {"template": template}}})
    check_template("{{literal}} {source}")  # doubled braces are text


def test_directions() -> None:
    assert parse_direction("en-es") == ("eng_Latn", "spa_Latn")
    assert parse_direction("zh-Hant-eng_Latn") == ("zho_Hant", "eng_Latn")
    for bad, message in [
        ("en", "names no two"),
        ("en_es", "names no two"),
        ("en-xx", "names no two"),
        ("en-en", "same"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_direction(bad)
    with pytest.raises(ConfigError, match="listed twice"):
        ExperimentConfig.from_dict({"evaluate": {"translation": {"directions": ["en-es", "eng-spa"]}}})
    with pytest.raises(ConfigError, match="SOURCE-TARGET"):
        ExperimentConfig.from_dict({"evaluate": {"translation": {"directions": ["en>es"]}}})


# --- scores ------------------------------------------------------------------------------------------------------

HYPS = ["The cat sits on the mat.", "A dog barked loudly at night", "", "Rain is expected tomorrow morning."]
REFS = ["The cat sat on the mat.", "The dog barked loudly all night.", "It was cold.", "Rain is expected tomorrow."]


def test_chrf_and_bleu_are_sacrebleus() -> None:
    assert chrf(HYPS, REFS) == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS], word_order=2).score)
    assert chrf(HYPS, REFS) != pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)  # chrF++, not chrF
    assert bleu(HYPS, REFS, "es") == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="13a").score)
    assert chrf(REFS, REFS) == pytest.approx(100.0) and bleu(REFS, REFS, "en") == pytest.approx(100.0)
    assert chrf([""] * 4, REFS) == 0.0


def test_bleu_tokenization_by_target(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [bleu_tokenizer(c) for c in ("es", "eng_Latn", "zh", "zh-Hant")] == ["13a", "13a", "zh", "zh"]
    monkeypatch.setattr("xlens.evaluation.translation._installed", lambda *modules: False)
    assert (bleu_tokenizer("ja"), bleu_tokenizer("ko")) == ("char", "char")
    hyps, refs = ["猫がマットの上に座った。", "雨です"], ["猫はマットの上に座った。", "明日は雨です"]
    assert bleu(hyps, refs, "ja") == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize="char").score)
    monkeypatch.setattr("xlens.evaluation.translation._installed", lambda *modules: True)
    assert (bleu_tokenizer("ja"), bleu_tokenizer("ko")) == ("ja-mecab", "ko-mecab")


def test_the_cut_at_the_first_line_break() -> None:
    assert cut(" Hola mundo.\nEnglish: next") == "Hola mundo."
    assert cut("\nHola") == "" and cut("  solo  ") == "solo" and cut("a\r\nb") == "a" and cut("") == ""


def test_target_and_empty_shares() -> None:
    outputs = [
        "El gato duerme tranquilamente en la casa de mi abuela.",
        "The cat is sleeping quietly in my grandmother's house.",
        "Die Katze schläft ruhig im Haus meiner Großmutter.",
        "",
    ]
    assert target_share(outputs, "es") == 0.25 and target_share(outputs, "deu_Latn") == 0.25
    assert target_share(outputs[:2], "en") == 0.5 and target_share(["", " "], "en") == 0.0
    assert empty_share(outputs) == 0.25 and empty_share(outputs[:3]) == 0.0


# --- runs on a tiny model ------------------------------------------------------------------------------------------

TINY_EN = ["I eat.", "The cat sleeps.", "We run.", "It rains.", "The dog barks.", "She reads.", "He sings."]
TINY_EN += ["They swim.", "Birds fly.", "You write."]
TINY_ES = ["Yo como.", "El gato duerme.", "Corremos.", "Llueve.", "El perro ladra.", "Ella lee.", "Él canta."]
TINY_ES += ["Nadan.", "Vuelan.", "Escribes."]


def _tiny_config(folder: Path, **translate: Any) -> ExperimentConfig:
    """tiny-gpt2 (a context of 256 tokens) translating a hand-made TSV corpus of short sentences."""
    tsv = folder / "tiny.tsv"
    tsv.write_text("en\tes\n" + "".join(f"{a}\t{b}\n" for a, b in zip(TINY_EN, TINY_ES, strict=True)), "utf-8")
    return ExperimentConfig.from_dict(
        {
            "model": "tiny-gpt2",
            "languages": ["en", "es"],
            "find": {"sentences": 8},
            "intervene": {"method": "force", "k": [4]},
            "controls": {"random": True, "seeds": 1},
            "evaluate": {
                "sentences": 4,
                "translation": {
                    "corpus": f"tsv:{tsv}",
                    "directions": ["en-es", "es-en"],
                    "shots": 2,
                    "sentences": 5,
                    "max_new_tokens": 6,
                }
                | translate,
            },
            "stats": {"resamples": 200},
            "runtime": {"batch_size": 4, "device": "cpu"},
        }
    )


def _run(config: ExperimentConfig, out: Path, **kwargs: Any) -> RunResults:
    """The study of the translation task alone, as ``xlens translate`` runs it."""
    return run_experiment(config.override({"evaluate.tasks": ["translation"]}), out, progress=False, **kwargs)


def _outputs(results: RunResults, direction: str, condition: str = "baseline") -> list[str]:
    table: Any = results.task_tables["translation_outputs"]
    return table[(table["direction"] == direction) & (table["condition"] == condition)]["output"].tolist()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentConfig, RunResults]:
    folder = tmp_path_factory.mktemp("translate")
    config = _tiny_config(folder)
    return config, _run(config, folder / "out")


def _count_generate(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = xlens.generation.generate

    @functools.wraps(real)
    def counted(*args: Any, **kwargs: Any) -> list[str]:
        calls.append(len(args[1]))
        return real(*args, **kwargs)

    patch_everywhere(monkeypatch, xlens.generation, "generate", counted)
    return calls


def test_the_conditions_of_each_direction(tiny_run: tuple[ExperimentConfig, RunResults]) -> None:
    _, results = tiny_run
    table: Any = results.task_tables["translation"]  # pandas' stubs type column access too loosely for these checks
    by_direction = table.groupby("direction")["condition"].apply(list).to_dict()
    assert by_direction == {
        "eng_Latn-spa_Latn": ["baseline", "force spa_Latn k=4", "force(control=random) spa_Latn k=4"],
        "spa_Latn-eng_Latn": ["baseline", "force eng_Latn k=4", "force(control=random) eng_Latn k=4"],
    }
    assert list(table.columns[:4]) == ["condition", "intervention", "expert_lang", "k"]
    assert set(table["control"].dropna()) == {"none", "random"} and (table["sentences"] == 5).all()
    written: Any = results.task_tables["translation_outputs"]
    assert written.groupby(["condition", "direction"]).size().tolist() == [5] * 6


def test_the_scores_are_those_of_the_outputs(
    tiny_run: tuple[ExperimentConfig, RunResults], tiny_gpt2: LensModel
) -> None:
    config, results = tiny_run
    corpus = load_corpus(str(config.translate.corpus))
    plan = few_shot_prompts(corpus, "en", "es", 2, 5, config.translate.template, config.seed)
    recorded = results.provenance["tasks"]["translation"]
    assert recorded["directions"][0]["first_prompt"] == plan.prompts[0]
    assert recorded["directions"][0]["test_ids"] == plan.test_ids and recorded["corpus"]["rows"] == 10
    assert recorded["sacrebleu_signatures"]["chrf"].startswith("nrefs:1")
    direct = generate(tiny_gpt2, plan.prompts, 6, batch_size=4)  # no stop string: the cut is done here
    baseline = _outputs(results, "eng_Latn-spa_Latn")
    assert baseline == [t.partition("\n")[0].strip() for t in direct]
    written: Any = results.task_tables["translation_outputs"]
    assert written[written["condition"] == "baseline"]["row"].tolist()[:5] == plan.test_ids

    assert results.folder is not None
    scores = ExpertScores.load(next(results.folder.glob("cache/scores-*")))
    forced = generate(tiny_gpt2, plan.prompts, 6, interventions=[Force().build(scores.select("es", 4))], batch_size=4)
    label = "force spa_Latn k=4"
    outputs = _outputs(results, "eng_Latn-spa_Latn", label)
    assert outputs == [t.partition("\n")[0].strip() for t in forced]

    rows = results.task_tables["translation"].set_index(["direction", "condition"])
    row = rows.loc[("eng_Latn-spa_Latn", label)]
    assert row["chrf"] == pytest.approx(sacrebleu.corpus_chrf(outputs, [plan.references], word_order=2).score)
    assert row["bleu"] == pytest.approx(sacrebleu.corpus_bleu(outputs, [plan.references]).score)
    assert row["target_share"] == target_share(outputs, "es")
    assert row["empty_share"] == sum(o == "" for o in outputs) / 5
    # The paired bootstrap's items: sacrebleu's sentence-level chrF++ of each output, against the baseline's.
    metric = sacrebleu.metrics.CHRF(word_order=2)
    mine = [metric.sentence_score(o, [r]).score for o, r in zip(outputs, plan.references, strict=True)]
    base = [metric.sentence_score(o, [r]).score for o, r in zip(baseline, plan.references, strict=True)]
    diffs: Any = results.differences
    found = diffs[(diffs["task"] == "translation") & (diffs["metric"] == "sentence_chrf")]
    found = found[(found["condition"] == label) & (found["against"] == "baseline")].iloc[0]
    assert found["subject_mean"] == pytest.approx(np.mean(mine), abs=1e-4)
    assert found["diff"] == pytest.approx(np.mean(mine) - np.mean(base), abs=1e-4)
    assert found["low"] <= found["diff"] <= found["high"]


def test_a_rerun_generates_nothing_and_reloads(
    tiny_run: tuple[ExperimentConfig, RunResults], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, results = tiny_run
    assert results.folder is not None
    calls = _count_generate(monkeypatch)
    again = _run(config, results.folder)
    assert calls == []
    for name in ("translation", "translation_outputs"):
        pd.testing.assert_frame_equal(again.task_tables[name], results.task_tables[name])
        pd.testing.assert_frame_equal(RunResults.load(results.folder).task_tables[name], results.task_tables[name])
        pd.testing.assert_frame_equal(pd.read_parquet(results.folder / f"{name}.parquet"), results.task_tables[name])
    # A measurement lost (a run killed before writing it) is the only one made again: one condition, one direction.
    victim = sorted(results.folder.glob("cache/measured-*"))[0]
    for file in victim.iterdir():
        file.unlink()
    victim.rmdir()
    _run(config, results.folder)
    assert calls in ([5], [5, 5])


def test_another_config_is_refused_without_force(
    tiny_run: tuple[ExperimentConfig, RunResults], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, results = tiny_run
    assert results.folder is not None
    other = config.override({"evaluate.translation.max_new_tokens": 3})
    with pytest.raises(RunFolderError, match=r"evaluate\.translation\.max_new_tokens: 6 -> 3"):
        _run(other, results.folder)
    # The evaluation section does not change a translation, so it does not own the folder.
    calls = _count_generate(monkeypatch)
    _run(config.override({"evaluate.sentences": 5}), results.folder)
    assert calls == []


@pytest.mark.parametrize(
    ("changes", "error", "message", "loads"),
    [
        ({"sentences": 9}, CorpusError, r"has 10 rows, fewer than .* 2 \+ 9 = 11", False),
        ({"directions": ["en-de"]}, CorpusError, r"no text for 'deu_Latn'", False),
        ({"corpus": None}, ConfigError, "evaluate.translation.corpus is not set", False),
        ({"max_new_tokens": 250}, ConfigError, "context of 256 tokens", True),  # told by the loaded model
    ],
)
def test_bad_inputs_fail_before_the_model_is_loaded_or_anything_generated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changes: dict, error: type, message: str, loads: bool
) -> None:
    config = _tiny_config(tmp_path)
    bad = dataclasses.replace(
        config,
        evaluate=dataclasses.replace(config.evaluate, translation=dataclasses.replace(config.translate, **changes)),
    )
    calls = _count_generate(monkeypatch)
    if not loads:
        patch_everywhere(monkeypatch, xlens.runs.executors, "load", _no_model)
    with pytest.raises(error, match=message):
        _run(bad, tmp_path / "out")
    assert calls == [] and not list((tmp_path / "out").glob("cache/responses-*"))


def _no_model(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the model was loaded")


def test_missing_sacrebleu_is_one_error_before_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    patch_everywhere(monkeypatch, xlens.runs.executors, "load", _no_model)
    monkeypatch.setitem(sys.modules, "sacrebleu", None)  # `import sacrebleu` raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install -e '\.\[translate\]'"):
        _run(_tiny_config(tmp_path), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_translate_command(tmp_path: Path) -> None:
    path = _tiny_config(tmp_path).save(tmp_path / "translate.toml")
    out = tmp_path / "out"
    args = ["translate", str(path), "--out", str(out), "--directions", "es-en", "--sentences", "3", "--shots", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "translation · sentence_chrf" in result.output and "force eng_Latn k=4 spa_Latn-eng_Latn" in result.output
    assert "vs random" in result.output and "translation_outputs.parquet" in result.output
    assert "retrieval.parquet" not in result.output  # only the tables with rows
    loaded = RunResults.load(out)
    table: Any = loaded.task_tables["translation"]
    assert loaded.config.translate.shots == 1 and set(table["direction"]) == {"spa_Latn-eng_Latn"}
    assert (table["sentences"] == 3).all()
    bad = runner.invoke(app, ["translate", str(path), "--out", str(out), "--directions", "es-es"])
    assert bad.exit_code == 2 and "same language" in bad.output
    taken = runner.invoke(app, [*args[:-2], "--shots", "2"])
    assert taken.exit_code == 2 and "evaluate.translation.shots: 1 -> 2" in taken.output


# --- the embedded model on FLORES-200 -------------------------------------------------------------------------------


@pytest.mark.integration
def test_translating_flores_with_the_embedded_model(
    embedded: LensModel, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = ExperimentConfig.from_dict(
        {
            "model": "gemma-3-270m",
            "languages": ["en", "es"],
            "find": {"sentences": 4},
            "intervene": {"method": "force", "k": [10], "languages": ["en"]},  # none on Spanish: baseline only
            "evaluate": {
                "sentences": 4,
                "translation": {
                    "corpus": f"flores:{shared_data / 'flores200' / 'devtest'}",
                    "directions": ["en-es"],
                    "shots": 3,
                    "sentences": 4,
                    "max_new_tokens": 16,
                },
            },
            "stats": {"resamples": 100},
        }
    )
    calls = _count_generate(monkeypatch)
    results = _run(config, tmp_path / "out", model=embedded)
    table: Any = results.task_tables["translation"]
    assert calls == [4] and table["condition"].tolist() == ["baseline"]
    outputs = _outputs(results, "eng_Latn-spa_Latn")
    assert len(outputs) == 4 and all(isinstance(o, str) and o and "\n" not in o for o in outputs)
    row = table.iloc[0]
    for name in ("chrf", "bleu"):
        assert 0 <= row[name] <= 100
    assert row["chrf"] > 0  # something of the reference was produced
    assert 0 <= row["target_share"] <= 1
    assert results.provenance["tasks"]["translation"]["corpus"]["rows"] == 1012
