"""Stage ``cle``: BN fold + cross-layer equalization, then quantsim as in baseline."""

from __future__ import annotations

from workbench.results import StageResult
from workbench.stages.common import evaluate_fp32, quantize_and_evaluate
from workbench.stages.context import StageContext
from workbench.stages.prepare import equalized_model
from workbench.stages.transforms import check_transformed


def run_cle(ctx: StageContext, result: StageResult) -> None:
    evaluate_fp32(ctx, result)
    model, _ = equalized_model(ctx, result)
    check_transformed(ctx, model, result)
    quantize_and_evaluate(ctx, model, result)
