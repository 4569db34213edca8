"""Where a run's conditions are computed: in this process (``local``) or on a Ray cluster (``ray``).

A condition's work is the same wherever it runs (:class:`ConditionEvaluator`): each task of the study measures it
(:mod:`xlens.evaluation`) and returns its table rows and per-item scores. The runner (:mod:`xlens.runs.study`) keeps
each task's measurement of each condition as a content-keyed artefact, so a rerun (or a study with one more task)
measures only what is missing, and computes the statistics from the item scores.

- :class:`LocalExecutor` evaluates conditions in turn with one model in this process; embeddings are kept in the
  run's cache.
- :class:`RayExecutor` starts one actor per worker (a GPU each where the cluster has GPUs), each loading the model
  once; conditions are tasks scheduled on idle actors. A worker killed mid-task is restarted and the task retried;
  a condition that keeps failing is reported with its error while the rest finish. Workers write embeddings (and
  the find split's responses) into the run folder only with ``keep_embeddings``, which needs the run folder on a
  filesystem the workers share.
"""

from __future__ import annotations

import dataclasses
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from xlens._io import content_key
from xlens._schema import to_mapping
from xlens.activations import resolve_units
from xlens.artifacts import ArtifactStore
from xlens.conditions import Condition
from xlens.config import RETRIEVAL_SETTINGS, ExperimentConfig
from xlens.errors import ConfigError, ExecutorError
from xlens.evaluation.base import Task, TaskContext, TaskOutput, condition_key
from xlens.evaluation.registry import register_task, user_tasks
from xlens.experts.sets import find_experts
from xlens.interventions.registry import register, user_methods
from xlens.models.lens import LensModel
from xlens.models.loading import load_model, resolved_numerics

ExecutorName = Literal["local", "ray"]
EXECUTORS: tuple[str, ...] = ("local", "ray")
TASK_RETRIES = 2  # a condition whose worker dies this many more times is reported as failed


@dataclass(frozen=True)
class ModelInfo:
    """What the runner records about the model the workers run (without holding it)."""

    identity: dict[str, Any]
    numerics: dict[str, str]
    device: str
    threads: int
    embedding_layers: list[int]


@dataclass(frozen=True)
class EvalInputs:
    """Everything a worker needs besides its model to evaluate any condition of a run: the config, splits and
    expert scores, the embedding layers and the study's tasks (prepared: their data read and checked)."""

    config: ExperimentConfig
    splits: Any
    scores: Any
    scores_key: str | None
    layer_ids: list[int]
    tasks: dict[str, Task] = field(default_factory=dict)


Measured = dict[str, TaskOutput]  # task name -> its measurement of one condition


def measured_key(inputs: EvalInputs, info: ModelInfo, condition: Condition, task: Task) -> str:
    """The content key of one task's measurement of ``condition``: the model and numerics, the task's own
    settings and data, the evaluation split and its settings for a task that reads them, and what the condition
    builds on."""
    config, splits = inputs.config, inputs.splits
    settings = to_mapping(task.settings) if dataclasses.is_dataclass(task.settings) else task.settings
    evaluation = None
    if task.reads_eval_split:
        evaluate = {k: v for k, v in config.evaluate.to_dict().items() if k in RETRIEVAL_SETTINGS}
        evaluation = (
            evaluate,
            config.controls.mixed,
            splits.eval.fingerprint(),
            config.eval_languages,
            inputs.layer_ids,
        )
    return content_key(
        "measured",
        task.name,
        task.version,
        task.key(),
        settings,
        evaluation,
        config.seed,
        config.stats,
        info.identity,
        info.numerics,
        config.runtime.max_length,
        config.runtime.batch_size,
        config.runtime.max_tokens,
        condition_key(inputs, condition),
    )


