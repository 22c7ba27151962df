"""Stage ``bc``: BN fold + CLE + bias correction, then quantsim."""

from __future__ import annotations

import logging

from workbench.results import StageResult
from workbench.stages.common import evaluate_fp32, quantize_and_evaluate
from workbench.stages.context import StageContext
from workbench.stages.prepare import bias_corrected_model, equalized_model
from workbench.stages.transforms import check_transformed

log = logging.getLogger(__name__)


def run_bc(ctx: StageContext, result: StageResult) -> None:
    evaluate_fp32(ctx, result)
    equalized, summary = equalized_model(ctx, result)
    corrected = bias_corrected_model(ctx, result, equalized, summary)
    check_transformed(ctx, corrected, result)
    quantize_and_evaluate(ctx, corrected, result)
