"""CLE: function preservation, equalised ranges, SQNR gain, high-bias absorption, edge cases."""

import keras
import numpy as np
import pytest

from helpers import REFERENCE_MODEL_IDS, REFERENCE_MODELS, randomize_batch_norms, relative_error
from workbench.graph.layers import ChannelClip
from workbench.options import QuantSettings
from workbench.quantsim.analyzers import compute_tensor_encoding
from workbench.quantsim.encodings import quantize_dequantize, sqnr_db
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over
from workbench.techniques import cross_layer_scale, equalize_model
from workbench.techniques.weight_ranges import kernel_channel_ranges

F32 = np.float32


def _x(shape, n=4, seed=1, low=None):
    rng = np.random.default_rng(seed)
    if low is not None:
        return rng.uniform(low, 1.0, size=(n, *shape)).astype(F32)
    return rng.normal(size=(n, *shape)).astype(F32)


@pytest.mark.parametrize("build, shape", REFERENCE_MODELS, ids=REFERENCE_MODEL_IDS)
def test_cle_preserves_outputs_in_exact_relu6_mode(build, shape):
    model = randomize_batch_norms(build())
    x = _x(shape)
    equalized, report = equalize_model(model, "clip", high_bias_absorption=False)
    assert len(report.sets) > 0
    assert relative_error(model(x).numpy(), equalized(x).numpy()) < 1e-4


def _uneven_pair(activation="relu", padding="valid", seed=0):
    keras.utils.set_random_seed(seed)
    i = keras.Input((8, 8, 3))
    conv1 = keras.layers.Conv2D(6, 3, padding=padding, name="c1")
    x = conv1(i)
    if activation == "relu":
        x = keras.layers.ReLU(name="act")(x)
    elif activation == "relu6":
        x = keras.layers.ReLU(6.0, name="act")(x)
    conv2 = keras.layers.Conv2D(4, 3, padding=padding, name="c2")
    model = keras.Model(i, conv2(x))
    # channel i of conv1 is scaled by spread_i and conv2 undoes it: the same function in
    # float, but per-tensor quantization of conv1 wipes out its small channels (as after BN folding)
    k, b = conv1.get_weights()
    spread = np.geomspace(0.01, 10, 6).astype(F32)
    conv1.set_weights([k * spread, b * spread])
    k2, b2 = conv2.get_weights()
    conv2.set_weights([k2 / spread[None, None, :, None], b2])
    return model


def test_pair_ranges_become_geometric_means():
    model = _uneven_pair()
    r1 = kernel_channel_ranges(model.get_layer("c1").kernel.numpy())
    r2 = np.abs(model.get_layer("c2").kernel.numpy()).max(axis=(0, 1, 3))
    eq, report = cross_layer_scale(model)
    assert report.sets == [("c1", "c2")]
    a1 = kernel_channel_ranges(eq.get_layer("c1").kernel.numpy())
    a2 = np.abs(eq.get_layer("c2").kernel.numpy()).max(axis=(0, 1, 3))
    np.testing.assert_allclose(a1, np.sqrt(r1 * r2), rtol=1e-5)
    np.testing.assert_allclose(a2, np.sqrt(r1 * r2), rtol=1e-5)
    x = _x((8, 8, 3))
    assert relative_error(model(x).numpy(), eq(x).numpy()) < 1e-5


def test_triplet_ranges_become_cube_roots():
    keras.utils.set_random_seed(2)
    i = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(5, 1, name="c1")(i)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.ReLU(name="r2")(x)
    x = keras.layers.Conv2D(4, 1, name="c3")(x)
    x = keras.layers.ReLU(name="r3")(x)
    x = keras.layers.Conv2D(3, 1, name="c4")(x)
    model = keras.Model(i, x)
    c1 = model.get_layer("c1")
    k, b = c1.get_weights()
    c1.set_weights([k * np.geomspace(0.05, 20, 5).astype(F32), b])
    r1 = kernel_channel_ranges(c1.kernel.numpy())
    r2 = kernel_channel_ranges(model.get_layer("dw").kernel.numpy(), depthwise=True)
    r3 = np.abs(model.get_layer("c3").kernel.numpy()).max(axis=(0, 1, 3))
    eq, report = cross_layer_scale(model)
    assert report.sets == [("c1", "dw", "c3"), ("c3", "c4")]
    cube = np.cbrt(r1 * r2 * r3)
    np.testing.assert_allclose(kernel_channel_ranges(eq.get_layer("c1").kernel.numpy()), cube, rtol=1e-5)
    np.testing.assert_allclose(kernel_channel_ranges(eq.get_layer("dw").kernel.numpy(), True), cube, rtol=1e-5)
    # c3's input ranges were cube roots before the (c3, c4) pair rescaled its output channels
    x = _x((8, 8, 3))
    assert relative_error(model(x).numpy(), eq(x).numpy()) < 1e-5