class ConditionEvaluator:
    """Measures conditions on the study's tasks with one model (see the module docstring)."""

    def __init__(
        self,
        model: LensModel,
        inputs: EvalInputs,
        *,
        store: Any = None,
        progress: bool = False,
    ) -> None:
        self.inputs = inputs
        self.context = TaskContext(model, inputs, store=store, progress=progress)

    def evaluate(self, condition: Condition, names: Sequence[str] | None = None) -> Measured:
        """Measure one condition on the tasks ``names`` (default: all of the study's)."""
        chosen = list(names) if names is not None else list(self.inputs.tasks)
        return {name: self.inputs.tasks[name].run(self.context, condition) for name in chosen}


def config_numerics(config: ExperimentConfig) -> dict[str, str]:
    """The numerics :func:`load` gives the config's model on this machine (without loading it)."""
    runtime = config.runtime
    return resolved_numerics(runtime.device, runtime.dtype, config.model, backend=runtime.backend)


def load(config: ExperimentConfig) -> LensModel:
    """The config's model, as its runtime section asks."""
    runtime = config.runtime
    return load_model(config.model, device=runtime.device, dtype=runtime.dtype, backend=runtime.backend)  # type: ignore[arg-type]


def model_info(model: LensModel) -> ModelInfo:
    return ModelInfo(
        model.identity(), model.numerics(), str(model.device), torch.get_num_threads(), model.embedding_layers
    )


def find_scores(model: LensModel, config: ExperimentConfig, splits: Any, cache: Path | None, progress: bool) -> Any:
    """Every find language's expert scores on the find split (ranked by LAPE when a method needs it)."""
    find, intervene = config.find, config.intervene
    if intervene.k_values and find.units not in ("mlp", "resid"):  # counts the model's config could not tell
        n_units = sum(model.hook_widths(resolve_units(model, find.units)).values())
        if max(intervene.k_values) > n_units:
            raise ConfigError(f"intervene.k = {intervene.k_values}: k must be <= {n_units} ({find.units})")
    return find_experts(
        model,
        splits.find,
        config.find_languages,
        units=find.units,
        pooling=find.pooling,
        negatives=find.negatives,
        lape_top_rate=config.intervene.lape_top_rate,
        lape_counts=config.intervene.lape_counts,
        cache=cache,
        batch_size=config.runtime.batch_size,
        max_tokens=config.runtime.max_tokens,
        max_length=config.runtime.max_length,
        progress=progress,
    )


Outcome = tuple[Condition, Measured | BaseException]
Todo = Sequence[tuple[Condition, tuple[str, ...]]]  # conditions and the tasks each still needs


class LocalExecutor:
    """Conditions in turn, with one model in this process."""

    def __init__(self, model: LensModel | None = None) -> None:
        self.model = model

    def numerics(self, config: ExperimentConfig) -> dict[str, str]:
        """The dtype and device kind the conditions will be computed in (before any model is loaded)."""
        return self.model.numerics() if self.model is not None else config_numerics(config)

    def start(self, config: ExperimentConfig, out: Path) -> ModelInfo:
        if self.model is None:
            self.model = load(config)
        return model_info(self.model)

    def loaded(self) -> LensModel:
        if self.model is None:
            raise RuntimeError("the executor has no model: call start() first")
        return self.model

    def check(self, tasks: dict[str, Task]) -> None:
        """Each task's checks against the loaded model, before any expert is found."""
        for task in tasks.values():
            task.check_model(self.loaded())

    def token_lengths(self, texts: list[str]) -> list[int]:
        return self.loaded().token_lengths(texts)

    def experts(self, config: ExperimentConfig, splits: Any, cache: Path, progress: bool) -> Any:
        return find_scores(self.loaded(), config, splits, cache, progress)

    def evaluate(self, inputs: EvalInputs, todo: Todo, store: Any, out: Path, progress: bool) -> Iterator[Outcome]:
        evaluator = ConditionEvaluator(self.loaded(), inputs, store=store, progress=progress)
        for condition, names in todo:
            try:
                yield condition, evaluator.evaluate(condition, names)
            except Exception as err:  # reported with the others once every condition has run
                yield condition, err

    def describe(self) -> dict[str, Any]:
        return {"executor": "local", "workers": 1}

    def close(self) -> None:
        return None


