"""Stage ``bn_fold``: fold batch norms, then quantsim (the deployable baseline, with fold diagnostics)."""

from __future__ import annotations

from workbench.results import StageResult
from workbench.stages.common import evaluate_fp32, quantize_and_evaluate
from workbench.stages.context import StageContext
from workbench.stages.prepare import folded_model
from workbench.stages.transforms import check_transformed, record_ranges
from workbench.techniques.weight_ranges import channel_ranges


def run_bn_fold(ctx: StageContext, result: StageResult) -> None:
    evaluate_fp32(ctx, result)
    model = folded_model(ctx, result)
    check_transformed(ctx, model, result)
    record_ranges(channel_ranges(ctx.model), model, result, "per-channel weight ranges: original vs BN-folded")
    quantize_and_evaluate(ctx, model, result)
