"""Stage ``cle``: BN fold + cross-layer equalization, then quantsim as in baseline."""

from __future__ import annotations

from functools import partial

import keras

from workbench import keys
from workbench.graph.functional import FunctionalGraph
from workbench.graph.rewrite import GraphEdit
from workbench.options import ReLU6Mode
from workbench.results import StageResult
from workbench.stages.bn_fold import folded_model
from workbench.stages.common import evaluate_fp32, quantize_and_evaluate
from workbench.stages.context import StageContext
from workbench.stages.transforms import cached_transform, check_transformed, record_ranges
from workbench.techniques.batch_norm_fold import plan_batch_norm_folds
from workbench.techniques.cross_layer_equalization import equalize_model
from workbench.techniques.weight_ranges import channel_ranges, kernel_channel_ranges


def _equalize(model, relu6_mode: str, absorb: bool):
    equalized, report = equalize_model(model, relu6_mode, absorb)
    return equalized, report.summary()


def folded_ranges(model) -> dict:
    """Channel ranges after BN folding alone (computed on the weights, no rebuild)."""
    edit = GraphEdit()
    plan_batch_norm_folds(model, FunctionalGraph.from_model(model), edit)
    ranges = channel_ranges(model)
    for name, kernel in edit.kernels.items():
        ranges[name] = kernel_channel_ranges(kernel, isinstance(model.get_layer(name), keras.layers.DepthwiseConv2D))
    return ranges


def cle_options(ctx: StageContext) -> dict:
    """The options that change the equalized model (part of its cache key)."""
    return {"relu6_mode": ReLU6Mode(ctx.cle.relu6_mode).value, "absorb": bool(ctx.cle.high_bias_absorption)}


def equalized_model(ctx: StageContext, result: StageResult):
    """BN fold + CLE of the context's model (cached), with its counts and range diagnostics."""
    options = cle_options(ctx)
    model, summary = cached_transform(
        ctx, "cle", options, partial(_equalize, relu6_mode=options["relu6_mode"], absorb=options["absorb"]), result
    )
    result.metrics[keys.BNS_FOLDED] = len(summary["fold"]["folded"])
    result.metrics[keys.BNS_AFFINE] = len(summary["fold"]["affine"])
    result.metrics[keys.CLS_SETS] = len(summary["cls_sets"])
    result.metrics[keys.LAYERS_SKIPPED] = len(summary["skipped"])
    result.metrics[keys.ABSORBED_LINKS] = len(summary["absorbed"])
    result.metrics[keys.BORDER_LINKS] = len(summary["border_links"])
    result.tags[keys.TAG_CLE_RELU6_MODE] = options["relu6_mode"]
    record_ranges(folded_ranges(ctx.model), model, result, "per-channel weight ranges: BN-folded vs equalized")
    return model, summary


def prepared_model(ctx: StageContext, result: StageResult, cle: bool) -> keras.Model:
    """The BN-folded model, equalized too when ``cle`` (both cached transforms, with their diagnostics)."""
    return equalized_model(ctx, result)[0] if cle else folded_model(ctx, result)


def run_cle(ctx: StageContext, result: StageResult) -> None:
    evaluate_fp32(ctx, result)
    model, _ = equalized_model(ctx, result)
    check_transformed(ctx, model, result)
    quantize_and_evaluate(ctx, model, result)