def test_cle_raises_per_tensor_weight_quantization_sqnr():
    model = _uneven_pair()
    eq, _ = cross_layer_scale(model)
    x = _x((8, 8, 3), n=16)
    ref = model(x).numpy()

    def output_sqnr(m):  # per-tensor 6-bit weights, near-float activations
        sim = QuantizationSimModel(m, QuantSettings(scheme="tf", param_bw=6, output_bw=16))
        sim.compute_encodings(forward_pass_over([x]))
        return sqnr_db(ref, sim.model(x).numpy())

    def channel_sqnr(m):  # mean over output channels of the per-tensor kernel quantization SQNR
        k = m.get_layer("c1").kernel.numpy()
        q = quantize_dequantize(k, compute_tensor_encoding(k, "tf", 6, True))
        return np.mean([sqnr_db(k[..., o], q[..., o]) for o in range(k.shape[-1])])

    assert channel_sqnr(eq) > channel_sqnr(model) + 5
    assert output_sqnr(eq) > output_sqnr(model) + 5


def test_never_across_add_concat_pooling_branching_or_dense():
    i = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(3, 1, name="a")(i)
    b = keras.layers.Conv2D(3, 1, name="b")(keras.layers.Add()([a, i]))
    c = keras.layers.Conv2D(3, 1, name="c")(keras.layers.MaxPooling2D(1)(b))
    d1 = keras.layers.Conv2D(3, 1, name="d1")(c)  # c branches into d1 and d2
    d2 = keras.layers.Conv2D(3, 1, name="d2")(c)
    cat = keras.layers.Concatenate()([d1, d2])
    e = keras.layers.Conv2D(3, 1, name="e")(cat)
    out = keras.layers.Dense(2, name="dense")(keras.layers.Flatten()(e))
    _, report = cross_layer_scale(keras.Model(i, out))
    assert report.sets == []
    assert "no CLS neighbour" in report.skipped["a"] and "not a Conv1D/Conv2D" in report.skipped["dense"]


def _absorption_model(activation, beta=4.0, gamma=0.5, seed=0):
    """1×1 conv (1 input channel) → BN with data-true statistics → activation → valid conv."""
    keras.utils.set_random_seed(seed)
    i = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 1, name="c1")(i)
    bn = keras.layers.BatchNormalization(name="bn")
    x = bn(x)
    if activation == "relu":
        x = keras.layers.ReLU(name="act")(x)
    elif activation == "relu6":
        x = keras.layers.ReLU(6.0, name="act")(x)
    x = keras.layers.Conv2D(3, 3, padding="valid", name="c2")(x)
    model = keras.Model(i, x)
    data = _x((6, 6, 1), n=64, seed=3, low=-1.0)  # uniform: |normalised value| <= sqrt(3) < 3
    pre = keras.Model(i, model.get_layer("c1").output)(data).numpy().reshape(-1, 4)
    bn.set_weights([np.full(4, gamma, F32), np.full(4, beta, F32), pre.mean(0), pre.var(0) - bn.epsilon])
    return model, data


@pytest.mark.parametrize("activation", ["relu", "relu6", None])
def test_high_bias_absorption_moves_bias_by_the_formula_and_preserves_outputs(activation):
    model, data = _absorption_model(activation)
    plain, _ = equalize_model(model, "clip", high_bias_absorption=False)
    absorbed, report = equalize_model(model, "clip", high_bias_absorption=True)
    link = report.links[0]
    s = link.scale
    beta, gamma = 4.0 / s, 0.5 / s
    c = beta if activation is None else np.maximum(0, beta - 3 * np.abs(gamma))
    if activation == "relu6":
        c = np.minimum(c, 6.0 / s)
    np.testing.assert_allclose(absorbed.get_layer("c1").bias.numpy(), plain.get_layer("c1").bias.numpy() - c, rtol=1e-5, atol=1e-5)
    k2 = plain.get_layer("c2").kernel.numpy()
    expected_b2 = plain.get_layer("c2").bias.numpy() + np.einsum("hwio,i->o", k2, c)
    np.testing.assert_allclose(absorbed.get_layer("c2").bias.numpy(), expected_b2, rtol=1e-5, atol=1e-5)
    assert np.all(c > 0)
    assert relative_error(model(data).numpy(), absorbed(data).numpy()) < 1e-5
    if activation == "relu6":
        assert isinstance(absorbed.get_layer("act"), ChannelClip)


def test_absorption_does_nothing_when_the_3_sigma_assumption_gives_nothing():
    model, data = _absorption_model("relu", beta=0.5, gamma=1.0)
    plain, _ = equalize_model(model, high_bias_absorption=False)
    absorbed, report = equalize_model(model, high_bias_absorption=True)
    np.testing.assert_array_equal(absorbed.get_layer("c1").bias.numpy(), plain.get_layer("c1").bias.numpy())
    assert list(report.absorbed.values()) == [0.0]


