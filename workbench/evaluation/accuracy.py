"""Top-1 accuracy over batched ``(image, label)`` data with one compiled step.

``predict_classes`` keeps the per-image predictions, so that two models evaluated on the same
images can be compared image by image (a paired test), not only by their accuracies.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from workbench import interrupts
from workbench.evaluation.steps import batch_step


@dataclass(frozen=True)
class Predictions:
    """Per-image predicted classes and labels on one evaluation split, in its fixed order."""

    predicted: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if len(self.labels) == 0:
            raise ValueError("evaluation data is empty")

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.labels

    @property
    def top1(self) -> float:
        return float(np.mean(self.correct))

    @property
    def digest(self) -> str:
        """Names the evaluation images (their count and labels in order): equal digests pair up."""
        return eval_digest(self.labels)


def eval_digest(labels: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(labels, np.int64).tobytes()).hexdigest()[:16]


def classifier_output(outputs, output: int | None):
    """The classification output of a model's outputs: the ``output``-th of several, or the only one."""
    if output is None:
        return outputs
    return keras.tree.flatten(outputs)[output]


def predict_classes(model: keras.Model, batches: tf.data.Dataset, output: int | None = None) -> Predictions:
    """Arg-max class of every image and its label (of the model's ``output``-th output when it has several)."""

    @batch_step
    def step(x):
        return tf.argmax(classifier_output(model(x, training=False), output), axis=-1, output_type=tf.int32)

    predicted, labels = [], []
    for x, y in tqdm(batches, desc="evaluation", unit="batch", disable=None, leave=False):
        interrupts.checkpoint()
        predicted.append(step(x).numpy())
        labels.append(np.asarray(y).astype(np.int32))
    if not labels:
        raise ValueError("evaluation data is empty")
    return Predictions(np.concatenate(predicted), np.concatenate(labels))


def evaluate_top1(model: keras.Model, batches: tf.data.Dataset, output: int | None = None) -> float:
    """Fraction of samples whose arg-max logit equals the label."""
    return predict_classes(model, batches, output).top1


def evaluate_against(
    reference: keras.Model, model: keras.Model, batches: tf.data.Dataset, output: int | None = None
) -> tuple[float, float]:
    """Top-1 of ``model`` (its ``output``-th output) and the largest |model − reference| difference over all outputs, in one pass."""

    @batch_step
    def step(x, y):
        outs, refs = model(x, training=False), reference(x, training=False)
        pred = tf.argmax(classifier_output(outs, output), axis=-1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(pred, tf.cast(y, tf.int32)), tf.int64))
        diff = tf.reduce_max([tf.reduce_max(tf.abs(a - b)) for a, b in zip(keras.tree.flatten(outs), keras.tree.flatten(refs))])
        return correct, tf.size(y, out_type=tf.int64), diff

    correct = total = 0
    diff = 0.0
    for x, y in batches:
        c, n, d = step(x, y)
        correct, total, diff = correct + int(c), total + int(n), max(diff, float(d))
    if total == 0:
        raise ValueError("evaluation data is empty")
    return correct / total, diff


def max_output_difference(reference: keras.Model, model: keras.Model, batches: tf.data.Dataset) -> float:
    """The largest |model − reference| difference over all outputs and samples (labels, if any, unread)."""

    @batch_step
    def step(x):
        outs, refs = keras.tree.flatten(model(x, training=False)), keras.tree.flatten(reference(x, training=False))
        return tf.reduce_max([tf.reduce_max(tf.abs(a - b)) for a, b in zip(outs, refs)])

    diff = 0.0
    for batch in batches:
        diff = max(diff, float(step(batch[0] if isinstance(batch, tuple) else batch)))
    return diff
