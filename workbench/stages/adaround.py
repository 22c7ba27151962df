"""Stage ``adaround``: BN fold (+ CLE) + AdaRound, then quantsim with the frozen weight grids."""

from __future__ import annotations

import logging

import pandas as pd

from workbench import keys
from workbench.data.dataset import as_array
from workbench.results import StageResult
from workbench.stages.common import calibrated_sim, evaluate_fp32, evaluate_sim, export_sim, single_input_only
from workbench.stages.context import StageContext
from workbench.stages.prepare import adarounded, prepared_model
from workbench.stages.tflite_check import check_tflite

log = logging.getLogger(__name__)


def run_adaround(ctx: StageContext, result: StageResult) -> None:
    single_input_only(ctx, "+stage=adaround")
    evaluate_fp32(ctx, result)
    params = ctx.config.adaround
    if ctx.config.adaround.fold_batch_norms:
        model = prepared_model(ctx, result, ctx.config.adaround.cle)
    else:
        model = ctx.model  # BNs kept in float: not what a device runs
        result.tags[keys.TAG_DEPLOYABLE] = "false"
    samples = as_array(ctx.data.calibration_batches(params.num_batches * params.batch_size, ctx.seed, params.batch_size))
    with result.timed("adaround"):
        rounded, encodings, report = adarounded(ctx, model, ctx.settings, samples, params, result)
    table = pd.DataFrame(report.layers)
    if report.skipped:
        log.warning(
            "AdaRound left %d layers at round-to-nearest: %s",
            len(report.skipped),
            "; ".join(f"{n} ({why})" for n, why in report.skipped.items()),
        )
    skipped = pd.DataFrame([{"layer": n, "note": why} for n, why in report.skipped.items()])
    result.tables[keys.ARTIFACT_ADAROUND] = pd.concat([table, skipped], ignore_index=True) if report.skipped else table
    result.metrics[keys.ADAROUND_FLIPS] = report.mean_flip_fraction
    result.metrics[keys.ADAROUND_LOSS_NEAREST] = float(table["loss_nearest"].mean())
    result.metrics[keys.ADAROUND_LOSS] = float(table["loss_adaround"].mean())
    log.info(
        "AdaRound: %d layers in %.1f s, %.1f %% of weights rounded the other way; mean reconstruction loss %.4g -> %.4g",
        len(table),
        report.seconds,
        100 * report.mean_flip_fraction,
        result.metrics[keys.ADAROUND_LOSS_NEAREST],
        result.metrics[keys.ADAROUND_LOSS],
    )
    sim = calibrated_sim(ctx, rounded, result, param_encodings=encodings)
    evaluate_sim(ctx, sim, result)
    export_dir = export_sim(ctx, sim, "adaround", result)
    if ctx.config.adaround.export_tflite and ctx.settings.param_bw == 8 and ctx.settings.output_bw == 8:
        check_tflite(ctx, sim, export_dir, result)
