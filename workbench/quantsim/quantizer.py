"""The activation quantizer: an ordinary, serialisable Keras layer.

In ``quantize`` mode it computes Δ·clip(round(x/Δ), o, o + steps), which equals
Δ·(clamp(round(x/Δ) − o, 0, steps) + o) and costs five element-wise ops (cheaper
than TF's fake-quant op on CPU). In ``calibrate`` mode it passes x through and feeds
an :class:`EncodingAnalyzer`; in ``passthrough`` mode it is the identity.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from workbench.options import Rounding
from workbench.quantsim.analyzers import EncodingAnalyzer, MinMaxObserver
from workbench.quantsim.encodings import F32, Encoding

QUANTIZE, CALIBRATE, PASSTHROUGH = "quantize", "calibrate", "passthrough"


def _min_max(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.reduce_min(x), tf.reduce_max(x)


def _finite_min_max(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Min and max over the finite values only (+inf / −inf when there are none)."""
    finite = tf.math.is_finite(x)
    return tf.reduce_min(tf.where(finite, x, np.inf)), tf.reduce_max(tf.where(finite, x, -np.inf))


@keras.saving.register_keras_serializable(package="workbench")
class FakeQuant(keras.layers.Layer):
    """Per-tensor quantize-dequantize of a layer output (or a model input)."""

    def __init__(
        self, bitwidth: int = 8, symmetric: bool = False, rounding: str = "nearest", seed: int = 0, mode: str = PASSTHROUGH, **kwargs
    ):
        super().__init__(**kwargs)
        self.bitwidth = int(bitwidth)
        self.symmetric = bool(symmetric)
        self.rounding = Rounding(rounding)
        self.seed = int(seed)
        if mode not in (QUANTIZE, CALIBRATE, PASSTHROUGH):
            raise ValueError(f"mode={mode!r} is not allowed: {QUANTIZE}, {CALIBRATE} or {PASSTHROUGH}")
        # a saved sim reloads quantizing (its grid lives in the scale/q_min/q_max weights); calibration
        # needs an analyzer, which is never saved
        self.mode = PASSTHROUGH if mode == CALIBRATE else mode
        self.analyzer: EncodingAnalyzer | None = None
        self._seed_gen = keras.random.SeedGenerator(self.seed) if self.rounding is Rounding.stochastic else None

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(), initializer="ones", trainable=False)
        self.q_min = self.add_weight(name="q_min", shape=(), initializer="zeros", trainable=False)
        self.q_max = self.add_weight(name="q_max", shape=(), initializer="ones", trainable=False)
        # min/max statistics gathered in the graph during calibration (tf scheme): no host round trip per batch
        self.seen_min = self.add_weight(name="seen_min", shape=(), initializer=keras.initializers.Constant(np.inf), trainable=False)
        self.seen_max = self.add_weight(name="seen_max", shape=(), initializer=keras.initializers.Constant(-np.inf), trainable=False)
        self.seen_batches = self.add_weight(name="seen_batches", shape=(), initializer="zeros", trainable=False)
        super().build(input_shape)

    def start_calibration(self, analyzer: EncodingAnalyzer) -> None:
        """Observe into ``analyzer`` from now on (min/max ones are fed by :meth:`finish_calibration`)."""
        self.analyzer = analyzer
        self.seen_min.assign(np.inf)
        self.seen_max.assign(-np.inf)
        self.seen_batches.assign(0.0)

    def finish_calibration(self) -> EncodingAnalyzer:
        """The analyzer with every statistic in it; the quantizer lets go of it."""
        analyzer, self.analyzer = self.analyzer, None
        if analyzer is None:
            raise RuntimeError(f"{self.name}: start_calibration was not called")
        if isinstance(analyzer.observer, MinMaxObserver) and float(self.seen_batches.numpy()) > 0:
            # the running min of batch minima is the min over all batches: exactly what the host observer computes
            analyzer.update(np.array([self.seen_min.numpy(), self.seen_max.numpy()], F32))
        return analyzer

    def set_encoding(self, enc: Encoding) -> None:
        """Load an encoding; q_min/q_max are the integer grid limits o and o + steps."""
        self.encoding = enc
        self.scale.assign(F32(enc.scale[0]))
        self.q_min.assign(F32(enc.offset[0]))
        self.q_max.assign(F32(enc.offset[0] + enc.steps))
        self.mode = QUANTIZE

    def _observe(self, x) -> None:
        analyzer = self.analyzer
        if analyzer is None:
            raise RuntimeError(f"{self.name}: calibrate mode needs an analyzer (QuantizationSimModel.compute_encodings sets it)")
        if isinstance(analyzer.observer, MinMaxObserver):
            # min and max are exact: reduce where the tensor lives, keep the running values in variables;
            # a finite sum means every value is finite (NaN and ±inf make it non-finite), so the cheap
            # reductions apply; otherwise non-finite values are masked out, as the host observer does
            lo, hi = tf.cond(tf.math.is_finite(tf.reduce_sum(x)), lambda: _min_max(x), lambda: _finite_min_max(x))
            self.seen_min.assign(tf.minimum(self.seen_min, lo))
            self.seen_max.assign(tf.maximum(self.seen_max, hi))
            self.seen_batches.assign_add(1.0)
            return
        if tf.executing_eagerly():
            analyzer.update(np.asarray(x))
        else:

            def observe(v: np.ndarray) -> np.float32:
                analyzer.update(v)
                return np.float32(0)

            tf.numpy_function(observe, [x], tf.float32, stateful=True)

    def call(self, inputs):
        if self.mode == PASSTHROUGH:
            return inputs
        if self.mode == CALIBRATE:
            self._observe(inputs)
            return inputs
        scaled = inputs / self.scale.value
        if self._seed_gen is None:
            rounded = tf.math.rint(scaled)  # round half to even
        else:
            rounded = tf.floor(scaled + keras.random.uniform(tf.shape(inputs), seed=self._seed_gen, dtype=inputs.dtype))
        return tf.clip_by_value(rounded, self.q_min.value, self.q_max.value) * self.scale.value

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(bitwidth=self.bitwidth, symmetric=self.symmetric, rounding=self.rounding.value, seed=self.seed, mode=self.mode)
        return config
