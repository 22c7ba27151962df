"""Top-1 accuracy over batched ``(image, label)`` data with one compiled step."""

from __future__ import annotations

import keras
import tensorflow as tf


def evaluate_top1(model: keras.Model, batches: tf.data.Dataset) -> float:
    """Fraction of samples whose arg-max logit equals the label."""

    @tf.function(reduce_retracing=True)
    def step(x, y):
        logits = model(x, training=False)
        pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return tf.reduce_sum(tf.cast(tf.equal(pred, tf.cast(y, tf.int32)), tf.int64)), tf.size(y, out_type=tf.int64)

    correct = total = 0
    for x, y in batches:
        c, n = step(x, y)
        correct += int(c)
        total += int(n)
    if total == 0:
        raise ValueError("evaluation data is empty")
    return correct / total


def evaluate_against(reference: keras.Model, model: keras.Model, batches: tf.data.Dataset) -> tuple[float, float]:
    """Top-1 of ``model`` and the largest |model − reference| output difference, in one pass."""

    @tf.function(reduce_retracing=True)
    def step(x, y):
        out = model(x, training=False)
        ref = reference(x, training=False)
        pred = tf.argmax(out, axis=-1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(pred, tf.cast(y, tf.int32)), tf.int64))
        return correct, tf.size(y, out_type=tf.int64), tf.reduce_max(tf.abs(out - ref))

    correct = total = 0
    diff = 0.0
    for x, y in batches:
        c, n, d = step(x, y)
        correct, total, diff = correct + int(c), total + int(n), max(diff, float(d))
    if total == 0:
        raise ValueError("evaluation data is empty")
    return correct / total, diff
