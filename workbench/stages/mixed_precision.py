"""Stage ``mixed_precision``: BN fold (+ CLE), AMP's search over per-layer bitwidths, then the chosen
configuration as an ordinary sim (per-layer overrides) evaluated on the whole validation split."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

from tqdm.auto import tqdm

from workbench import keys
from workbench.data.dataset import as_array
from workbench.figures import pareto_front_figure
from workbench.graph.rewrite import GraphEdit, apply_edit
from workbench.options import LayerOverride, load_overrides, parse_overrides
from workbench.quantsim.analysis import quantized_layers
from workbench.results import StageResult
from workbench.stages.common import calibrated_sim, evaluate_fp32, evaluate_sim, single_input_only, single_output_only, validation_arrays
from workbench.stages.context import StageContext
from workbench.stages.prepare import adarounded, prepared_model
from workbench.techniques.mixed_precision import Candidate, RoundedKernels, choose_mixed_precision

log = logging.getLogger(__name__)


def adarounded_candidates(ctx: StageContext, model, candidates, highest, result: StageResult) -> RoundedKernels:
    """AdaRound of every layer at each lower weight candidate (activations at the highest candidate's bits)."""
    params = ctx.config.adaround
    samples = as_array(ctx.data.calibration_batches(params.num_batches * params.batch_size, ctx.seed, params.batch_size))
    rounded: RoundedKernels = {}
    for bits in sorted({w for w, _ in candidates if w < highest[0]}):
        settings = dataclasses.replace(ctx.settings, param_bw=bits, output_bw=highest[1])
        with result.timed(f"amp_adaround_w{bits}"):
            kernels, encodings, _ = adarounded(ctx, model, settings, samples, params, result)
        for name, enc in encodings.items():
            rounded[(name, bits)] = (kernels.get_layer(name).kernel.numpy(), enc)
    return rounded


def _search(
    ctx: StageContext, sim, candidates, highest, rounded: RoundedKernels, result: StageResult
) -> tuple[tuple[LayerOverride, ...], dict[str, Candidate]]:
    """AMP's search on ``amp.eval_samples`` validation images: its front, sensitivity and figure in the run; the
    chosen overrides (also written beside the exports) and per-layer candidates."""
    amp = ctx.config.amp
    images, labels = validation_arrays(ctx, amp.eval_samples)
    with result.timed("amp_search"), tqdm(desc="mixed precision search", unit="eval", disable=None) as bar:
        found = choose_mixed_precision(
            sim, images, labels, candidates, amp.allowed_accuracy_drop, progress=lambda _: bar.update(), rounded=rounded
        )
    overrides = found.overrides()
    result.tables[keys.ARTIFACT_AMP_FRONT] = found.front
    result.tables[keys.ARTIFACT_AMP_SENSITIVITY] = found.sensitivity
    result.documents[keys.ARTIFACT_AMP_OVERRIDES] = overrides
    result.figures[keys.ARTIFACT_AMP_FRONT_PNG] = pareto_front_figure(found.front, found.step, found.fp32_top1, amp.allowed_accuracy_drop)
    lowered = [n for n, c in found.chosen.items() if c != highest]
    result.metrics[keys.AMP_RELATIVE_BITOPS] = found.relative_bitops
    result.metrics[keys.AMP_SEARCH_TOP1] = found.top1
    result.metrics[keys.AMP_LAYERS_LOWERED] = len(lowered)
    export_dir = os.path.join(ctx.export_dir, f"mixed_precision-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.makedirs(export_dir, exist_ok=True)
    path = os.path.join(export_dir, keys.ARTIFACT_AMP_OVERRIDES)
    with open(path, "w") as f:
        json.dump(overrides, f, indent=1)
    result.tags[keys.TAG_AMP_OVERRIDES_FILE] = path
    log.info(
        "mixed precision: %d of %d groups lowered, %.1f %% of W%dA%d BitOps, search top-1 %.4f (FP32 %.4f on the same %d images); "
        "reuse with quant.overrides=%s",
        len(lowered),
        len(found.chosen),
        100 * found.relative_bitops,
        *highest,
        found.top1,
        found.fp32_top1,
        len(labels),
        path,
    )
    return parse_overrides(overrides), found.chosen


def run_mixed_precision(ctx: StageContext, result: StageResult) -> None:
    single_output_only(ctx, "mixed_precision")
    single_input_only(ctx, "+stage=mixed_precision")
    evaluate_fp32(ctx, result)
    amp = ctx.config.amp
    model = prepared_model(ctx, result, amp.cle)
    candidates = [(int(w), int(a)) for w, a in amp.candidates]
    highest = max(candidates, key=lambda c: (c[0] * c[1], c))
    search_ctx = ctx.with_settings(dataclasses.replace(ctx.settings, param_bw=highest[0], output_bw=highest[1]))
    sim = calibrated_sim(search_ctx, model, result)
    rounded = adarounded_candidates(ctx, model, candidates, highest, result) if amp.adaround else {}
    if amp.chosen is not None:  # a choice already made: no search
        overrides = load_overrides(amp.chosen)
        settings = dataclasses.replace(search_ctx.settings, overrides=overrides)
        chosen = {n: (settings.param_bw_for(n), settings.output_bw_for(n)) for n in quantized_layers(sim)}
        result.tags[keys.TAG_AMP_OVERRIDES_FILE] = amp.chosen
        log.info("mixed precision: the choice in amp.chosen=%s (no search)", amp.chosen)
    else:
        overrides, chosen = _search(ctx, sim, candidates, highest, rounded, result)
    # the chosen configuration as any user would run it: per-layer overrides, calibrated afresh, every image
    final = search_ctx.with_settings(dataclasses.replace(search_ctx.settings, overrides=overrides))
    kept = {n: rounded[(n, c[0])] for n, c in chosen.items() if (n, c[0]) in rounded and c != highest}
    if kept:  # the AdaRounded kernels of the lowered layers, on their frozen grids
        model = apply_edit(model, GraphEdit(kernels={n: k for n, (k, _) in kept.items()}))
    evaluate_sim(final, calibrated_sim(final, model, result, param_encodings={n: e for n, (_, e) in kept.items()}), result)
    result.simulated = final.settings  # the highest candidate with per-layer overrides: its tags and name say so
    if any(c[0] < 8 or c[1] < 8 for c in chosen.values()):
        result.tags[keys.TAG_TFLITE] = "not converted: TFLite int8 kernels cannot run weights or activations below 8 bits"
