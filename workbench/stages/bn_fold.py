"""Stage ``bn_fold``: fold batch norms, then quantsim (the deployable baseline, with fold diagnostics)."""

from __future__ import annotations

import keras

from workbench import keys
from workbench.results import StageResult
from workbench.stages.common import evaluate_fp32, quantize_and_evaluate
from workbench.stages.context import StageContext
from workbench.stages.transforms import cached_transform, check_transformed, record_ranges
from workbench.techniques.batch_norm_fold import fold_batch_norms
from workbench.techniques.weight_ranges import channel_ranges


def _fold(model):
    folded, report = fold_batch_norms(model)
    return folded, report.summary()


def folded_model(ctx: StageContext, result: StageResult) -> keras.Model:
    """The context's model with its batch norms folded (cached), with the fold counts."""
    model, summary = cached_transform(ctx, "bn_fold", {}, _fold, result)
    result.metrics[keys.BNS_FOLDED] = len(summary["folded"])
    result.metrics[keys.BNS_AFFINE] = len(summary["affine"])
    return model


def run_bn_fold(ctx: StageContext, result: StageResult) -> None:
    evaluate_fp32(ctx, result)
    model = folded_model(ctx, result)
    check_transformed(ctx, model, result)
    record_ranges(channel_ranges(ctx.model), model, result, "per-channel weight ranges: original vs BN-folded")
    quantize_and_evaluate(ctx, model, result)
