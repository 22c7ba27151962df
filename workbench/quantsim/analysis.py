"""Where the quantization error comes from: per-layer sensitivity and ranges (AIMET's QuantAnalyzer).

For a calibrated sim, each layer that owns quantizers (its weights, its output, or both) is measured
with only its quantizers on and with all but its quantizers on, weights and outputs apart, on the same
images: accuracy and the SQNR of the model's output against FP32. Quantizers are switched at run time
(`QuantizationSimModel.switchable`), so the model is traced once, not once per configuration.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import tensorflow as tf

from workbench.evaluation.steps import batch_step
from workbench.quantsim.encodings import sqnr_db
from workbench.quantsim.sim import QuantizationSimModel


def quantized_layers(sim: QuantizationSimModel) -> list[str]:
    """Layers that own a weight or an output quantizer, in network order (the model input first)."""
    return [n for n in sim.graph.order if n in sim.param_quantizers or n in sim.output_quantizers]


def batched_logits(model, batch_size: int = 256) -> Callable[[np.ndarray], np.ndarray]:
    """``run(images)``: the model's outputs over ``images`` in batches, through one traced step (no retracing
    when the model's variables change between calls)."""
    step = batch_step(lambda x: model(x, training=False))

    def run(images: np.ndarray) -> np.ndarray:
        return np.concatenate([step(tf.constant(images[i : i + batch_size])).numpy() for i in range(0, len(images), batch_size)])

    return run


def layer_sensitivity(
    sim: QuantizationSimModel, images: np.ndarray, labels: np.ndarray, batch_size: int = 256, progress: Callable | None = None
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per quantized layer: accuracy and output SQNR with only its quantizers on and with all but its own on.

    Columns ``only_*`` (only this layer quantized: weights, output, both) and ``all_but_*`` (everything but
    this layer's weights, output, both) as top-1 and ``*_sqnr_db`` of the logits vs FP32; the returned dict has
    the references: ``fp32`` (nothing quantized) and ``quantized`` (everything).
    """
    predict = batched_logits(sim.model, batch_size)
    labels = np.asarray(labels)
    layers = quantized_layers(sim)
    params, outputs = set(sim.param_quantizers), set(sim.output_quantizers)
    rows = []
    with sim.switchable() as enable:

        def run(p: set[str], o: set[str]) -> tuple[float, np.ndarray]:
            enable(p, o)
            logits = predict(images)
            return float(np.mean(logits.argmax(-1) == labels)), logits

        fp32_top1, fp32_logits = run(set(), set())
        full_top1, full_logits = run(params, outputs)
        references = {"fp32": fp32_top1, "quantized": full_top1, "quantized_sqnr_db": sqnr_db(fp32_logits, full_logits)}
        for name in layers:
            own_p, own_o = {name} & params, {name} & outputs
            row: dict[str, object] = {"layer": name, "weights": bool(own_p), "output": bool(own_o)}
            cases = {
                "only_weights": (own_p, set()),
                "only_output": (set(), own_o),
                "only": (own_p, own_o),
                "all_but_weights": (params - own_p, outputs),
                "all_but_output": (params, outputs - own_o),
                "all_but": (params - own_p, outputs - own_o),
            }
            for case, (p, o) in cases.items():
                if (case.endswith("weights") and not own_p) or (case.endswith("output") and not own_o):
                    row[case], row[f"{case}_sqnr_db"] = np.nan, np.nan
                    continue
                top1, logits = run(p, o)
                row[case], row[f"{case}_sqnr_db"] = top1, sqnr_db(fp32_logits, logits)
            # how much this layer alone costs, and how much keeping it float wins back
            row["drop_alone"] = fp32_top1 - float(row["only"])  # type: ignore[arg-type]
            row["gain_if_float"] = float(row["all_but"]) - full_top1  # type: ignore[arg-type]
            rows.append(row)
            if progress is not None:
                progress()
    return pd.DataFrame(rows), references


def layer_ranges(sim: QuantizationSimModel, images: np.ndarray) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Per quantized layer, in network order: weight and output ranges next to their encoding ranges, and
    the MSE, SQNR and cosine similarity of its quantized output against the FP32 model's; also the output
    values seen (what a quantizer's input held on ``images``), by layer."""
    import keras

    names = [n for n in quantized_layers(sim) if n in sim.output_quantizers]
    taps = keras.Model(sim.model.inputs, [sim.output_quantizers[n].input for n in names] + [sim.output_quantizers[n].output for n in names])
    values = taps.predict(images, verbose=0, batch_size=256)
    values = values if isinstance(values, list) else [values]
    observed = dict(zip(names, values[: len(names)]))
    quantized = dict(zip(names, values[len(names) :]))
    fp_taps = keras.Model(sim.fp_model.inputs, [sim.fp_model.get_layer(n).output for n in names])
    reference = fp_taps.predict(images, verbose=0, batch_size=256)
    reference = dict(zip(names, reference if isinstance(reference, list) else [reference]))
    params, outputs = sim.param_encodings(), sim.output_encodings()
    rows = []
    for name in quantized_layers(sim):
        row: dict[str, object] = {"layer": name}
        pq = sim.param_quantizers.get(name)
        if pq is not None:
            view = pq.channel_view().reshape(-1, pq.channel_view().shape[-1])
            row.update(
                weight_min=float(view.min()),
                weight_max=float(view.max()),
                weight_channels=int(view.shape[-1]),
                weight_channel_range_ratio=float(np.ptp(view, axis=0).max() / max(np.ptp(view, axis=0).min(), 1e-12)),
            )
            if name in params:
                row.update(weight_encoding_min=float(params[name].min.min()), weight_encoding_max=float(params[name].max.max()))
        if name in observed:
            v = observed[name]
            row.update(output_min=float(v.min()), output_max=float(v.max()))
            if name in outputs:
                row.update(output_encoding_min=float(outputs[name].min[0]), output_encoding_max=float(outputs[name].max[0]))
            # the sim's (quantized) output against the FP32 model's output of the same layer
            ref, got = reference[name].astype(np.float64).ravel(), quantized[name].astype(np.float64).ravel()
            norm = float(np.linalg.norm(ref) * np.linalg.norm(got))
            row.update(
                output_mse=float(np.mean((ref - got) ** 2)),
                output_sqnr_db=sqnr_db(ref, got),
                output_cosine=float(ref @ got / norm) if norm > 0 else float("nan"),
            )
        rows.append(row)
    return pd.DataFrame(rows), observed
