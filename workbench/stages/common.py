"""Steps shared by the stages: FP32 evaluation, and sim build → calibrate → evaluate → diagnose."""

from __future__ import annotations

import logging
import os
import time
import weakref

import keras
import numpy as np
import pandas as pd

from workbench import keys
from workbench.evaluation.accuracy import Predictions, predict_classes
from workbench.evaluation.statistics import wilson_interval
from workbench.evaluation.tasks import Classification, TaskScore, score_task
from workbench.quantsim.coverage import coverage_table, summarize
from workbench.quantsim.diagnostics import layer_output_sqnr, layer_table
from workbench.quantsim.encodings import Encoding
from workbench.quantsim.export import encodings_json, export_model
from workbench.quantsim.fused import kernel_name
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over
from workbench.results import ExportedModel, StageResult
from workbench.stages.context import StageContext

log = logging.getLogger(__name__)


def record_accuracy(result: StageResult, column: str, predictions: Predictions, level: int = logging.INFO) -> float:
    """``<column>/top1`` with its Wilson interval, and the per-image predictions for paired tests."""
    metric = keys.PREDICTION_COLUMNS[column]
    correct, total = int(predictions.correct.sum()), len(predictions.labels)
    low, high = wilson_interval(correct, total)
    ci_low, ci_high = keys.ci_keys(metric)
    result.metrics.update({metric: predictions.top1, ci_low: low, ci_high: high, keys.EVAL_SAMPLES: total})
    table = result.tables.get(keys.ARTIFACT_PREDICTIONS)
    if table is None:
        table = pd.DataFrame({"label": predictions.labels})
        result.tags[keys.TAG_EVAL_DIGEST] = predictions.digest
    elif result.tags[keys.TAG_EVAL_DIGEST] != predictions.digest:
        raise ValueError(f"{column} was evaluated on other images than the run's other models")
    table[column] = predictions.predicted
    result.tables[keys.ARTIFACT_PREDICTIONS] = table
    log.log(level, "%s top-1: %.4f (95%% CI %.4f–%.4f, %d images)", column, predictions.top1, low, high, total)
    return predictions.top1


def record_score(result: StageResult, column: str, score: TaskScore, level: int = logging.INFO) -> float:
    """``<column>/<metric>`` (``sim/miou``, ...) with its interval, the task's other metrics beside it, and the
    per-sample statistics (``samples.csv``, columns ``<column>:<k>``) for paired tests."""
    task = score.task
    metric = keys.metric_key(column, task.metric)
    ci_low, ci_high = keys.ci_keys(metric)
    n = len(score.statistics)
    result.metrics.update({metric: score.value, ci_low: score.low, ci_high: score.high, keys.EVAL_SAMPLES: n})
    result.metrics.update({keys.metric_key(column, name): value for name, value in score.secondary.items()})
    table = result.tables.get(keys.ARTIFACT_SAMPLES)
    if table is None:
        table = pd.DataFrame(index=range(n))
        result.tags[keys.TAG_EVAL_DIGEST] = score.digest
    elif result.tags[keys.TAG_EVAL_DIGEST] != score.digest:
        raise ValueError(f"{column} was evaluated on other samples than the run's other models")
    for k in range(score.statistics.shape[1]):
        table[f"{column}:{k}"] = score.statistics[:, k]
    result.tables[keys.ARTIFACT_SAMPLES] = table
    log.log(level, "%s %s: %.4g (95%% CI %.4g–%.4g, %d samples)", column, task.metric, score.value, score.low, score.high, n)
    return score.value


