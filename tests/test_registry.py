"""A method added as one file plus its registration (tests/toy_method.py) runs through Python, `run` and `steer`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from toy_method import Negate
from typer.testing import CliRunner

from xlens.cli import app
from xlens.config import ExperimentConfig
from xlens.data import load_builtin
from xlens.embeddings import sentence_embeddings
from xlens.errors import ConfigError
from xlens.experts.sets import ExpertScores, find_experts
from xlens.interventions import ScaleUnits, methods, register, spec_class
from xlens.models import LensModel
from xlens.runs.study import run_experiment

runner = CliRunner()


@pytest.fixture(scope="module")
def scores(tiny_gpt2: LensModel) -> ExpertScores:
    return find_experts(tiny_gpt2, load_builtin(["en", "es"]).head(12), progress=False)


def test_the_toy_method_is_registered_and_built_in_python(tiny_gpt2: LensModel, scores: ExpertScores) -> None:
    assert "negate" in methods() and spec_class("negate") is Negate
    built = Negate(scale=-2.0).build(scores, "es", 5, model=tiny_gpt2)
    assert isinstance(built, ScaleUnits) and built.n_units == 5
    assert torch.cat(list(built.factors.values())).tolist() == [-2.0] * 5
    chosen = {scores.units.unit(h, int(p)) for h, pos in built.units.items() for p in pos}
    assert chosen == set(scores.select("es", 5).units.tolist())
    with pytest.raises(ConfigError, match=r"intervene.scale = 'big' \(str\): must be a number"):
        spec_class("negate").from_dict({"scale": "big"})
    with pytest.raises(ValueError, match=r"method .negate. is already registered by toy_method\.Negate"):

        @register
        class Other(Negate):  # another class cannot take the name
            name = "negate"

    with pytest.raises(ValueError, match="must be an identifier other than"):
        register(type("Unnamed", (Negate,), {}))  # a registered class names itself


def test_the_toy_method_runs_through_run_experiment(tiny_gpt2: LensModel, tmp_path: Path) -> None:
    config = ExperimentConfig.from_dict(
        {
            "model": "tiny-gpt2",
            "languages": ["en", "es"],
            "find": {"sentences": 10},
            "intervene": {"method": "negate", "scale": -3.0, "k": [6]},
            "controls": {"random": False},
            "evaluate": {"sentences": 8},
        }
    )
    results = run_experiment(config, tmp_path, progress=False)
    labels = ["negate(scale=-3.0) eng_Latn k=6", "negate(scale=-3.0) spa_Latn k=6"]
    assert [c.label for c in results.interventions] == labels
    assert dict(results.interventions[0].params) == {**Negate().params(), "scale": -3.0}
    # The run's embeddings are those of the spec built by hand on the run's own scores and sentences.
    assert results.scores is not None and results.eval_corpus is not None
    built = Negate(scale=-3.0).build(results.scores, "es", 6)
    evaluation = results.eval_corpus
    texts = [s for lang in results.languages for s in evaluation[lang]]
    expected = sentence_embeddings(
        tiny_gpt2, texts, interventions=[built], max_length=128, batch_size=16, progress=False
    )
    torch.testing.assert_close(results.embeddings("negate(scale=-3.0) spa_Latn k=6"), expected)
    cli = runner.invoke(
        app,
        ["--plugin", "toy_method", "run", "--model", "tiny-gpt2", "--langs", "en,es", "--method", "negate", "--k", "4",
         "--find-sentences", "10", "--eval-sentences", "8", "--out", str(tmp_path / "cli"), "--no-figures"],
    )  # fmt: skip
    assert cli.exit_code == 0, cli.output
    assert "negate spa_Latn k=4" in cli.output  # default settings: the label is the method's name


def test_the_toy_method_runs_through_steer(scores: ExpertScores, tmp_path: Path) -> None:
    scores.save(tmp_path / "experts" / "scores")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("My favourite food is\nTomorrow we will\n")
    out = tmp_path / "steer.json"
    result = runner.invoke(
        app,
        ["--plugin", "toy_method", "steer", "--model", "tiny-gpt2", "--experts", str(tmp_path / "experts"),
         "--lang", "es", "--method", "negate", "--set", "scale=-0.5", "--k", "0,3", "--prompts", str(prompts),
         "--max-new-tokens", "2", "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["config"]["spec"] == {**Negate(scale=-0.5).to_dict(), "method": "negate", "scale": -0.5}
    assert report["runs"][0]["intervention"] == Negate(scale=-0.5).build(scores, "es", 3).describe()
    bad = runner.invoke(app, ["--plugin", "no_such_module_here", "info"])
    assert bad.exit_code == 2 and "--plugin no_such_module_here" in bad.output


PLUGINS = {
    "plugin_missing_dependency": "import no_such_dependency_here\n",
    "plugin_that_raises": "raise RuntimeError('the plugin is broken')\n",
    "plugin_taking_force": (
        "from dataclasses import dataclass\nfrom typing import ClassVar\nimport xlens\n"
        "@xlens.register\n@dataclass(frozen=True)\nclass Mine(xlens.ExpertMethod):\n"
        "    name: ClassVar[str] = 'force'\n    def on(self, experts): ...\n"
    ),
    "plugin_taking_a_task": (
        "import xlens\nfrom xlens.evaluation.retrieval import RetrievalTask\n"
        "@xlens.register_task\nclass Mine(RetrievalTask):\n    name = 'retrieval'\n"
    ),
    "plugin_with_a_k_field": (
        "from dataclasses import dataclass\nfrom typing import ClassVar\nimport xlens\n"
        "@xlens.register\n@dataclass(frozen=True)\nclass Mine(xlens.ExpertMethod):\n"
        "    name: ClassVar[str] = 'mine_with_k'\n    k: int = 3\n    def on(self, experts): ...\n"
    ),
}


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("plugin_not_on_the_path", r"no module 'plugin_not_on_the_path' on the import path.*PYTHONPATH=\."),
        ("plugin_missing_dependency", r"imports 'no_such_dependency_here', which is not installed"),
        ("plugin_that_raises", r"raised RuntimeError when imported: the plugin is broken"),
        ("plugin_taking_force", r"intervention method 'force' is already registered by xlens\.interventions"),
        ("plugin_taking_a_task", r"task 'retrieval' is"),
        ("plugin_with_a_k_field", r"declares the setting\(s\) \['k'\], which \[intervene\] reserves"),
    ],
)
def test_a_plugin_that_fails_is_one_error_line_saying_where(
    module: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, code in PLUGINS.items():
        (tmp_path / f"{name}.py").write_text(code, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    done = runner.invoke(app, ["--plugin", module, "info"])
    assert done.exit_code == 2, done.output
    assert re.search(f"error: --plugin {module}.*{message}", done.output.replace("\n", " ")), done.output
    assert "Traceback" not in done.output
