"""TFLite integer kernels that the float formula does not reproduce, emulated for ``quant.target=tflite``.

The int8 ``HARD_SWISH`` kernel computes x·relu6(x + 3)/6 in 16-bit fixed point (TFLite's
``reference_ops::HardSwish``, which the optimized kernel and the XNNPACK delegate match): on a few of the
256 inputs of each tensor its output is one step off round(hard_swish(x)/Δ), and those steps grow through
depth. Its output is a function of the int8 input alone, so the sim reads it from a table of the 256
results (:class:`IntegerActivation`), built from the input and output encodings once they are known.
``tests/test_runtime_kernels.py`` checks the table against the LiteRT interpreter on every input.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from workbench.quantsim.encodings import F32, Encoding

INT16_MIN, INT16_MAX = -32768, 32767


# ----------------------------------------------------------------- TFLite's fixed-point arithmetic
def quantize_multiplier(multiplier: float) -> tuple[int, int]:
    """A real multiplier as (q, shift): multiplier ≈ q·2^(shift − 31), q in [2^30, 2^31) (``QuantizeMultiplier``)."""
    if multiplier == 0:
        return 0, 0
    fraction, shift = math.frexp(multiplier)
    q = int(math.floor(abs(fraction) * 2**31 + 0.5))  # std::round: half away from zero
    if q == 2**31:
        q, shift = q // 2, shift + 1
    if shift < -31:
        return 0, 0
    return q, shift


def int16_multiplier(q31: int) -> int:
    """``DownScaleInt32ToInt16Multiplier``: the high 16 bits of a 32-bit multiplier, rounded."""
    if q31 >= 2**31 - 1 - 2**15:
        return INT16_MAX
    return (q31 + 2**15) >> 16


def _truncating_divide(a: np.ndarray, divisor: int) -> np.ndarray:
    """C's integer division (towards zero)."""
    return np.sign(a) * (np.abs(a) // divisor)


def rounding_doubling_high_mul(a: np.ndarray, b: int) -> np.ndarray:
    """gemmlowp's ``SaturatingRoundingDoublingHighMul`` on int16 values."""
    ab = a.astype(np.int64) * b
    nudge = np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    out = _truncating_divide(ab + nudge, 1 << 15)
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, out)


def doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """TFLite's ``SaturatingDoublingHighMul`` (towards zero, as ARM's SQDMULH) on int16 values."""
    ab = a.astype(np.int64) * b.astype(np.int64)
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, _truncating_divide(ab, 1 << 15))


def rounding_divide_by_pot(x: np.ndarray, exponent: int) -> np.ndarray:
    """gemmlowp's ``RoundingDivideByPOT``: x / 2^exponent, ties away from zero."""
    x = x.astype(np.int64)
    mask = (1 << exponent) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + ((x & mask) > threshold)


def saturating_left_shift(x: np.ndarray, amount: int) -> np.ndarray:
    return np.clip(x.astype(np.int64) * (1 << amount), INT16_MIN, INT16_MAX)


def hard_swish_int8(q: np.ndarray, input_scale: float, input_zero: int, output_scale: float, output_zero: int) -> np.ndarray:
    """TFLite's int8 ``HARD_SWISH`` of the int8 values ``q`` (scales as the flatbuffer's float32)."""
    hires_scale = F32(F32(1.0 / 128.0) * F32(input_scale))
    out_q, out_shift = quantize_multiplier(float(F32(hires_scale / F32(output_scale))))
    relu_q, relu_shift = quantize_multiplier(float(F32(hires_scale / F32(3.0 / 32768.0))))
    if out_shift > 0:
        raise ValueError(f"HARD_SWISH needs an output scale ≥ input scale / 128 (got {output_scale} for input {input_scale})")
    out_m, relu_m = int16_multiplier(out_q), int16_multiplier(relu_q)
    hires = (q.astype(np.int64) - input_zero) * 128  # fits int16: |q − zp| ≤ 255
    preshift = rounding_doubling_high_mul(hires, out_m)
    reluish = hires
    if relu_shift > 0:
        reluish = saturating_left_shift(reluish, relu_shift - 1)
    reluish = rounding_doubling_high_mul(reluish, relu_m)
    if relu_shift > 0:
        reluish = saturating_left_shift(reluish, 1)
    if relu_shift < 0:
        reluish = rounding_divide_by_pot(reluish, -relu_shift)
    reluish = (reluish + (1 << 15)) >> 1
    out = rounding_divide_by_pot(doubling_high_mul(reluish, preshift), -out_shift) + output_zero
    return np.clip(out, -128, 127).astype(np.int8)


KERNELS = {"hard_silu": hard_swish_int8}


def int8_zero_point(enc: Encoding) -> int:
    """The int8 zero point of an 8-bit grid Δ·(k) with k in [o, o + 255]: int8 = k − o − 128."""
    return int(-128 - enc.offset[0])


def activation_table(activation: str, source: Encoding, output: Encoding) -> np.ndarray | None:
    """The float values (on the output grid) of TFLite's integer ``activation`` for each of the input grid's 256
    levels, or None when the runtime computes it in float (not 8-bit, or no integer kernel known)."""
    kernel = KERNELS.get(activation)
    if kernel is None or source.steps != 255 or output.steps != 255 or source.num_channels != 1 or output.num_channels != 1:
        return None
    q = np.arange(-128, 128, dtype=np.int8)
    out = kernel(q, float(source.scale[0]), int8_zero_point(source), float(output.scale[0]), int8_zero_point(output))
    levels = out.astype(np.int64) - int8_zero_point(output)  # back to the sim's k = int8 − zp
    return (levels.astype(F32) * F32(output.scale[0])).astype(F32)


@keras.saving.register_keras_serializable(package="workbench")
class IntegerActivation(keras.layers.Layer):
    """An activation that, once a table is loaded and switched on, returns TFLite's integer kernel's result for its
    (already quantized) input, looked up by the input's grid level; otherwise the float activation. The switch is
    a variable, like :class:`~workbench.quantsim.quantizer.FakeQuant`'s mode, so nothing retraces."""

    def __init__(self, activation: str, **kwargs):
        super().__init__(**kwargs)
        self.activation_name = activation
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        self.table = self.add_weight(name="table", shape=(256,), initializer="zeros", trainable=False)
        self.input_scale = self.add_weight(name="input_scale", shape=(), initializer="ones", trainable=False)
        self.input_offset = self.add_weight(name="input_offset", shape=(), initializer="zeros", trainable=False)
        self.enabled = self.add_weight(name="enabled", shape=(), dtype="int32", initializer="zeros", trainable=False)
        super().build(input_shape)

    def load(self, source: Encoding, table: np.ndarray) -> None:
        self.table.assign(table)
        self.input_scale.assign(F32(source.scale[0]))
        self.input_offset.assign(F32(source.offset[0]))

    def switch(self, on: bool) -> None:
        self.enabled.assign(int(on))

    def call(self, inputs):
        def lookup():
            level = tf.clip_by_value(tf.math.rint(inputs / self.input_scale.value) - self.input_offset.value, 0.0, 255.0)
            return tf.gather(self.table.value, tf.cast(level, tf.int32))

        return tf.cond(tf.equal(self.enabled.value, 1), lookup, lambda: self.activation(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "activation": self.activation_name}
