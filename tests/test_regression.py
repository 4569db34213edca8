"""The redesign of the middle changed no number: tiny-model runs reproduce the tables computed before it.

``tests/reference/<case>.json`` were written by the code before the redesign (see its README), with the config in
that code's flat form; each case is translated to today's nested config and run again.

Counts, labels and keys must be equal; float columns agree to ``RTOL``. The references are bit-identical on the
machine that wrote them, but float32 kernels pick their vector width from the CPU's instruction set, which changes
the summation order and so the last bit of a mean: one CI machine saw 0.2701715 for 0.27017151. A redesign error
(another unit, value or position) moves these numbers by far more, which
``test_the_tolerance_cannot_hide_an_intervention`` checks on the references themselves.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from xlens.config import _MOVED, ExperimentConfig
from xlens.errors import ExpertInputError
from xlens.interventions.registry import methods as registered_methods
from xlens.interventions.registry import spec_class
from xlens.runs.results import RunResults
from xlens.runs.study import run_experiment

REFERENCE = Path(__file__).parent / "reference"
CASES = sorted(p.stem for p in REFERENCE.glob("*.json"))
KEYS = ["intervention", "expert_lang", "k", "layer"]
RTOL, ATOL = 1e-5, 1e-7


def nested_config(flat: dict) -> ExperimentConfig:
    """The old flat config as today's nested one, keeping the settings the method uses (the old config carried
    ``value`` and ``alpha`` for every method; only force used the one, damp and diffmean the other)."""
    data: dict = {}
    for key, value in flat.items():
        if value is None:
            continue
        if key in ("model", "languages", "seed"):
            data[key] = value
        else:
            section, name = _MOVED[key].split(".")
            data.setdefault(section, {})[name] = value
    intervene = data["intervene"]
    spec = spec_class(intervene["method"])
    keep = {f.name for f in dataclasses.fields(spec)} | {"method"} | ({"k"} if spec.takes_k else set())
    data["intervene"] = {k: v for k, v in intervene.items() if k in keep}
    data["controls"] = {"random": False}  # the references were made without controls (then the default)
    return ExperimentConfig.from_dict(data)


def test_reference_cases_cover_every_builtin_method() -> None:
    methods = {json.loads((REFERENCE / f"{c}.json").read_text())["config"]["method"] for c in CASES}
    builtin = {name for name in registered_methods() if spec_class(name).__module__.startswith("xlens.")}
    assert methods == builtin and len(builtin) >= 6


def _compare(results: RunResults, reference: dict, keep: Callable[[pd.DataFrame], pd.Series] | None = None) -> None:
    for table, pair in (("retrieval", ["src", "tgt"]), ("alignment", ["lang_a", "lang_b"])):
        expected = pd.DataFrame(reference[table])
        got = getattr(results, table)[expected.columns]
        if keep is not None:
            expected, got = expected[keep(expected)], got[keep(got)]
        order = [*KEYS, *pair]
        expected = expected.sort_values(order, na_position="first").reset_index(drop=True)
        got = got.sort_values(order, na_position="first").reset_index(drop=True)
        assert len(got) == len(expected) > 0
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=RTOL, atol=ATOL, check_dtype=False)


@pytest.mark.parametrize("case", CASES)
def test_the_tolerance_cannot_hide_an_intervention(case: str) -> None:
    """Every intervened condition moves cosine_parallel from the baseline's by more than 100 times the tolerance
    somewhere: a run that dropped or misplaced an intervention could not pass as equal."""
    reference = json.loads((REFERENCE / f"{case}.json").read_text())
    table = pd.DataFrame(reference["alignment"])
    pair = ["layer", "lang_a", "lang_b"]
    baseline = table[table["intervention"] == "none"].set_index(pair)
    intervened = table[table["intervention"] != "none"]
    assert len(baseline) > 0 and len(intervened) > 0
    for _, rows in intervened.groupby(["intervention", "expert_lang", "k"]):
        rows = rows.set_index(pair)
        gap = (rows["cosine_parallel"] - baseline.loc[rows.index, "cosine_parallel"]).abs().max()
        assert gap > 100 * (RTOL * baseline["cosine_parallel"].abs().max() + ATOL)


@pytest.mark.parametrize("case", [c for c in CASES if c != "lape"])
def test_tables_are_those_from_before_the_redesign(case: str, tmp_path: Path) -> None:
    reference = json.loads((REFERENCE / f"{case}.json").read_text())
    _compare(run_experiment(nested_config(reference["config"]), tmp_path, progress=False), reference)


def test_lape_reference_and_its_silent_truncation(tmp_path: Path) -> None:
    """The old runner zeroed "the k lowest-entropy LAPE units" by slicing, so at k=8 English, which LAPE gave only
    2 units, was silently run with 2 and labelled k=8. That config is now refused before any embedding; at k=2
    English gets the same two units zeroed, and its rows (and the baseline's) equal the reference's k=8 rows."""
    reference = json.loads((REFERENCE / "lape.json").read_text())
    config = nested_config(reference["config"])
    with pytest.raises(ExpertInputError, match=r"eng_Latn k=8: k=8: LAPE gave eng_Latn only 2 units"):
        run_experiment(config, tmp_path / "k8", progress=False)
    results = run_experiment(config.override({"intervene.k": [2]}), tmp_path / "k2", progress=False)
    results.retrieval.loc[results.retrieval["k"] == 2, "k"] = 8
    results.alignment.loc[results.alignment["k"] == 2, "k"] = 8
    _compare(results, reference, keep=lambda t: t["expert_lang"].isna() | (t["expert_lang"] == "eng_Latn"))
