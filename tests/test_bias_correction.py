"""Bias correction: the shift it removes, analytical E[x], and what it must leave alone."""

import keras
import numpy as np
import pytest

from helpers import context_of, randomize_batch_norms, small_convnet
from workbench.config.schema import BiasCorrectionConfig
from workbench.data.synthetic import make_synthetic
from workbench.options import QuantSettings
from workbench.results import StageResult
from workbench.stages.bc import run_bc
from workbench.techniques.bias_correction import (
    correct_bias,
    correction_sim,
    expected_activation,
    layer_output_shifts,
)

F32 = np.float32
W4 = QuantSettings(scheme="tf", param_bw=4, output_bw=8)


def _biased_conv(use_bias=True, seed=0, activation=None):
    """1×1 conv whose every weight sits 0.4 grid steps above a 4-bit grid point: rounding
    always goes down, so quantization shifts the output mean by −0.4Δ·Σ E[x]."""
    rng = np.random.default_rng(seed)
    i = keras.Input((4, 4, 6))
    conv = keras.layers.Conv2D(5, 1, use_bias=use_bias, activation=activation, name="conv")
    model = keras.Model(i, conv(i))
    delta = 0.1
    n = rng.integers(-6, 6, size=(1, 1, 6, 5)).astype(F32)
    kernel = (n + 0.4) * delta
    kernel[0, 0, 0, 0] = 7 * delta  # pins the symmetric grid: Δ = max|w| / 7
    conv.set_weights([kernel] + ([np.zeros(5, F32)] if use_bias else []))
    return model


def _positive(n, seed):
    return np.random.default_rng(seed).uniform(0, 1, (n, 4, 4, 6)).astype(F32)


@pytest.mark.parametrize("use_bias, activation", [(True, None), (False, None), (True, "relu")])
def test_empirical_bc_removes_a_known_mean_shift(use_bias, activation):
    model = _biased_conv(use_bias, activation=activation)
    corrected, report = correct_bias(model, W4, _positive(64, 1), _positive(256, 2), mode="empirical")
    held_out = _positive(256, 3)
    sim, enc = correction_sim(model, W4, _positive(64, 1))
    before = layer_output_shifts(model, sim, enc, held_out)["conv"]
    sim, enc = correction_sim(corrected, W4, _positive(64, 1))
    after = layer_output_shifts(model, sim, enc, held_out)["conv"]
    assert before > 0.05
    assert after <= 0.1 * before
    assert corrected.get_layer("conv").use_bias  # a bias-less layer gains one
    assert report.layers[0]["method"] == "empirical"
    # the fused activation is skipped on a copy: the caller's layer keeps its own
    assert model.get_layer("conv").activation is keras.activations.get(activation)


def test_zero_quantization_error_changes_nothing():
    i = keras.Input((4, 4, 2))
    conv = keras.layers.Conv2D(3, 1, name="conv")
    model = keras.Model(i, conv(i))
    n = np.random.default_rng(0).integers(-7, 8, size=(1, 1, 2, 3)).astype(F32)
    n[0, 0, 0, 0] = 7
    conv.set_weights([n * 0.25, np.array([0.5, -1.0, 2.0], F32)])  # on the 4-bit grid
    x = np.random.default_rng(1).integers(0, 16, size=(32, 4, 4, 2)).astype(F32)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0.0, 15.0  # 8-bit input grid 15/255: integers are exact
    corrected, _ = correct_bias(model, W4, x, x, mode="empirical")
    np.testing.assert_array_equal(corrected.get_layer("conv").bias.numpy(), conv.bias.numpy())


def test_ignored_layers_are_untouched_and_unknown_names_rejected():
    model = randomize_batch_norms(small_convnet())
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 3)).astype(F32)
    corrected, report = correct_bias(model, W4, x, x, mode="empirical", ignore=["pw"])
    np.testing.assert_array_equal(corrected.get_layer("pw").bias.numpy(), model.get_layer("pw").bias.numpy())
    assert not np.array_equal(corrected.get_layer("dense").bias.numpy(), model.get_layer("dense").bias.numpy())
    assert {r["layer"]: r["method"] for r in report.layers}["pw"] == "ignored"
    with pytest.raises(ValueError, match="bc.ignore"):
        correct_bias(model, W4, x, x, ignore=["nope"])


@pytest.mark.parametrize("beta, gamma", [(0.0, 1.0), (1.5, 0.7), (-1.0, 2.0), (4.0, 1.5), (2.0, -0.8)])
def test_expected_activation_matches_monte_carlo(beta, gamma):
    z = np.random.default_rng(0).normal(beta, abs(gamma), 2_000_000)
    for act, fn in (("relu", lambda v: np.maximum(v, 0)), ("clip", lambda v: np.clip(v, 0, 6))):
        exact = float(expected_activation(np.array([beta]), np.array([gamma]), act, np.array([6.0]))[0])
        mc = float(fn(z).mean())
        assert exact == pytest.approx(mc, rel=0.01, abs=1e-3)
    assert float(expected_activation(np.array([beta]), np.array([gamma]), None)[0]) == pytest.approx(beta)


def test_analytical_bc_is_data_free_and_follows_the_formula():
    i = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(4, 1, name="c1")(i)
    x = keras.layers.ReLU(name="relu")(x)
    out = keras.layers.Conv2D(3, 1, name="c2")(x)
    model = keras.Model(i, out)
    gamma, beta = np.array([1.0, 0.5, 2.0, 0.1], F32), np.array([0.5, -0.2, 1.0, 3.0], F32)
    corrected, report = correct_bias(model, W4, np.zeros((2, 6, 6, 4), F32), mode="analytical", bn_stats={"c1": (gamma, beta)})
    methods = {r["layer"]: r["method"] for r in report.layers}
    assert methods == {"c1": "first layer (E[x] = 0)", "c2": "analytical"}
    sim, _ = correction_sim(model, W4, np.zeros((2, 6, 6, 4), F32))
    eps = (sim.layers_by_name["c2"].kernel.numpy() - model.get_layer("c2").kernel.numpy())[0, 0]
    expected = model.get_layer("c2").bias.numpy() - expected_activation(beta, gamma, "relu") @ eps
    np.testing.assert_allclose(corrected.get_layer("c2").bias.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(corrected.get_layer("c1").bias.numpy(), model.get_layer("c1").bias.numpy())


def test_bc_stage_reports_shift_metrics(tmp_path):
    keras.utils.set_random_seed(0)
    model = randomize_batch_norms(small_convnet())
    data = make_synthetic(num_train=128, num_val=64, num_classes=4, image_shape=(8, 8, 3), batch_size=32)
    ctx = context_of(
        model,
        data,
        W4,
        tmp_path,
        calibration_samples=64,
        sqnr_samples=32,
        bc=BiasCorrectionConfig(num_quant_samples=64, num_bias_correct_samples=64),
    )
    result = StageResult()
    run_bc(ctx, result)
    m = result.metrics
    assert m["bc/layers_corrected"] >= 2 and m["bc/mean_abs_shift_after"] < m["bc/mean_abs_shift_before"]
    assert "sim/top1" in m and "transformed/top1" in m
    table = result.tables["bias_correction.csv"]
    assert {"layer", "method", "mean_abs_correction", "shift_before", "shift_after"} <= set(table.columns)
