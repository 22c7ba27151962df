"""Quantization-aware training with learned quantizer ranges (docs/techniques.md, section 5).

A calibrated :class:`QuantizationSimModel` becomes a trainable Keras model: every output
quantizer is a :class:`LearnedFakeQuant` (trainable min/max) and every quantized kernel is
fake-quantized inside its layer each step (:class:`QuantizedKernel`, strict symmetric grid with
a trainable per-tensor or per-channel max). Gradients are TensorFlow's fake-quant gradients,
the close relative the reference allows: dL/dx = g·1[min ≤ x ≤ max] (straight-through inside
the range), dL/dmin = Σ g over x < min, dL/dmax = Σ g over x > max. After training the weights
and ranges go back into a fresh sim, which evaluates them on our own exact grid.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf
import tensorflow.experimental.numpy as tnp
from tqdm.keras import TqdmCallback

from workbench import interrupts
from workbench.data.dataset import Dataset
from workbench.graph.functional import PASSTHROUGH_TYPES, activation_name, producer
from workbench.graph.rewrite import GraphEdit, apply_edit, clone_layer
from workbench.options import QuantSettings
from workbench.quantsim.encodings import F32, Encoding, encoding_from_range, num_steps
from workbench.quantsim.rules import channels_last, from_channels_last, quantized_weight, rule_for
from workbench.quantsim.sim import QuantizationSimModel, insert_quantizers

log = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="workbench")
class LearnedFakeQuant(keras.layers.Layer):
    """Per-tensor fake quantization with trainable min and max."""

    def __init__(self, bitwidth: int = 8, learn_range: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.bitwidth = int(bitwidth)
        self.learn_range = bool(learn_range)

    def build(self, input_shape):
        self.q_min = self.add_weight(name="min", shape=(), initializer="zeros", trainable=self.learn_range)
        self.q_max = self.add_weight(name="max", shape=(), initializer="ones", trainable=self.learn_range)
        super().build(input_shape)

    def call(self, inputs):
        return tf.quantization.fake_quant_with_min_max_vars(inputs, self.q_min.value, self.q_max.value, num_bits=self.bitwidth)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "bitwidth": self.bitwidth, "learn_range": self.learn_range}

    def encoding(self) -> Encoding:
        """The grid TF's fake-quant uses for the current min/max (zero point nudged to an integer)."""
        steps = num_steps(self.bitwidth)
        lo, hi = float(self.q_min.numpy()), float(self.q_max.numpy())
        scale = F32(max(hi - lo, 1e-12) / steps)
        zero_point = float(np.clip(np.round(-lo / scale), 0, steps))
        return Encoding(self.bitwidth, steps, False, np.array([scale], F32), np.array([-zero_point], F32))