def test_relu6_modes():
    model = _uneven_pair("relu6")
    x = _x((8, 8, 3)) * 20  # activations well above 6
    ref = model(x).numpy()
    clip, rep = cross_layer_scale(model, "clip")
    assert isinstance(clip.get_layer("act"), ChannelClip) and rep.replaced_relu6 == ["act"]
    assert relative_error(ref, clip(x).numpy()) < 1e-5
    relu, _ = cross_layer_scale(model, "relu")
    assert relative_error(ref, relu(x).numpy()) > 1e-2  # AIMET TF's replacement changes the function
    stop, rep = cross_layer_scale(model, "break_chain")
    assert rep.sets == [] and relative_error(ref, stop(x).numpy()) == 0.0


def test_zero_range_dead_channels_and_missing_bias_stay_finite():
    i = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="c1")(i)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(3, 1, use_bias=False, name="c3")(x)
    model = keras.Model(i, x)
    k = model.get_layer("c1").kernel.numpy()
    k[..., 0] = 0.0  # zero-range channel
    model.get_layer("c1").set_weights([k])
    bn = model.get_layer("bn")
    bn.set_weights([np.array([1, 0, 1, 1], F32), np.array([0.5, 0, 0.2, 3.0], F32), np.zeros(4, F32), np.array([1, 0, 1, 1], F32)])
    dw = model.get_layer("dw").kernel.numpy()
    dw[..., 2, :] = 0.0  # dead depthwise channel
    model.get_layer("dw").set_weights([dw])
    eq, report = equalize_model(model)
    assert report.sets == [("c1", "dw", "c3")]
    for w in eq.get_weights():
        assert np.isfinite(w).all()
    x = _x((6, 6, 2))
    out = eq(x).numpy()
    assert np.isfinite(out).all()


def test_unsupported_layers_are_skipped_not_crashed():
    @keras.saving.register_keras_serializable(package="tests")
    class Scale(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    i = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 1, name="c1")(i)
    x = keras.layers.Lambda(lambda t: t * 1.0, name="lam")(x)
    x = keras.layers.Conv2D(3, 1, name="c2")(x)
    x = Scale(name="custom")(x)
    x = keras.layers.Conv2D(3, 1, name="c3")(x)
    model = keras.Model(i, x)
    eq, report = equalize_model(model)
    assert report.sets == []
    assert {"c1", "c2", "c3"} <= set(report.skipped)
    x = _x((6, 6, 2))
    np.testing.assert_allclose(eq(x).numpy(), model(x).numpy(), rtol=1e-6)


def test_nested_models_are_flattened_and_equalized():
    inner_in = keras.Input((6, 6, 3))
    inner = keras.Model(inner_in, keras.layers.Conv2D(3, 1, name="inner_conv")(inner_in), name="inner")
    i = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(3, 1, name="c1")(i)
    x = inner(x)
    model = keras.Model(i, keras.layers.Conv2D(2, 1, name="c2")(x))
    eq, report = equalize_model(model)
    assert report.sets == [("c1", "inner_conv"), ("inner_conv", "c2")]  # the nested conv joins the chain once flattened
    x = _x((6, 6, 3))
    np.testing.assert_allclose(eq(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv1d_pairs_are_equalized_with_bias_absorption(padding):
    """A keyword-spotter-shaped Conv1D chain (BN, ReLU): the same function with each channel's two ranges equal after
    scaling; a high bias is absorbed, and where the second conv zero-pads the link is named (absorption is exact inside)."""
    keras.utils.set_random_seed(0)
    i = keras.Input((49, 10))
    x = keras.layers.Conv1D(8, 3, padding="causal", use_bias=False, name="c1")(i)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn1")(x))
    x = keras.layers.Conv1D(6, 3, padding=padding, name="c2")(x)
    model = keras.Model(i, keras.layers.Dense(4, name="head")(keras.layers.GlobalAveragePooling1D()(x)))
    spread = np.geomspace(0.05, 5, 8).astype(F32)
    c1, bn = model.get_layer("c1"), model.get_layer("bn1")
    c1.set_weights([c1.get_weights()[0] * spread])
    gamma, beta = np.full(8, 0.1, F32), np.full(8, 2.0, F32)  # a high bias: absorbed (beta - 3|gamma| > 0)
    bn.set_weights([gamma, beta, np.zeros(8, F32), (0.5 * spread) ** 2])  # BN undoes the spread
    x = _x((49, 10), n=8)
    equalized, report = equalize_model(model, high_bias_absorption=False)
    assert report.sets == [("c1", "c2")] and relative_error(model(x).numpy(), equalized(x).numpy()) < 1e-4
    r1 = np.abs(equalized.get_layer("c1").kernel.numpy()).reshape(-1, 8).max(axis=0)
    r2 = np.abs(equalized.get_layer("c2").kernel.numpy()).max(axis=(0, 2))
    np.testing.assert_allclose(r1, r2, rtol=1e-5)  # each channel's two ranges now agree
    _, absorbing = equalize_model(model)
    assert absorbing.absorbed["c1->c2"] > 0 and absorbing.border_links == ([] if padding == "valid" else ["c1->c2"])
