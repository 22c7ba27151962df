"""The int8 TFLite check of an exporting stage: conversion from the sim's encodings, the fully-integer
report, and the int8 model's top-1 next to the sim's (``fidelity/gap``)."""

from __future__ import annotations

import logging
import os

from workbench import keys
from workbench.evaluation.tasks import Classification, TaskScore, score_outputs
from workbench.quantsim.tflite import Int8Runner, TFLiteConversionError, convert_to_int8_tflite, integer_report, predict_tflite_classes
from workbench.results import StageResult
from workbench.stages.common import headline, record_accuracy, record_score
from workbench.stages.context import StageContext

log = logging.getLogger(__name__)


def check_tflite(ctx: StageContext, sim, export_dir: str, result: StageResult) -> None:
    """Convert to a fully integer TFLite model and measure it next to the sim (fidelity/gap)."""
    try:
        with result.timed("tflite_convert"):
            blob = convert_to_int8_tflite(sim)
        with open(os.path.join(export_dir, "model_int8.tflite"), "wb") as f:
            f.write(blob)
        report = integer_report(blob)
        predictions: object = None
        # the interpreter's input and output order need not be the model's: one input and one output only
        if ctx.eval_output is None and len(ctx.model.inputs) == 1:
            with result.timed("tflite_eval"):
                if isinstance(ctx.task, Classification):
                    predictions = predict_tflite_classes(blob, ctx.data.val_batches())
                else:
                    predictions = _tflite_score(ctx, blob)
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
        log.info(
            "int8 TFLite top-1 is measured on single-input, single-output models only: this one was converted and checked, not evaluated"
        )
        return
    if isinstance(predictions, TaskScore):
        value = record_score(result, "tflite", predictions)
    else:
        value = record_accuracy(result, "tflite", predictions)  # type: ignore[arg-type]
    sim = result.metrics[headline(ctx, "sim")]
    result.metrics[keys.FIDELITY_GAP] = sim - value
    log.debug("int8 TFLite %s %.4g (sim %.4g)", ctx.task.metric, value, sim)


def _tflite_score(ctx: StageContext, blob: bytes) -> TaskScore:
    """The int8 model's task metric: its dequantized outputs scored as the sim's are (against FP32 for fidelity)."""
    runner = Int8Runner(blob)

    def batches():
        for x, y in ctx.data.val_batches():
            reference = None if ctx.task.needs_labels else ctx.model(x, training=False).numpy()
            yield runner.logits(x.numpy()), y.numpy(), reference

    return score_outputs(batches(), ctx.task, seed=ctx.seed)
