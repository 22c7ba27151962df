"""Per-layer diagnostics of a sim: each quantizer's encoding and the layer output SQNR."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from workbench.evaluation.steps import batch_step
from workbench.quantsim.encodings import Encoding
from workbench.quantsim.sim import QuantizationSimModel


def _summary(prefix: str, enc: Encoding | None) -> dict:
    if enc is None:
        return {}
    return {
        f"{prefix}_bw": enc.bitwidth,
        f"{prefix}_channels": enc.num_channels,
        f"{prefix}_min": float(np.min(enc.min)),
        f"{prefix}_max": float(np.max(enc.max)),
        f"{prefix}_scale": float(np.max(enc.scale)) if enc.num_channels > 1 else float(enc.scale[0]),
        f"{prefix}_offset": int(enc.offset[0]) if enc.num_channels == 1 else None,
        f"{prefix}_symmetric": bool(enc.symmetric),
    }


def layer_output_sqnr(sim: QuantizationSimModel, batches: tf.data.Dataset) -> dict[str, float]:
    """10·log10(Σ fp² / Σ (fp − sim)²) per layer output over ``batches``, in dB.

    The sim side is the tensor that flows on from the layer (its quantizer's output when
    it has one), so the figure includes the error accumulated upstream.
    """
    names = [n for n in sim.graph.order if not isinstance(sim.fp_model.get_layer(n), keras.layers.InputLayer)]
    names = [n for n in names if len(keras.tree.flatten(sim.fp_model.get_layer(n).output)) == 1]
    fp_probe = keras.Model(sim.fp_model.inputs, [sim.fp_model.get_layer(n).output for n in names])
    sim_probe = keras.Model(sim.model.inputs, [sim.quantized_output(n) for n in names])

    @batch_step
    def step(x):
        fp = fp_probe(x, training=False)
        q = sim_probe(x, training=False)
        signal = [tf.reduce_sum(tf.cast(a, tf.float64) ** 2) for a in fp]
        noise = [tf.reduce_sum(tf.cast(a - b, tf.float64) ** 2) for a, b in zip(fp, q)]
        return tf.stack(signal), tf.stack(noise)

    signal = np.zeros(len(names))
    noise = np.zeros(len(names))
    for x, _ in batches:
        s, n = step(x)
        signal += s.numpy()
        noise += n.numpy()
    with np.errstate(divide="ignore"):
        sqnr = np.where(noise > 0, 10 * np.log10(np.maximum(signal, 1e-300) / np.maximum(noise, 1e-300)), np.inf)
    return dict(zip(names, sqnr.tolist()))


def layer_table(sim: QuantizationSimModel, sqnr: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per layer: type, param and output encodings, SQNR (dB), why unquantized."""
    rows = []
    params, outputs = sim.param_encodings(), sim.output_encodings()
    for name in sim.graph.order:
        layer = sim.fp_model.get_layer(name)
        row: dict[str, object] = {"layer": name, "type": type(layer).__name__}
        row.update(_summary("param", params.get(name)))
        row.update(_summary("output", outputs.get(name)))
        row["sqnr_db"] = (sqnr or {}).get(name)
        row["note"] = sim.plan.skipped.get(name, "model input" if name in sim.plan.inputs else "")
        rows.append(row)
    return pd.DataFrame(rows)
