"""Stages in-process: the baseline is what a device runs, and accuracies carry intervals and predictions."""

import numpy as np
import pytest

from helpers import small_convnet
from workbench.data.synthetic import make_synthetic
from workbench.evaluation.accuracy import predict_classes
from workbench.options import QuantSettings
from workbench.quantsim.export import encodings_json
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over
from workbench.results import StageResult
from workbench.stages.baseline import run_baseline
from workbench.stages.context import StageContext
from workbench.techniques import fold_batch_norms
from workbench.tracking import keys

SETTINGS = QuantSettings(scheme="tf", param_bw=4, output_bw=8)


def _context(tmp_path, fold: bool) -> StageContext:
    data = make_synthetic(num_train=64, num_val=48, num_classes=4, image_shape=(8, 8, 3), seed=0, batch_size=16)
    return StageContext(
        model=small_convnet(), data=data, settings=SETTINGS, calibration_samples=32, sqnr_samples=0, seed=0,
        cache_dir=str(tmp_path), options={"baseline": {"fold_batch_norms": fold}},
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
