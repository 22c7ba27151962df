"""TFLite's integer kernels that are not the float formula (quantsim/runtime.py), against the LiteRT interpreter."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from workbench.options import QuantSettings
from workbench.quantsim.runtime import hard_swish_int8
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over
from workbench.quantsim.tflite import convert_to_int8_tflite, integer_report, tensor_agreement

TFLITE = QuantSettings(per_channel=True, strict_symmetric=True, target="tflite")


def _one_op_model(lo: float, hi: float, out_lo: float, out_hi: float) -> bytes:
    """An int8 TFLite model of one HARD_SWISH on a [lo, hi] input grid and an [out_lo, out_hi] output grid."""

    class HardSwish(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 256], tf.float32)])
        def f(self, x):
            x = tf.quantization.fake_quant_with_min_max_args(x, lo, hi, num_bits=8)
            y = x * tf.nn.relu6(x + 3.0) / 6.0
            return tf.quantization.fake_quant_with_min_max_args(y, out_lo, out_hi, num_bits=8)

    module = HardSwish()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.f.get_concrete_function()], module)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


@pytest.mark.parametrize("lo,hi,out_lo,out_hi", [(-6.2, 9.1, -0.4, 10.0), (-1.3, 1.9, -0.375, 2.0), (-0.37, 40.0, -0.5, 44.0)])
def test_hard_swish_kernel_is_the_runtimes_on_every_int8_input(lo, hi, out_lo, out_hi):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=_one_op_model(lo, hi, out_lo, out_hi))
    interpreter.allocate_tensors()
    assert [op["op_name"] for op in interpreter._get_ops_details()] == ["HARD_SWISH"]
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    q = np.arange(-128, 128, dtype=np.int8)
    interpreter.set_tensor(inp["index"], q[None])
    interpreter.invoke()
    runtime = interpreter.get_tensor(out["index"])[0]
    (s_in, z_in), (s_out, z_out) = inp["quantization"], out["quantization"]
    np.testing.assert_array_equal(hard_swish_int8(q, s_in, z_in, s_out, z_out), runtime)


def test_the_float_formula_is_not_the_kernel():
    """Why the table exists: round(hard_swish(x)/Δ) is a step off the integer kernel on some inputs."""
    q = np.arange(-128, 128, dtype=np.int8)
    s_in, z_in, s_out, z_out = np.float32(3.2 / 255), -24, np.float32(2.375 / 255), -88  # a [-1.3, 1.9] input grid
    x = s_in * (q.astype(np.float32) - z_in)
    formula = np.clip(np.rint(x * np.clip(x + 3, 0, 6) / 6 / s_out) + z_out, -128, 127)
    kernel = hard_swish_int8(q, s_in, z_in, s_out, z_out)
    assert 0 < np.count_nonzero(kernel != formula) and np.max(np.abs(kernel - formula)) == 1


def _squeeze_excite_net():
    """MobileNetV3's pieces: conv → hard-swish → squeeze-excite with hard-sigmoid (ReLU6(x + 3) · 1/6) → dense."""
    i = keras.Input((8, 8, 3))
    x = keras.layers.Activation("hard_swish", name="hswish")(keras.layers.Conv2D(8, 3, padding="same", name="conv")(i))
    s = keras.layers.Conv2D(8, 1, name="se_conv")(keras.layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x))
    s = keras.layers.ReLU(6.0, name="se_relu6")(s + 3.0) * (1.0 / 6.0)
    x = keras.layers.Multiply(name="se_mul")([x, s])
    return keras.Model(i, keras.layers.Dense(4, name="dense")(keras.layers.Flatten()(x)))


def test_tflite_target_reads_hard_swish_from_the_runtime_kernel_and_hard_sigmoid_is_one_group():
    keras.utils.set_random_seed(1)
    model = _squeeze_excite_net()
    rng = np.random.default_rng(0)
    images = (2.0 * rng.normal(size=(64, 8, 8, 3))).astype(np.float32)
    sim = QuantizationSimModel(model, TFLITE)
    # x + 3 feeds the ReLU6: one supergroup, quantized once after the ReLU6 (TFLite fuses it into the ADD)
    adds = [n for n in sim.graph.order if n.startswith("add")]
    assert adds and all(n not in sim.output_quantizers and "supergroup" in sim.plan.skipped[n] for n in adds)
    sim.compute_encodings(forward_pass_over([images[:32]]))
    blob = convert_to_int8_tflite(sim)
    assert integer_report(blob)["float_tensors"] == []
    rows = {r["layer"]: r for r in tensor_agreement(sim, blob, images)}
    assert rows["hswish"]["exact %"] == 100.0, rows["hswish"]
    # with the table off the same sim computes the float formula: further from the runtime on this tensor
    sim.integer_activations["hswish"].switch(False)
    off = {r["layer"]: r for r in tensor_agreement(sim, blob, images)}
    assert off["hswish"]["exact %"] < 100.0, off["hswish"]
    sim.integer_activations["hswish"].switch(True)
    # switching quantizers off (weights-in-float checks, AMP's probes) turns the table off with them
    with sim.switchable() as enable:
        enable(set(), set(sim.output_quantizers) - {"conv"})
        assert int(sim.integer_activations["hswish"].enabled.numpy()) == 0
    assert int(sim.integer_activations["hswish"].enabled.numpy()) == 1
