"""What a model is for, and how well a (quantized) model does it: per-sample statistics and a metric of their means.

Every task turns a batch of model outputs (and labels, or the FP32 outputs) into per-sample statistics (N, K);
its metric is a function of their means over the samples, so the same samples resampled give its bootstrap
interval and two models on the same samples its paired test (``evaluation.statistics``):

- ``Classification``: right/wrong per sample; top-1 (Wilson interval, exact McNemar).
- ``Segmentation``: per-sample, per-class pixel intersections and unions and correct pixels; mean IoU over the
  classes present (the ratio of summed counts, not a mean of per-image ratios), pixel accuracy beside it.
- ``Regression``: per-sample mean absolute and squared error; MAE (lower is better), RMSE beside it.
- ``Fidelity``: no labels: the output against the FP32 model's on the same input, per-sample SQNR (dB, capped at
  ``SQNR_CAP``: equal outputs have an infinite one) and cosine similarity.
- ``Custom``: the user's function of (outputs, labels) → per-sample scores; their mean.

The ``task`` config group (``conf/task/``) builds one of these with Hydra's ``instantiate``; ``loss`` is what QAT
fine-tunes with (None: the task cannot train, e.g. fidelity has no labels).
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

SQNR_CAP = 120.0  # dB: float32 outputs that agree to the last bit


@dataclass(frozen=True)
class Task:
    name: ClassVar[str]
    metric: ClassVar[str]  # the headline metric's name in runs and reports
    higher_is_better: ClassVar[bool] = True
    binary: ClassVar[bool] = False  # per-sample right/wrong: a Wilson interval and the exact McNemar test
    needs_labels: ClassVar[bool] = True
    percent: ClassVar[bool] = False  # a fraction in [0, 1], shown in %

    def has_loss(self) -> bool:
        """Whether :meth:`loss` gives one, answered without importing Keras (the config checks run before it)."""
        return True

    def loss(self, from_logits: bool) -> Any:
        """The Keras loss QAT fine-tunes with; None where the task has no labels to train on."""
        import keras

        return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)

    def statistics(self, outputs: np.ndarray, labels: np.ndarray | None, reference: np.ndarray | None = None) -> np.ndarray:
        """Per-sample statistics (N, K) of one batch."""
        raise NotImplementedError

    def value(self, means: np.ndarray) -> np.ndarray:
        """The metric of the statistics' means (..., K) → (...); vectorized for the bootstrap."""
        return means[..., 0]

    def secondary(self, means: np.ndarray) -> dict[str, float]:
        """Other metrics of the same statistics, by name."""
        return {}


@dataclass(frozen=True)
class Classification(Task):
    name: ClassVar[str] = "classification"
    metric: ClassVar[str] = "top1"
    binary: ClassVar[bool] = True
    percent: ClassVar[bool] = True

    def statistics(self, outputs, labels, reference=None):
        return (np.argmax(outputs, axis=-1) == np.asarray(labels).reshape(len(outputs)))[:, None].astype(np.float64)


@dataclass(frozen=True)
class Segmentation(Task):
    num_classes: int | None = None  # None: the model output's channel count (set when the run starts)
    name: ClassVar[str] = "segmentation"
    metric: ClassVar[str] = "miou"
    percent: ClassVar[bool] = True

    def statistics(self, outputs, labels, reference=None):
        if self.num_classes is None:
            raise ValueError(f"Segmentation needs num_classes (the model's outputs have {np.shape(outputs)[-1]} channels)")
        predicted = np.argmax(outputs, axis=-1).reshape(len(outputs), -1)
        truth = np.asarray(labels).reshape(predicted.shape).astype(np.int64)
        classes = np.arange(self.num_classes)[None, None, :]
        p, t = predicted[..., None] == classes, truth[..., None] == classes
        inter, union = (p & t).sum(axis=1), (p | t).sum(axis=1)
        pixels = (predicted == truth).mean(axis=1, keepdims=True)
        return np.concatenate([inter, union, pixels], axis=1).astype(np.float64)

    def value(self, means):
        k = int(self.num_classes or 0)
        inter, union = means[..., :k], means[..., k : 2 * k]
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), np.nan)
        return np.nanmean(iou, axis=-1)

    def secondary(self, means):
        return {"pixel_accuracy": float(means[..., -1])}