def score_model(ctx: StageContext, model: keras.Model, column: str, result: StageResult, level: int = logging.INFO) -> float:
    """``model``'s headline metric on the validation split by the run's task: top-1 and per-image predictions for
    a classifier (``record_accuracy``), else the task's metric and per-sample statistics (``record_score``)."""
    if isinstance(ctx.task, Classification):
        return record_accuracy(result, column, predict_classes(model, ctx.data.val_batches(), ctx.eval_output), level)
    reference = ctx.model if not ctx.task.needs_labels else None
    score = score_task(model, ctx.data.val_batches(), ctx.task, ctx.eval_output, reference=reference, seed=ctx.seed)
    return record_score(result, column, score, level)


def headline(ctx: StageContext, column: str) -> str:
    """The metric key of ``column``'s headline (``sim/top1``, ``fp32/miou``, ...)."""
    return keys.metric_key(column, ctx.task.metric)


def record_drop(ctx: StageContext, result: StageResult) -> None:
    """``sim/drop``: how much the sim loses against FP32, in the metric's own direction (positive: worse)."""
    fp32, sim = result.metrics.get(headline(ctx, "fp32")), result.metrics.get(headline(ctx, "sim"))
    if fp32 is not None and sim is not None:
        result.metrics[keys.SIM_DROP] = (fp32 - sim) if ctx.task.higher_is_better else (sim - fp32)


def single_output_only(ctx: StageContext, stage: str) -> None:
    """The per-layer searches compare logits: a one-line refusal for a multi-output model, before any work."""
    if ctx.eval_output is not None:
        raise ValueError(
            f"+stage={stage} measures one output's logits: it takes single-output models (this one has {len(ctx.model.outputs)})"
        )


def single_input_only(ctx: StageContext, what: str) -> None:
    """What reads its samples as one array (bias correction, AdaRound, the per-layer searches): a one-line refusal
    for a model with several inputs, before any work."""
    if len(ctx.model.inputs) > 1:
        raise ValueError(f"{what} reads its samples as one array: it takes single-input models (this one has {len(ctx.model.inputs)})")


