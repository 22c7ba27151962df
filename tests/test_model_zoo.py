"""Every Keras model a user brings: flattened into one graph, quantized whole, or refused out loud (issue 20)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_zoo import APPLICATIONS, QUANTIZED_TYPES, ZOO, sequential_cnn, transfer_flat, transfer_functional, transfer_sequential

from workbench.graph.flatten import UnsupportedModel, flatten_model, flatten_with_report, needs_flattening
from workbench.options import LayerOverride, QuantSettings
from workbench.quantsim.coverage import coverage_table, summarize
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over
from workbench.quantsim.tflite import convert_to_int8_tflite, integer_report
from workbench.techniques import equalize_model, fold_batch_norms
from workbench.techniques.range_learning import ends_in_softmax, simulate_trained, train_qat


def _inputs(model: keras.Model, n: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(n, *t.shape[1:])).astype(np.float32) for t in model.inputs]
    return xs[0] if len(xs) == 1 else xs


def _base(seed: int = 0) -> keras.Model:
    """A small nested base: conv+BN+ReLU6 and a depthwise block, as a functional model of its own."""
    keras.utils.set_random_seed(seed)
    i = keras.Input((16, 16, 3))
    x = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization(name="bn1")(keras.layers.Conv2D(8, 3, padding="same", name="c1")(i)))
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.ReLU(name="r2")(keras.layers.BatchNormalization(name="bn2")(x))
    base = keras.Model(i, keras.layers.Conv2D(8, 1, name="pw")(x), name="base")
    rng = np.random.default_rng(seed)
    for bn in ("bn1", "bn2"):
        base.get_layer(bn).set_weights([rng.uniform(0.5, 2, 8), rng.normal(0, 0.5, 8), rng.normal(0, 0.5, 8), rng.uniform(0.5, 2, 8)])
    return base


def _wrapped(base: keras.Model, sequential: bool) -> keras.Model:
    head = keras.layers.Dense(4, name="head")
    pool = keras.layers.GlobalAveragePooling2D(name="pool")
    if sequential:
        return keras.Sequential([keras.Input((16, 16, 3)), base, pool, head])
    i = keras.Input((16, 16, 3))
    return keras.Model(i, head(pool(base(i, training=False))))


def test_flattening_is_exact_and_keeps_names():
    base = _base()
    for model in (_wrapped(base, False), _wrapped(base, True), sequential_cnn()):
        flat, report = flatten_with_report(model)
        assert not needs_flattening(flat) and flatten_model(flat) is flat  # already flat: returned as it is
        assert not any(isinstance(layer, keras.Model) for layer in flat.layers)
        x = _inputs(model)
        np.testing.assert_array_equal(flat(x).numpy(), model(x, training=False).numpy())  # bit for bit
        if model is not sequential_cnn:
            assert {"c1", "dw", "pw", "head"} <= {layer.name for layer in flat.layers} or report.inlined == []


def test_nested_and_flat_forms_give_the_same_sim_bit_for_bit():
    """The wrapper-around-a-base form, its Sequential twin and the flat network: same encodings, same outputs."""
    base = _base()
    flat = keras.Model(base.input, keras.layers.Dense(4, name="head")(keras.layers.GlobalAveragePooling2D(name="pool")(base.output)))
    forms = {"functional": _wrapped(base, False), "sequential": _wrapped(base, True), "flat": flat}
    for form in forms.values():  # one head for all three
        form.get_layer("head").set_weights(forms["functional"].get_layer("head").get_weights())
    x = _inputs(flat, 32)
    results = {}
    for name, model in forms.items():
        folded, report = fold_batch_norms(model)
        assert len(report.folded) == 2, name  # the BNs inside the base fold too
        sim = QuantizationSimModel(folded, QuantSettings(param_bw=4))
        sim.compute_encodings(forward_pass_over([x]))
        outputs = sim.output_encodings()
        outputs["input"] = outputs.pop(sim.plan.inputs[0])  # each form names its own input layer
        results[name] = (sim.model(x).numpy(), sim.param_encodings(), outputs, len(sim.param_quantizers))
    ref = results["flat"]
    assert ref[3] == 4  # c1, dw, pw, head: every kernel, not 1 of 4
    for name, (out, params, outputs, _) in results.items():
        np.testing.assert_array_equal(out, ref[0], err_msg=name)
        assert sorted(params) == sorted(ref[1]) and sorted(outputs) == sorted(ref[2]), name
        for layer, enc in params.items():
            np.testing.assert_array_equal(enc.scale, ref[1][layer].scale, err_msg=f"{name}: {layer}")
        for layer, enc in outputs.items():
            np.testing.assert_array_equal(enc.scale, ref[2][layer].scale, err_msg=f"{name}: {layer}")


def test_subclassed_and_unbuilt_models_are_refused_with_what_to_do():
    class Custom(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(UnsupportedModel, match=r"subclassed model .* rebuild it with the functional API"):
        QuantizationSimModel(Custom())
    with pytest.raises(UnsupportedModel, match=r"Sequential model .* keras.Input"):
        fold_batch_norms(keras.Sequential([keras.layers.Dense(2)]))


def test_composite_layers_are_split_into_quantizable_primitives():
    i = keras.Input((8, 8, 3))
    x = keras.layers.SeparableConv2D(4, 3, padding="same", activation="relu", name="sep")(i)
    x = keras.layers.Reshape((16, 4))(keras.layers.Conv2D(4, 1)(keras.layers.MaxPooling2D()(x)))
    y = keras.layers.MultiHeadAttention(2, 4, name="mha")(x, x)
    out = keras.layers.Dense(3, activation="softmax", name="probs")(keras.layers.GlobalAveragePooling1D()(y))
    model = keras.Model(i, out)
    flat, report = flatten_with_report(model)
    assert report.decomposed["sep"] == ["sep_depthwise", "sep_pointwise"]
    assert {"mha_query", "mha_key", "mha_value", "mha_scores", "mha_softmax", "mha_combine", "mha_output"} <= set(report.decomposed["mha"])
    assert report.decomposed["probs"] == ["probs", "probs_softmax"] and ends_in_softmax(flat)
    x = _inputs(model)
    np.testing.assert_allclose(flat(x).numpy(), model(x).numpy(), atol=1e-6)  # fused attention vs its einsums: float rounding
    sim = QuantizationSimModel(model)
    assert {"sep_depthwise", "sep_pointwise", "mha_query", "mha_key", "mha_value", "mha_output", "probs"} <= set(sim.param_quantizers)
    assert {"mha_query", "mha_key", "mha_value", "mha_softmax", "mha_scores", "probs", "probs_softmax"} <= set(sim.output_quantizers)


@keras.saving.register_keras_serializable(package="tests")
class Scale(keras.layers.Layer):
    """A user's own layer with a weight: no quantization rule exists for it."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.w


