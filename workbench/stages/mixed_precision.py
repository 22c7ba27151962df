"""Stage ``mixed_precision``: BN fold (+ CLE), AMP's search over per-layer bitwidths, then the chosen
configuration as an ordinary sim (per-layer overrides) evaluated on the whole validation split."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

import numpy as np
from tqdm.auto import tqdm

from workbench import keys
from workbench.figures import pareto_front_figure
from workbench.options import parse_overrides
from workbench.results import StageResult
from workbench.stages.bn_fold import folded_model
from workbench.stages.cle import equalized_model
from workbench.stages.common import calibrated_sim, evaluate_fp32, quantize_and_evaluate
from workbench.stages.context import StageContext
from workbench.techniques.mixed_precision import choose_mixed_precision

log = logging.getLogger(__name__)


def run_mixed_precision(ctx: StageContext, result: StageResult) -> None:
    evaluate_fp32(ctx, result)
    amp = ctx.amp
    model = equalized_model(ctx, result)[0] if amp.cle else folded_model(ctx, result)
    candidates = [(int(w), int(a)) for w, a in amp.candidates]
    highest = max(candidates, key=lambda c: (c[0] * c[1], c))
    search_ctx = dataclasses.replace(ctx, settings=dataclasses.replace(ctx.settings, param_bw=highest[0], output_bw=highest[1]))
    sim = calibrated_sim(search_ctx, model, result)
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ctx.data.val_batches(limit=amp.eval_samples)))
    images, labels = np.concatenate(xs), np.concatenate(ys)
    with result.timed("amp_search"), tqdm(desc="mixed precision search", unit="eval", disable=None) as bar:
        found = choose_mixed_precision(sim, images, labels, candidates, amp.allowed_accuracy_drop, progress=lambda _: bar.update())
    overrides = found.overrides()
    result.tables[keys.ARTIFACT_AMP_FRONT] = found.front
    result.tables[keys.ARTIFACT_AMP_SENSITIVITY] = found.sensitivity
    result.documents[keys.ARTIFACT_AMP_OVERRIDES] = overrides
    chosen_step = int(found.front.loc[found.front["relative_bitops"] == found.relative_bitops, "step"].min())
    result.figures[keys.ARTIFACT_AMP_FRONT_PNG] = pareto_front_figure(found.front, chosen_step, found.fp32_top1, amp.allowed_accuracy_drop)
    lowered = [n for n, c in found.chosen.items() if c != highest]
    result.metrics[keys.AMP_RELATIVE_BITOPS] = found.relative_bitops
    result.metrics[keys.AMP_SEARCH_TOP1] = found.top1
    result.metrics[keys.AMP_LAYERS_LOWERED] = len(lowered)
    export_dir = os.path.join(ctx.export_dir, f"mixed_precision-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.makedirs(export_dir, exist_ok=True)
    path = os.path.join(export_dir, keys.ARTIFACT_AMP_OVERRIDES)
    with open(path, "w") as f:
        json.dump(overrides, f, indent=1)
    result.tags["amp.overrides_file"] = path
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
    # the chosen configuration as any user would run it: per-layer overrides, calibrated afresh, every image
    final = dataclasses.replace(search_ctx, settings=dataclasses.replace(search_ctx.settings, overrides=parse_overrides(overrides)))
    quantize_and_evaluate(final, model, result)
    if any(c[0] < 8 or c[1] < 8 for c in found.chosen.values()):
        result.tags["tflite"] = "not converted: TFLite int8 kernels cannot run weights or activations below 8 bits"
