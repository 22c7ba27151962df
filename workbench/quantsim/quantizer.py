"""The quantizer: one serialisable Keras layer for the sim, range-learning QAT and the TFLite conversion graph.

Its mode lives in a variable (as TF-MOT's quantizers keep their state in variables), so switching a traced
model between modes retraces nothing. Which modes a quantizer can take is fixed when it is made (``modes``):
the sim's switch between ``PASSTHROUGH`` and ``QUANTIZE`` (a ``tf.cond`` on the variable, weighed by
``bench/quantsim_overhead.py``); QAT's and the conversion graph's are ``LEARN`` alone (no branch, so the
converter reads a plain fake-quant op).

- ``QUANTIZE``: Δ·clip(round(x/Δ), o, o + steps), which equals Δ·(clamp(round(x/Δ) − o, 0, steps) + o): AIMET's
  grid and round-half-to-even, from the grid variables ``scale``, ``q_min``, ``q_max``. On the CPU one custom
  kernel computes it (``quantsim.fused``); elsewhere, or where that kernel cannot be built, four element-wise
  TensorFlow ops give the same values (TF's fused fake-quant op is one kernel too but rounds half up:
  bench/quantsim_overhead.py).
- ``LEARN``: TF's fake-quant on the range variables (``range_min``/``range_max``, per tensor or per channel),
  whose gradients train the range (range-learning QAT). A ``symmetric`` quantizer learns one range
  ±(|range_max| + ε) on the narrow grid (strict symmetric weights); the others learn min and max apart. A
  quantizer that does not learn its range (the TFLite conversion graph, QAT with fixed ranges) keeps it as plain
  values, constants in the traced graph: the converter reads them with no variable to freeze (with variables
  the conversion took 3× as long, measured).
- ``PASSTHROUGH``: the identity.

Calibration is not a mode: while an :class:`EncodingAnalyzer` is attached (``start_calibration``), a step traced
then passes its input through and feeds the analyzer (TensorFlow ops: statistics stay on the device).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

import keras
import numpy as np
import tensorflow as tf
import tensorflow.experimental.numpy as tnp

from workbench.graph.layers import pre_activation
from workbench.options import Rounding
from workbench.quantsim.analyzers import EncodingAnalyzer
from workbench.quantsim.encodings import F32, Encoding, encoding_from_range, num_steps
from workbench.quantsim.fused import quantize_dequantize_op
from workbench.quantsim.rules import channels_last, from_channels_last, quantized_weight, rule_for


class Mode(IntEnum):
    PASSTHROUGH = 0
    QUANTIZE = 1
    LEARN = 2


SIM_MODES = (Mode.PASSTHROUGH, Mode.QUANTIZE)
EPSILON = 1e-12  # keeps a learned symmetric range above zero


def _modes(modes: Sequence) -> tuple[Mode, ...]:
    out = tuple(Mode(m) if not isinstance(m, str) else Mode[m.upper()] for m in modes)
    if not out or len(set(out)) != len(out):
        raise ValueError(f"modes={list(modes)!r} is not allowed: one or more of {', '.join(m.name.lower() for m in Mode)}, each once")
    return out


@keras.saving.register_keras_serializable(package="workbench")
class FakeQuant(keras.layers.Layer):
    """Quantize-dequantize of a tensor: a layer output, a model input, or (inside :class:`QuantizedKernel`) a weight."""

    def __init__(
        self,
        bitwidth: int = 8,
        symmetric: bool = False,
        rounding: str = "nearest",
        seed: int = 0,
        mode: int | str = Mode.PASSTHROUGH,
        modes: Sequence = SIM_MODES,
        channels: int = 1,
        narrow_range: bool = False,
        learn_range: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.bitwidth = int(bitwidth)
        self.symmetric = bool(symmetric)
        self.rounding = Rounding(rounding)
        self.seed = int(seed)
        self.modes = _modes(modes)
        self.initial_mode = _modes([mode])[0]
        if self.initial_mode not in self.modes:
            raise ValueError(f"mode={self.initial_mode.name.lower()} is not one of this quantizer's modes ({self._mode_names()})")
        self.channels = int(channels)
        self.narrow_range = bool(narrow_range) or self.symmetric
        self.learn_range = bool(learn_range)
        self.analyzer: EncodingAnalyzer | None = None
        self._fixed: tuple[np.ndarray, np.ndarray] | None = None  # a range that is not learned: plain values
        self._seed_gen = keras.random.SeedGenerator(self.seed) if self.rounding is Rounding.stochastic else None

    def _mode_names(self) -> str:
        return ", ".join(m.name.lower() for m in self.modes)

    def build(self, input_shape):
        if len(self.modes) > 1:  # a quantizer of one mode needs no switch
            self.mode = self.add_weight(
                name="mode", shape=(), dtype="int32", initializer=keras.initializers.Constant(int(self.initial_mode)), trainable=False
            )
        if Mode.QUANTIZE in self.modes:
            self.scale = self.add_weight(name="scale", shape=(), initializer="ones", trainable=False)
            self.q_min = self.add_weight(name="q_min", shape=(), initializer="zeros", trainable=False)
            self.q_max = self.add_weight(name="q_max", shape=(), initializer="ones", trainable=False)
        if Mode.LEARN in self.modes and self.learn_range:
            shape = (self.channels,)
            if not self.symmetric:
                self.range_min = self.add_weight(name="range_min", shape=shape, initializer="zeros", trainable=self.learn_range)
            self.range_max = self.add_weight(name="range_max", shape=shape, initializer="ones", trainable=self.learn_range)
        super().build(input_shape)

    # ----------------------------------------------------------------- mode
    def set_mode(self, mode: Mode) -> None:
        """Switch to ``mode`` (one of ``modes``): a variable, so traced steps pick it up without retracing."""
        if Mode(mode) not in self.modes:
            raise ValueError(f"{self.name}: mode {Mode(mode).name.lower()} is not one of its modes ({self._mode_names()})")
        if len(self.modes) > 1:
            self.mode.assign(int(mode))

    @property
    def current_mode(self) -> Mode:
        return Mode(int(self.mode.numpy())) if len(self.modes) > 1 else self.modes[0]

    # ----------------------------------------------------------------- calibration and grids
    def start_calibration(self, analyzer: EncodingAnalyzer) -> None:
        """Steps traced from now on pass their input through and feed ``analyzer`` (its statistics are variables)."""
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
        self.set_mode(Mode.QUANTIZE)

    def load_grid(self, enc: Encoding) -> None:
        """Load an encoding into the grid variables only (q_min/q_max: the integer limits o and o + steps):
        a traced model picks it up without retracing."""
        self.encoding = enc
        self.scale.assign(F32(enc.scale[0]))
        self.q_min.assign(F32(enc.offset[0]))
        self.q_max.assign(F32(enc.offset[0] + enc.steps))

    def set_range(self, lo: np.ndarray | float, hi: np.ndarray | float) -> None:
        """Load a real range (min and max, or ±max for a symmetric quantizer): into the range variables, or kept as
        values when the range is not learned."""
        shape = (self.channels,)
        if not self.learn_range:
            hi = np.broadcast_to(np.maximum(np.abs(lo), np.abs(hi)) if self.symmetric else hi, shape).astype(F32)
            lo = -hi if self.symmetric else np.broadcast_to(lo, shape).astype(F32)
            self._fixed = (lo, hi)
            return
        if self.symmetric:
            self.range_max.assign(np.broadcast_to(np.maximum(np.abs(lo), np.abs(hi)), shape).astype(F32))
        else:
            self.range_min.assign(np.broadcast_to(lo, shape).astype(F32))
            self.range_max.assign(np.broadcast_to(hi, shape).astype(F32))

    def learned_range(self) -> tuple[np.ndarray, np.ndarray]:
        """The range the ``LEARN`` form quantizes over now, as float32 arrays (one value per channel)."""
        if not self.learn_range:
            if self._fixed is None:
                raise RuntimeError(f"{self.name}: its range is not set (set_range)")
            lo, hi = self._fixed
            return (lo - F32(EPSILON), hi + F32(EPSILON)) if self.symmetric else (lo, hi)
        if self.symmetric:
            hi = np.abs(self.range_max.numpy()).astype(F32) + F32(EPSILON)
            return -hi, hi
        return self.range_min.numpy().astype(F32), self.range_max.numpy().astype(F32)

    def learned_encoding(self) -> Encoding:
        """The grid of the learned range: a symmetric one's strict symmetric grid; otherwise the grid TF's
        fake-quant uses for that min/max (the zero point nudged to an integer)."""
        lo, hi = self.learned_range()
        if self.symmetric:
            return encoding_from_range(lo, hi, self.bitwidth, symmetric=True, strict=True)
        steps = num_steps(self.bitwidth)
        scale = F32(max(float(hi[0]) - float(lo[0]), EPSILON) / steps)  # the span in float64, then a float32 scale
        zero_point = float(np.clip(np.round(-float(lo[0]) / scale), 0, steps))
        return Encoding(self.bitwidth, steps, False, np.array([scale], F32), np.array([-zero_point], F32))

    # ----------------------------------------------------------------- forward
    def call(self, inputs):
        if self.analyzer is not None:
            self.analyzer.update(inputs)  # reduced where the tensor lives, inside the traced step
            return inputs
        if len(self.modes) == 1:
            return self._form(self.modes[0], inputs)
        branches = [lambda m=m: self._form(m, inputs) for m in self.modes]
        if len(branches) == 2:  # the sim's pair: one tf.cond on the mode variable
            return tf.cond(tf.equal(self.mode.value, int(self.modes[1])), branches[1], branches[0])
        position = tf.constant([self.modes.index(m) if m in self.modes else 0 for m in Mode], tf.int32)  # mode → branch
        return tf.switch_case(tf.gather(position, self.mode.value), branches)

    def _form(self, mode: Mode, inputs):
        if mode is Mode.QUANTIZE:
            return self._quantize(inputs)
        if mode is Mode.LEARN:
            return self._learned(inputs)
        return tf.identity(inputs)

    def _quantize(self, inputs):
        op = quantize_dequantize_op() if self._seed_gen is None and inputs.dtype == tf.float32 else None
        if op is None:
            return self._quantize_four_ops(inputs)
        return op(inputs, self.scale.value, self.q_min.value, self.q_max.value)  # the same values in one kernel

    def _quantize_four_ops(self, inputs):
        scaled = inputs / self.scale.value
        if self._seed_gen is None:
            rounded = tf.math.rint(scaled)  # round half to even
        else:
            rounded = tf.floor(scaled + keras.random.uniform(tf.shape(inputs), seed=self._seed_gen, dtype=inputs.dtype))
        return tf.clip_by_value(rounded, self.q_min.value, self.q_max.value) * self.scale.value

    def _learned(self, inputs):
        if not self.learn_range:  # a fixed range: constants in the traced graph (the converter reads them)
            lo, hi = self.learned_range()
            if self.channels == 1:
                return tf.quantization.fake_quant_with_min_max_args(
                    inputs, float(lo[0]), float(hi[0]), num_bits=self.bitwidth, narrow_range=self.narrow_range
                )
            lo, hi = tf.constant(lo), tf.constant(hi)
        elif self.symmetric:
            hi = tf.abs(self.range_max.value) + EPSILON
            lo = -hi
        else:
            lo, hi = self.range_min.value, self.range_max.value
        if self.channels > 1:
            return tf.quantization.fake_quant_with_min_max_vars_per_channel(
                inputs, lo, hi, num_bits=self.bitwidth, narrow_range=self.narrow_range
            )
        return tf.quantization.fake_quant_with_min_max_vars(inputs, lo[0], hi[0], num_bits=self.bitwidth, narrow_range=self.narrow_range)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            bitwidth=self.bitwidth,
            symmetric=self.symmetric,
            rounding=self.rounding.value,
            seed=self.seed,
            mode=int(self.initial_mode),  # the saved mode variable restores the current one
            modes=[int(m) for m in self.modes],
            channels=self.channels,
            narrow_range=self.narrow_range,
            learn_range=self.learn_range,
        )
        return config


@keras.saving.register_keras_serializable(package="workbench")
class QuantizedKernel(keras.layers.Layer):
    """A layer whose quantized weight (``quantsim.rules``) goes through a :class:`FakeQuant` (``LEARN``) on every call:
    range-learning QAT trains the weight and its range; the TFLite conversion graph fixes the sim's range there.

    Conv/Depthwise/Dense compute with the fake-quantized kernel directly; any other type (EinsumDense,
    Conv*Transpose, Embedding, Conv1D/3D) runs its own ``call`` with the weight's variable read as the
    fake-quantized tensor (``keras.StatelessScope``), so gradients reach the weight and its range.
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        bitwidth: int = 8,
        channels: int = 1,
        learn_range: bool = True,
        symmetric: bool = True,
        narrow_range: bool = True,
        **kwargs,
    ):
        super().__init__(name=kwargs.pop("name", layer.name), **kwargs)
        self.inner = layer
        rule = rule_for(layer)
        # an unbuilt clone has no weight yet to look at: its rule names it (an Embedding's is ``embeddings``)
        self.weight = quantized_weight(layer) or (rule.weight if rule is not None and rule.weight else "kernel")
        self.channel_axis = rule.channel_axis if rule is not None else -1
        self.depthwise = self.channel_axis == "depthwise"
        self.quantizer = FakeQuant(
            bitwidth,
            symmetric,
            mode=Mode.LEARN,
            modes=(Mode.LEARN,),
            channels=channels,
            narrow_range=narrow_range,
            learn_range=learn_range,
            name=f"{self.name}_kernel_quant",
        )

    @property
    def bitwidth(self) -> int:
        return self.quantizer.bitwidth

    def build(self, input_shape):
        self.inner.build(input_shape)
        self.quantizer.build(None)
        super().build(input_shape)

    def quantized_kernel(self):
        k = getattr(self.inner, self.weight)
        k = k.value if hasattr(k, "value") else k
        if self.quantizer.channels == 1:  # one range: the layout does not matter
            return self.quantizer(k)
        view = channels_last(k, self.channel_axis, tnp)
        return from_channels_last(self.quantizer(view), self.channel_axis, k.shape, tnp)

    def call(self, inputs):
        layer, kernel = self.inner, self.quantized_kernel()
        plain = type(layer) in (keras.layers.Dense, keras.layers.DepthwiseConv2D, keras.layers.Conv2D)
        if not plain or getattr(layer, "data_format", "channels_last") != "channels_last":
            with keras.StatelessScope(state_mapping=[(getattr(layer, self.weight), kernel)]):
                return layer(inputs)
        # the plain TF ops the TFLite converter maps to int8 kernels (one MatMul for a rank-2 Dense input)
        out = pre_activation(layer, inputs, kernel)
        return layer.activation(out) if layer.activation is not None else out

    def compute_output_shape(self, input_shape):
        return self.inner.compute_output_shape(input_shape)

    def get_config(self):
        q = self.quantizer
        return {
            **super().get_config(),
            "layer": keras.layers.serialize(self.inner),
            "bitwidth": q.bitwidth,
            "channels": q.channels,
            "learn_range": q.learn_range,
            "symmetric": q.symmetric,
            "narrow_range": q.narrow_range,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = keras.layers.deserialize(config["layer"])
        return cls(**config)
