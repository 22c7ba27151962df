"""Stage ``baseline``: FP32 evaluation, then quantsim of the unmodified model."""

from __future__ import annotations

from workbench.results import StageResult
from workbench.stages.common import evaluate_fp32, quantize_and_evaluate
from workbench.stages.context import StageContext


def run_baseline(ctx: StageContext, result: StageResult) -> None:
    evaluate_fp32(ctx, result)
    quantize_and_evaluate(ctx, ctx.model, result)
