"""Stages in-process: the baseline is what a device runs, and accuracies carry intervals and predictions."""

import numpy as np
import pytest

from helpers import context_of, small_convnet
from workbench import keys
from workbench.config.schema import BaselineConfig
from workbench.data.synthetic import make_synthetic
from workbench.evaluation.accuracy import predict_classes
from workbench.options import QuantSettings
from workbench.quantsim.export import encodings_json
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over
from workbench.results import StageResult
from workbench.stages.baseline import run_baseline
from workbench.stages.context import StageContext
from workbench.techniques import fold_batch_norms

SETTINGS = QuantSettings(scheme="tf", param_bw=4, output_bw=8)


def _context(tmp_path, fold: bool) -> StageContext:
    data = make_synthetic(num_train=64, num_val=48, num_classes=4, image_shape=(8, 8, 3), seed=0, batch_size=16)
    return context_of(
        small_convnet(), data, SETTINGS, tmp_path, calibration_samples=32, sqnr_samples=0, baseline=BaselineConfig(fold_batch_norms=fold)
    )


def _sim_of(model, ctx: StageContext) -> QuantizationSimModel:
    sim = QuantizationSimModel(model, ctx.settings)
    sim.compute_encodings(forward_pass_over(ctx.data.calibration_batches(ctx.calibration_samples, ctx.seed)))
    return sim


@pytest.mark.parametrize("fold", [True, False])
def test_baseline_is_the_sim_of_the_folded_model(tmp_path, fold):
    ctx = _context(tmp_path, fold)
    result = StageResult()
    run_baseline(ctx, result)
    reference_model = fold_batch_norms(ctx.model)[0] if fold else ctx.model
    sim = _sim_of(reference_model, ctx)
    # same encodings and the same accuracy as quantizing the folded (or, not deployable, the unfolded) model
    assert result.documents[keys.ARTIFACT_ENCODINGS] == encodings_json(sim, "0.6.1")
    assert result.metrics[keys.SIM_TOP1] == predict_classes(sim.model, ctx.data.val_batches()).top1
    assert result.tags[keys.TAG_DEPLOYABLE] == str(fold).lower()
    assert result.metrics.get(keys.BNS_FOLDED, 0) == (1 if fold else 0)
    # the folded and the unfolded sims are different simulations (BN kept float after a 4-bit conv)
    other = _sim_of(ctx.model if fold else fold_batch_norms(ctx.model)[0], ctx)
    assert encodings_json(other, "0.6.1") != result.documents[keys.ARTIFACT_ENCODINGS]


def test_accuracies_carry_intervals_and_per_image_predictions(tmp_path):
    ctx = _context(tmp_path, True)
    result = StageResult()
    run_baseline(ctx, result)
    table = result.tables[keys.ARTIFACT_PREDICTIONS]
    assert list(table.columns) == ["label", "fp32", "sim"] and len(table) == 48
    for column in ("fp32", "sim"):
        metric = keys.PREDICTION_COLUMNS[column]
        low, high = (result.metrics[k] for k in keys.ci_keys(metric))
        assert result.metrics[metric] == pytest.approx(np.mean(table[column] == table["label"]))
        assert 0.0 <= low <= result.metrics[metric] <= high <= 1.0 and high - low > 0.05  # 48 images: a wide interval
    assert result.metrics[keys.EVAL_SAMPLES] == 48 and len(result.tags[keys.TAG_EVAL_DIGEST]) == 16


def test_adaptations_are_said_not_silent(tmp_path):
    import keras

    from workbench.stages.setup import check_pairing

    data = make_synthetic(num_train=64, num_val=16, num_classes=4, image_shape=(8, 8, 1), batch_size=16)
    i = keras.Input((16, 16, 3))
    model = keras.Model(i, keras.layers.Dense(1000)(keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(i))))
    with pytest.raises(ValueError, match=r"the model has 1000 outputs, the dataset 4 classes: top-1 would compare unrelated classes"):
        check_pairing(model, data)
    notes = check_pairing(model, data, allow_class_mismatch=True)
    assert notes == {
        "data.adapted": "1-channel images repeated to 3 channels",
        "data.resized": "8x8 resized to 16x16",
        "data.class_mismatch": "the model has 1000 outputs, the dataset 4 classes",
    }
    rgb = make_synthetic(num_train=8, num_val=8, num_classes=4, image_shape=(8, 8, 3), batch_size=8)
    gray = keras.Input((8, 8, 1))
    with pytest.raises(ValueError, match="takes 1-channel images but the dataset gives 3-channel images"):
        check_pairing(keras.Model(gray, keras.layers.Dense(4)(keras.layers.Flatten()(gray))), rgb)
    flat = keras.Input((64,))
    with pytest.raises(ValueError, match=r"takes inputs of shape \(64,\) but the dataset gives \(8, 8, 1\)"):
        check_pairing(keras.Model(flat, keras.layers.Dense(4)(flat)), data)  # not an image: fed as it is, so same shape
    vectors = make_synthetic(num_train=8, num_val=8, num_classes=4, image_shape=(64,), batch_size=8)
    assert check_pairing(keras.Model(flat, keras.layers.Dense(4)(flat)), vectors) == {}


