"""xlens: find language experts in multilingual LMs, intervene on them, measure cross-lingual alignment.

The working set is importable from here::

    import xlens

    model = xlens.load_model()                                    # the embedded Gemma-3-270M, offline
    corpus = xlens.load_corpus("builtin", langs="en,es,de,fr,ja")
    scores = xlens.find_experts(model, corpus.sample(100))         # AP/AUROC of every MLP unit, every language
    spanish = xlens.Force(value="on_p50").build(scores, "es", k=200, model=model)
    with spanish.apply(model):
        ...

Names load on first use, so ``import xlens`` is quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from xlens.errors import (
    ArtifactError,
    ConfigError,
    CorpusError,
    ExpertInputError,
    FigureExportError,
    GenerationError,
    HubError,
    InputError,
    InputIndexError,
    InputTypeError,
    InspectorError,
    InterventionError,
    MetricInputError,
    MissingDependencyError,
    ModelLoadError,
    ModelMismatchError,
    NeuronCardError,
    ProjectionError,
    ResultsError,
    RunFolderError,
    SteeringError,
    UnknownLanguageError,
    UnsupportedModelError,
    XlensError,
)

__version__ = "0.2.0"

_LAZY = {
    "xlens.models": ("LensModel", "load_model", "model_shape"),
    "xlens.data": ("ParallelCorpus", "load_corpus", "resolve_language"),
    "xlens.activations": ("Responses", "UnitIndex", "collect_corpus_responses", "collect_responses"),
    "xlens.experts.sets": ("ExpertScores", "ExpertSet", "find_experts"),
    "xlens.interventions": (
        "Aura",
        "Damp",
        "Det0",
        "DiffMean",
        "ExpertMethod",
        "Force",
        "Intervention",
        "InterventionSpec",
        "Lape",
        "ScaleUnits",
        "ScoredMethod",
        "SetUnits",
        "SteeringVector",
        "apply",
        "methods",
        "register",
    ),
    "xlens.embeddings": ("sentence_embeddings",),
    "xlens.metrics": (
        "RetrievalScores",
        "alignment_scores",
        "centroid_distance",
        "cka_matrix",
        "cosine_parallel",
        "linear_cka",
        "retrieval",
        "retrieval_matrix",
    ),
    "xlens.config": ("ExperimentConfig",),
    "xlens.runs.study": ("run_experiment",),
    "xlens.conditions": ("Condition",),
    "xlens.runs.results": ("RunResults",),
    "xlens.generation": ("generate", "language_id", "perplexity"),
    "xlens.runs.steer": ("choose_k", "prepare_steer", "run_steer"),
    "xlens.data.sib200": ("load_sib200",),
    "xlens.viz": ("embedding_space", "improvement_bars", "neuron_card", "retrieval_curves", "similarity_heatmaps"),
    "xlens.inspector": ("NeuronInspector",),
    "xlens.report": ("write_report",),
    "xlens.evaluation": ("Task", "TaskContext", "TaskOutput", "ItemScores", "register_task", "tasks"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}
# Names of earlier versions, and what replaced them.
_RETIRED = {
    "run_transfer": 'run_experiment(config.override({"evaluate.tasks": ["transfer"]}), out)',
    "run_translate": 'run_experiment(config.override({"evaluate.tasks": ["translation"]}), out)',
    "TransferResults": 'RunResults (its task_tables["transfer"])',
    "TranslateResults": 'RunResults (its task_tables["translation"] and ["translation_outputs"])',
}

__all__ = [
    "ArtifactError",
    "Aura",
    "Condition",
    "ConfigError",
    "CorpusError",
    "Damp",
    "Det0",
    "DiffMean",
    "ExperimentConfig",
    "ExpertInputError",
    "ExpertMethod",
    "ExpertScores",
    "ExpertSet",
    "FigureExportError",
    "Force",
    "GenerationError",
    "HubError",
    "InputError",
    "InputIndexError",
    "InputTypeError",
    "InspectorError",
    "Intervention",
    "InterventionError",
    "InterventionSpec",
    "ItemScores",
    "Lape",
    "LensModel",
    "MetricInputError",
    "MissingDependencyError",
    "ModelLoadError",
    "ModelMismatchError",
    "NeuronCardError",
    "NeuronInspector",
    "ParallelCorpus",
    "ProjectionError",
    "Responses",
    "ResultsError",
    "RetrievalScores",
    "RunFolderError",
    "RunResults",
    "ScaleUnits",
    "ScoredMethod",
    "SetUnits",
    "SteeringError",
    "SteeringVector",
    "Task",
    "TaskContext",
    "TaskOutput",
    "UnitIndex",
    "UnknownLanguageError",
    "UnsupportedModelError",
    "XlensError",
    "__version__",
    "alignment_scores",
    "apply",
    "centroid_distance",
    "choose_k",
    "cka_matrix",
    "collect_corpus_responses",
    "collect_responses",
    "cosine_parallel",
    "embedding_space",
    "find_experts",
    "generate",
    "improvement_bars",
    "language_id",
    "linear_cka",
    "load_corpus",
    "load_model",
    "load_sib200",
    "methods",
    "model_shape",
    "neuron_card",
    "perplexity",
    "prepare_steer",
    "register",
    "register_task",
    "resolve_language",
    "retrieval",
    "retrieval_curves",
    "retrieval_matrix",
    "run_experiment",
    "run_steer",
    "sentence_embeddings",
    "similarity_heatmaps",
    "tasks",
    "write_report",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if name in _RETIRED:
        raise AttributeError(
            f"xlens.{name} is retired: transfer and translation are tasks of a study; use {_RETIRED[name]}"
        )
    if module is None:
        raise AttributeError(f"module 'xlens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from xlens.activations import Responses, UnitIndex, collect_corpus_responses, collect_responses
    from xlens.conditions import Condition
    from xlens.config import ExperimentConfig
    from xlens.data import ParallelCorpus, load_corpus, resolve_language
    from xlens.data.sib200 import load_sib200
    from xlens.embeddings import sentence_embeddings
    from xlens.evaluation import ItemScores, Task, TaskContext, TaskOutput, register_task, tasks
    from xlens.experts.sets import ExpertScores, ExpertSet, find_experts
    from xlens.generation import generate, language_id, perplexity
    from xlens.inspector import NeuronInspector
    from xlens.interventions import (
        Aura,
        Damp,
        Det0,
        DiffMean,
        ExpertMethod,
        Force,
        Intervention,
        InterventionSpec,
        Lape,
        ScaleUnits,
        ScoredMethod,
        SetUnits,
        SteeringVector,
        apply,
        methods,
        register,
    )
    from xlens.metrics import (
        RetrievalScores,
        alignment_scores,
        centroid_distance,
        cka_matrix,
        cosine_parallel,
        linear_cka,
        retrieval,
        retrieval_matrix,
    )
    from xlens.models import LensModel, load_model, model_shape
    from xlens.report import write_report
    from xlens.runs.results import RunResults
    from xlens.runs.steer import choose_k, prepare_steer, run_steer
    from xlens.runs.study import run_experiment
    from xlens.viz import embedding_space, improvement_bars, neuron_card, retrieval_curves, similarity_heatmaps