@dataclass(frozen=True)
class Regression(Task):
    name: ClassVar[str] = "regression"
    metric: ClassVar[str] = "mae"
    higher_is_better: ClassVar[bool] = False

    def loss(self, from_logits: bool) -> Any:
        import keras

        return keras.losses.MeanSquaredError()

    def statistics(self, outputs, labels, reference=None):
        error = (np.asarray(outputs, np.float64) - np.asarray(labels, np.float64).reshape(np.shape(outputs))).reshape(len(outputs), -1)
        return np.stack([np.abs(error).mean(axis=1), (error**2).mean(axis=1)], axis=1)

    def secondary(self, means):
        return {"rmse": float(np.sqrt(means[..., 1]))}


@dataclass(frozen=True)
class Fidelity(Task):
    name: ClassVar[str] = "fidelity"
    metric: ClassVar[str] = "sqnr_db"
    needs_labels: ClassVar[bool] = False

    def has_loss(self) -> bool:
        return False

    def loss(self, from_logits: bool) -> Any:
        return None

    def statistics(self, outputs, labels, reference=None):
        if reference is None:
            raise ValueError("the fidelity task compares with the FP32 model's outputs: give them as reference")
        out = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
        ref = np.asarray(reference, np.float64).reshape(out.shape)
        signal, noise = (ref**2).sum(axis=1), ((out - ref) ** 2).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            sqnr = np.where(noise > 0, 10.0 * np.log10(np.maximum(signal, 1e-300) / np.where(noise > 0, noise, 1.0)), SQNR_CAP)
            norms = np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)
            cosine = np.where(norms > 0, (out * ref).sum(axis=1) / np.where(norms > 0, norms, 1.0), 1.0)
        return np.stack([np.minimum(sqnr, SQNR_CAP), cosine], axis=1)

    def secondary(self, means):
        return {"cosine": float(means[..., 1])}


@dataclass(frozen=True)
class Custom(Task):
    """The user's metric: ``score(outputs, labels)`` → one score per sample; the task's metric is their mean.

    ``score`` is the function or its ``package.module:name`` (imported when first scored, so a report can rebuild
    the task without the user's code); ``loss`` a Keras loss name for QAT (None: QAT is refused)."""

    score: Callable[[np.ndarray, np.ndarray | None], np.ndarray] | str = "numpy:zeros_like"
    metric_name: str = "score"
    larger_is_better: bool = True
    percent_scale: bool = False
    training_loss: str | None = None
    name: ClassVar[str] = "custom"

    def __post_init__(self) -> None:
        if isinstance(self.score, str) and ":" not in self.score:
            raise ValueError(f"task.score={self.score!r} is not allowed: use package.module:name of your function")
        if not (self.metric_name.replace("_", "").isalnum() and self.metric_name[0].isalpha()):
            raise ValueError(f"task.metric_name={self.metric_name!r} is not allowed: letters, digits and _, starting with a letter")

    def scorer(self) -> Callable[[np.ndarray, np.ndarray | None], np.ndarray]:
        if callable(self.score):
            return self.score
        module, _, attribute = self.score.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def has_loss(self) -> bool:
        return self.training_loss is not None

    def loss(self, from_logits: bool) -> Any:
        if self.training_loss is None:
            return None
        import keras

        return keras.losses.get(self.training_loss)

    @property  # type: ignore[override]
    def metric(self) -> str:
        return self.metric_name

    @property  # type: ignore[override]
    def higher_is_better(self) -> bool:
        return self.larger_is_better

    @property  # type: ignore[override]
    def percent(self) -> bool:
        return self.percent_scale

    def statistics(self, outputs, labels, reference=None):
        scores = np.asarray(self.scorer()(outputs, labels), np.float64).reshape(-1)
        if scores.shape != (len(outputs),):
            raise ValueError(f"the task's score function gave {scores.size} values for {len(outputs)} samples: give one per sample")
        return scores[:, None]


