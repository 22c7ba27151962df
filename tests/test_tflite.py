"""The int8 TFLite export: fully integer, close to the sim, and clear when conversion fails."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import context_of
from workbench.data.synthetic import make_synthetic
from workbench.evaluation.accuracy import evaluate_top1
from workbench.models.training import train_classifier
from workbench.options import QuantSettings
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over
from workbench.quantsim.tflite import TFLiteConversionError, convert_to_int8_tflite, evaluate_tflite_top1, integer_report
from workbench.results import StageResult
from workbench.stages.tflite_check import check_tflite
from workbench.techniques import equalize_model

W8 = QuantSettings(scheme="tf", param_bw=8, output_bw=8, per_channel=True)


def _flat_convnet():
    """conv+BN+ReLU6 → depthwise+BN+ReLU6 → pointwise → add+ReLU → flatten → dense (keeps spatial detail)."""
    i = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(i)
    x = keras.layers.ReLU(6.0, name="relu6")(keras.layers.BatchNormalization(name="bn")(x))
    y = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = keras.layers.ReLU(6.0, name="dw_relu6")(keras.layers.BatchNormalization(name="dw_bn")(y))
    y = keras.layers.Conv2D(8, 1, name="pw")(y)
    x = keras.layers.ReLU(name="relu")(keras.layers.Add(name="add")([x, y]))
    return keras.Model(i, keras.layers.Dense(4, name="dense")(keras.layers.Flatten()(x)))


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    data = make_synthetic(num_train=512, num_val=256, num_classes=4, image_shape=(8, 8, 3), batch_size=32, noise=1.0)
    model = train_classifier(_flat_convnet(), data, 5, 32, 3e-3, False, 0)
    equalized, _ = equalize_model(model)
    sim = QuantizationSimModel(equalized, W8)
    sim.compute_encodings(forward_pass_over(data.calibration_batches(128)))
    return sim, data


def test_int8_tflite_is_fully_integer_and_matches_the_sim(trained):
    sim, data = trained
    blob = convert_to_int8_tflite(sim)
    report = integer_report(blob)
    assert report["input_dtype"] == "int8" and report["output_dtype"] == "int8"
    assert report["float_tensors"] == []
    sim_top1 = evaluate_top1(sim.model, data.val_batches())
    tfl_top1 = evaluate_tflite_top1(blob, data.val_batches())
    assert sim_top1 > 0.5  # the model learned something, so agreement means something
    assert abs(sim_top1 - tfl_top1) <= 0.01, (sim_top1, tfl_top1)


def test_failed_conversion_names_the_layer_and_the_run_goes_on(tmp_path):
    i = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 1, name="conv")(i)
    x = keras.layers.Lambda(lambda t: tf.math.bessel_i0e(t), name="bessel_layer")(x)
    model = keras.Model(i, keras.layers.Dense(2, name="dense")(keras.layers.Flatten()(x)))
    sim = QuantizationSimModel(model, W8)
    sim.compute_encodings(forward_pass_over([np.random.default_rng(0).normal(size=(8, 6, 6, 2)).astype(np.float32)]))
    with pytest.raises(TFLiteConversionError, match="layer 'bessel_layer'"):
        convert_to_int8_tflite(sim)
    result = StageResult(metrics={"sim/top1": 0.5})
    ctx = context_of(model, make_synthetic(num_train=8, num_val=8, image_shape=(6, 6, 2)), W8, tmp_path)
    check_tflite(ctx, sim, str(tmp_path), result)  # recorded, not raised
    assert "bessel_layer" in result.tags["tflite.error"] and "tflite/top1" not in result.metrics


def _agreement(sim, blob, images):
    from workbench.quantsim.tflite import Int8Runner

    runner = Int8Runner(blob)
    runtime, simulated = runner.logits(images), sim.model.predict(images, verbose=0)
    return np.abs(runtime - simulated) / float(runner.lsb), runtime, simulated


@pytest.mark.slow
@pytest.mark.parametrize("per_channel", [False, True])
def test_tflite_target_predicts_the_int8_runtime_logit_by_logit(trained, per_channel):
    """With target=tflite the sim's logits are the runtime's (to the LSB here); the AIMET-config sim's are further off."""
    _, data = trained
    model = trained[0].fp_model
    images = np.concatenate([x.numpy() for x, _ in data.val_batches()])
    exact = {}
    for target, strict in (("aimet", False), ("tflite", True)):
        sim = QuantizationSimModel(model, QuantSettings(per_channel=per_channel, strict_symmetric=strict, target=target))
        sim.compute_encodings(forward_pass_over(data.calibration_batches(128)))
        lsb, runtime, simulated = _agreement(sim, convert_to_int8_tflite(sim), images)
        exact[target] = (float(np.mean(lsb <= 1e-3)), float(lsb.max()))
    assert exact["tflite"][0] >= 0.99 and exact["tflite"][1] <= 1.0, exact
    assert exact["tflite"][0] > exact["aimet"][0], exact
    assert np.mean(runtime.argmax(-1) == simulated.argmax(-1)) >= 0.99
    # tensor by tensor (bench/int8_fidelity.py --tensors): each activation matched by name and shape, never a
    # per-tensor kernel that carries the layer's name and one scale too
    from workbench.quantsim.tflite import tensor_agreement

    rows = tensor_agreement(sim, convert_to_int8_tflite(sim), images[:8])
    assert [r["layer"] for r in rows][-1] == "dense" and len(rows) >= 5, rows


