"""Shared preparation of the stages: BN fold, CLE, bias correction (each a cached transform with its
diagnostics) and AdaRound (cached too). Stages take these from here, never from a sibling stage."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from functools import partial

import keras
import numpy as np
import pandas as pd

from workbench import keys
from workbench.data.dataset import as_array
from workbench.graph.functional import FunctionalGraph
from workbench.graph.rewrite import GraphEdit
from workbench.models.cache import cached_model, weights_digest
from workbench.options import AdaroundParameters, QuantSettings, ReLU6Mode
from workbench.quantsim.encodings import Encoding
from workbench.results import StageResult
from workbench.stages.common import single_input_only
from workbench.stages.context import StageContext
from workbench.stages.transforms import TRANSFORM_FORMAT, cached_transform, record_ranges
from workbench.techniques.adaround import AdaroundReport, apply_adaround
from workbench.techniques.batch_norm_fold import fold_batch_norms, plan_batch_norm_folds
from workbench.techniques.bias_correction import correct_bias, correction_sim, layer_output_shifts
from workbench.techniques.cross_layer_equalization import equalize_model
from workbench.techniques.weight_ranges import channel_ranges, kernel_channel_ranges

log = logging.getLogger(__name__)


def _fold(model):
    folded, report = fold_batch_norms(model)
    return folded, report.summary()


def folded_model(ctx: StageContext, result: StageResult) -> keras.Model:
    """The context's model with its batch norms folded (cached), with the fold counts."""
    model, summary = cached_transform(ctx, "bn_fold", {}, _fold, result)
    result.metrics[keys.BNS_FOLDED] = len(summary["folded"])
    result.metrics[keys.BNS_AFFINE] = len(summary["affine"])
    return model


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
    return {"relu6_mode": ReLU6Mode(ctx.config.cle.relu6_mode).value, "absorb": bool(ctx.config.cle.high_bias_absorption)}


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


SHIFT_SAMPLES = 256


def bias_corrected_model(ctx: StageContext, result: StageResult, equalized, summary: dict):
    single_input_only(ctx, "bias correction")
    """Bias correction of the equalized model, with shift metrics and the per-layer table."""
    bn_stats = {
        k: (np.asarray(v["gamma"], np.float32), np.asarray(v["beta"], np.float32)) for k, v in summary.get("bn_effective", {}).items()
    }
    data = ctx.data
    bc = ctx.config.bc
    quant = as_array(data.calibration_batches(bc.num_quant_samples, ctx.seed, bc.batch_size))
    samples = as_array(data.calibration_batches(bc.num_bias_correct_samples, ctx.seed + 1, bc.batch_size))
    with result.timed("bias_correction"):
        corrected, report = correct_bias(equalized, ctx.settings, quant, samples, mode=bc.mode, bn_stats=bn_stats, ignore=bc.ignore)
    # the shift each layer's quantized output has vs FP32, on held-out validation images
    held_out = as_array(data.val_batches(limit=SHIFT_SAMPLES))
    with result.timed("bc_shift_check"):
        sim, enc = correction_sim(equalized, ctx.settings, quant)
        before = layer_output_shifts(equalized, sim, enc, held_out)
        sim, enc = correction_sim(corrected, ctx.settings, quant)
        after = layer_output_shifts(equalized, sim, enc, held_out)
    table = pd.DataFrame(report.layers)
    table["shift_before"] = table["layer"].map(before)
    table["shift_after"] = table["layer"].map(after)
    result.tables[keys.ARTIFACT_BIAS_CORRECTION] = table
    done = report.corrected()
    result.metrics[keys.BC_LAYERS_CORRECTED] = len(done)
    if done:
        result.metrics[keys.BC_SHIFT_BEFORE] = float(np.mean([before[n] for n in done]))
        result.metrics[keys.BC_SHIFT_AFTER] = float(np.mean([after[n] for n in done]))
        log.info(
            "bias correction: mean |shift| %.4g -> %.4g over %d layers",
            result.metrics[keys.BC_SHIFT_BEFORE],
            result.metrics[keys.BC_SHIFT_AFTER],
            len(done),
        )
    return corrected


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def adarounded(
    ctx: StageContext, model: keras.Model, settings: QuantSettings, samples: np.ndarray, params: AdaroundParameters, result: StageResult
) -> tuple[keras.Model, dict[str, Encoding], AdaroundReport]:
    """:func:`~workbench.techniques.adaround.apply_adaround`, or its result from the cache, keyed by the model's weights,
    the settings, the calibration samples and AdaRound's parameters: a rerun of the stage, and AutoQuant's
    mixed-precision step after its adaround step, reuse the kernels instead of optimizing them again."""
    samples = np.ascontiguousarray(samples, np.float32)[: params.num_batches * params.batch_size]
    spec = {
        "source": weights_digest(model),
        "settings": repr(settings),
        "params": repr(params),
        "samples": hashlib.sha256(samples.tobytes()).hexdigest() + str(samples.shape),
        "keras": keras.__version__,
        "format": TRANSFORM_FORMAT,
    }

    def build() -> tuple[keras.Model, dict]:
        rounded, encodings, report = apply_adaround(model, settings, samples, params)
        grids = {n: {**dataclasses.asdict(e), "scale": e.scale.tolist(), "offset": e.offset.tolist()} for n, e in encodings.items()}
        columns = list(report.layers[0]) if report.layers else []  # the sidecar's JSON sorts keys: rows as lists
        rows = [[_plain(row[c]) for c in columns] for row in report.layers]
        return rounded, {"encodings": grids, "columns": columns, "layers": rows, "skipped": report.skipped}

    rounded, extra, hit = cached_model(os.path.join(ctx.cache_dir, "adarounded"), "adaround", spec, build)
    result.metrics[keys.ADAROUND_CACHE_HIT] = float(hit)
    encodings = {
        n: Encoding(e["bitwidth"], e["steps"], e["symmetric"], np.asarray(e["scale"], np.float32), np.asarray(e["offset"], np.float32))
        for n, e in extra["encodings"].items()
    }
    layers = [dict(zip(extra["columns"], row)) for row in extra["layers"]]
    return rounded, encodings, AdaroundReport(layers, dict(extra["skipped"]))
