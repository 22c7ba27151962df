"""Stage ``qat``: BN fold + CLE (+ BC when ``qat.bias_correction``) + QAT, then evaluate and export.

With ``qat.learn_ranges`` (default) the quantizer ranges are learned with the weights, under the
range-learning variant of ``quant.scheme`` (tf → training_range_learning_with_tf_init, ...), with
strict symmetric parameter grids; otherwise the ranges stay as calibrated and only the weights train.
"""

from __future__ import annotations

import logging

import numpy as np

from workbench import keys
from workbench.evaluation.accuracy import evaluate_top1
from workbench.evaluation.tasks import Classification, score_task
from workbench.results import StageResult
from workbench.stages.common import calibrated_sim, evaluate_fp32, evaluate_sim, export_sim
from workbench.stages.context import StageContext
from workbench.stages.prepare import bias_corrected_model, equalized_model
from workbench.stages.tflite_check import check_tflite
from workbench.techniques.range_learning import ends_in_softmax, simulate_trained, train_qat

log = logging.getLogger(__name__)


def run_qat(ctx: StageContext, result: StageResult) -> None:
    evaluate_fp32(ctx, result)
    model, summary = equalized_model(ctx, result)
    q = ctx.config.qat
    if q.bias_correction:
        model = bias_corrected_model(ctx, result, model, summary)
    learn = q.learn_ranges
    if learn:
        ctx = ctx.with_settings(ctx.settings.with_range_learning())
    result.tags[keys.TAG_QAT_SCHEME] = f"{ctx.settings.param_scheme.value}/{ctx.settings.output_scheme.value}"
    sim = calibrated_sim(ctx, model, result)
    classifier = isinstance(ctx.task, Classification)
    if classifier:
        result.metrics[keys.QAT_SIM_BEFORE] = evaluate_top1(sim.model, ctx.data.val_batches(), ctx.eval_output)
        loss = None  # cross-entropy with accuracy, the classifier's
    else:
        before = score_task(sim.model, ctx.data.val_batches(), ctx.task, ctx.eval_output, seed=ctx.seed).value
        result.metrics[keys.metric_key("qat", f"sim_{ctx.task.metric}_before")] = before
        loss = ctx.task.loss(from_logits=not ends_in_softmax(sim.fp_model, ctx.eval_output or 0))
    losses = result.series.setdefault(keys.QAT_LOSS, {})
    top1s = result.series.setdefault(keys.QAT_TOP1, {}) if classifier else {}

    def on_epoch(epoch: int, logs: dict) -> None:  # Keras counts epochs from 0, people (and the step axis) from 1
        losses[epoch + 1] = float(logs.get("loss", np.nan))
        if classifier:
            top1s[epoch + 1] = float(logs.get("val_accuracy", np.nan))

    with result.timed("qat"):
        trained = train_qat(
            sim,
            ctx.data.train_batches(batch_size=q.batch_size, seed=ctx.seed),
            q.epochs,
            q.learning_rate,
            q.decay_steps,
            optimizer=q.optimizer.value,
            learn_ranges=learn,
            val_batches=ctx.data.val_batches(),
            on_epoch=on_epoch,
            output=ctx.eval_output,
            loss=loss,
        )
    moves = [
        abs(trained.output_encodings[n].min[0] - sim.output_encodings()[n].min[0])
        + abs(trained.output_encodings[n].max[0] - sim.output_encodings()[n].max[0])
        for n in sim.output_quantizers
    ]
    result.metrics[keys.QAT_RANGE_MOVE] = float(np.mean(moves)) if moves else 0.0
    final = simulate_trained(trained, ctx.settings)
    evaluate_sim(ctx, final, result)
    export_dir = export_sim(ctx, final, "qat", result)
    if q.export_tflite:
        check_tflite(ctx, final, export_dir, result)