def task_value(task: Task, stats: np.ndarray) -> float:
    """The task's metric over all samples' statistics."""
    return float(task.value(np.asarray(stats, np.float64).mean(axis=0)))


@dataclass(frozen=True)
class TaskScore:
    """A model's metric on one evaluation split: the value, its 95 % interval and the per-sample statistics
    (kept for paired tests against another model on the same samples)."""

    task: Task
    value: float
    low: float
    high: float
    statistics: np.ndarray
    secondary: dict[str, float]
    digest: str = ""  # names the samples (their count and labels in order): equal digests pair up

    def against(self, reference: TaskScore, seed: int = 0):
        """The paired comparison with ``reference`` on the same samples: exact McNemar for a right/wrong task,
        else a paired bootstrap of the metric's difference (``evaluation.statistics``)."""
        from workbench.evaluation.statistics import mcnemar_exact, paired_bootstrap

        if self.task.binary:
            return mcnemar_exact(self.statistics[:, 0] > 0.5, reference.statistics[:, 0] > 0.5)
        return paired_bootstrap(self.statistics, reference.statistics, self.task.value, self.task.higher_is_better, seed=seed)


def score_task(
    model,
    batches,
    task: Task,
    output: int | None = None,
    reference=None,
    seed: int = 0,
) -> TaskScore:
    """``task``'s metric of ``model`` over ``batches`` (``(x, y)``, or ``x`` alone for a label-free task), with its
    interval (Wilson for a right/wrong task, else a seeded BCa bootstrap). ``reference`` (a model, e.g. the FP32
    one) gives the fidelity task the outputs to compare with; ``output`` picks one of several model outputs."""

    from workbench import interrupts
    from workbench.evaluation.accuracy import classifier_output
    from workbench.evaluation.steps import batch_step

    if task.needs_labels is False and reference is None:
        raise ValueError(f"the {task.name} task compares with a reference model's outputs: pass reference=<the FP32 model>")

    @batch_step
    def step(x):
        out = classifier_output(model(x, training=False), output)
        return out, (classifier_output(reference(x, training=False), output) if reference is not None else out)

    def outputs():
        for batch in batches:
            interrupts.checkpoint()
            x, y = (batch[0], batch[1]) if isinstance(batch, tuple) else (batch, None)
            out, ref = step(x)
            yield out.numpy(), None if y is None else np.asarray(y), ref.numpy() if reference is not None else None

    return score_outputs(outputs(), task, seed)


def score_outputs(batches, task: Task, seed: int = 0) -> TaskScore:
    """``task``'s metric of a model's outputs, given as ``(outputs, labels or None, reference outputs or None)`` per
    batch (e.g. an interpreter's), with its interval: Wilson for a right/wrong task, else a seeded BCa bootstrap."""
    from workbench.evaluation.statistics import bootstrap_interval, wilson_interval

    parts, digest = [], hashlib.sha256()
    for out, labels, ref in batches:
        if labels is not None:
            digest.update(label_bytes(labels))
        parts.append(task.statistics(out, labels, ref))
    if not parts:
        raise ValueError("evaluation data is empty")
    stats = np.concatenate(parts)
    means = stats.mean(axis=0)
    value = float(task.value(means))
    if task.binary:
        low, high = wilson_interval(int(round(stats[:, 0].sum())), len(stats))
    else:
        low, high = bootstrap_interval(stats, task.value, seed=seed)
    return TaskScore(task, value, low, high, stats, task.secondary(means), digest.hexdigest()[:16])


def label_bytes(labels: np.ndarray) -> bytes:
    """Labels as the bytes a digest hashes: integers as int64 (so a classifier's digest is ``eval_digest``'s), others as float64."""
    labels = np.asarray(labels)
    return labels.astype(np.int64 if np.issubdtype(labels.dtype, np.integer) else np.float64).tobytes()
