"""Quantization-aware training with learned quantizer ranges (docs/techniques.md, section 5).

A calibrated :class:`QuantizationSimModel` becomes a trainable Keras model: every output
quantizer is the sim's :class:`~workbench.quantsim.quantizer.FakeQuant` in its ``LEARN`` form (trainable
min/max) and every quantized kernel is fake-quantized inside its layer each step
(:class:`~workbench.quantsim.quantizer.QuantizedKernel`: a ``LEARN`` FakeQuant on the strict symmetric grid with
a trainable per-tensor or per-channel max). Gradients are TensorFlow's fake-quant gradients,
the close relative the reference allows: dL/dx = g·1[min ≤ x ≤ max] (straight-through inside
the range), dL/dmin = Σ g over x < min, dL/dmax = Σ g over x > max. After training the weights
and ranges go back into a fresh sim, which evaluates them on our own exact grid.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm.keras import TqdmCallback

from workbench import interrupts
from workbench.data.dataset import Dataset
from workbench.graph.functional import PASSTHROUGH_TYPES, activation_name, producer
from workbench.graph.rewrite import GraphEdit, apply_edit, clone_layer
from workbench.options import QuantSettings
from workbench.quantsim.encodings import Encoding
from workbench.quantsim.quantizer import FakeQuant, Mode, QuantizedKernel
from workbench.quantsim.sim import QuantizationSimModel, insert_quantizers

log = logging.getLogger(__name__)


@dataclass
class QATResult:
    model: keras.Model  # the float model with the trained weights (no fake-quant ops)
    param_encodings: dict[str, Encoding]
    output_encodings: dict[str, Encoding]
    history: dict[str, list[float]] = field(default_factory=dict)
    initial_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)


def build_qat_model(sim: QuantizationSimModel, learn_ranges: bool = True) -> keras.Model:
    """A trainable copy of a calibrated sim, ranges initialised from its encodings. Every quantizer keeps the
    sim's bitwidth for its layer (``quant.overrides`` included); layers the sim leaves float stay float."""
    quantizers = {
        name: FakeQuant(q.bitwidth, mode=Mode.LEARN, modes=(Mode.LEARN,), learn_range=learn_ranges, name=q.name)
        for name, q in sim.output_quantizers.items()
    }
    params = sim.param_quantizers

    def clone_function(layer):
        new = clone_layer(layer)
        if layer.name in params:
            channels = params[layer.name].encoding.num_channels
            return QuantizedKernel(new, params[layer.name].bitwidth, channels, learn_ranges)
        return new

    qat = insert_quantizers(sim.fp_model, quantizers, set(sim.plan.inputs), clone_function)
    layers = {layer.name: layer for layer in qat.layers}
    for layer in sim.fp_model.layers:
        if not layer.weights:
            continue
        target = layers[layer.name]
        if isinstance(target, QuantizedKernel):
            target.inner.set_weights(layer.get_weights())
            enc = params[layer.name].encoding
            assert enc is not None, f"{layer.name}: the sim is calibrated before QAT"
            target.quantizer.set_range(enc.min, enc.max)
        else:
            target.set_weights(layer.get_weights())
    for name, q in quantizers.items():
        enc = sim.output_quantizers[name].encoding
        q.set_range(enc.min[0], enc.max[0])
    return qat


def ends_in_softmax(model: keras.Model, output: int = 0) -> bool:
    """Whether the (flat) model's ``output``-th output is a softmax's, i.e. probabilities rather than logits."""
    last = producer(keras.tree.flatten(model.outputs)[output])
    while isinstance(last, PASSTHROUGH_TYPES):
        last = producer(last.input)
    return activation_name(last) == "softmax" if isinstance(last, keras.layers.Layer) else False


def _first(span: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
    return float(span[0][0]), float(span[1][0])


def train_qat(
    sim: QuantizationSimModel,
    train_batches: tf.data.Dataset | Dataset,
    epochs: int,
    learning_rate: float,
    decay_steps: int,
    *,
    optimizer: str = "adam",
    learn_ranges: bool = True,
    val_batches: tf.data.Dataset | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    output: int | None = None,
    loss: Any = None,
) -> QATResult:
    """Fine-tune a calibrated sim (weights and, with ``learn_ranges``, quantizer ranges) on ``(x, y)``
    batches: a ``tf.data`` pipeline or a :class:`~workbench.data.dataset.Dataset` over labelled batches. A
    multi-output model trains on its ``output``-th output (the task's); the other heads keep their weights. ``loss``:
    a Keras loss (another task's, e.g. MSE); None: sparse categorical cross-entropy with accuracy, a classifier's."""
    if isinstance(train_batches, Dataset):
        train_batches = train_batches.labelled_tf_data()
    qat = build_qat_model(sim, learn_ranges)
    trainable = qat if output is None else keras.Model(qat.inputs, keras.tree.flatten(qat.outputs)[output])
    schedule = keras.optimizers.schedules.ExponentialDecay(learning_rate, decay_steps=max(1, decay_steps), decay_rate=0.5)
    opt = keras.optimizers.Adam(schedule) if optimizer == "adam" else keras.optimizers.SGD(schedule, momentum=0.9)
    if loss is None:
        from_logits = not ends_in_softmax(sim.fp_model, output or 0)
        if not from_logits:
            log.info("the model ends in a softmax: QAT trains with from_logits=False")
        trainable.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits), metrics=["accuracy"])
    else:
        trainable.compile(optimizer=opt, loss=loss)
    initial = {q.name: _first(q.learned_range()) for q in qat.layers if isinstance(q, FakeQuant)}

    class _Report(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            interrupts.checkpoint()

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            val = (
                f", val top1 {logs['val_accuracy']:.4f}"
                if "val_accuracy" in logs
                else f", val loss {logs.get('val_loss', float('nan')):.4f}"
            )
            log.info("QAT epoch %d/%d: loss %.4f%s", epoch + 1, epochs, logs.get("loss", float("nan")), val)
            if on_epoch is not None:
                on_epoch(epoch, logs)

    history = trainable.fit(
        train_batches,
        epochs=epochs,
        validation_data=val_batches,
        verbose=0,
        shuffle=False,
        callbacks=[_Report(), TqdmCallback(epochs, verbose=0, desc="QAT", disable=None, leave=False)],
    )
    layers = {layer.name: layer for layer in qat.layers}
    params = {name: layers[name].quantizer.learned_encoding() for name in sim.param_quantizers}
    trained = apply_edit(sim.fp_model, GraphEdit())  # a fresh copy; every layer's trained weights go into it
    for layer in trained.layers:
        source = layers[layer.name]
        if layer.weights:  # other trainable layers (e.g. a float affine) keep their new values too
            layer.set_weights((source.inner if isinstance(source, QuantizedKernel) else source).get_weights())
    outputs = {name: layers[q.name].learned_encoding() for name, q in sim.output_quantizers.items()}
    return QATResult(trained, params, outputs, dict(history.history), initial)


def simulate_trained(result: QATResult, settings: QuantSettings) -> QuantizationSimModel:
    """Our exact sim of the trained weights with the learned encodings."""
    sim = QuantizationSimModel(result.model, settings)
    sim.set_encodings(result.param_encodings, result.output_encodings)
    return sim
