"""Batch-norm folding (docs/techniques.md, section 2).

σ = sqrt(var + ε), scale = γ/σ, shift = β − μ·γ/σ.
- Backward, layer → BN (linear layer, BN its only consumer):
  W'[…, o] = W[…, o]·γ_o/σ_o, b'_o = β_o + (b_o − μ_o)·γ_o/σ_o.
- Forward, BN → Conv/Dense (BN's only consumer, no zero padding, not depthwise; Flatten allowed
  before a Dense): W'[…, i, o] = W[…, i, o]·scale_i, b'_o = b_o + Σ W[…, i, o]·shift_i.
- Any other BN becomes a per-channel affine op.
The statistics of every folded BN are kept for high-bias absorption and analytical BC.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np

from workbench.graph.flatten import flatten_model
from workbench.graph.functional import CONV_TYPES, WEIGHTED_TYPES, FunctionalGraph
from workbench.graph.layers import channel_affine
from workbench.graph.rewrite import GraphEdit, apply_edit

F32 = np.float32


@dataclass
class BNStats:
    """A batch norm's parameters as they were before folding."""

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    epsilon: float

    @classmethod
    def of(cls, bn: keras.layers.BatchNormalization) -> BNStats:
        channels = int(bn.moving_mean.shape[0])
        gamma = bn.gamma.numpy() if getattr(bn, "gamma", None) is not None else np.ones(channels, F32)
        beta = bn.beta.numpy() if getattr(bn, "beta", None) is not None else np.zeros(channels, F32)
        return cls(
            gamma.astype(F32),
            beta.astype(F32),
            bn.moving_mean.numpy().astype(F32),
            bn.moving_variance.numpy().astype(F32),
            float(bn.epsilon),
        )

    @property
    def scale(self) -> np.ndarray:
        return (self.gamma / np.sqrt(self.var + F32(self.epsilon))).astype(F32)

    @property
    def shift(self) -> np.ndarray:
        return (self.beta - self.mean * self.scale).astype(F32)


@dataclass
class FoldReport:
    folded: list[tuple[str, str, str]] = field(default_factory=list)  # (bn, layer, "backward"|"forward")
    affine: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # bn -> why it did not fold
    output_bn: dict[str, BNStats] = field(default_factory=dict)  # layer -> the BN folded after it
    input_bn: dict[str, BNStats] = field(default_factory=dict)  # layer -> the BN folded before it

    def summary(self) -> dict:
        return {"folded": [list(f) for f in self.folded], "affine": self.affine, "skipped": self.skipped}


def _last_axis(bn: keras.layers.BatchNormalization) -> bool:
    axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
    rank = len(bn.input.shape)
    return axis is not None and axis % rank == rank - 1


def _linear(layer: keras.layers.Layer) -> bool:
    return getattr(getattr(layer, "activation", None), "__name__", "linear") == "linear"


def _backward_target(graph: FunctionalGraph, bn_name: str) -> tuple[str | None, str]:
    producers = graph.producers.get(bn_name, [])
    if len(producers) != 1:
        return None, "no single producer"
    name = producers[0]
    layer = graph.layer(name)
    if not isinstance(layer, WEIGHTED_TYPES):
        return None, f"producer {name} is a {type(layer).__name__}"
    if not _linear(layer):
        return None, f"producer {name} applies {layer.activation.__name__} before the BN"
    if graph.single_consumer(name) != bn_name or name in graph.shared:
        return None, f"producer {name} has other consumers"
    return name, ""


def _forward_target(graph: FunctionalGraph, bn_name: str) -> tuple[str | None, bool, str]:
    """(consumer, through_flatten, reason) for a BN → Conv/Dense fold."""
    nxt = graph.single_consumer(bn_name)
    if nxt is None:
        return None, False, "output has several consumers or is a model output"
    layer = graph.layer(nxt)
    flatten = False
    if isinstance(layer, keras.layers.Flatten):
        after = graph.single_consumer(nxt)
        if after is None or not isinstance(graph.layer(after), keras.layers.Dense):
            return None, False, "Flatten is not followed by a Dense only"
        nxt, layer, flatten = after, graph.layer(after), True
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return None, False, f"consumer {nxt} is depthwise"
    if isinstance(layer, CONV_TYPES):
        if getattr(layer, "groups", 1) != 1:
            return None, False, f"consumer {nxt} is grouped"
        if layer.padding != "valid" and any(k > 1 for k in layer.kernel_size):
            return None, False, f"consumer {nxt} zero-pads its input"
    elif not isinstance(layer, keras.layers.Dense):
        return None, False, f"consumer {nxt} is a {type(layer).__name__}"
    if nxt in graph.shared:
        return None, False, f"consumer {nxt} is shared"
    return nxt, flatten, ""


def plan_batch_norm_folds(model: keras.Model, graph: FunctionalGraph, edit: GraphEdit) -> FoldReport:
    """Decide every BN's fate and write the folded weights into ``edit``."""
    report = FoldReport()
    for name in graph.order:
        bn = graph.layer(name)
        if not isinstance(bn, keras.layers.BatchNormalization):
            continue
        if not _last_axis(bn) or name in graph.shared:
            report.skipped[name] = "not a last-axis BN called once"
            continue
        stats = BNStats.of(bn)
        target, reason = _backward_target(graph, name)
        if target is not None:
            layer = graph.layer(target)
            kernel = edit.kernel(model, target)
            bias = edit.bias(model, target)
            scale, shift = stats.scale, stats.shift
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                kernel = kernel * scale.reshape(kernel.shape[-2], kernel.shape[-1])
            else:
                kernel = kernel * scale
            edit.kernels[target] = kernel.astype(F32)
            edit.biases[target] = (bias * scale + shift).astype(F32)
            edit.drop.add(name)
            report.folded.append((name, target, "backward"))
            report.output_bn[target] = stats
            continue
        consumer, flatten, reason2 = _forward_target(graph, name)
        if consumer is not None:
            kernel = edit.kernel(model, consumer)
            scale, shift = stats.scale, stats.shift
            if flatten:
                repeat = kernel.shape[0] // len(scale)
                scale, shift = np.tile(scale, repeat), np.tile(shift, repeat)
            in_axis = kernel.ndim - 2
            shape = [1] * kernel.ndim
            shape[in_axis] = len(scale)
            bias = edit.bias(model, consumer)
            edit.biases[consumer] = (
                bias + np.tensordot(shift, kernel, axes=([0], [in_axis])).reshape(-1, kernel.shape[-1]).sum(axis=0)
            ).astype(F32)
            edit.kernels[consumer] = (kernel * scale.reshape(shape)).astype(F32)
            edit.drop.add(name)
            report.folded.append((name, consumer, "forward"))
            report.input_bn[consumer] = stats
            continue
        edit.replace[name] = channel_affine(name, stats.scale, stats.shift)
        report.affine.append(name)
        report.skipped[name] = f"kept as an affine op: backward: {reason}; forward: {reason2}"
    return report


def fold_batch_norms(model: keras.Model) -> tuple[keras.Model, FoldReport]:
    """A new model with every foldable BN folded and the rest as affine ops; the input is untouched.

    A nested or Sequential model is flattened first (``graph.flatten``)."""
    model = flatten_model(model)
    graph = FunctionalGraph.from_model(model)
    edit = GraphEdit()
    report = plan_batch_norm_folds(model, graph, edit)
    return apply_edit(model, edit), report
