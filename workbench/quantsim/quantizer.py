"""The activation quantizer: an ordinary, serialisable Keras layer.

In ``quantize`` mode it computes Δ·clip(round(x/Δ), o, o + steps), which equals
Δ·(clamp(round(x/Δ) − o, 0, steps) + o): AIMET's grid and round-half-to-even, in four element-wise
kernels (TF's fused fake-quant op is faster but rounds half up: bench/quantsim_overhead.py).
In ``calibrate`` mode it passes x through and feeds
an :class:`EncodingAnalyzer` (TensorFlow ops: statistics stay on the device); in ``passthrough`` mode it is the identity.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from workbench.options import Rounding
from workbench.quantsim.analyzers import EncodingAnalyzer
from workbench.quantsim.encodings import F32, Encoding

QUANTIZE, CALIBRATE, PASSTHROUGH = "quantize", "calibrate", "passthrough"
# quantize or pass through as a boolean variable says, without retracing (per-layer analysis)
SWITCHABLE = "switchable"


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
        if mode not in (QUANTIZE, CALIBRATE, PASSTHROUGH, SWITCHABLE):
            raise ValueError(f"mode={mode!r} is not allowed: {QUANTIZE}, {CALIBRATE}, {PASSTHROUGH} or {SWITCHABLE}")
        # a saved sim reloads quantizing (its grid lives in the scale/q_min/q_max weights); calibration
        # needs an analyzer and switching a variable, neither of which is saved
        self.mode = {CALIBRATE: PASSTHROUGH, SWITCHABLE: QUANTIZE}.get(mode, mode)
        self.switch: tf.Variable | None = None
        self.analyzer: EncodingAnalyzer | None = None
        self._seed_gen = keras.random.SeedGenerator(self.seed) if self.rounding is Rounding.stochastic else None

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(), initializer="ones", trainable=False)
        self.q_min = self.add_weight(name="q_min", shape=(), initializer="zeros", trainable=False)
        self.q_max = self.add_weight(name="q_max", shape=(), initializer="ones", trainable=False)
        super().build(input_shape)

    def start_calibration(self, analyzer: EncodingAnalyzer) -> None:
        """Observe into ``analyzer`` from now on; its statistics live in TensorFlow variables."""
        self.analyzer = analyzer

    def finish_calibration(self) -> EncodingAnalyzer:
        """The analyzer with every statistic in it; the quantizer lets go of it."""
        analyzer, self.analyzer = self.analyzer, None
        if analyzer is None:
            raise RuntimeError(f"{self.name}: start_calibration was not called")
        return analyzer

    def set_encoding(self, enc: Encoding) -> None:
        """Load an encoding and quantize from now on."""
        self.load_grid(enc)
        self.mode = QUANTIZE

    def load_grid(self, enc: Encoding) -> None:
        """Load an encoding into the grid variables only (q_min/q_max: the integer limits o and o + steps):
        a traced model picks it up without retracing."""
        self.encoding = enc
        self.scale.assign(F32(enc.scale[0]))
        self.q_min.assign(F32(enc.offset[0]))
        self.q_max.assign(F32(enc.offset[0] + enc.steps))

    def _observe(self, x) -> None:
        if self.analyzer is None:
            raise RuntimeError(f"{self.name}: calibrate mode needs an analyzer (QuantizationSimModel.compute_encodings sets it)")
        # the statistics (min/max or histogram) are reduced where the tensor lives, inside the traced step
        self.analyzer.update(x)

    def call(self, inputs):
        if self.mode == PASSTHROUGH:
            return inputs
        if self.mode == CALIBRATE:
            self._observe(inputs)
            return inputs
        if self.mode == SWITCHABLE:
            if self.switch is None:
                raise RuntimeError(f"{self.name}: switchable mode needs its switch variable (QuantizationSimModel.switchable sets it)")
            return tf.cond(self.switch, lambda: self._quantize(inputs), lambda: tf.identity(inputs))
        return self._quantize(inputs)

    def _quantize(self, inputs):
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
