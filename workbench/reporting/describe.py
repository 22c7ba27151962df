"""What a run is, in words the MLflow UI shows: its name and its Markdown description.

A run's name says stage, model, bitwidths, granularity and schemes (``cle · mnist_mobilenet_v2 · W4A8 pc ·
tf/tf_enhanced``); a sweep's parent is named after its overrides. The description (``mlflow.note.content``)
gives the result with its 95 % interval, the paired verdict against FP32 on the same images, and what the
stage changed.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from workbench import keys
from workbench.reporting.headline import Headline

MAX_NAME = 250
# metric -> how the description says what the stage did (only those a run has are shown)
CHANGES = {
    keys.BNS_FOLDED: "{:.0f} batch norms folded",
    keys.BNS_AFFINE: "{:.0f} kept as per-channel affine ops",
    keys.CLS_SETS: "{:.0f} cross-layer scaling sets equalized",
    keys.ABSORBED_LINKS: "high bias absorbed across {:.0f} links",
    keys.TRANSFORMED_MAX_ABS_DIFF: "largest FP32 output change {:.2g}",
    keys.BC_LAYERS_CORRECTED: "{:.0f} layers bias-corrected",
    keys.ADAROUND_FLIPS: "AdaRound rounded {:.1%} of weights away from nearest",
    keys.AMP_RELATIVE_BITOPS: "mixed precision at {:.0%} of W8A8's BitOps",
    keys.QAT_SIM_BEFORE: "top-1 before fine-tuning {:.1%}",
    keys.QAT_RANGE_MOVE: "output ranges moved by {:.3g} on average",
}


def setting_label(param_bw, output_bw, per_channel, param_scheme, output_scheme) -> str:
    """``W4A8 pc · tf/tf_enhanced``: what a quantization setting is, briefly."""
    granularity = " pc" if str(per_channel).lower() == "true" else ""
    return f"W{param_bw}A{output_bw}{granularity} · {param_scheme}/{output_scheme}"


def run_name(stage: str | None, model: str, quant: Mapping) -> str:
    """``cle · mnist_mobilenet_v2 · W4A8 pc · tf/tf_enhanced`` (``pipeline · …`` for a pipeline's parent);
    ``quant`` is the resolved config's ``quant`` node as plain values (enums as their names)."""
    setting = setting_label(quant["param_bw"], quant["output_bw"], quant["per_channel"], quant["param_scheme"], quant["output_scheme"])
    target = quant.get("target")
    suffix = f" · target {target}" if target is not None and target != "aimet" else ""
    return f"{stage or 'pipeline'} · {model} · {setting}{suffix}"[:MAX_NAME]


# where a sweep writes, not what it compares: left out of its name (as of Hydra's override_dirname)
WHERE_KEYS = ("paths.outputs_dir", "tracking.uri", "tracking.experiment")


def sweep_name(overrides: list[str] | tuple[str, ...]) -> str:
    """``sweep · +stage=bc quant.param_bw=4,6,8``: a sweep's parent named after what it sweeps."""
    shown = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in WHERE_KEYS]
    return (f"sweep · {' '.join(shown)}" if shown else "sweep")[:MAX_NAME]


def _accuracy_line(label: str, metrics: Mapping[str, float], metric: str, h: Headline) -> str | None:
    if metric not in metrics:
        return None
    low, high = (metrics.get(k) for k in keys.ci_keys(metric))
    interval = f"[{h.text(low)}, {h.text(high)}]" if low is not None and high is not None else "—"
    return f"| {label} | {h.text(metrics[metric])}{h.unit()} | {interval} |"


def run_description(
    name: str,
    metrics: Mapping[str, float],
    predictions: pd.DataFrame | None,
    error: str | None = None,
    coverage: str = "",
    headline: Headline | None = None,
) -> str:
    """The run's Markdown description: the headline metric (top-1) with intervals, the paired verdict against FP32
    (``predictions``: the run's per-sample table), what the stage changed."""
    h = headline or Headline()
    lines = [f"**{name}**", ""]
    if error:
        lines += [f"Failed: `{error.splitlines()[0][:300]}` (traceback in `{keys.ARTIFACT_TRACEBACK}`).", ""]
    rows = [
        _accuracy_line(label, metrics, h.key(model), h) for label, model in (("FP32", "fp32"), ("sim", "sim"), ("int8 TFLite", "tflite"))
    ]
    rows = [r for r in rows if r]
    if rows:
        samples = metrics.get(keys.EVAL_SAMPLES)
        title = "Top-1" if h.task.binary else h.label
        lines += [
            f"{title} on {samples:,.0f} validation samples:" if samples else f"{title}:",
            "",
            f"| model | {h.label} | 95 % interval |",
        ]
        lines += ["|---|---|---|", *rows, ""]
    sim, fp32 = h.per_sample(predictions, "sim"), h.per_sample(predictions, "fp32")
    if sim is not None and fp32 is not None and len(sim):
        test = h.compare(sim, fp32)
        lines += [
            f"Quantization cost: {h.delta(test.delta)} against FP32 on the same samples "
            f"({h.test_name} p = {test.p_value:.3g}: **{test.verdict()}**).",
            "",
        ]
    if keys.WEIGHTS_QUANTIZED in metrics:
        line = f"Coverage: {100 * metrics[keys.WEIGHTS_QUANTIZED]:.1f} % of the weight elements quantized"
        floats = int(metrics.get(keys.FLOAT_LAYERS, 0))
        line += (
            f"; {floats} layers keep float weights or outputs (`{keys.ARTIFACT_COVERAGE}`)."
            if floats
            else "; every op output quantized or float by policy."
        )
        if coverage.startswith("partial"):
            line = "**Partial simulation** (the sim cannot quantize part of this model, so the figure is optimistic): " + line
        lines += [line, ""]
    changes = [template.format(metrics[key]) for key, template in CHANGES.items() if key in metrics]
    if changes:
        lines += ["What the stage changed: " + "; ".join(changes) + ".", ""]
    return "\n".join(lines).strip() + "\n"
