"""AdaRound: the rectified sigmoid and the regulariser by hand, lower output error than round-to-nearest
on a layer with a known input, kernels on frozen grids, and the stage end to end."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import stage_context
from workbench import keys
from workbench.config.schema import AdaroundConfig
from workbench.options import AdaroundParameters, QuantSettings
from workbench.quantsim.encodings import quantize_dequantize
from workbench.quantsim.sim import QuantizationSimModel
from workbench.results import StageResult
from workbench.stages.adaround import run_adaround
from workbench.techniques.adaround import apply_adaround, beta_at, initial_v, rectified_sigmoid, rounding_regularizer

F32 = np.float32
W4 = QuantSettings(param_bw=4, output_bw=8)


def test_rectified_sigmoid_by_hand():
    # h(V) = clip(sigmoid(V)·1.2 − 0.1, 0, 1): h(0) = 0.5; sigmoid(V) ≤ 1/12 gives 0, ≥ 11/12 gives 1
    v = tf.constant([0.0, np.log(1 / 11), np.log(11.0), -10.0, 10.0, np.log(3.0)])
    expected = [0.5, 0.0, 1.0, 0.0, 1.0, 0.75 * 1.2 - 0.1]
    np.testing.assert_allclose(rectified_sigmoid(v).numpy(), expected, atol=1e-6)
    rest = np.array([0.0, 0.25, 0.5, 0.999], F32)
    np.testing.assert_allclose(rectified_sigmoid(initial_v(rest)).numpy(), rest, atol=1e-5)  # starts at the fraction


def test_regulariser_and_beta_schedule_by_hand():
    h = tf.constant([0.0, 1.0, 0.5, 0.25])
    # Σ 1 − |2h − 1|^β with β = 2: 0 + 0 + 1 + (1 − 0.25)
    assert float(rounding_regularizer(h, 2.0)) == pytest.approx(1.75)
    # β = 20 at the end of the warm start, 2 at the last iteration, 11 half way (cosine)
    assert float(beta_at(200, 1000, 0.2, (20, 2))) == pytest.approx(20.0)
    assert float(beta_at(600, 1000, 0.2, (20, 2))) == pytest.approx(11.0)
    assert float(beta_at(1000, 1000, 0.2, (20, 2))) == pytest.approx(2.0)


def _dense_model(rng):
    i = keras.Input((16,))
    model = keras.Model(i, keras.layers.Dense(8, name="dense")(i))
    model.get_layer("dense").set_weights([rng.normal(0, 0.5, (16, 8)).astype(F32), rng.normal(0, 0.1, 8).astype(F32)])
    return model


@pytest.mark.parametrize("per_channel", [False, True])
def test_adaround_beats_round_to_nearest_on_a_dense_layer(rng, per_channel):
    model = _dense_model(rng)
    # correlated inputs (4 factors mixed into 16 features): rounding errors can cancel across weights, which
    # round-to-nearest ignores and AdaRound exploits
    x = (rng.normal(0, 1, (256, 4)) @ rng.normal(0, 1, (4, 16)) + 0.1 * rng.normal(0, 1, (256, 16))).astype(F32)
    settings = QuantSettings(param_bw=4, per_channel=per_channel)
    rounded, encodings, report = apply_adaround(model, settings, x, AdaroundParameters(num_iterations=800, num_batches=8, batch_size=32))
    sim = QuantizationSimModel(model, settings)
    sim.compute_param_encodings()
    frozen = sim.param_encodings()["dense"]
    # encodings frozen: exactly the round-to-nearest sim's grid
    assert np.array_equal(encodings["dense"].scale, frozen.scale) and np.array_equal(encodings["dense"].offset, frozen.offset)
    kernel = rounded.get_layer("dense").kernel.numpy()
    # on the grid: quantize-dequantize leaves it unchanged, levels within [o, o + steps]
    np.testing.assert_array_equal(quantize_dequantize(kernel, frozen, -1), kernel)
    levels = kernel / frozen.scale
    assert np.allclose(levels, np.round(levels), atol=1e-4)
    assert levels.min() >= frozen.offset.min() - 1e-4 and levels.max() <= (frozen.offset + frozen.steps).max() + 1e-4
    reference = model(x).numpy()
    err_ada = np.mean((rounded(x).numpy() - reference) ** 2)
    nearest = sim.model(x).numpy()
    err_nearest = np.mean((nearest - reference) ** 2)
    assert err_ada < 0.7 * err_nearest, (err_ada, err_nearest)
    row = report.layers[0]
    assert row["loss_adaround"] < row["loss_nearest"] and 0 < row["flip_fraction"] < 0.5


@pytest.mark.slow
def test_adaround_stage_logs_flips_keeps_the_frozen_grids_and_reuses_its_kernels(tmp_path):
    ctx = stage_context(tmp_path, W4, adaround=AdaroundConfig(num_iterations=30, num_batches=2, batch_size=16))
    result = StageResult()
    run_adaround(ctx, result)
    table = result.tables[keys.ARTIFACT_ADAROUND]
    assert set(table.columns) >= {"layer", "loss_nearest", "loss_adaround", "flip_fraction", "seconds"}
    assert 0.0 <= result.metrics[keys.ADAROUND_FLIPS] < 0.5
    assert keys.SIM_TOP1 in result.metrics and keys.ARTIFACT_EXPORT in result.directories
    assert keys.TFLITE_TOP1 not in result.metrics  # 4-bit weights: no int8 TFLite check
    assert result.metrics[keys.ADAROUND_CACHE_HIT] == 0.0
    # the same model, settings, samples and parameters again: the kernels come from the cache, the same sim
    again = StageResult()
    run_adaround(ctx, again)
    assert again.metrics[keys.ADAROUND_CACHE_HIT] == 1.0
    assert again.metrics[keys.SIM_TOP1] == result.metrics[keys.SIM_TOP1]
    first_table, again_table = result.tables[keys.ARTIFACT_ADAROUND], again.tables[keys.ARTIFACT_ADAROUND]
    assert first_table.equals(again_table) and again.metrics[keys.ADAROUND_FLIPS] == result.metrics[keys.ADAROUND_FLIPS]
    # another setting is another entry
    other = StageResult()
    run_adaround(ctx.with_settings(QuantSettings(param_bw=3, output_bw=8)), other)
    assert other.metrics[keys.ADAROUND_CACHE_HIT] == 0.0
