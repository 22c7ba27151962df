"""The simulator: placement, fake-quant numerics, calibration, export round trip."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import small_convnet
from workbench.options import QuantSettings
from workbench.quantsim.encodings import encoding_from_range, quantize_dequantize, sqnr_db
from workbench.quantsim.export import encodings_json, export_encodings, load_encodings
from workbench.quantsim.quantizer import FakeQuant, Mode
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over

F32 = np.float32


@pytest.fixture(scope="module")
def model():
    return small_convnet()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).normal(size=(64, 8, 8, 3)).astype(F32)


def test_placement_follows_aimet_default_config(model):
    sim = QuantizationSimModel(model)
    assert sim.plan.inputs == ["image"]
    # conv+bn+relu6 and add+relu are supergroups, dropout only moves data
    assert sim.plan.outputs == ["relu6", "dw", "pw", "relu", "pool", "dense"]
    assert set(sim.plan.params) == {"conv", "dw", "pw", "dense"}
    assert sim.plan.skipped["conv"].startswith("inner op") and sim.plan.skipped["bn"].startswith("inner op")
    assert "only moves data" in sim.plan.skipped["drop"]


def test_fake_quant_layer_equals_grid_formula(rng):
    enc = encoding_from_range(-1.7, 2.3, 8, False)
    layer = FakeQuant(8, False)
    layer.build((None,))
    layer.set_encoding(enc)
    x = rng.uniform(-4, 4, (256, 16)).astype(F32)
    np.testing.assert_array_equal(layer(x).numpy(), quantize_dequantize(x, enc))
    # identical inside a traced graph
    np.testing.assert_array_equal(tf.function(lambda v: layer(v))(x).numpy(), quantize_dequantize(x, enc))


def test_fake_quant_is_serialisable():
    layer = FakeQuant(6, True, "stochastic", 3, name="q")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert (clone.bitwidth, clone.symmetric, clone.rounding.value, clone.seed) == (6, True, "stochastic", 3)


def test_a_mode_switch_is_a_variable_the_traced_model_follows_without_retracing(model, images):
    """The sim's quantizers switch between passthrough and quantize by a variable: one trace serves both."""
    sim = QuantizationSimModel(model, QuantSettings(param_bw=8, output_bw=4))
    sim.compute_encodings(forward_pass_over([images]))
    traces = []

    @tf.function
    def step(x):
        traces.append(1)
        return sim.model(x, training=False)

    quantized = step(images).numpy()
    sim._set_mode(Mode.PASSTHROUGH)
    passthrough = step(images).numpy()
    sim._set_mode(Mode.QUANTIZE)
    again = step(images).numpy()
    assert len(traces) == 1 and np.array_equal(quantized, again) and not np.array_equal(quantized, passthrough)
    with pytest.raises(ValueError, match="mode learn is not one of its modes"):
        next(iter(sim.output_quantizers.values())).set_mode(Mode.LEARN)


def test_the_sim_qat_and_the_conversion_graph_share_one_quantizer_layer():
    """Every fake-quant op of the package is in quantsim/quantizer.py: the sim, QAT and the TFLite graph use its FakeQuant."""
    from pathlib import Path

    import workbench.quantsim.tflite
    import workbench.techniques.range_learning  # noqa: F401

    package = Path(__file__).resolve().parents[1] / "workbench"
    users = sorted(str(p.relative_to(package)) for p in package.rglob("*.py") if "tf.quantization.fake_quant" in p.read_text())
    assert users == ["quantsim/quantizer.py"], users
    subclasses = [c.__name__ for c in keras.layers.Layer.__subclasses__() if c.__module__.startswith("workbench") and "Quant" in c.__name__]
    assert sorted(subclasses) == ["FakeQuant", "QuantizedKernel"], subclasses


def test_sim_does_not_touch_the_original(model, images):
    before = [w.copy() for w in model.get_weights()]
    ref = model(images).numpy()
    sim = QuantizationSimModel(model, QuantSettings(param_bw=4))
    sim.compute_encodings(forward_pass_over([images]))
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model(images).numpy(), ref)
    assert not np.allclose(sim.model(images).numpy(), ref)


def test_sim_kernels_are_the_quantized_float_kernels(model, images):
    sim = QuantizationSimModel(model, QuantSettings(param_bw=4, scheme="tf"))
    sim.compute_encodings(forward_pass_over([images]))
    for name, pq in sim.param_quantizers.items():
        got = sim.model.get_layer(name).kernel.numpy()
        view = pq.channel_view()
        expect = quantize_dequantize(view, pq.encoding).reshape(pq.float_kernel.shape)
        np.testing.assert_array_equal(got, expect)
        assert len(np.unique(got)) <= 16


def test_activation_encodings_cover_the_calibration_range(model, images):
    sim = QuantizationSimModel(model, QuantSettings(scheme="tf"))
    sim.compute_encodings(forward_pass_over([images[:32], images[32:]]))
    enc = sim.output_encodings()["image"]
    assert enc.min[0] <= images.min() + enc.scale[0] and enc.max[0] >= images.max() - enc.scale[0]
    relu6 = sim.output_encodings()["relu6"]
    assert relu6.min[0] == 0.0 and relu6.max[0] <= 6.0 + relu6.scale[0]