def validation_arrays(ctx: StageContext, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` validation images and labels as arrays (searches evaluate them many times)."""
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ctx.data.val_batches(limit=limit)))
    return np.concatenate(xs), np.concatenate(ys)


_FP32_SHOWN: weakref.WeakSet = weakref.WeakSet()  # models whose FP32 accuracy the console has shown


def evaluate_fp32(ctx: StageContext, result: StageResult) -> float | None:
    """The FP32 model's headline metric (none for a label-free task: it is what the others are measured against)."""
    if not ctx.task.needs_labels:
        return None
    level = logging.DEBUG if ctx.model in _FP32_SHOWN else logging.INFO  # a pipeline's stages share the model
    _FP32_SHOWN.add(ctx.model)
    with result.timed("fp32_eval"):
        return score_model(ctx, ctx.model, "fp32", result, level)


def calibrated_sim(
    ctx: StageContext, model: keras.Model, result: StageResult, param_encodings: dict[str, Encoding] | None = None
) -> QuantizationSimModel:
    """The sim of ``model`` with encodings from the calibration samples (weight grids ``param_encodings`` kept)."""
    with result.timed("sim_build"):
        sim = QuantizationSimModel(model, ctx.settings)
    result.tags[keys.TAG_SIM_KERNELS] = kernel_name()  # what the calibration and evaluation times were measured with
    counter = [0]
    with result.timed("calibration"):
        batches = ctx.data.calibration_batches(ctx.calibration_samples, ctx.seed)
        sim.compute_encodings(forward_pass_over(batches, counter), param_encodings=param_encodings, also=ctx.calibration_also)
    used = counter[0]
    result.metrics[keys.CALIBRATION_SAMPLES] = used  # the effective count, not the requested one
    if used < ctx.calibration_samples:
        note = f"{used} calibration samples used: quant.calibration_samples={ctx.calibration_samples} exceeds the training split"
        result.tags[keys.TAG_CALIBRATION_CAPPED] = note
        log.warning("%s", note)
    return sim


def record_coverage(sim: QuantizationSimModel, result: StageResult) -> None:
    """coverage.csv, the coverage metrics and tag, and one console line naming what stays float."""
    table = coverage_table(sim)
    summary = summarize(table)
    result.tables[keys.ARTIFACT_COVERAGE] = table
    result.metrics[keys.WEIGHTS_QUANTIZED] = summary.weights_quantized
    result.metrics[keys.FLOAT_LAYERS] = len(summary.float_layers)
    if summary.partial:
        what = "; ".join(f"{n}: {why}" for n, why in summary.unsupported.items())
        result.tags[keys.TAG_COVERAGE] = f"partial: {what}"[:500]
    else:
        result.tags[keys.TAG_COVERAGE] = "user" if summary.float_layers else "full"
    line = summary.console_line()
    if line:
        log.log(logging.WARNING if summary.partial else logging.INFO, "%s", line)


def evaluate_sim(ctx: StageContext, sim: QuantizationSimModel, result: StageResult) -> float:
    """The sim's headline metric (sim/top1 for a classifier), the encodings JSON and the per-layer table (with SQNR vs FP32)."""
    result.sim = sim
    result.metrics[keys.NUM_PARAM_QUANTIZERS] = len(sim.param_quantizers)
    result.metrics[keys.NUM_OUTPUT_QUANTIZERS] = len(sim.output_quantizers)
    record_coverage(sim, result)
    result.documents[keys.ARTIFACT_ENCODINGS] = encodings_json(sim, "0.6.1")
    result.documents[keys.ARTIFACT_ENCODINGS_V1] = encodings_json(sim, "1.0.0")
    s = sim.settings
    log.debug("quantsim W%dA%d %s/%s:", s.param_bw, s.output_bw, s.param_scheme.value, s.output_scheme.value)
    with result.timed("sim_eval"):
        top1 = score_model(ctx, sim.model, "sim", result)
    record_drop(ctx, result)
    record_layers(ctx, sim, result)
    return top1


def record_layers(ctx: StageContext, sim: QuantizationSimModel, result: StageResult) -> None:
    """The per-layer table, with each layer's output SQNR vs FP32 on ``tracking.sqnr_samples`` validation images
    (none when 0) and their mean."""
    sqnr = {}
    if ctx.sqnr_samples > 0:
        with result.timed("sqnr"):
            sqnr = layer_output_sqnr(sim, ctx.data.val_batches(limit=ctx.sqnr_samples))
        finite = [v for v in sqnr.values() if np.isfinite(v)]
        if finite:
            result.metrics[keys.MEAN_SQNR_DB] = float(np.mean(finite))
    result.tables[keys.ARTIFACT_LAYERS] = layer_table(sim, sqnr)


def quantize_and_evaluate(ctx: StageContext, model: keras.Model, result: StageResult) -> QuantizationSimModel:
    """Build the sim of ``model``, calibrate it, evaluate it and record its diagnostics."""
    sim = calibrated_sim(ctx, model, result)
    evaluate_sim(ctx, sim, result)
    return sim


EXAMPLE_IMAGES = 2  # the logged model's input example


def export_sim(ctx: StageContext, sim: QuantizationSimModel, stage: str, result: StageResult) -> str:
    """Export the sim (float model + encodings) under ``<export_dir>/<stage>-<time>-<pid>/``; the run logs
    the folder under ``export/`` and the model as an MLflow model carrying it. Returns the folder."""
    export_dir = os.path.join(ctx.export_dir, f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    with result.timed("export"):
        export_model(sim, export_dir, "model")
    result.directories[keys.ARTIFACT_EXPORT] = export_dir
    first = next(iter(ctx.data.val_batches(limit=EXAMPLE_IMAGES)))[0]
    example = keras.tree.map_structure(lambda t: t.numpy(), first)  # a dict of arrays for several inputs
    result.exported = ExportedModel(sim.fp_model, example, export_dir)
    log.debug("exported the model and its encodings to %s", export_dir)
    return export_dir