def test_tflite_target_quantizes_biases_at_input_times_weight_scale(trained):
    model = trained[0].fp_model
    sim = QuantizationSimModel(model, QuantSettings(per_channel=True, strict_symmetric=True, target="tflite"))
    sim.compute_encodings(forward_pass_over(trained[1].calibration_batches(64)))
    for name in ("conv", "dw", "pw", "dense"):
        source = sim.input_encoding(name)
        bias_scale = source.scale[0] * sim.param_encodings()[name].scale
        steps = sim.layers_by_name[name].bias.numpy() / bias_scale
        assert source is not None and np.allclose(steps, np.round(steps), atol=1e-3), name
        assert not np.array_equal(sim.layers_by_name[name].bias.numpy(), model.get_layer(name).bias.numpy())


def test_tflite_target_fixes_softmax_grid_and_pooling_keeps_its_input_grid():
    i = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(i)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    out = keras.layers.Dense(3, activation="softmax", name="probs")(keras.layers.Flatten()(x))
    sim = QuantizationSimModel(keras.Model(i, out), QuantSettings(per_channel=True, strict_symmetric=True, target="tflite"))
    sim.compute_encodings(forward_pass_over([np.random.default_rng(0).normal(size=(16, 8, 8, 2)).astype(np.float32)]))
    enc = sim.output_encodings()
    # the fused softmax is split off (graph.flatten): the logits keep a calibrated grid, the softmax the fixed one
    assert enc["probs_softmax"].scale[0] == np.float32(1 / 256) and enc["probs_softmax"].offset[0] == 0
    assert enc["probs"].scale[0] != np.float32(1 / 256)
    assert enc["pool"].scale[0] == enc["conv"].scale[0] and enc["pool"].offset[0] == enc["conv"].offset[0]


def test_tflite_target_rejects_grids_the_runtime_does_not_have():
    with pytest.raises(ValueError, match=r"target=tflite .* needs strict_symmetric=true.*use quant=tflite"):
        QuantSettings(target="tflite")
    with pytest.raises(ValueError, match=r"param_bw=8"):
        QuantSettings(target="tflite", strict_symmetric=True, param_bw=4)


@pytest.mark.slow
def test_the_embedded_models_qat_export_is_fully_integer():
    """The default's qat flow (CLE, per-tensor W8A8, QAT, our sim of the trained weights) converts with no float
    tensor: its logits Dense is one int8 FULLY_CONNECTED, not a float Tensordot (it kept 6 float tensors)."""
    from workbench.models.mnist_mobilenet import build_mnist_mobilenet
    from workbench.techniques.range_learning import simulate_trained, train_qat

    keras.utils.set_random_seed(0)
    model, _ = equalize_model(build_mnist_mobilenet())
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, 32)
    settings = QuantSettings()
    sim = QuantizationSimModel(model, settings)
    sim.compute_encodings(forward_pass_over([x]))
    trained = train_qat(sim, tf.data.Dataset.from_tensor_slices((x, y)).batch(16), 1, 1e-4, 4)
    report = integer_report(convert_to_int8_tflite(simulate_trained(trained, settings)))
    assert report["float_tensors"] == [] and report["input_dtype"] == report["output_dtype"] == "int8"


def test_a_float_tensor_in_the_int8_model_is_named_with_its_cause(tmp_path, caplog):
    i = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 1, name="conv")(i)
    x = keras.ops.sin(x)  # quantized by the sim (an OperationLayer), but TFLite has no int8 SIN: the converter keeps it float
    model = keras.Model(i, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(x)))
    sim = QuantizationSimModel(model, W8)
    sim.compute_encodings(forward_pass_over([np.random.default_rng(0).normal(size=(8, 6, 6, 2)).astype(np.float32)]))
    result = StageResult(metrics={"sim/top1": 0.5})
    ctx = context_of(model, make_synthetic(num_train=8, num_val=8, image_shape=(6, 6, 2), num_classes=2), W8, tmp_path)
    with caplog.at_level("WARNING"):
        check_tflite(ctx, sim, str(tmp_path), result)
    assert result.metrics["tflite/float_tensors"] > 0 and result.tags["tflite.float_tensors"]
    assert "not fully integer" in caplog.text and "coverage.csv" in caplog.text