def test_calibration_also_works_in_graph_mode(model, images):
    eager = QuantizationSimModel(model, QuantSettings(scheme="tf"))
    eager.compute_encodings(forward_pass_over([images]))
    graph = QuantizationSimModel(model, QuantSettings(scheme="tf"))
    graph.compute_encodings(lambda m, _: m.predict(images, batch_size=64, verbose=0))
    for name, enc in eager.output_encodings().items():
        np.testing.assert_allclose(graph.output_encodings()[name].scale, enc.scale, rtol=1e-6)


def test_w8a8_is_close_and_w4_is_worse(model, images):
    ref = model(images).numpy()
    errors = {}
    for bw in (8, 4):
        sim = QuantizationSimModel(model, QuantSettings(param_bw=bw, output_bw=bw))
        sim.compute_encodings(forward_pass_over([images]))
        errors[bw] = sqnr_db(ref, sim.model(images).numpy())
    assert errors[8] > 25 and errors[8] > errors[4] + 10


def test_per_channel_differs_from_per_tensor(images):
    keras.utils.set_random_seed(3)
    i = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(8, 3, padding="same", name="conv")
    model = keras.Model(i, conv(i))
    k, b = conv.get_weights()
    conv.set_weights([k * np.geomspace(0.01, 1, 8).astype(F32), b])
    ref = model(images).numpy()
    out = {}
    for per_channel in (False, True):
        sim = QuantizationSimModel(model, QuantSettings(param_bw=4, output_bw=16, per_channel=per_channel))
        sim.compute_encodings(forward_pass_over([images]))
        out[per_channel] = sim.model(images).numpy()
        assert sim.param_encodings()["conv"].num_channels == (8 if per_channel else 1)
    assert sqnr_db(ref[..., 0], out[True][..., 0]) > sqnr_db(ref[..., 0], out[False][..., 0]) + 20


def test_depthwise_per_channel_flattens_channels_times_multiplier():
    i = keras.Input((6, 6, 3))
    model = keras.Model(i, keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(i))
    sim = QuantizationSimModel(model, QuantSettings(per_channel=True))
    sim.compute_param_encodings()
    assert sim.param_encodings()["dw"].num_channels == 6


def test_stochastic_rounding_sim_runs_and_differs(model, images):
    near = QuantizationSimModel(model, QuantSettings(output_bw=4))
    near.compute_encodings(forward_pass_over([images]))
    stoch = QuantizationSimModel(model, QuantSettings(output_bw=4, rounding="stochastic"))
    stoch.compute_encodings(forward_pass_over([images]))
    a, b = near.model(images).numpy(), stoch.model(images).numpy()
    assert np.isfinite(b).all() and not np.array_equal(a, b)


def test_exported_encodings_reload_into_a_fresh_sim(model, images, tmp_path):
    sim = QuantizationSimModel(model, QuantSettings(param_bw=6, per_channel=True))
    sim.compute_encodings(forward_pass_over([images]))
    paths = export_encodings(sim, str(tmp_path))
    for version, path in paths.items():
        data = json.loads(open(path).read())
        assert data["version"] == version
        fresh = QuantizationSimModel(model, QuantSettings(param_bw=6, per_channel=True))
        load_encodings(fresh, data)
        np.testing.assert_array_equal(fresh.model(images).numpy(), sim.model(images).numpy())
    doc = encodings_json(sim, "0.6.1")
    assert set(doc["activation_encodings"]) == {f"{n}:0" for n in sim.output_quantizers}
    assert len(doc["param_encodings"]["conv/kernel:0"]) == 8
    entry = doc["activation_encodings"]["relu:0"][0]
    assert set(entry) == {"bitwidth", "dtype", "is_symmetric", "max", "min", "offset", "scale"}
    assert entry["is_symmetric"] == "False"
    assert doc["quantizer_args"]["quant_scheme"] == "post_training_tf"  # the default scheme


def test_excluded_layers_keep_float(model, images):
    sim = QuantizationSimModel(model, excluded_layers=["dense"])
    assert "dense" not in sim.plan.params and "dense" not in sim.plan.outputs
    with pytest.raises(ValueError, match="not in the model"):
        QuantizationSimModel(model, excluded_layers=["nope"])


def test_subclassed_model_is_refused_clearly():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="functional"):
        QuantizationSimModel(Sub())


def test_mobilenet_v2_placement():
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))
    sim = QuantizationSimModel(model)
    assert len(sim.param_quantizers) == 53
    # no quantizer inside conv+BN(+ReLU6) groups or on padding
    names = {type(sim.graph.layer(n)).__name__ for n in sim.plan.outputs}
    assert "ZeroPadding2D" not in names and "Conv2D" not in names and "DepthwiseConv2D" not in names
    # the classifier's fused softmax is its own op: the logits and the probabilities are both quantized
    assert {"predictions", "predictions_softmax"} <= set(sim.plan.outputs)


