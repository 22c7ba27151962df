"""Stage ``qat``: BN fold + CLE (+ BC when ``qat.bias_correction``) + QAT, then evaluate and export.

With ``qat.learn_ranges`` (default) the quantizer ranges are learned with the weights, under the
range-learning variant of ``quant.scheme`` (tf → training_range_learning_with_tf_init, ...), with
strict symmetric parameter grids; otherwise the ranges stay as calibrated and only the weights train.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from workbench import keys
from workbench.evaluation.accuracy import evaluate_top1
from workbench.quantsim.tflite import TFLiteConversionError, convert_to_int8_tflite, integer_report, predict_tflite_classes
from workbench.results import StageResult
from workbench.stages.bc import bias_corrected_model
from workbench.stages.cle import equalized_model
from workbench.stages.common import calibrated_sim, evaluate_fp32, evaluate_sim, export_sim, record_accuracy
from workbench.stages.context import StageContext
from workbench.techniques.range_learning import simulate_trained, train_qat

log = logging.getLogger(__name__)


def run_qat(ctx: StageContext, result: StageResult) -> None:
    evaluate_fp32(ctx, result)
    model, summary = equalized_model(ctx, result)
    q = ctx.qat
    if q.bias_correction:
        model = bias_corrected_model(ctx, result, model, summary)
    learn = q.learn_ranges
    if learn:
        ctx = dataclasses.replace(ctx, settings=ctx.settings.with_range_learning())
    result.tags[keys.TAG_QAT_SCHEME] = f"{ctx.settings.param_scheme.value}/{ctx.settings.output_scheme.value}"
    sim = calibrated_sim(ctx, model, result)
    result.metrics[keys.QAT_SIM_BEFORE] = evaluate_top1(sim.model, ctx.data.val_batches(), ctx.eval_output)
    losses, top1s = result.series.setdefault(keys.QAT_LOSS, {}), result.series.setdefault(keys.QAT_TOP1, {})

    def on_epoch(epoch: int, logs: dict) -> None:  # Keras counts epochs from 0, people (and the step axis) from 1
        losses[epoch + 1] = float(logs.get("loss", np.nan))
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


def check_tflite(ctx: StageContext, sim, export_dir: str, result: StageResult) -> None:
    """Convert to a fully integer TFLite model and measure it next to the sim (fidelity/gap)."""
    try:
        with result.timed("tflite_convert"):
            blob = convert_to_int8_tflite(sim)
        with open(os.path.join(export_dir, "model_int8.tflite"), "wb") as f:
            f.write(blob)
        report = integer_report(blob)
        predictions = None
        if ctx.eval_output is None:  # the interpreter's output order need not be the model's: one output only
            with result.timed("tflite_eval"):
                predictions = predict_tflite_classes(blob, ctx.data.val_batches())
    except (TFLiteConversionError, RuntimeError, ValueError) as err:
        # the conversion (or the interpreter's preparation) failed: say so, keep the rest of the run
        log.error("%s", err)
        result.tags[keys.TAG_TFLITE_ERROR] = str(err)[:5000]
        return
    result.metrics[keys.TFLITE_FLOAT_TENSORS] = len(report["float_tensors"])
    result.tags[keys.TAG_TFLITE_IO] = f"{report['input_dtype']}->{report['output_dtype']}"
    if report["float_tensors"]:
        result.tags[keys.TAG_TFLITE_FLOAT_TENSORS] = ", ".join(report["float_tensors"])[:5000]
        shown = ", ".join(name.split(";")[0] for name in report["float_tensors"][:3])
        log.warning(
            "the int8 TFLite model is not fully integer: %d float tensors (%s%s), most often an op the sim leaves "
            "unquantized (coverage.csv says which and why); all of them in the run's tflite.float_tensors tag",
            len(report["float_tensors"]),
            shown,
            ", …" if len(report["float_tensors"]) > 3 else "",
        )
    if predictions is None:
        log.info("int8 TFLite top-1 is measured on single-output models only: this one was converted and checked, not evaluated")
        return
    top1 = record_accuracy(result, "tflite", predictions)
    result.metrics[keys.FIDELITY_GAP] = result.metrics[keys.SIM_TOP1] - top1
    log.debug("int8 TFLite top-1 %.4f (sim %.4f)", top1, result.metrics[keys.SIM_TOP1])