def test_calibration_logs_the_samples_it_used(tmp_path):
    import dataclasses

    ctx = _context(tmp_path, True)
    ctx = ctx.with_settings(dataclasses.replace(ctx.settings, calibration_samples=100000))
    result = StageResult()
    run_baseline(ctx, result)
    assert result.metrics[keys.CALIBRATION_SAMPLES] == 64  # the whole training split, not 100000
    assert result.tags["calibration.capped"].startswith("64 calibration samples used")


def _two_headed():
    import keras

    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, activation="relu", name="conv")(i))
    return keras.Model(i, [keras.layers.Dense(1, name="score")(x), keras.layers.Dense(4, name="classes")(x)])


def test_a_multi_output_model_is_read_at_its_classification_output(tmp_path):
    from workbench.stages.setup import check_pairing, classifier_output_index

    model = _two_headed()
    ctx = _context(tmp_path, True)
    assert classifier_output_index(model, 4, None) == 1  # the only output with the dataset's 4 classes
    assert classifier_output_index(model, 4, "classes") == 1
    with pytest.raises(ValueError, match=r"eval.output='nope' is not an output of the model: its outputs are score, classes"):
        classifier_output_index(model, 4, "nope")
    with pytest.raises(ValueError, match=r"2 outputs \(score, classes\) and 0 of them give 3 classes: set eval.output=NAME"):
        classifier_output_index(model, 3, None)
    assert "classes" in check_pairing(model, ctx.data)["eval.output"]
    ctx = context_of(model, ctx.data, SETTINGS, tmp_path, calibration_samples=32, sqnr_samples=16, eval_output=1)
    result = StageResult()
    run_baseline(ctx, result)
    sim = _sim_of(fold_batch_norms(model)[0], ctx)
    assert result.metrics[keys.SIM_TOP1] == predict_classes(sim.model, ctx.data.val_batches(), 1).top1
    layers = result.tables[keys.ARTIFACT_LAYERS].set_index("layer")
    assert np.isfinite(layers.loc["score", "sqnr_db"]) and "score" in sim.output_quantizers  # the other head: quantized, by SQNR


def test_non_finite_weights_are_refused_when_the_model_is_built():
    from workbench.config.validate import ConfigError
    from workbench.stages.setup import flat_model

    model = small_convnet()
    bn = model.get_layer("bn")
    weights = bn.get_weights()
    weights[3][0] = np.inf  # an infinite moving variance
    bn.set_weights(weights)
    with pytest.raises(ConfigError, match=r"non-finite weights: layer 'bn' moving_variance: 1 infinite of 8 values"):
        flat_model(model)


def test_a_two_input_model_needs_one_array_per_input_name(tmp_path):
    import keras

    from workbench.config.validate import ConfigError
    from workbench.data.images import from_arrays
    from workbench.stages.bc import run_bc
    from workbench.stages.setup import check_pairing

    a, m = keras.Input((6, 2), name="audio"), keras.Input((3,), name="meta")
    flat = keras.layers.Concatenate()([keras.layers.Flatten()(a), m])
    model = keras.Model([a, m], keras.layers.Dense(4, name="head")(flat))
    rng = np.random.default_rng(0)
    x = {"audio": rng.normal(size=(16, 6, 2)), "meta": rng.normal(size=(16, 3))}
    y = np.arange(16) % 4
    assert check_pairing(model, from_arrays(x, y, x, y, 4, 8)) == {}
    with pytest.raises(ConfigError, match=r"2 inputs \(audio, meta\) but the dataset gives one array: give one array per input"):
        check_pairing(model, from_arrays(x["audio"], y, x["audio"], y, 4, 8))
    wrong = {"audio": x["audio"][:, :5], "meta": x["meta"]}
    with pytest.raises(ConfigError, match=r"input audio: the model takes inputs of shape \(6, 2\) but the dataset gives \(5, 2\)"):
        check_pairing(model, from_arrays(wrong, y, wrong, y, 4, 8))
    ctx = context_of(model, from_arrays(x, y, x, y, 4, 8), SETTINGS, tmp_path)
    with pytest.raises(ValueError, match="bias correction reads its samples as one array: it takes single-input models"):
        run_bc(ctx, StageResult())
