"""Stage ``baseline``: FP32 evaluation, then quantsim of the model as an int8 runtime runs it.

No int8 runtime keeps a batch norm in float after a quantized conv, so the deployable baseline
quantizes the BN-folded model (the same transform as ``bn_fold``, from the same cache). With
``baseline.fold_batch_norms=false`` the unfolded kernels are quantized and the BNs stay float: a
simulation no device runs, tagged ``deployable=false`` and never used as the reference of a comparison.
"""

from __future__ import annotations

from workbench import keys
from workbench.results import StageResult
from workbench.stages.common import evaluate_fp32, quantize_and_evaluate
from workbench.stages.context import StageContext
from workbench.stages.prepare import folded_model


def run_baseline(ctx: StageContext, result: StageResult) -> None:
    evaluate_fp32(ctx, result)
    deployable = ctx.config.baseline.fold_batch_norms
    result.tags[keys.TAG_DEPLOYABLE] = str(deployable).lower()
    model = folded_model(ctx, result) if deployable else ctx.model
    quantize_and_evaluate(ctx, model, result)
