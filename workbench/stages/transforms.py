"""Shared by the stages that transform the FP32 model: caching, checks, range diagnostics."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import keras

from workbench import keys
from workbench.evaluation.accuracy import evaluate_against, max_output_difference
from workbench.evaluation.tasks import Classification, score_task
from workbench.figures import channel_range_figure
from workbench.graph.health import weight_problems
from workbench.models.cache import cached_model, weights_digest
from workbench.results import StageResult
from workbench.stages.context import StageContext
from workbench.techniques.weight_ranges import channel_ranges, most_uneven, range_table

log = logging.getLogger(__name__)
# bump when a technique's output or report format changes, so stale cache entries are not reused
TRANSFORM_FORMAT = 2


def cached_transform(
    ctx: StageContext, technique: str, options: dict, transform: Callable[[keras.Model], tuple[keras.Model, dict]], result: StageResult
) -> tuple[keras.Model, dict]:
    """Run ``transform`` on the context's model, or load its result from the cache."""
    spec = {
        "source": weights_digest(ctx.model),
        "technique": technique,
        "options": options,
        "keras": keras.__version__,
        "format": TRANSFORM_FORMAT,
    }
    with result.timed(f"{technique}_transform"):
        model, summary, hit = cached_model(os.path.join(ctx.cache_dir, "transformed"), technique, spec, lambda: transform(ctx.model))
    result.metrics[keys.TRANSFORM_CACHE_HIT] = float(hit)
    result.documents[keys.ARTIFACT_TRANSFORM_REPORT] = summary
    return model, summary


def check_transformed(ctx: StageContext, model: keras.Model, result: StageResult) -> None:
    """FP32 accuracy of the transformed model and its largest output change vs the original (and no NaN/Inf in it)."""
    problems = weight_problems(model)
    if problems:
        raise RuntimeError(f"the transform produced non-finite weights: {'; '.join(problems[:3])}")
    if not isinstance(ctx.task, Classification):  # another task: its metric of the transformed model, and the change
        with result.timed("transformed_eval"):
            diff = max_output_difference(ctx.model, model, ctx.data.val_batches())
            metric = ctx.task.metric
            if ctx.task.needs_labels:
                value = score_task(model, ctx.data.val_batches(), ctx.task, ctx.eval_output, seed=ctx.seed).value
                result.metrics[keys.metric_key("transformed", metric)] = value
                log.info("transformed FP32 %s %.4g, max |output change| %.3g", metric, value, diff)
            else:
                log.info("transformed FP32 max |output change| %.3g", diff)
        result.metrics[keys.TRANSFORMED_MAX_ABS_DIFF] = diff
        return
    with result.timed("transformed_eval"):
        top1, diff = evaluate_against(ctx.model, model, ctx.data.val_batches(), ctx.eval_output)
    result.metrics[keys.TRANSFORMED_TOP1] = top1
    result.metrics[keys.TRANSFORMED_MAX_ABS_DIFF] = diff
    log.info("transformed FP32 top-1 %.4f, max |output change| %.3g", top1, diff)


def record_ranges(before_model_ranges: dict, after: keras.Model, result: StageResult, title: str) -> None:
    """Per-layer channel-range table and a picture of the most uneven layers."""
    after_ranges = channel_ranges(after)
    result.tables[keys.ARTIFACT_CHANNEL_RANGES] = range_table(before_model_ranges, after_ranges)
    layers = most_uneven(before_model_ranges, 4)
    if layers:
        result.figures[keys.ARTIFACT_CHANNEL_RANGES_PNG] = channel_range_figure(before_model_ranges, after_ranges, layers, title)
