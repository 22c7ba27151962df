"""Stage ``analyze``: where the error comes from. BN fold (+ CLE), the calibrated sim, then per-layer
sensitivity (only this layer quantized / all but this layer, weights and outputs apart) and ranges."""

from __future__ import annotations

import logging

from tqdm.auto import tqdm

from workbench import keys
from workbench.figures import range_histograms_figure, sensitivity_figure
from workbench.quantsim.analysis import layer_ranges, layer_sensitivity, quantized_layers
from workbench.results import StageResult
from workbench.stages.common import evaluate_fp32, quantize_and_evaluate, single_input_only, single_output_only, validation_arrays
from workbench.stages.context import StageContext
from workbench.stages.prepare import prepared_model

log = logging.getLogger(__name__)
RANGE_SAMPLES = 256


def run_analyze(ctx: StageContext, result: StageResult) -> None:
    single_output_only(ctx, "analyze")
    single_input_only(ctx, "+stage=analyze")
    evaluate_fp32(ctx, result)
    a = ctx.config.analyze
    sim = quantize_and_evaluate(ctx, prepared_model(ctx, result, a.cle), result)
    images, labels = validation_arrays(ctx, a.eval_samples)
    layers = quantized_layers(sim)
    with result.timed("analyze"), tqdm(total=len(layers), desc="per-layer sensitivity", unit="layer", disable=None) as bar:
        table, refs = layer_sensitivity(sim, images, labels, progress=bar.update)
    ranges, observed = layer_ranges(sim, images[:RANGE_SAMPLES])
    result.tables[keys.ARTIFACT_SENSITIVITY] = table
    result.tables[keys.ARTIFACT_RANGES] = ranges
    result.metrics[keys.ANALYZE_EVAL_SAMPLES] = len(labels)
    result.metrics[keys.ANALYZE_QUANTIZED_TOP1] = refs["quantized"]
    result.metrics[keys.ANALYZE_WORST_DROP] = float(table["drop_alone"].max())
    result.metrics[keys.ANALYZE_BEST_GAIN] = float(table["gain_if_float"].max())
    result.figures[keys.ARTIFACT_SENSITIVITY_PNG] = sensitivity_figure(table, refs["fp32"], refs["quantized"])
    worst = table.sort_values(["drop_alone", "gain_if_float"], ascending=False).head(a.top_k)
    with_outputs = [n for n in worst["layer"] if n in observed]
    if with_outputs:
        result.figures[keys.ARTIFACT_RANGE_HISTOGRAMS_PNG] = range_histograms_figure(observed, sim.output_encodings(), with_outputs)
    result.tags[keys.TAG_ANALYZE_WORST] = ", ".join(worst["layer"])
    lines = [
        f"**Most sensitive layers** ({len(labels)} validation images; FP32 {100 * refs['fp32']:.1f} %, "
        f"everything quantized {100 * refs['quantized']:.1f} %):",
        "",
        "| layer | drop with only it quantized | top-1 with it left float |",
        "|---|---|---|",
        *(f"| {r.layer} | {100 * r.drop_alone:+.1f} pt | {100 * r.all_but:.1f} % |" for r in worst.itertuples()),
    ]
    result.tags[keys.TAG_DESCRIPTION] = "\n".join(lines)
    log.info("most sensitive layers: %s", result.tags[keys.TAG_ANALYZE_WORST])
