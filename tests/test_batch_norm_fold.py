"""BN folding: exact function preservation, every fold direction, and what stays unfolded."""

import keras
import numpy as np
import pytest

from helpers import REFERENCE_MODEL_IDS, REFERENCE_MODELS, randomize_batch_norms, relative_error
from workbench.graph.layers import ChannelAffine
from workbench.models.mnist_mobilenet import build_mnist_mobilenet
from workbench.techniques import fold_batch_norms

F32 = np.float32


def _x(shape, n=4, seed=1):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(F32)


@pytest.mark.parametrize("build, shape", REFERENCE_MODELS, ids=REFERENCE_MODEL_IDS)
def test_folding_preserves_outputs(build, shape):
    model = randomize_batch_norms(build())
    x = _x(shape)
    before = [w.copy() for w in model.get_weights()]
    folded, report = fold_batch_norms(model)
    assert relative_error(model(x).numpy(), folded(x).numpy()) < 1e-4
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    assert len(report.folded) == sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    for a, b in zip(before, model.get_weights()):  # the input model is untouched
        np.testing.assert_array_equal(a, b)


def _set_bn(model, seed=0):
    return randomize_batch_norms(model, seed)


def test_backward_fold_formula_and_bias_creation():
    i = keras.Input((5, 5, 2))
    x = keras.layers.Conv2D(3, 3, use_bias=False, name="conv")(i)
    model = _set_bn(keras.Model(i, keras.layers.BatchNormalization(name="bn")(x)))
    folded, report = fold_batch_norms(model)
    gamma, beta, mean, var = model.get_layer("bn").get_weights()
    sigma = np.sqrt(var + model.get_layer("bn").epsilon)
    kernel, bias = folded.get_layer("conv").get_weights()
    np.testing.assert_allclose(kernel, model.get_layer("conv").kernel.numpy() * gamma / sigma, rtol=1e-6)
    np.testing.assert_allclose(bias, beta - mean * gamma / sigma, rtol=1e-5, atol=1e-6)
    assert report.folded == [("bn", "conv", "backward")] and "conv" in report.output_bn
    np.testing.assert_array_equal(report.output_bn["conv"].gamma, gamma)


def test_depthwise_and_dense_fold():
    i = keras.Input((6, 6, 3))
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(i)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(4, name="dense")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    model = _set_bn(keras.Model(i, x))
    folded, report = fold_batch_norms(model)
    assert {f[0] for f in report.folded} == {"bn1", "bn2"}
    x = _x((6, 6, 3))
    assert relative_error(model(x).numpy(), folded(x).numpy()) < 1e-5


def test_forward_fold_into_a_valid_conv_and_through_flatten():
    i = keras.Input((6, 6, 3))
    x = keras.layers.BatchNormalization(name="bn_in")(i)
    x = keras.layers.Conv2D(4, 3, padding="valid", name="conv")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.BatchNormalization(name="bn_mid")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(2, name="dense")(x)
    model = _set_bn(keras.Model(i, x))
    folded, report = fold_batch_norms(model)
    assert ("bn_in", "conv", "forward") in report.folded and ("bn_mid", "dense", "forward") in report.folded
    assert "conv" in report.input_bn
    x = _x((6, 6, 3))
    assert relative_error(model(x).numpy(), folded(x).numpy()) < 1e-5


def test_unfoldable_bns_become_affine_with_a_reason():
    i = keras.Input((6, 6, 3))
    a = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv_relu")(i)
    x = keras.layers.BatchNormalization(name="bn_after_relu")(a)  # conv applies ReLU first
    x = keras.layers.Add(name="add")([x, i])
    x = keras.layers.BatchNormalization(name="bn_after_add")(x)
    x = keras.layers.Conv2D(2, 3, padding="same", name="same_conv")(x)  # zero padding: no forward fold
    model = _set_bn(keras.Model(i, x))
    folded, report = fold_batch_norms(model)
    assert report.affine == ["bn_after_relu", "bn_after_add"]
    assert "applies relu" in report.skipped["bn_after_relu"]
    assert "zero-pads" in report.skipped["bn_after_add"]
    assert isinstance(folded.get_layer("bn_after_add"), ChannelAffine)
    x = _x((6, 6, 3))
    assert relative_error(model(x).numpy(), folded(x).numpy()) < 1e-5


def test_folded_model_saves_and_loads(tmp_path):
    model = _set_bn(build_mnist_mobilenet(width=8))
    folded, _ = fold_batch_norms(model)
    path = tmp_path / "folded.keras"
    folded.save(path)
    again = keras.models.load_model(path, compile=False)
    x = _x((28, 28, 1))
    np.testing.assert_allclose(again(x).numpy(), folded(x).numpy(), rtol=1e-6)
