"""Bias correction (docs/techniques.md, section 4).

Quantizing weights shifts each layer's expected output; the correction subtracts that shift
from the bias, layer by layer in topological order, so later layers see earlier corrections.
- Empirical: e_o = mean over samples, H, W of (quantized − FP32) pre-activation output, with
  the model input and the weights quantized and every other output quantizer off; b_o −= e_o.
- Analytical (data-free): ε = Σ_{kh,kw}(W_q − W); b −= ε·E[x], E[x] per input channel from the
  preceding BN N(β, γ²) through none / ReLU / clip [0, U]. W_q is the sim's own weight grid.
- The first layer (fed by the model input) is corrected analytically with E[x] = 0: unchanged.
One side-by-side pass over the graph does every empirical layer (no per-layer re-runs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf
from scipy.stats import norm

from workbench.data.dataset import Dataset, as_array
from workbench.graph.execute import run_side_by_side
from workbench.graph.flatten import flatten_model
from workbench.graph.functional import WEIGHTED_TYPES, FunctionalGraph, activation_name
from workbench.graph.layers import ChannelClip
from workbench.graph.rewrite import GraphEdit, apply_edit, current_bias
from workbench.options import BiasCorrectionMode, QuantSettings
from workbench.quantsim.analyzers import EncodingAnalyzer
from workbench.quantsim.encodings import Encoding, quantize_dequantize
from workbench.quantsim.sim import QuantizationSimModel

log = logging.getLogger(__name__)
F32 = np.float32


def _cdf(z: np.ndarray) -> np.ndarray:
    return norm.cdf(np.asarray(z, np.float64))


def _pdf(z: np.ndarray) -> np.ndarray:
    return norm.pdf(np.asarray(z, np.float64))


def expected_activation(beta: np.ndarray, gamma: np.ndarray, activation: str | None, upper: np.ndarray | None = None) -> np.ndarray:
    """E[act(z)] for z ~ N(β, γ²) per channel; activation None, "relu" or "clip" (to [0, upper]).

    relu: β·(1 − Φ(−β/γ)) + γ·φ(−β/γ); clip [a, b]: γ[φ(α) − φ(β')] + β[Φ(β') − Φ(α)] + a·Φ(α) + b·(1 − Φ(β'))
    with α = (a − β)/γ, β' = (b − β)/γ. γ is taken as |γ| (AIMET passes it signed).
    """
    beta = np.asarray(beta, np.float64)
    gamma = np.abs(np.asarray(gamma, np.float64))
    if activation is None:
        return beta.astype(F32)
    dead = gamma <= 1e-12
    g = np.where(dead, 1.0, gamma)
    if activation == "relu":
        out = beta * (1.0 - _cdf(-beta / g)) + g * _pdf(-beta / g)
        return np.where(dead, np.maximum(beta, 0.0), out).astype(F32)
    if activation == "clip":
        a, b = 0.0, np.asarray(upper, np.float64)
        za, zb = (a - beta) / g, (b - beta) / g
        out = g * (_pdf(za) - _pdf(zb)) + beta * (_cdf(zb) - _cdf(za)) + a * _cdf(za) + b * (1.0 - _cdf(zb))
        return np.where(dead, np.clip(beta, a, b), out).astype(F32)
    raise ValueError(f"unknown activation {activation!r}")


@dataclass
class BiasCorrectionReport:
    mode: str = "auto"
    layers: list[dict] = field(default_factory=list)  # one row per weighted layer

    def corrected(self) -> list[str]:
        return [row["layer"] for row in self.layers if row["method"] in ("empirical", "analytical")]


def _input_pattern(graph: FunctionalGraph, name: str) -> tuple[str, str | None, str | None, np.ndarray | float | None]:
    """What feeds ``name``: ("input", ..), ("bn", producer, act, upper) or ("other", ...)."""
    act: str | None = None
    upper: np.ndarray | float | None = None
    current = name
    while True:
        producers = graph.producers.get(current, [])
        if len(producers) != 1:
            return ("other", None, None, None)
        p = producers[0]
        layer = graph.layer(p)
        if isinstance(layer, keras.layers.InputLayer):
            return ("input", None, None, None)
        if isinstance(layer, keras.layers.ZeroPadding2D):
            current = p
            continue
        if isinstance(layer, ChannelClip) and act is None:
            act, upper = "clip", layer.upper.numpy()
            current = p
            continue
        kind = activation_name(layer) if not isinstance(layer, WEIGHTED_TYPES) else None
        if kind in ("relu", "relu6") and act is None:
            act = "relu" if kind == "relu" else "clip"
            upper = None if kind == "relu" else 6.0
            current = p
            continue
        if isinstance(layer, WEIGHTED_TYPES):
            fused = activation_name(layer)
            if fused == "relu" and act is None:
                act = "relu"
            elif fused != "linear":
                return ("other", None, None, None)
            return ("bn", p, act, upper)
        return ("other", None, None, None)


def _analytical_shift(float_kernel: np.ndarray, quant_kernel: np.ndarray, ex: np.ndarray, depthwise: bool) -> np.ndarray:
    """ε·E[x] with ε = Σ_{kh,kw}(W_q − W): the expected output shift per output channel."""
    eps = (quant_kernel - float_kernel).astype(np.float64)
    if depthwise:
        return (eps.sum(axis=(0, 1))[:, 0] * ex).astype(F32)  # (kh, kw, C, 1)
    eps = eps.reshape(-1, eps.shape[-2], eps.shape[-1]).sum(axis=0)  # (in, out)
    return (ex.astype(np.float64) @ eps).astype(F32)


def with_biases(model: keras.Model) -> keras.Model:
    """The model with a (zero) bias on every weighted layer that lacks one; the input if none lacks."""
    missing = {
        layer.name: current_bias(layer)
        for layer in model.layers
        if isinstance(layer, WEIGHTED_TYPES) and not getattr(layer, "use_bias", True)
    }
    return apply_edit(model, GraphEdit(biases=missing)) if missing else model


def correction_sim(model: keras.Model, settings: QuantSettings, quant_samples: np.ndarray) -> tuple[QuantizationSimModel, Encoding]:
    """Weights quantized as the sim will, model input quantized over the quant samples."""
    sim = QuantizationSimModel(model, settings)
    sim.compute_param_encodings()
    analyzer = EncodingAnalyzer(settings.output_scheme, settings.output_bw, False, 1, percentile=settings.percentile)
    analyzer.update(np.asarray(quant_samples, F32))
    return sim, analyzer.compute_encoding()


def layer_output_shifts(reference: keras.Model, sim: QuantizationSimModel, input_encoding, samples: np.ndarray) -> dict[str, float]:
    """Mean |per-channel mean (sim − FP32 reference)| pre-activation output per weighted layer.

    ``sim`` may simulate a corrected copy of ``reference`` (same layer names): the shift is then
    what remains after correction.
    """
    shifts: dict[str, float] = {}

    def hook(name, fp, q):
        shifts[name] = float(tf.reduce_mean(tf.abs(_channel_mean(q - fp))))
        return None

    x = np.asarray(samples, F32)
    run_side_by_side(reference, x, quantize_dequantize(x, input_encoding), sim.layers_by_name, hook)
    return shifts


def _channel_mean(t: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.reshape(t, (-1, t.shape[-1])), axis=0)


def plan_bias_corrections(
    model: keras.Model,
    sim: QuantizationSimModel,
    mode: BiasCorrectionMode,
    bn_stats: dict[str, tuple[np.ndarray, np.ndarray]],
    ignore: set[str],
) -> dict[str, tuple[str, np.ndarray | None]]:
    """Per weighted layer, how it is corrected: (method, analytical shift or None)."""
    graph = FunctionalGraph.from_model(model)
    plan: dict[str, tuple[str, np.ndarray | None]] = {}
    for name in graph.order:
        layer = graph.layer(name)
        if not isinstance(layer, WEIGHTED_TYPES) or name not in sim.param_quantizers:
            continue
        if name in ignore:
            plan[name] = ("ignored", None)
            continue
        kind, producer, act, upper = _input_pattern(graph, name)
        if kind == "input" and mode is not BiasCorrectionMode.empirical:
            plan[name] = ("first layer (E[x] = 0)", None)
        elif kind == "bn" and producer in bn_stats and mode is not BiasCorrectionMode.empirical:
            gamma, beta = (np.asarray(v, F32) for v in bn_stats[producer])
            if upper is not None:
                upper = np.broadcast_to(np.asarray(upper, F32), gamma.shape)
            ex = expected_activation(beta, gamma, act, upper)
            pq = sim.param_quantizers[name]
            shift = _analytical_shift(
                pq.float_kernel, sim.layers_by_name[name].kernel.numpy(), ex, isinstance(layer, keras.layers.DepthwiseConv2D)
            )
            plan[name] = ("analytical", shift)
        elif mode is BiasCorrectionMode.analytical:
            plan[name] = ("uncorrected (no BN pattern)", None)
        else:
            plan[name] = ("empirical", None)
    return plan


def measure_shifts(
    model: keras.Model,
    sim: QuantizationSimModel,
    input_encoding,
    plan: dict[str, tuple[str, np.ndarray | None]],
    samples: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """The shift to subtract per planned layer: analytical ones as planned, empirical ones measured in
    one side-by-side pass (each layer sees the corrections made upstream)."""
    applied = {n: s for n, (m, s) in plan.items() if s is not None}
    if not any(method == "empirical" for method, _ in plan.values()):
        return applied
    if samples is None:
        raise ValueError("empirical bias correction needs correction samples")

    def hook(name: str, fp: tf.Tensor, q: tf.Tensor):
        method, shift = plan.get(name, ("", None))
        if method == "empirical":
            shift = _channel_mean(q - fp).numpy().astype(F32)
        if shift is None:
            return None
        applied[name] = shift
        return tf.constant(shift)

    run_side_by_side(model, samples, quantize_dequantize(samples, input_encoding), sim.layers_by_name, hook, progress="bias correction")
    return applied


def correct_bias(
    model: keras.Model,
    settings: QuantSettings,
    quant_data: Dataset | np.ndarray,
    correction_data: Dataset | np.ndarray | None = None,
    *,
    mode: BiasCorrectionMode | str = BiasCorrectionMode.auto,
    bn_stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ignore: Iterable[str] = (),
) -> tuple[keras.Model, BiasCorrectionReport]:
    """A new model whose biases cancel the expected output shift of weight quantization.

    ``quant_data`` gives the model-input encoding, ``correction_data`` the images of empirical
    correction (a :class:`~workbench.data.dataset.Dataset`, batches or an array). ``bn_stats`` maps a layer
    to the (γ, β) of its output pre-activation (the BN folded into it, after any CLE scaling); layers fed
    by such a layer through an optional ReLU/ReLU6 can be corrected analytically. ``ignore`` names layers
    left untouched. Steps: :func:`plan_bias_corrections`, :func:`measure_shifts`, one ``apply_edit``.
    """
    mode = BiasCorrectionMode(mode)
    model = flatten_model(model)
    ignore = set(ignore)
    unknown = ignore - {layer.name for layer in model.layers}
    if unknown:
        raise ValueError(f"bc.ignore names layers not in the model: {sorted(unknown)}")
    model = with_biases(model)
    sim, input_encoding = correction_sim(model, settings, as_array(quant_data))
    plan = plan_bias_corrections(model, sim, mode, bn_stats or {}, ignore)
    samples = None if correction_data is None else as_array(correction_data)
    applied = measure_shifts(model, sim, input_encoding, plan, samples)

    edit, report = GraphEdit(), BiasCorrectionReport(mode=mode.value)
    for name, (method, _) in plan.items():
        shift = applied.get(name)
        if shift is not None:
            edit.biases[name] = (current_bias(model.get_layer(name)) - shift).astype(F32)
        report.layers.append(
            {"layer": name, "method": method, "mean_abs_correction": float(np.mean(np.abs(shift))) if shift is not None else 0.0}
        )
    log.debug("bias correction (%s): %d layers corrected", mode.value, len(applied))
    return apply_edit(model, edit), report