class _Worker:
    """A Ray actor: one model, loaded once, evaluating conditions (restarted with the same arguments if killed)."""

    def __init__(self, config: ExperimentConfig, methods: list[type], out: str, keep: bool) -> None:
        for cls in methods:  # the driver's own methods and tasks (a notebook's, a plugin's) travel by value
            if issubclass(cls, Task):
                register_task(cls)
            else:
                register(cls)
        self.model = load(config)
        self.out = Path(out)
        self.store = ArtifactStore(self.out / "cache") if keep else None
        self.evaluators: dict[str, ConditionEvaluator] = {}

    def info(self) -> ModelInfo:
        return model_info(self.model)

    def check(self, tasks: dict[str, Task]) -> None:
        for task in tasks.values():
            task.check_model(self.model)

    def token_lengths(self, texts: list[str]) -> list[int]:
        return self.model.token_lengths(texts)

    def experts(self, config: ExperimentConfig, splits: Any) -> Any:
        return find_scores(self.model, config, splits, None if self.store is None else self.store.root, False)

    def evaluate(self, inputs: EvalInputs, key: str, condition: Condition, names: tuple[str, ...]) -> Measured:
        # Inputs arrive with every task, so a restarted worker needs no other state.
        if key not in self.evaluators:
            self.evaluators = {key: ConditionEvaluator(self.model, inputs, store=self.store)}
        return self.evaluators[key].evaluate(condition, names)


