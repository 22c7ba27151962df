"""Range-learning QAT: gradients, learning, hand-back to the exact sim, export round trip."""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import context_of, small_convnet
from workbench.config.schema import QATConfig
from workbench.data.dataset import Dataset
from workbench.data.synthetic import make_synthetic
from workbench.options import LayerOverride, QuantSettings
from workbench.quantsim.encodings import sqnr_db
from workbench.quantsim.export import export_model, load_encodings
from workbench.quantsim.quantizer import FakeQuant, Mode, QuantizedKernel
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over
from workbench.results import StageResult
from workbench.stages.qat import run_qat
from workbench.techniques.range_learning import build_qat_model, train_qat

F32 = np.float32
RL = QuantSettings(scheme="training_range_learning_with_tf_init", param_bw=4, output_bw=8, strict_symmetric=True)


def test_gradients_follow_the_clipped_straight_through_formula():
    layer = FakeQuant(8, mode=Mode.LEARN, modes=(Mode.LEARN,), learn_range=True)  # QAT's form of the sim's quantizer
    layer.build(())
    layer.set_range(0.0, 2.55)  # scale 0.01, zero point 0: no nudging
    x = tf.constant(np.array([-0.5, -0.2, 0.013, 1.0, 2.0, 2.6, 3.0], F32))
    g = tf.constant(np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], F32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(g * layer(x))
    dx, dmin, dmax = tape.gradient(loss, [x, layer.range_min, layer.range_max])
    inside = (x.numpy() >= 0.0) & (x.numpy() <= 2.55)
    np.testing.assert_allclose(dx.numpy(), g.numpy() * inside)
    assert float(dmin[0]) == pytest.approx(1.0 + 2.0)  # Σ g where x < min
    assert float(dmax[0]) == pytest.approx(6.0 + 7.0)  # Σ g where x > max


@pytest.fixture(scope="module")
def calibrated():
    model = small_convnet()
    x = np.random.default_rng(0).normal(size=(64, 8, 8, 3)).astype(F32)
    sim = QuantizationSimModel(model, RL)
    sim.compute_encodings(forward_pass_over([x]))
    return sim, x


def test_qat_model_starts_as_the_sim(calibrated):
    sim, x = calibrated
    qat = build_qat_model(sim)
    # TF's fake-quant rounds halves up where our grid rounds them to even: equal up to rare ties
    assert sqnr_db(sim.model(x).numpy(), qat(x).numpy()) > 40


def test_qat_keeps_the_per_layer_overrides_of_the_sim():
    overrides = (LayerOverride("pw", param_bw=8), LayerOverride("relu", output_bw=16), LayerOverride("dw", enabled=False))
    settings = dataclasses.replace(RL, overrides=overrides)
    x = np.random.default_rng(0).normal(size=(64, 8, 8, 3)).astype(F32)
    sim = QuantizationSimModel(small_convnet(), settings)
    sim.compute_encodings(forward_pass_over([x]))
    qat = build_qat_model(sim)
    kernels = {layer.inner.name: layer.bitwidth for layer in qat.layers if isinstance(layer, QuantizedKernel)}
    outputs = {layer.name: layer.bitwidth for layer in qat.layers if isinstance(layer, FakeQuant)}
    assert kernels["pw"] == 8 and kernels["conv"] == 4 and "dw" not in kernels  # dw: float, as in the sim
    assert outputs["relu_quant"] == 16 and outputs["pw_quant"] == 8
    assert sqnr_db(sim.model(x).numpy(), qat(x).numpy()) > 40  # starts as the sim with its overrides


@pytest.mark.slow  # several seconds: kept out of the fast loop
def test_ranges_and_loss_move_with_training(calibrated):
    sim, _ = calibrated
    data = make_synthetic(num_train=256, num_val=64, num_classes=4, image_shape=(8, 8, 3), batch_size=32, noise=0.3)
    result = train_qat(sim, data.train_batches(), 4, 3e-3, 1000, learn_ranges=True)
    losses = result.history["loss"]
    assert losses[-1] < losses[0]
    before = sim.output_encodings()
    moved = [abs(result.output_encodings[n].max[0] - before[n].max[0]) for n in before]
    assert max(moved) > 1e-3
    # a workbench.Dataset over labelled batches trains the same way
    batches = [(x.numpy(), y.numpy()) for x, y in data.train_batches()]
    frozen = train_qat(sim, Dataset(batches), 1, 3e-3, 1000, learn_ranges=False)
    assert len(frozen.history["loss"]) == 1
    for n in before:
        assert frozen.output_encodings[n].max[0] == pytest.approx(before[n].max[0], rel=1e-3, abs=2 * float(before[n].scale[0]))


def test_exported_model_and_encodings_reproduce_the_sim(calibrated, tmp_path):
    sim, x = calibrated
    paths = export_model(sim, str(tmp_path), "net")
    exported = keras.models.load_model(paths["model"], compile=False)
    assert not any("quant" in type(layer).__name__.lower() for layer in exported.layers)
    fresh = QuantizationSimModel(exported, RL)
    load_encodings(fresh, json.loads(open(paths["0.6.1"]).read()))
    np.testing.assert_array_equal(fresh.model(x).numpy(), sim.model(x).numpy())
    doc = json.loads(open(paths["1.0.0"]).read())
    assert {e["name"] for e in doc["param_encodings"]} == {f"{n}/kernel:0" for n in sim.param_quantizers}
    assert all(e["offset"][0] == -7 for e in doc["param_encodings"])  # 4-bit strict symmetric grid


@pytest.mark.slow  # several seconds: kept out of the fast loop
def test_qat_stage_logs_per_epoch_series(tmp_path):
    keras.utils.set_random_seed(0)
    data = make_synthetic(num_train=128, num_val=64, num_classes=4, image_shape=(8, 8, 3), batch_size=32)
    ctx = context_of(
        small_convnet(),
        data,
        RL,
        tmp_path,
        calibration_samples=64,
        sqnr_samples=0,
        qat=QATConfig(epochs=2, learning_rate=1e-3, decay_steps=100),
    )
    result = StageResult()
    run_qat(ctx, result)
    assert sorted(result.series["qat/loss"]) == [1, 2] and sorted(result.series["qat/top1"]) == [1, 2]  # real epoch numbers
    assert {"sim/top1", "qat/sim_top1_before", "qat/mean_range_change"} <= set(result.metrics)
    export = result.directories["export"]
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) and export.startswith(str(tmp_path))