def test_weight_and_activation_schemes_apart(model, images):
    from workbench.quantsim.analyzers import compute_tensor_encoding

    settings = QuantSettings(scheme="tf_enhanced", param_scheme="tf", param_bw=4)
    assert (settings.param_scheme.value, settings.output_scheme.value) == ("tf", "tf_enhanced")
    sim = QuantizationSimModel(model, settings)
    sim.compute_encodings(forward_pass_over([images]))
    kernel = sim.param_quantizers["conv"].channel_view()
    minmax = compute_tensor_encoding(kernel, "tf", 4, True)
    enhanced = compute_tensor_encoding(kernel, "tf_enhanced", 4, True)
    assert np.array_equal(sim.param_encodings()["conv"].scale, minmax.scale)
    assert not np.array_equal(minmax.scale, enhanced.scale)  # the choice matters on this kernel
    args = encodings_json(sim)["quantizer_args"]
    assert (args["param_quant_scheme"], args["activation_quant_scheme"]) == ("post_training_tf", "post_training_tf_enhanced")
    # quant.scheme alone still sets both
    both = QuantSettings(scheme="tf")
    assert both.param_scheme.value == both.output_scheme.value == "tf"


def test_a_saved_sim_reloads_and_quantizes_identically(model, images, tmp_path):
    sim = QuantizationSimModel(model, QuantSettings(param_bw=4, output_bw=8))
    sim.compute_encodings(forward_pass_over([images]))
    sim.model.save(tmp_path / "sim.keras")
    reloaded = keras.models.load_model(tmp_path / "sim.keras", compile=False)
    np.testing.assert_array_equal(reloaded(images).numpy(), sim.model(images).numpy())  # bit-identical
    assert not np.array_equal(reloaded(images).numpy(), model(images).numpy())  # and not the float model
    quantizers = [layer for layer in reloaded.layers if isinstance(layer, FakeQuant)]
    assert quantizers and all(q.current_mode is Mode.QUANTIZE for q in quantizers)  # the saved mode variable


@pytest.mark.parametrize("scheme", ["tf", "tf_enhanced"])
def test_traced_calibration_equals_host_analyzers_bit_for_bit(model, images, scheme):
    """In-graph min/max (tf) and the traced pass give exactly the encodings of host analyzers on the raw tensors."""
    from workbench.quantsim.analyzers import EncodingAnalyzer

    x = images.copy()
    x[0, 0, 0, 0], x[1, 0, 0, 1] = np.nan, np.inf  # non-finite values are ignored alike
    batches = [x[:32], x[32:]]
    sim = QuantizationSimModel(model, QuantSettings(scheme=scheme))
    sim.compute_encodings(forward_pass_over(batches))
    sim._set_mode(Mode.PASSTHROUGH)  # the activations the quantizers saw (weights quantized, activations not)
    names = list(sim.output_quantizers)
    taps = keras.Model(sim.model.inputs, [sim.output_quantizers[n].input for n in names])
    analyzers = {n: EncodingAnalyzer(scheme, 8, False) for n in names}
    for batch in batches:
        for n, value in zip(names, taps(batch)):
            analyzers[n].update(np.asarray(value))
    for n in names:
        expected, got = analyzers[n].compute_encoding(), sim.output_encodings()[n]
        assert np.array_equal(expected.scale, got.scale) and np.array_equal(expected.offset, got.offset), n


@pytest.mark.parametrize("target", ["aimet", "tflite"])
def test_one_pass_serves_every_output_scheme_bit_for_bit(model, images, target):
    """``compute_encodings(also=...)`` collects every scheme's statistics in one pass: switching to one of them
    (``use_output_scheme``) gives exactly the sim calibrated with it alone, grids and outputs."""
    from workbench.options import QuantScheme

    bits = dict(param_bw=4, output_bw=8) if target == "aimet" else dict(param_bw=8, output_bw=8, strict_symmetric=True)
    base = QuantSettings(**bits, target=target)
    shared = QuantizationSimModel(model, base)
    shared.compute_encodings(forward_pass_over([images[:32], images[32:]]), also=[QuantScheme.tf_enhanced, QuantScheme.percentile])
    for scheme, percentile in [("tf_enhanced", 99.99), ("percentile", 99.9), ("percentile", 99.99), ("tf", 99.99)]:
        alone = QuantizationSimModel(model, QuantSettings(**bits, target=target, output_scheme=scheme, percentile=percentile))
        alone.compute_encodings(forward_pass_over([images[:32], images[32:]]))
        shared.use_output_scheme(QuantScheme(scheme), percentile)
        assert shared.settings == alone.settings
        for name, enc in alone.output_encodings().items():
            got = shared.output_encodings()[name]
            np.testing.assert_array_equal(got.scale, enc.scale, err_msg=f"{scheme} {name}")
            np.testing.assert_array_equal(got.offset, enc.offset)
        np.testing.assert_array_equal(shared.model(images).numpy(), alone.model(images).numpy())
    with pytest.raises(ValueError, match="no tf_enhanced statistics were collected"):
        plain = QuantizationSimModel(model, base)
        plain.compute_encodings(forward_pass_over([images]))
        plain.use_output_scheme(QuantScheme.tf_enhanced, 99.99)