def test_coverage_names_what_stays_float_and_why():
    i = keras.Input((6,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(20, 8, name="emb")(i)
    x = keras.layers.LayerNormalization(name="ln")(x)
    x = x + 1.0  # a keras.ops operation outside any layer: wrapped (OperationLayer) and quantized
    x = Scale(name="scale")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    model = keras.Model(i, keras.layers.Dense(3, name="head")(x))
    sim = QuantizationSimModel(model, QuantSettings(overrides=(LayerOverride("head", enabled=False),)))
    sim.compute_encodings(forward_pass_over([np.arange(12, dtype=np.int32).reshape(2, 6)]))
    table = coverage_table(sim).set_index("tensor")
    assert table.loc["emb/embeddings", "quantized"]  # embedding tables are quantized
    assert "normalization parameter" in table.loc["ln/gamma", "reason"] and table.loc["ln/gamma", "reason_kind"] == "policy"
    assert table.loc["head/kernel", "reason_kind"] == "user"
    assert "token ids" in table.loc["tokens:0", "reason"]
    ops = table[table["type"] == "OperationLayer"]  # x + 1.0 (its name depends on what ran before)
    assert len(ops) == 1 and ops["quantized"].all()
    assert table.loc["scale/w", "reason"] == "no rule for Scale.w: stays float" and table.loc["scale/w", "reason_kind"] == "unsupported"
    assert (table["quantized"] | (table["reason"] != "")).all()  # nothing unquantized without a reason
    summary = summarize(coverage_table(sim))
    assert summary.partial and 0 < summary.weights_quantized < 1  # the head's kernel is float by the user's choice
    assert "head (left float by quant.overrides)" in summary.console_line()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_is_quantized_whole(name):
    """Fold, CLE, W8A8 and W4A8 sims with calibration, the int8 TFLite conversion; every listed weight quantized,
    every op output quantized or with its reason."""
    keras.utils.set_random_seed(0)
    model = ZOO[name]()
    x = _inputs(model)
    fold_batch_norms(model)
    equalized, _ = equalize_model(model)
    # W4A8, then W8A8 (checked and converted below); the keras.applications networks at W8A8 only: their layer types
    # are the small models' (which run both), and their second sim cost a minute of the suite
    for bw in (8,) if name in APPLICATIONS else (4, 8):
        sim = QuantizationSimModel(equalized, QuantSettings(param_bw=bw))
        sim.compute_encodings(forward_pass_over([(tuple(x) if isinstance(x, list) else x, None)]))
        out = keras.tree.flatten(sim.model(x))
        assert all(np.isfinite(o.numpy()).all() for o in out)
    table = coverage_table(sim)
    listed = table[
        (table["kind"] == "weight") & table["type"].isin(QUANTIZED_TYPES) & table["tensor"].str.endswith(("/kernel", "/embeddings"))
    ]
    assert len(listed) and listed["quantized"].all(), listed[~listed["quantized"]]
    assert summarize(table).weights_quantized == 1.0
    assert (table["quantized"] | (table["reason"] != "")).all()
    assert integer_report(convert_to_int8_tflite(sim))["num_tensors"] > 0


@pytest.mark.slow
def test_transfer_learning_forms_quantize_every_kernel_alike():
    base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None, alpha=0.35)
    forms = [transfer_functional(base), transfer_sequential(base), transfer_flat(base)]
    head = forms[0].get_layer("head").get_weights()
    for form in forms:
        form.get_layer("head").set_weights(head)
    x = _inputs(forms[0])
    outs = []
    for form in forms:
        sim = QuantizationSimModel(fold_batch_norms(form)[0], QuantSettings(param_bw=4))
        assert len(sim.param_quantizers) == 53  # 52 base kernels + the head, not 1 of 53
        sim.compute_encodings(forward_pass_over([x]))
        outs.append(sim.model(x).numpy())
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["small_vit", "small_unet", "keyword_spotting"])
def test_qat_trains_the_new_layer_types(name):
    keras.utils.set_random_seed(0)
    model = ZOO[name]()
    x = _inputs(model, 16)
    sim = QuantizationSimModel(model, QuantSettings())
    sim.compute_encodings(forward_pass_over([x]))
    labels = np.zeros((16, *model.output_shape[1:-1]), np.int32)
    trained = train_qat(sim, tf.data.Dataset.from_tensor_slices((x, labels)).batch(8), 1, 1e-3, 4)
    assert set(trained.param_encodings) == set(sim.param_quantizers)
    before = {n: sim.fp_model.get_layer(n).get_weights()[0] for n in sim.param_quantizers}
    moved = [n for n in before if not np.array_equal(trained.model.get_layer(n).get_weights()[0], before[n])]
    assert len(moved) == len(before)  # every quantized weight was trained, EinsumDense/Conv2DTranspose/Conv1D included
    assert np.isfinite(simulate_trained(trained, QuantSettings()).model(x).numpy()).all()


def test_qat_loss_follows_a_final_softmax():
    i = keras.Input((4,))
    assert ends_in_softmax(flatten_model(keras.Model(i, keras.layers.Dense(3, activation="softmax")(i))))
    assert ends_in_softmax(keras.Model(i, keras.layers.Softmax()(keras.layers.Dense(3)(i))))
    assert not ends_in_softmax(keras.Model(i, keras.layers.Dense(3)(i)))


def test_a_two_input_model_calibrates_on_keras_style_batches():
    """``[x1, x2]`` is the inputs of a two-input model (a tuple is ``(x, y)``): both input quantizers see their data."""
    from model_zoo import two_inputs

    model = two_inputs()
    left, right = _inputs(model)
    right = right * 10.0
    sim = QuantizationSimModel(model)
    sim.compute_encodings(forward_pass_over([[left, right]]))
    enc = sim.output_encodings()
    assert enc["right"].max[0] > 5 * enc["left"].max[0]  # not the first input read twice, nor the second as labels
    tupled = QuantizationSimModel(model)
    tupled.compute_encodings(forward_pass_over([((left, right), np.zeros(len(left)))]))
    np.testing.assert_array_equal(tupled.output_encodings()["right"].scale, enc["right"].scale)
