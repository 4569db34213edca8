"""The nested config: TOML/YAML round trip, and every bad setting refused by name before any model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import patch_everywhere

from xlens.config import ExperimentConfig
from xlens.errors import ConfigError, UnknownLanguageError
from xlens.interventions import Aura, DiffMean, Force, Lape
from xlens.models import model_shape
from xlens.runs.study import run_experiment

REPO = Path(__file__).resolve().parents[1]
RICH = {
    "model": "tiny-gpt2",
    "languages": ["en", "es", "ja"],
    "seed": 3,
    "find": {"corpus": "builtin", "sentences": 20, "units": "mlp", "pooling": "max", "negatives": ["en"]},
    "intervene": {"method": "diffmean", "alpha": 2.5, "block": 1, "source": ["en"], "where": "last"},
    "evaluate": {
        "corpus": "builtin",
        "sentences": 12,
        "pooling": "weighted",
        "layers": [0, 2],
        "retrieval": "csls",
        "center": True,
        "tasks": ["retrieval", "mining"],
        "mining": {"pivot": "es", "gold": 4, "distractors": 1, "k": 2, "retrieval": "intersect", "parts": ["a", "b"]},
    },
    "runtime": {
        "device": "cpu",
        "dtype": "bfloat16",
        "batch_size": 4,
        "max_tokens": 512,
        "max_length": 64,
        "backend": "hf",
    },
}


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Loading a model (or collecting anything) fails the test: the errors must come first."""
    from xlens import activations
    from xlens.models import loading

    calls: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        calls.append("load")
        raise AssertionError("a model was loaded before the config was checked")

    patch_everywhere(monkeypatch, loading, "load_model", refuse)
    patch_everywhere(monkeypatch, activations, "collect_responses", refuse)
    return calls


def test_defaults_and_the_default_k() -> None:
    config = ExperimentConfig()
    assert config.model == "gemma-3-270m" and config.languages == ["en", "es", "de", "ja"]
    assert config.find.sentences == config.evaluate.sentences == 50
    assert config.intervene.spec == Force() and config.intervene.k_values == [200]
    assert ExperimentConfig.from_dict({"intervene": {"method": "diffmean"}}).intervene.k_values == []


@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_round_trip_through_toml_and_yaml(suffix: str, tmp_path: Path) -> None:
    config = ExperimentConfig.from_dict(RICH)
    assert isinstance(config.intervene.spec, DiffMean) and config.intervene.spec.source == ["en"]
    path = config.save(tmp_path / f"run{suffix}")
    back = ExperimentConfig.load(path)
    assert back == config and back.to_dict() == config.to_dict()
    assert {section: back.to_dict()[section] for section in RICH} == RICH


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_round_trip(path: Path, tmp_path: Path) -> None:
    config = ExperimentConfig.load(path)
    assert ExperimentConfig.load(config.save(tmp_path / "again.toml")) == config