class RayExecutor:
    """Conditions as tasks on Ray actors (see the module docstring)."""

    def __init__(self, address: str | None = None, workers: int | None = None, keep_embeddings: bool = False) -> None:
        self.address = address
        self.workers = workers
        self.keep_embeddings = keep_embeddings
        self.actors: list[Any] = []
        self.started_ray = False
        self.count = 0
        self.gpus_per_worker = 0.0

    def connect(self) -> None:
        """Join the cluster at ``address`` (or start a local one): clear errors before any model is loaded."""
        try:
            import ray
        except ImportError:
            raise ExecutorError(
                "the ray executor needs Ray, which is not installed: pip install -e '.[ray]' (or use --executor local)"
            ) from None
        if self.workers is not None and self.workers < 1:
            raise ExecutorError(f"workers must be >= 1, got {self.workers}")
        if self.address not in (None, "auto", "local") and not self.address.startswith("ray://"):
            check_answers(self.address)
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, log_to_driver=False, include_dashboard=False)
            except (ConnectionError, RuntimeError) as err:
                raise ExecutorError(
                    f"could not join a Ray cluster at {self.address!r}: {err}. Start one with `ray start --head` "
                    "and pass its address, or leave --address out to start a local cluster"
                ) from err
            self.started_ray = True

    def numerics(self, config: ExperimentConfig) -> dict[str, str]:
        """The dtype and device kind the workers will compute in, asked of the cluster with a worker's resources
        (the driver may have no GPU where the workers do)."""
        self.connect()  # first: a missing Ray or a silent cluster is named before anything else
        import ray
        from ray import cloudpickle  # Ray's own copy: the one that pickles the tasks' arguments

        for cls in [*user_methods(), *user_tasks()]:  # configs name them, so they travel by value
            cloudpickle.register_pickle_by_value(sys.modules[cls.__module__])
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self.count = self.workers or max(gpus, 1)
        self.gpus_per_worker = 1.0 if gpus >= self.count else gpus / self.count
        probe = ray.remote(num_cpus=1, num_gpus=self.gpus_per_worker)(config_numerics)
        return ray.get(probe.remote(config))

    def start(self, config: ExperimentConfig, out: Path) -> ModelInfo:
        import ray
        from ray.exceptions import RayError

        if self.count == 0:
            self.numerics(config)
        methods = [*user_methods(), *user_tasks()]
        actor = ray.remote(num_cpus=1, num_gpus=self.gpus_per_worker, max_restarts=-1, max_task_retries=TASK_RETRIES)(
            _Worker
        )
        self.actors = [actor.remote(config, methods, str(out), self.keep_embeddings) for _ in range(self.count)]
        try:
            infos = ray.get([a.info.remote() for a in self.actors])
        except RayError as err:
            raise ExecutorError(f"the Ray workers could not start: {err}") from err
        numerics = {str(i.numerics) for i in infos}
        if len(numerics) > 1:
            raise ExecutorError(
                f"the workers compute in different numerics ({', '.join(sorted(numerics))}): give runtime.device "
                "and runtime.dtype so that every worker runs the model the same way"
            )
        return infos[0]

    def check(self, tasks: dict[str, Task]) -> None:
        import ray

        ray.get(self.actors[0].check.remote(tasks))

    def token_lengths(self, texts: list[str]) -> list[int]:
        import ray

        return ray.get(self.actors[0].token_lengths.remote(texts))

    def experts(self, config: ExperimentConfig, splits: Any, cache: Path, progress: bool) -> Any:
        import ray

        return ray.get(self.actors[0].experts.remote(config, splits))

    def evaluate(self, inputs: EvalInputs, todo: Todo, store: Any, out: Path, progress: bool) -> Iterator[Outcome]:
        import ray

        shared = ray.put(inputs)
        key = content_key("inputs", inputs.scores_key, inputs.layer_ids, inputs.config.to_dict())
        todo = list(todo)
        idle = list(self.actors)
        running: dict[Any, tuple[Condition, Any]] = {}
        while todo or running:
            while todo and idle:
                actor = idle.pop()
                condition, names = todo.pop(0)
                running[actor.evaluate.remote(shared, key, condition, names)] = (condition, actor)
            ready, _ = ray.wait(list(running), num_returns=1)
            condition, actor = running.pop(ready[0])
            idle.append(actor)
            try:
                yield condition, ray.get(ready[0])
            except Exception as err:  # the task's own error, or its worker died more than TASK_RETRIES times
                yield condition, getattr(err, "cause", None) or err  # the error itself, not Ray's wrapper

    def describe(self) -> dict[str, Any]:
        return {
            "executor": "ray",
            "workers": len(self.actors),
            "gpus_per_worker": self.gpus_per_worker,
            "keep_embeddings": self.keep_embeddings,
        }

    def close(self) -> None:
        if not self.actors and not self.started_ray:
            return  # never connected (Ray missing, a cluster that did not answer)
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.started_ray:
            ray.shutdown()


def check_answers(address: str, timeout: float = 3.0) -> None:
    """Raise ExecutorError unless something listens at ``host:port`` (Ray's own connect retries for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"Ray address {address!r} is not host:port (e.g. 10.0.0.1:6379), 'auto' or ray://...")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise ExecutorError(
            f"no Ray cluster answers at {address} ({err}): start one there with `ray start --head --port {port}`, "
            "check the address, or leave --address out to start a local cluster"
        ) from None


def make_executor(
    name: str = "local",
    *,
    model: LensModel | None = None,
    address: str | None = None,
    workers: int | None = None,
    keep_embeddings: bool = False,
) -> LocalExecutor | RayExecutor:
    """The executor called ``name`` (``local`` or ``ray``)."""
    if name == "local":
        if address is not None or workers not in (None, 1):
            raise ExecutorError("--address and --workers are settings of the ray executor: add --executor ray")
        return LocalExecutor(model)
    if name == "ray":
        if model is not None:
            raise ExecutorError("the ray executor loads the model on its workers: do not pass a loaded model")
        return RayExecutor(address, workers, keep_embeddings)
    raise ExecutorError(f"unknown executor {name!r}; use one of {', '.join(EXECUTORS)}")
