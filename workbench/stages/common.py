"""Steps shared by the stages: FP32 evaluation, and sim build → calibrate → evaluate → diagnose."""

from __future__ import annotations

import logging

import keras
import numpy as np

from workbench.evaluation.accuracy import evaluate_top1
from workbench.quantsim.diagnostics import layer_output_sqnr, layer_table
from workbench.quantsim.export import encodings_json
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over
from workbench.results import StageResult
from workbench.stages.context import StageContext
from workbench.tracking import keys

log = logging.getLogger(__name__)


def evaluate_fp32(ctx: StageContext, result: StageResult) -> float:
    with result.timed("fp32_eval"):
        top1 = evaluate_top1(ctx.model, ctx.data.val_batches())
    result.metrics[keys.FP32_TOP1] = top1
    log.info("FP32 top-1: %.4f", top1)
    return top1


def calibrated_sim(ctx: StageContext, model: keras.Model, result: StageResult) -> QuantizationSimModel:
    """The sim of ``model`` with encodings from the calibration samples."""
    with result.timed("sim_build"):
        sim = QuantizationSimModel(model, ctx.settings)
    with result.timed("calibration"):
        sim.compute_encodings(forward_pass_over(ctx.data.calibration_batches(ctx.calibration_samples, ctx.seed)))
    return sim


def evaluate_sim(ctx: StageContext, sim: QuantizationSimModel, result: StageResult) -> float:
    """sim/top1, the encodings JSON and the per-layer table (with SQNR vs FP32)."""
    result.metrics[keys.NUM_PARAM_QUANTIZERS] = len(sim.param_quantizers)
    result.metrics[keys.NUM_OUTPUT_QUANTIZERS] = len(sim.output_quantizers)
    result.documents[keys.ARTIFACT_ENCODINGS] = encodings_json(sim, "0.6.1")
    result.documents[keys.ARTIFACT_ENCODINGS_V1] = encodings_json(sim, "1.0.0")
    with result.timed("sim_eval"):
        top1 = evaluate_top1(sim.model, ctx.data.val_batches())
    result.metrics[keys.SIM_TOP1] = top1
    if keys.FP32_TOP1 in result.metrics:
        result.metrics[keys.SIM_DROP] = result.metrics[keys.FP32_TOP1] - top1
    log.info("quantsim top-1: %.4f (W%dA%d %s)", top1, sim.settings.param_bw, sim.settings.output_bw, sim.settings.scheme.value)
    sqnr = {}
    if ctx.sqnr_samples > 0:
        with result.timed("sqnr"):
            sqnr = layer_output_sqnr(sim, ctx.data.val_batches(limit=ctx.sqnr_samples))
        finite = [v for v in sqnr.values() if np.isfinite(v)]
        if finite:
            result.metrics[keys.MEAN_SQNR_DB] = float(np.mean(finite))
    result.tables[keys.ARTIFACT_LAYERS] = layer_table(sim, sqnr)
    return top1


def quantize_and_evaluate(ctx: StageContext, model: keras.Model, result: StageResult) -> QuantizationSimModel:
    """Build the sim of ``model``, calibrate it, evaluate it and record its diagnostics."""
    sim = calibrated_sim(ctx, model, result)
    evaluate_sim(ctx, sim, result)
    return sim
