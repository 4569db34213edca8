"""The benchmarks run end to end on a tiny model; their measured values are checked against direct computations.
Timings themselves are never asserted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from xlens.bench.retrieval import bench_retrieval
from xlens.cli import app
from xlens.data.loaders import load_builtin, load_flores
from xlens.embeddings import sentence_embeddings
from xlens.models import LensModel
from xlens.runs.study import ExperimentConfig

runner = CliRunner()
LANGS = ["eng_Latn", "spa_Latn", "deu_Latn"]
N = 12


@pytest.fixture
def flores_dir(tmp_path: Path) -> Path:
    """A FLORES-layout folder of builtin sentences; row 5 repeats row 4 in Spanish, so that row is dropped."""
    corpus = load_builtin(LANGS)
    folder = tmp_path / "flores200" / "devtest"
    folder.mkdir(parents=True)
    for lang in LANGS:
        rows = list(corpus[lang][:N])
        if lang == "spa_Latn":
            rows[5] = rows[4]
        (folder / f"{lang}.devtest").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def _brute_force_mean_top1(E: np.ndarray) -> float:
    """Mean over ordered language pairs of top-1 retrieval, one query at a time; ties count against."""
    unit = E / np.linalg.norm(E, axis=2, keepdims=True)
    hits = []
    for src in range(len(E)):
        for tgt in range(len(E)):
            if src == tgt:
                continue
            correct = 0
            for i in range(E.shape[1]):
                scores = [float(unit[src, i] @ unit[tgt, j]) for j in range(E.shape[1])]
                correct += all(scores[j] < scores[i] for j in range(E.shape[1]) if j != i)
            hits.append(correct / E.shape[1])
    return float(np.mean(hits))


def test_bench_retrieval_matrix_and_end_to_end(tiny_gpt2: LensModel, flores_dir: Path, tmp_path: Path) -> None:
    config = ExperimentConfig.from_dict(
        {
            "model": "tiny-gpt2",
            "languages": ["en", "es"],
            "find": {"sentences": 10},
            "intervene": {"k": [5]},
            "evaluate": {"sentences": 10},
            "runtime": {"device": "cpu"},
        }
    )
    run_out = tmp_path / "run"
    report = bench_retrieval(flores=flores_dir, run_out=run_out, model="tiny-gpt2", device="cpu", run_config=config)
    json.dumps(report)  # JSON-ready

    matrix = report["matrix"]
    assert matrix["languages"] == 3
    assert matrix["sentences_per_language"] == N - 1
    assert matrix["sentences_dropped_as_duplicates"] == 1
    d_model = tiny_gpt2.d_model
    assert matrix["d_model"] == d_model
    assert matrix["matmul_tflop"] == pytest.approx(3 * 2 * (N - 1) ** 2 * d_model / 1e12)

    corpus = load_flores(flores_dir)
    texts = [s for lang in corpus.languages for s in corpus[lang]]
    emb = sentence_embeddings(tiny_gpt2, texts, layers=[0], batch_size=256, progress=False)[:, 0]
    E = emb.view(3, N - 1, d_model).double().numpy()
    assert matrix["mean_top1_off_diagonal"] == pytest.approx(_brute_force_mean_top1(E), abs=1e-12)

    end = report["end_to_end"]
    assert end["resumed_from_cache"] is False
    assert end["config"]["intervene"]["k"] == [5] and end["config"]["model"] == "tiny-gpt2"
    assert end["wall_s"] >= end["experiment_s"] >= end["timings"]["embeddings_s"]
    assert (run_out / "results.json").is_file() and (run_out / "report.html").is_file()
    assert json.loads((run_out / "results.json").read_text())["config"] == end["config"]

    again = bench_retrieval(flores=flores_dir, run_out=run_out, model="tiny-gpt2", device="cpu", run_config=config)
    assert again["end_to_end"]["resumed_from_cache"] is True  # flagged: a warm cache makes the timing meaningless
    assert again["matrix"]["mean_top1_off_diagonal"] == matrix["mean_top1_off_diagonal"]


def test_bench_gpu_counts_the_same_tokens_in_every_pass(tmp_path: Path) -> None:
    """`bench gpu` on CPU with the tiny shape: the report's token counts and ratios follow from its own batches and
    timings, and the parameter count from the model."""
    from typer.testing import CliRunner

    from xlens.bench.throughput import throughput_model_folder
    from xlens.cli import app
    from xlens.models import load_model

    out = tmp_path / "gpu.json"
    args = ["bench", "gpu", "--json", str(out), "--shapes", "gemma3-tiny-shape", "--sentences", "20", "--units", "50"]
    result = CliRunner().invoke(app, [*args, "--max-tokens", "600", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    tiny = report["models"]["gemma3-tiny-shape"]
    lm = load_model(str(throughput_model_folder("gemma3-tiny-shape")), device="cpu")
    texts = [s for lang in load_builtin().languages for s in load_builtin()[lang]][:20]
    batches = list(lm.batches(texts, max_tokens=600, max_length=128))
    assert tiny["batches"] == len(batches) > 1
    assert tiny["tokens"] == sum(len(lm.tokenize([t], max_length=128).tokens[0]) for t in texts)
    assert tiny["padded_tokens"] == sum(b.mask.numel() for b in batches)
    assert all(b.mask.numel() <= 600 or len(b.row_ids) == 1 for b in batches)
    assert tiny["parameters"] == tiny["resident_parameters"] == sum(p.numel() for p in lm.bridge.parameters())
    base = tiny["timings"]["a_plain_hf_forward"]
    for name, ratio in tiny["ratios_vs_plain"].items():
        timing = tiny["timings"][name]
        assert timing["tokens_per_s"] == pytest.approx(tiny["tokens"] / timing["seconds"])
        assert ratio == pytest.approx(timing["tokens_per_s"] / base["tokens_per_s"])
    assert set(tiny["ratios_vs_plain"]) == {
        "a_plain_hf_forward_with_unembedding",
        "b_embeddings_all_layers",
        "c_responses_all_mlp_units",
        "d_embeddings_under_force",
    }
    bad = CliRunner().invoke(app, ["bench", "gpu", "--json", str(tmp_path / "x.json"), "--shapes", "gemma9"])
    assert bad.exit_code == 2 and "choose from gemma3-tiny-shape" in bad.output


def test_bench_generate_counts_tokens_and_compares_both_loops(tmp_path: Path) -> None:
    """`bench generate` on a tiny model: both regimes and both conditions, rates and speedups from their own
    timings, the cached tokens equal to the full loop's, prompt lengths from the tokenizer."""
    from typer.testing import CliRunner

    from xlens.cli import app
    from xlens.config import TranslateConfig
    from xlens.evaluation.translation import few_shot_prompts
    from xlens.generation import BUILTIN_PROMPTS
    from xlens.models import load_model

    out = tmp_path / "generate.json"
    args = ["bench", "generate", "--json", str(out), "--model", "tiny-gpt2", "--prompts", "3", "--new-tokens", "5"]
    result = CliRunner().invoke(app, [*args, "--batch-size", "2", "--shots", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report["regimes"]) == {"short", "few_shot"}
    lm = load_model("tiny-gpt2", device="cpu")
    few_shot = few_shot_prompts(load_builtin(["en", "es"]), "en", "es", 1, 3, TranslateConfig().template, 0).prompts
    for regime, texts in (("short", list(BUILTIN_PROMPTS[:3])), ("few_shot", few_shot)):
        runs = report["regimes"][regime]
        lengths = [len(lm.tokenize([t]).tokens[0]) for t in texts]
        assert runs["prompt_tokens_mean"] == pytest.approx(np.mean(lengths))
        assert runs["prompt_tokens_max"] == max(lengths)
        for label in ("none", "force_200_units"):
            run = runs[label]
            assert run["same_tokens"] is True
            for loop in ("cached", "full_forward"):
                assert run[loop]["new_tokens_per_s"] == pytest.approx(3 * 5 / run[loop]["seconds"])
            assert run["speedup"] == pytest.approx(
                run["cached"]["new_tokens_per_s"] / run["full_forward"]["new_tokens_per_s"]
            )
    assert report["regimes"]["few_shot"]["prompt_tokens_mean"] > 3 * report["regimes"]["short"]["prompt_tokens_mean"]
    assert report["unembedding_ms"] > 0 and report["shots"] == 1

    # Two shots make the longest prompt 318 byte tokens, beyond the tiny model's 256 positions.
    long = CliRunner().invoke(app, [*args, "--shots", "2", "--json", str(tmp_path / "long.json")])
    assert long.exit_code == 2
    assert (
        "the longest few-shot prompt has 318 tokens, + --new-tokens 5 exceeds tiny-gpt2's context of 256" in long.output
    )

    bad = CliRunner().invoke(app, ["bench", "generate", "--json", str(tmp_path / "x.json"), "--prompts", "299"])
    assert bad.exit_code == 2 and "--prompts 299 + --shots 3 exceed the 300 rows" in bad.output
    bad = CliRunner().invoke(app, ["bench", "generate", "--json", str(tmp_path / "x.json"), "--shots", "-1"])
    assert bad.exit_code == 2 and "--shots must be >= 0, got -1" in bad.output


def test_bench_study_shares_forward_passes_between_tasks(tmp_path: Path) -> None:
    config = ExperimentConfig.from_dict(
        {
            "model": "tiny-gpt2",
            "languages": ["en", "es", "de"],
            "find": {"sentences": 12},
            "intervene": {"method": "force", "k": [4]},
            "controls": {"random": False},
            "evaluate": {"sentences": 24, "layers": [2], "tasks": ["retrieval", "mining"],
                         "mining": {"gold": 6, "distractors": 2}},
            "stats": {"resamples": 50},
        }
    )  # fmt: skip
    path = config.save(tmp_path / "study.toml")
    out = tmp_path / "study.json"
    done = runner.invoke(app, ["bench", "study", str(path), "--json", str(out)])
    assert done.exit_code == 0, done.output
    report = json.loads(out.read_text())
    together, apart = report["together"], report["apart"]
    # The baseline and one condition per language: one forward pass over the evaluation split each, read by both
    # tasks together; apart, mining and retrieval each make their own.
    assert together["embedding_artifacts"] == together["conditions"] == 4
    assert [run["embedding_artifacts"] for run in apart] == [4, 4]
    assert report["apart_total"]["embedding_artifacts"] == 8
