"""Stage ``bc``: BN fold + CLE + bias correction, then quantsim."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from workbench import keys
from workbench.data.dataset import as_array
from workbench.results import StageResult
from workbench.stages.cle import equalized_model
from workbench.stages.common import evaluate_fp32, quantize_and_evaluate
from workbench.stages.context import StageContext
from workbench.stages.transforms import check_transformed
from workbench.techniques.bias_correction import correct_bias, correction_sim, layer_output_shifts

log = logging.getLogger(__name__)
SHIFT_SAMPLES = 256


def bias_corrected_model(ctx: StageContext, result: StageResult, equalized, summary: dict):
    """Bias correction of the equalized model, with shift metrics and the per-layer table."""
    bn_stats = {
        k: (np.asarray(v["gamma"], np.float32), np.asarray(v["beta"], np.float32)) for k, v in summary.get("bn_effective", {}).items()
    }
    data = ctx.data
    bc = ctx.bc
    quant = as_array(data.calibration_batches(bc.num_quant_samples, ctx.seed, bc.batch_size))
    samples = as_array(data.calibration_batches(bc.num_bias_correct_samples, ctx.seed + 1, bc.batch_size))
    with result.timed("bias_correction"):
        corrected, report = correct_bias(equalized, ctx.settings, quant, samples, mode=bc.mode, bn_stats=bn_stats, ignore=bc.ignore)
    # the shift each layer's quantized output has vs FP32, on held-out validation images
    held_out = as_array(data.val_batches(limit=SHIFT_SAMPLES))
    with result.timed("bc_shift_check"):
        sim, enc = correction_sim(equalized, ctx.settings, quant)
        before = layer_output_shifts(equalized, sim, enc, held_out)
        sim, enc = correction_sim(corrected, ctx.settings, quant)
        after = layer_output_shifts(equalized, sim, enc, held_out)
    table = pd.DataFrame(report.layers)
    table["shift_before"] = table["layer"].map(before)
    table["shift_after"] = table["layer"].map(after)
    result.tables[keys.ARTIFACT_BIAS_CORRECTION] = table
    done = report.corrected()
    result.metrics[keys.BC_LAYERS_CORRECTED] = len(done)
    if done:
        result.metrics[keys.BC_SHIFT_BEFORE] = float(np.mean([before[n] for n in done]))
        result.metrics[keys.BC_SHIFT_AFTER] = float(np.mean([after[n] for n in done]))
        log.info(
            "bias correction: mean |shift| %.4g -> %.4g over %d layers",
            result.metrics[keys.BC_SHIFT_BEFORE],
            result.metrics[keys.BC_SHIFT_AFTER],
            len(done),
        )
    return corrected


def run_bc(ctx: StageContext, result: StageResult) -> None:
    evaluate_fp32(ctx, result)
    equalized, summary = equalized_model(ctx, result)
    corrected = bias_corrected_model(ctx, result, equalized, summary)
    check_transformed(ctx, corrected, result)
    quantize_and_evaluate(ctx, corrected, result)