@keras.saving.register_keras_serializable(package="workbench")
class QuantizedKernel(keras.layers.Layer):
    """A layer whose quantized weight (``quantsim.rules``) is fake-quantized (strict symmetric) on every call.

    Conv/Depthwise/Dense compute with the fake-quantized kernel directly; any other type (EinsumDense,
    Conv*Transpose, Embedding, Conv1D/3D) runs its own ``call`` with the weight's variable read as the
    fake-quantized tensor (``keras.StatelessScope``), so gradients reach the weight and its range.
    """

    def __init__(self, layer: keras.layers.Layer, bitwidth: int = 8, channels: int = 1, learn_range: bool = True, **kwargs):
        super().__init__(name=kwargs.pop("name", layer.name), **kwargs)
        self.inner = layer
        self.bitwidth = int(bitwidth)
        self.channels = int(channels)
        self.learn_range = bool(learn_range)
        rule = rule_for(layer)
        self.weight = quantized_weight(layer) or "kernel"
        self.channel_axis = rule.channel_axis if rule is not None else -1
        self.depthwise = self.channel_axis == "depthwise"

    def build(self, input_shape):
        self.inner.build(input_shape)
        self.k_max = self.add_weight(name="kernel_max", shape=(self.channels,), initializer="ones", trainable=self.learn_range)
        super().build(input_shape)

    def quantized_kernel(self):
        k = getattr(self.inner, self.weight)
        k = k.value if hasattr(k, "value") else k
        view = channels_last(k, self.channel_axis, tnp)
        k_max = tf.abs(self.k_max.value) + 1e-12
        if self.channels > 1:
            q = tf.quantization.fake_quant_with_min_max_vars_per_channel(view, -k_max, k_max, num_bits=self.bitwidth, narrow_range=True)
        else:
            q = tf.quantization.fake_quant_with_min_max_vars(view, -k_max[0], k_max[0], num_bits=self.bitwidth, narrow_range=True)
        return from_channels_last(q, self.channel_axis, k.shape, tnp)

    def call(self, inputs):
        layer, kernel = self.inner, self.quantized_kernel()
        if type(layer) not in (keras.layers.Dense, keras.layers.DepthwiseConv2D, keras.layers.Conv2D):
            with keras.StatelessScope(state_mapping=[(getattr(layer, self.weight), kernel)]):
                return layer(inputs)
        if isinstance(layer, keras.layers.Dense):
            out = keras.ops.matmul(inputs, kernel)
        elif self.depthwise:
            out = keras.ops.depthwise_conv(inputs, kernel, layer.strides, layer.padding, layer.data_format, layer.dilation_rate)
        else:
            out = layer.convolution_op(inputs, kernel)
        if layer.use_bias:
            out = out + layer.bias
        return layer.activation(out) if layer.activation is not None else out

    def compute_output_shape(self, input_shape):
        return self.inner.compute_output_shape(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "layer": keras.layers.serialize(self.inner),
            "bitwidth": self.bitwidth,
            "channels": self.channels,
            "learn_range": self.learn_range,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = keras.layers.deserialize(config["layer"])
        return cls(**config)

    def encoding(self) -> Encoding:
        k_max = np.abs(self.k_max.numpy()).astype(F32) + F32(1e-12)
        return encoding_from_range(-k_max, k_max, self.bitwidth, symmetric=True, strict=True)


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
    quantizers = {name: LearnedFakeQuant(q.bitwidth, learn_ranges, name=q.name) for name, q in sim.output_quantizers.items()}
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
            target.k_max.assign(np.maximum(np.abs(enc.min), np.abs(enc.max)).astype(F32))
        else:
            target.set_weights(layer.get_weights())
    for name, q in quantizers.items():
        enc = sim.output_quantizers[name].encoding
        q.q_min.assign(F32(enc.min[0]))
        q.q_max.assign(F32(enc.max[0]))
    return qat


def ends_in_softmax(model: keras.Model, output: int = 0) -> bool:
    """Whether the (flat) model's ``output``-th output is a softmax's, i.e. probabilities rather than logits."""
    last = producer(keras.tree.flatten(model.outputs)[output])
    while isinstance(last, PASSTHROUGH_TYPES):
        last = producer(last.input)
    return activation_name(last) == "softmax" if isinstance(last, keras.layers.Layer) else False


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
) -> QATResult:
    """Fine-tune a calibrated sim (weights and, with ``learn_ranges``, quantizer ranges) on ``(x, y)``
    batches: a ``tf.data`` pipeline or a :class:`~workbench.data.dataset.Dataset` over labelled batches. A
    multi-output model trains on its ``output``-th output (the classifier); the other heads keep their weights."""
    if isinstance(train_batches, Dataset):
        train_batches = train_batches.labelled_tf_data()
    qat = build_qat_model(sim, learn_ranges)
    trainable = qat if output is None else keras.Model(qat.inputs, keras.tree.flatten(qat.outputs)[output])
    schedule = keras.optimizers.schedules.ExponentialDecay(learning_rate, decay_steps=max(1, decay_steps), decay_rate=0.5)
    opt = keras.optimizers.Adam(schedule) if optimizer == "adam" else keras.optimizers.SGD(schedule, momentum=0.9)
    from_logits = not ends_in_softmax(sim.fp_model, output or 0)
    if not from_logits:
        log.info("the model ends in a softmax: QAT trains with from_logits=False")
    trainable.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits), metrics=["accuracy"])
    initial = {q.name: (float(q.q_min.numpy()), float(q.q_max.numpy())) for q in qat.layers if isinstance(q, LearnedFakeQuant)}

    class _Report(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            interrupts.checkpoint()

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            log.info(
                "QAT epoch %d/%d: loss %.4f, val top1 %.4f",
                epoch + 1,
                epochs,
                logs.get("loss", float("nan")),
                logs.get("val_accuracy", float("nan")),
            )
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
    params = {name: layers[name].encoding() for name in sim.param_quantizers}
    trained = apply_edit(sim.fp_model, GraphEdit())  # a fresh copy; every layer's trained weights go into it
    for layer in trained.layers:
        source = layers[layer.name]
        if layer.weights:  # other trainable layers (e.g. a float affine) keep their new values too
            layer.set_weights((source.inner if isinstance(source, QuantizedKernel) else source).get_weights())
    outputs = {name: layers[q.name].encoding() for name, q in sim.output_quantizers.items()}
    return QATResult(trained, params, outputs, dict(history.history), initial)


def simulate_trained(result: QATResult, settings: QuantSettings) -> QuantizationSimModel:
    """Our exact sim of the trained weights with the learned encodings."""
    sim = QuantizationSimModel(result.model, settings)
    sim.set_encodings(result.param_encodings, result.output_encodings)
    return sim