def test_corpus_paths_are_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "experiments"
    folder.mkdir()
    (folder / "c.toml").write_text('[find]\ncorpus = "dir:corpus"\n[evaluate]\ncorpus = "flores:../data:dev"\n')
    (folder / "corpus").mkdir()
    monkeypatch.chdir(REPO)
    config = ExperimentConfig.load(folder / "c.toml")
    assert config.find.corpus == f"dir:{folder / 'corpus'}"
    assert config.evaluate.corpus == f"flores:{tmp_path / 'data'}:dev"
    assert ExperimentConfig.from_dict(
        {"find": {"corpus": "hf:openlanguagedata/flores_plus"}}, base=folder
    ).find.corpus == (
        "hf:openlanguagedata/flores_plus"  # a hub id stays as it is
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"find": {"sentences": "5"}}, r"find.sentences = '5' \(str\): must be an integer"),
        ({"intervene": {"k": 5}}, r"intervene.k = 5: must be a list of integers"),
        ({"intervene": {"k": [5, 2.5]}}, r"intervene.k = \[5, 2.5\]: must be a list of integers"),
        ({"evaluate": {"center": "yes"}}, r"evaluate.center = 'yes' \(str\): must be true or false"),
        ({"seed": 1.5}, r"seed = 1.5 \(float\): must be an integer"),
        ({"seed": True}, r"seed = True \(bool\): must be an integer"),
        ({"languages": "en"}, r"languages = 'en' \(str\): must be a list of strings"),
        ({"find": {"pooling": "mode"}}, r"find.pooling = 'mode': must be one of mean, max, last, median, weighted"),
        ({"find": {"units": "neurons"}}, r"find.units = 'neurons': must be mlp, linear, resid or re:REGEX"),
        ({"evaluate": {"pooling": "max"}}, r"evaluate.pooling = 'max': must be one of mean, last, weighted"),
        ({"evaluate": {"retrieval": "dot"}}, r"evaluate.retrieval = 'dot': must be one of cosine, csls, margin"),
        ({"evaluate": {"retrieval": "csls", "sentences": 5}}, r"evaluate.sentences = 5: csls retrieval .* at least 10"),
        ({"evaluate": {"layers": [1, 1]}}, r"evaluate.layers = \[1, 1\]: must be distinct embedding layers >= 0"),
        ({"runtime": {"dtype": "float8"}}, r"runtime.dtype = 'float8': must be one of"),
        ({"runtime": {"batch_size": 0}}, r"runtime.batch_size = 0: must be >= 1"),
        ({"runtime": {"max_tokens": 0}}, r"runtime.max_tokens = 0: must be >= 1"),
        ({"runtime": {"backend": "onnx"}}, r"runtime.backend = .onnx.: must be one of auto, bridge, hf"),
        ({"find": {"sentences": 1}}, r"find.sentences = 1: must be >= 2"),
        ({"intervene": {"method": "ablate"}}, r"unknown intervention method 'ablate'; registered: force, damp, det0"),
        ({"intervene": {"value": "median"}}, r"intervene.value = 'median': must be a number, 'zero' or a statistic"),
        ({"intervene": {"method": "aura", "value": "on_p50"}}, r"unknown key\(s\) \['value'\] in \[intervene\]"),
        ({"intervene": {"method": "diffmean", "k": [3]}}, r"intervene.k = \[3\]: no method of the grid takes k"),
        ({"find": {"negatives": ["ko"]}}, r"find.negatives = \['ko'\]: \['kor_Hang'\] are not among the languages"),
        ({"languages": ["en", "eng"]}, r"a language is listed twice"),
        ({"evaluate": {"corpus": "builtin", "sentence": 3}}, r"unknown key\(s\) \['sentence'\] in \[evaluate\]"),
        (
            {"find_corpus": "builtin", "k": [3]},
            r"nested in sections now: find_corpus -> \[find\] corpus, k -> \[intervene\] k",
        ),
        ({"find": "builtin"}, r"\[find\] must be a table of settings"),
        ({"intervene": {"k": [4, 4]}}, r"intervene.k = \[4, 4\]: every k must be >= 1 and listed once"),
        ({"runtime": {"device": "cdua"}}, r"runtime.device = 'cdua': must be cpu, cuda, cuda:N, mps or xpu"),
        ({"find": {"corpus": 3}}, r"find.corpus = 3 \(int\): must be a string"),
    ],
)
def test_bad_settings_name_the_field_the_value_and_what_is_allowed(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.from_dict(data)


def test_a_yaml_key_given_twice_is_refused_as_toml_refuses_it(tmp_path: Path) -> None:
    """YAML would keep the last value silently; TOML refuses a duplicate key: both are one error naming it."""
    (tmp_path / "twice.yaml").write_text("seed: 1\nfind:\n  sentences: 10\n  sentences: 20\n")
    with pytest.raises(
        ConfigError, match=r"twice.yaml is not valid YAML: .*key 'sentences' is given twice \(lines 3 and 4\)"
    ):
        ExperimentConfig.load(tmp_path / "twice.yaml")
    (tmp_path / "twice.toml").write_text("seed = 1\nseed = 2\n")
    with pytest.raises(ConfigError, match=r"twice.toml is not valid TOML"):
        ExperimentConfig.load(tmp_path / "twice.toml")
    (tmp_path / "once.yaml").write_text("seed: 1\nfind:\n  sentences: 10\nevaluate:\n  sentences: 10\n")
    assert ExperimentConfig.load(tmp_path / "once.yaml").find.sentences == 10  # the same key in two mappings


def test_a_broken_file_is_one_config_error(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("find: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML"):
        ExperimentConfig.load(tmp_path / "bad.yaml")
    (tmp_path / "bad.toml").write_text("find = \n")
    with pytest.raises(ConfigError, match=r"bad.toml is not valid TOML"):
        ExperimentConfig.load(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="config file not found"):
        ExperimentConfig.load(tmp_path / "none.toml")


def test_unknown_language_codes_are_named() -> None:
    with pytest.raises(UnknownLanguageError, match="klingon"):
        ExperimentConfig.from_dict({"languages": ["en", "klingon"]})


def test_settings_against_the_model_shape() -> None:
    tiny = model_shape("tiny-gpt2")
    base = ExperimentConfig.from_dict({"model": "tiny-gpt2"})
    with pytest.raises(
        ConfigError, match=r"intervene.k = \[200\]: k must be <= 128 \(the number of mlp units: 2 blocks x 64\)"
    ):
        base.check_model(tiny)
    base.override({"intervene.k": [128]}).check_model(tiny)
    with pytest.raises(
        ConfigError, match=r"k must be <= 13 \(LAPE keeps top_rate = 0.1 of the 128 mlp units, 13 in all\)"
    ):
        base.override({"intervene.method": "lape", "intervene.top_rate": 0.1, "intervene.k": [20]}).check_model(tiny)
    with pytest.raises(
        ConfigError, match=r"evaluate.layers = \[0, 3\]: \[3\] out of range; tiny-gpt2 has embedding layers 0..2"
    ):
        base.override({"intervene.k": [4], "evaluate.layers": [0, 3]}).check_model(tiny)
    with pytest.raises(ConfigError, match=r"intervene.block = 2: the model has blocks 0..1"):
        base.override({"intervene.method": "diffmean", "intervene.block": 2}).check_model(tiny)
    # max_length against the context the model's config states (tiny-gpt2: 256 positions; Bloom states none).
    assert (tiny.context, model_shape("tiny-bloom").context, model_shape().context) == (256, None, 32768)
    with pytest.raises(ConfigError, match=r"runtime.max_length = 300 exceeds tiny-gpt2's context of 256 tokens"):
        base.override({"intervene.k": [4], "runtime.max_length": 300}).check_model(tiny)
    base.override({"intervene.k": [4], "runtime.max_length": 256}).check_model(tiny)
    base.override({"model": "tiny-bloom", "intervene.k": [4], "runtime.max_length": 4096}).check_model(
        model_shape("tiny-bloom")
    )


def test_override_skips_none_and_keeps_only_the_new_methods_settings() -> None:
    config = ExperimentConfig.from_dict({"intervene": {"method": "force", "value": "on_mean", "k": [4]}})
    assert config.override({"model": None, "seed": 2}).seed == 2
    aura = config.override({"intervene.method": "aura"})
    assert aura.intervene.to_dict() == {"method": "aura", "k": [4]} and aura.intervene.spec == Aura()
    diff = config.override({"intervene.method": "diffmean", "intervene.alpha": 3})
    assert diff.intervene.spec == DiffMean(alpha=3.0) and diff.intervene.k is None
    lape = config.override({"intervene.method": "lape", "intervene.top_rate": 0.2})
    assert lape.intervene.spec == Lape(top_rate=0.2)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, r"intervene.k = \[200\]: k must be <= 128"),  # the bare `xlens run --model tiny-gpt2`
        ({"intervene.k": [4], "evaluate.layers": [5]}, r"evaluate.layers = \[5\]: \[5\] out of range"),
        ({"intervene.k": [4], "find.sentences": 400}, r"split\(\) sizes 400 \+ 50 = 450 exceed the 300 sentences"),
        ({"intervene.k": [4], "evaluate.corpus": "flores:/nowhere"}, r"FLORES folder not found: /nowhere"),
    ],
)
def test_every_mistake_surfaces_before_a_model_is_loaded(
    changes: dict, message: str, tmp_path: Path, no_model: list[str]
) -> None:
    config = ExperimentConfig.from_dict({"model": "tiny-gpt2", "languages": ["en", "es"]}).override(changes)
    with pytest.raises(ValueError, match=message):
        run_experiment(config, tmp_path, progress=False)
    assert no_model == []
    assert not (tmp_path / "run.json").exists()  # nor was the folder claimed


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[stats]\nconfidence = nan\n", "stats.confidence = nan"),
        ('[intervene]\nmethod = "damp"\nalpha = inf\n', "intervene.alpha = inf"),
        ('[intervene]\nmethod = "diffmean"\nalpha = [1.0, -inf]\n', "intervene.alpha = -inf"),
        (
            '[evaluate.transfer]\ncorpus = "sib200:x"\nc_values = [0.1, nan]\n',
            r"evaluate.transfer.c_values = \[0.1, nan\]",
        ),
        ('[intervene]\ntop_rate = nan\nmethod = "lape"\n', "intervene.top_rate = nan"),
    ],
)
def test_a_number_that_is_nan_or_infinite_is_refused_where_it_is_given(text: str, where: str, tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=f"{where}: must be a finite number"):
        ExperimentConfig.load(tmp_path / "c.toml")
    yaml_text = text.replace("nan", ".nan").replace("-inf", "-.inf").replace(" inf", " .inf")
    assert "nan" in text or "inf" in text
    (tmp_path / "c.yaml").write_text(_toml_to_yaml(yaml_text), encoding="utf-8")
    with pytest.raises(ConfigError, match="must be a finite number"):
        ExperimentConfig.load(tmp_path / "c.yaml")


def _toml_to_yaml(text: str) -> str:
    """The few TOML lines above as YAML: [a.b] tables as nested mappings, key = value as key: value."""
    out, indent = [], ""
    for line in text.splitlines():
        if line.startswith("["):
            parts = line.strip("[]").split(".")
            out += [f"{'  ' * i}{part}:" for i, part in enumerate(parts)]
            indent = "  " * len(parts)
        else:
            key, value = line.split(" = ", 1)
            out.append(f"{indent}{key}: {value}")
    return "\n".join(out) + "\n"


def test_too_few_evaluation_sentences_for_retrieval_are_refused_before_anything_loads() -> None:
    with pytest.raises(ConfigError, match=r"evaluate.sentences = 3: the retrieval task needs at least 4 sentences"):
        ExperimentConfig.from_dict({"evaluate": {"sentences": 3}})
    assert ExperimentConfig.from_dict({"evaluate": {"sentences": 4}}).evaluate.sentences == 4
    fidelity = ExperimentConfig.from_dict({"evaluate": {"sentences": 3, "tasks": ["fidelity"]}})
    assert fidelity.evaluate.sentences == 3  # generation needs no CKA
