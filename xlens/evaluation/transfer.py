"""The ``transfer`` task: zero-shot cross-lingual transfer on SIB-200. A topic probe (logistic regression on
standardised features, ``C`` chosen on the source's dev split) is trained on the source language's sentence
embeddings and tested on every target's, per embedding layer, before and after the intervention: ``applied =
"target"`` tests intervened inputs with the baseline's probe, ``applied = "all"`` trains the probe on intervened
embeddings too; the baseline's rows have ``applied = "none"``. Settings: ``[evaluate.transfer]``
(:class:`xlens.config.TransferConfig`).

Table ``transfer``: ``{applied, layer, target, is_source, accuracy (+ low/high), macro_f1 (+ low/high),
accuracy_change (+ low/high, paired with the baseline's predictions), majority, c, dev_accuracy}``. Items: one per
test sentence, ``accuracy`` 1 when the probe's prediction is right; groups ``{applied, layer, target}`` (the
baseline's predictions stand in every applied mode, so that each is paired with them; ``target = "mean"``: a test
sentence's mean over the targets, the source left out, SIB-200 being parallel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from xlens.conditions import Condition
from xlens.config import ExperimentConfig, TransferConfig
from xlens.data.corpus import sentence_key
from xlens.data.languages import flores_code
from xlens.data.sib200 import Sib200, load_sib200, sib200_languages
from xlens.data.splits import Splits
from xlens.errors import ConfigError, CorpusError, MissingDependencyError
from xlens.evaluation.base import ItemScores, Task, TaskContext, TaskOutput, language_frame, texts_fingerprint
from xlens.evaluation.registry import register_task
from xlens.metrics.bootstrap import resample_counts
from xlens.models.loading import model_shape

MAX_ITER = 5000  # lbfgs on standardised features converges well within this, even at C = 100


def require_sklearn() -> None:
    """scikit-learn is installed, or one error that says how to install it."""
    try:
        import sklearn  # noqa: F401
    except ImportError as err:
        raise MissingDependencyError(
            f"xlens transfer trains its probes with scikit-learn, which is not installed ({err}): "
            "pip install -e '.[transfer]'"
        ) from None


# --- the probe and its scores ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """A fitted topic probe: the scikit-learn pipeline (StandardScaler + LogisticRegression), its ``C`` and its
    accuracy on the dev split that chose it."""

    pipeline: Any
    c: float
    dev_accuracy: float

    def predict(self, x: Float[np.ndarray, "sentence feature"]) -> Int[np.ndarray, " sentence"]:
        return np.asarray(self.pipeline.predict(np.asarray(x, dtype=np.float64)))


def fit_probe(
    train_x: Float[np.ndarray, "sentence feature"],
    train_y: Int[np.ndarray, " sentence"],
    dev_x: Float[np.ndarray, "sentence feature"],
    dev_y: Int[np.ndarray, " sentence"],
    c_values: Sequence[float],
    *,
    seed: int = 0,
) -> Probe:
    """A logistic-regression probe on features standardised with the train split's statistics, ``C`` chosen
    among ``c_values`` by dev accuracy (a tie goes to the smaller C: the stronger regularisation)."""
    require_sklearn()
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not c_values:
        raise ConfigError("c_values is empty: give at least one C > 0")
    train_y, dev_y = np.asarray(train_y), np.asarray(dev_y)
    if len(np.unique(train_y)) < 2:
        raise CorpusError(f"the probe's training rows hold {len(np.unique(train_y))} topic: it needs at least 2")
    train_x, dev_x = np.asarray(train_x, dtype=np.float64), np.asarray(dev_x, dtype=np.float64)
    best: Probe | None = None
    for c in sorted(float(c) for c in c_values):
        pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=MAX_ITER, random_state=seed))
        pipeline.fit(train_x, train_y)
        accuracy = float(np.mean(pipeline.predict(dev_x) == dev_y))
        if best is None or accuracy > best.dev_accuracy:  # strictly better: ties keep the smaller C
            best = Probe(pipeline, c, accuracy)
    assert best is not None
    return best


def majority_rate(labels: Int[np.ndarray, " sentence"]) -> float:
    """The share of the most frequent label (the accuracy of always answering it)."""
    counts = np.bincount(np.asarray(labels))
    return float(counts.max() / counts.sum())


def _resampled_macro_f1(
    y_true: Int[np.ndarray, " sentence"], y_pred: Int[np.ndarray, " sentence"], counts: Float[np.ndarray, "r sentence"]
) -> Float[np.ndarray, " r"]:
    """Macro-F1 of every resample at once (``counts``: how often each sentence is drawn), as scikit-learn computes
    it on the resampled rows: the mean over the classes in the resample's labels or predictions of
    2 TP / (2 TP + FP + FN)."""
    n_classes = int(max(y_true.max(), y_pred.max())) + 1
    truth = np.eye(n_classes)[y_true]  # [sentence, class]
    guess = np.eye(n_classes)[y_pred]
    tp = counts @ (truth * guess)  # [r, class]
    denominator = counts @ truth + counts @ guess  # 2 TP + FP + FN
    present = denominator > 0
    f1 = np.where(present, 2 * tp / np.where(present, denominator, 1.0), 0.0)
    return f1.sum(axis=1) / present.sum(axis=1)


def score_predictions(
    y_true: Int[np.ndarray, " sentence"],
    y_pred: Int[np.ndarray, " sentence"],
    counts: Float[np.ndarray, "resample sentence"] | Float[Tensor, "resample sentence"],
    confidence: float = 0.95,
    reference: Int[np.ndarray, " sentence"] | None = None,
) -> dict[str, float]:
    """Accuracy and macro-F1 of ``y_pred`` with percentile bootstrap intervals over the sentences, from resample
    ``counts`` (:func:`xlens.metrics.bootstrap.resample_counts`). With ``reference`` (another set of predictions
    on the same sentences, the baseline's), also the accuracy change ``y_pred`` minus ``reference`` with its paired
    interval: both scored on the same resamples."""
    require_sklearn()
    from sklearn.metrics import accuracy_score, f1_score

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    weights = counts.numpy() if isinstance(counts, Tensor) else np.asarray(counts, dtype=np.float64)
    if weights.shape[1] != len(y_true) or len(y_pred) != len(y_true):
        raise CorpusError(f"{len(y_true)} labels, {len(y_pred)} predictions, resample counts over {weights.shape[1]}")
    tail = (1 - confidence) / 2
    correct = (y_true == y_pred).astype(np.float64)
    accuracy = weights @ correct / len(correct)
    f1 = _resampled_macro_f1(y_true, y_pred, weights)
    acc_low, acc_high = np.quantile(accuracy, [tail, 1 - tail])
    f1_low, f1_high = np.quantile(f1, [tail, 1 - tail])
    change: dict[str, float] = {}
    if reference is not None:
        if len(reference) != len(y_true):
            raise CorpusError(f"{len(y_true)} labels but {len(reference)} reference predictions")
        gained = correct - (y_true == np.asarray(reference))
        low, high = np.quantile(weights @ gained / len(gained), [tail, 1 - tail])
        change = {"accuracy_change": float(gained.mean())}
        change |= {"accuracy_change_low": float(low), "accuracy_change_high": float(high)}
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "accuracy_low": float(acc_low),
        "accuracy_high": float(acc_high),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),  # type: ignore[arg-type]
        "macro_f1_low": float(f1_low),
        "macro_f1_high": float(f1_high),
    } | change


# --- the plan: everything checked before the model loads ---------------------------------------------------------


@dataclass(frozen=True)
class TransferPlan:
    """What a transfer run measures, checked against the corpus and the model's shape before the model loads: the
    source, the targets (FLORES codes, source excluded), the embedding layers, the SIB-200 rows used of each split
    and the run's find/evaluation splits."""

    data: Sib200
    source: str
    targets: list[str]
    layers: list[int]
    rows: dict[str, list[int]]
    splits: Splits

    @property
    def languages(self) -> list[str]:
        """The languages tested: the source first, then the targets."""
        return [self.source, *self.targets]

    def texts(self, lang: str, split: str) -> list[str]:
        texts = self.data.texts(lang, split)
        return [texts[i] for i in self.rows[split]]

    def labels(self, split: str) -> Int[np.ndarray, " sentence"]:
        return np.asarray(self.data.labels_of(split))[self.rows[split]]


def _rows(n: int, cap: int | None, seed: int, split: str) -> list[int]:
    """The rows of a split used: all of them, or a seeded sample of ``cap`` in corpus order (SIB-200's test split
    is sorted by topic, so the first rows would be one topic)."""
    if cap is None or cap >= n:
        return list(range(n))
    rng = np.random.default_rng([seed, ("train", "dev", "test").index(split)])
    return sorted(int(i) for i in rng.choice(n, size=cap, replace=False))


def find_overlap(plan: TransferPlan) -> dict[str, int]:
    """Per split, the SIB-200 rows used whose sentence (in a language both have) is among the find split's, where
    the experts were found (SIB-200's sentences are FLORES-200's, so a FLORES find corpus overlaps them)."""
    find = plan.splits.find
    seen = {lang: {sentence_key(s) for s in find[lang]} for lang in plan.languages if lang in find.languages}
    out = {}
    for split, rows in plan.rows.items():
        hits = set()
        for lang, sentences in seen.items():
            if plan.data.has(lang, split):
                texts = plan.data.texts(lang, split)
                hits |= {i for i in rows if sentence_key(texts[i]) in sentences}
        out[split] = len(hits)
    return out


def plan_transfer(config: ExperimentConfig, splits: Splits) -> TransferPlan:
    """Everything about transfer that can be checked before a model is loaded (scikit-learn, the corpus and its
    languages and splits, the layers); returns the plan."""
    require_sklearn()
    t = config.transfer
    if t.corpus is None:
        raise ConfigError(
            "evaluate.transfer.corpus is not set: give sib200:PATH (a SIB-200 folder) or hf:Davlan/sib200 in "
            "[evaluate.transfer]"
        )
    source = flores_code(t.source)
    if t.targets == "all":
        wanted = sib200_languages(t.corpus)
    else:
        wanted = [flores_code(c) for c in (t.targets if isinstance(t.targets, list) else config.languages)]
    targets = [lang for lang in dict.fromkeys(wanted) if lang != source]
    if not targets:
        raise ConfigError(f"evaluate.transfer.targets = {t.targets!r}: no target language besides the source {source}")
    data = load_sib200(t.corpus, [source, *targets])
    for split in ("train", "dev", "test"):
        if not data.has(source, split):
            raise CorpusError(
                f"the source language {source} has no {split} split in {data.name}: the probe is trained on its "
                "train split, its C chosen on dev and it is tested on test; choose another transfer.source"
            )
    no_test = [lang for lang in targets if not data.has(lang, "test")]
    if no_test:
        raise CorpusError(f"target(s) {no_test} have no test split in {data.name}")
    shape = model_shape(config.model)
    layers = list(t.layers) if t.layers is not None else list(range(shape.n_layers + 1))
    bad = [x for x in layers if x > shape.n_layers]
    if bad:
        raise ConfigError(
            f"evaluate.transfer.layers = {t.layers}: {bad} out of range; {config.model} has embedding layers "
            f"0..{shape.n_layers} ({shape.n_layers} blocks)"
        )
    caps = {"train": t.sentences, "dev": t.sentences, "test": t.test_sentences or t.sentences}
    rows = {split: _rows(len(data.ids_of(split)), cap, config.seed, split) for split, cap in caps.items()}
    topics = len(set(np.asarray(data.labels_of("train"))[rows["train"]].tolist()))
    if topics < 2:
        raise ConfigError(
            f"evaluate.transfer.sentences = {t.sentences} leaves {topics} topic in the train sample: use more"
        )
    return TransferPlan(data, source, targets, layers, rows, splits)


@register_task
class TransferTask(Task):
    """See the module docstring."""

    name = "transfer"
    version = 2  # 2: the mean over targets leaves the source out
    tables = ("transfer",)
    metrics = ("accuracy",)
    packages = ("scikit-learn",)
    reads_eval_split = False
    summary: ClassVar[dict[str, Any]] = {"applied": "target", "target": "mean"}
    Settings = TransferConfig

    def prepare(self, config: ExperimentConfig, splits: Splits) -> None:
        self.plan = plan_transfer(config, splits)
        self.config = config
        self._baseline_probes: list[Probe] | None = None
        self._baseline_predictions: list[dict[str, Int[np.ndarray, " sentence"]]] | None = None
        plan = self.plan
        texts = [plan.texts(lang, split) for lang in plan.languages for split in ("train", "dev", "test")]
        labels = {split: plan.labels(split).tolist() for split in plan.rows}
        self._key = ("transfer", texts_fingerprint([t for part in texts for t in part]), labels, plan.layers, MAX_ITER)

    def key(self) -> Any:
        return self._key

    def provenance(self) -> dict[str, Any]:
        """The corpus, the rows used per split and their fingerprints, and their overlap with the find split."""
        plan = self.plan
        texts = {
            lang: {
                split: texts_fingerprint(plan.texts(lang, split)) for split in plan.rows if plan.data.has(lang, split)
            }
            for lang in plan.languages
        }
        return {
            "corpus": {"spec": self.settings.corpus, "name": plan.data.name},
            "source": plan.source,
            "targets": plan.targets,
            "layers": plan.layers,
            "labels": list(plan.data.labels),
            "rows": {split: list(map(int, rows)) for split, rows in plan.rows.items()},
            "texts_sha256": texts,
            "rows_sharing_a_sentence_with_the_find_split": find_overlap(plan),
        }

    @classmethod
    def per_language(cls, tables: dict[str, pd.DataFrame], metric: str) -> pd.DataFrame:
        """A target's score with the baseline's probe (``applied`` ``none`` for the baseline, ``target`` else)."""
        table: Any = tables["transfer"]
        targets = table[table["applied"].isin(["none", "target"]) & ~table["is_source"].astype(bool)]
        return language_frame(targets, metric, "target", "transfer")

    def embed(self, ctx: TaskContext, lang: str, split: str, condition: Condition) -> Tensor:
        return ctx.embed(
            self.plan.texts(lang, split),
            condition,
            layers=self.plan.layers,
            pooling=self.settings.pooling,
            desc=f"transfer {lang} {split}",
        )

    def probes(self, ctx: TaskContext, condition: Condition) -> list[Probe]:
        """One probe per layer on the source's train and dev embeddings under ``condition`` (the baseline's kept)."""
        if condition.is_baseline and self._baseline_probes is not None:
            return self._baseline_probes
        plan, t = self.plan, self.settings
        train, dev = (self.embed(ctx, plan.source, split, condition) for split in ("train", "dev"))
        out = [
            fit_probe(train[:, j].numpy(), plan.labels("train"), dev[:, j].numpy(), plan.labels("dev"), t.c_values,
                      seed=self.config.seed)
            for j in range(len(plan.layers))
        ]  # fmt: skip
        if condition.is_baseline:
            self._baseline_probes = out
        return out

    def baseline_predictions(self, ctx: TaskContext) -> list[dict[str, Int[np.ndarray, " sentence"]]]:
        """Per layer and language, the baseline probe's predictions on the baseline's test embeddings."""
        if self._baseline_predictions is None:
            baseline = Condition.baseline()
            probes = self.probes(ctx, baseline)
            tests = {lang: self.embed(ctx, lang, "test", baseline) for lang in self.plan.languages}
            self._baseline_predictions = [
                {lang: probe.predict(emb[:, j].numpy()) for lang, emb in tests.items()}
                for j, probe in enumerate(probes)
            ]
        return self._baseline_predictions

    def measure(self, ctx: TaskContext, condition: Condition) -> TaskOutput:
        plan, stats = self.plan, self.config.stats
        test_y = plan.labels("test")
        counts = resample_counts(len(test_y), stats.resamples, stats.seed).numpy()
        majority = majority_rate(test_y)
        tests = {lang: self.embed(ctx, lang, "test", condition) for lang in plan.languages}
        references = self.baseline_predictions(ctx)
        modes = ["none"] if condition.is_baseline else list(self.settings.applied)
        rows, groups, correct = [], [], []
        for mode in modes:
            probes = self.probes(ctx, Condition.baseline() if mode in ("none", "target") else condition)
            for j, layer in enumerate(plan.layers):
                for lang, emb in tests.items():
                    predicted = probes[j].predict(emb[:, j].numpy())
                    scores = score_predictions(test_y, predicted, counts, stats.confidence, references[j][lang])
                    rows.append(
                        {"applied": mode, "layer": layer, "target": lang, "is_source": lang == plan.source}
                        | scores
                        | {"majority": majority, "c": probes[j].c, "dev_accuracy": probes[j].dev_accuracy}
                    )
                    hits = torch.from_numpy((predicted == test_y).astype(np.float32))
                    for applied in self.settings.applied if mode == "none" else [mode]:
                        groups.append({"applied": applied, "layer": layer, "target": lang})
                        correct.append(hits)
        for mode in dict.fromkeys(g["applied"] for g in groups):  # SIB-200 is parallel: a sentence's mean over targets
            for layer in plan.layers:
                rows_of = [i for i, g in enumerate(groups)
                           if g["applied"] == mode and g["layer"] == layer and g["target"] != plan.source]  # fmt: skip
                groups.append({"applied": mode, "layer": layer, "target": "mean"})
                correct.append(torch.stack([correct[i] for i in rows_of]).mean(dim=0))
        items = [ItemScores(groups, {"accuracy": torch.stack(correct)})]
        return TaskOutput({"transfer": rows}, items)
