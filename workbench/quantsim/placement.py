"""Where quantizers go, following AIMET's default quantsim config.

Parameters: the kernels of Conv/Depthwise/Dense layers (biases stay float).
Outputs: the model inputs and every op's output, except pass-through ops (dropout,
reshape-like, padding) and the inner ops of a supergroup, which is quantized once at
its end: Conv/Dense(+BN)+ReLU/ReLU6, Conv/Dense+BN, Add+ReLU/ReLU6 (an add of two tensors or of a
constant, as in hard-sigmoid's ReLU6(x + 3)).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras

from workbench.graph.functional import PASSTHROUGH_TYPES, WEIGHTED_TYPES, FunctionalGraph, is_elementwise_add, is_relu_like
from workbench.quantsim.rules import quantized_weight


@dataclass
class QuantizerPlan:
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    # layer name -> why it has no output quantizer
    skipped: dict[str, str] = field(default_factory=dict)


def _continues_group(graph: FunctionalGraph, name: str) -> str | None:
    """If ``name`` is an inner op of a supergroup, the reason; else None."""
    layer = graph.layer(name)
    nxt_name = graph.single_consumer(name)
    if nxt_name is None:
        return None
    nxt = graph.layer(nxt_name)
    linear = getattr(layer, "activation", None) is None or getattr(layer.activation, "__name__", "") == "linear"
    if isinstance(layer, WEIGHTED_TYPES) and linear:
        if isinstance(nxt, keras.layers.BatchNormalization):
            return f"inner op of a supergroup (feeds {nxt_name})"
        if is_relu_like(nxt):
            return f"inner op of a supergroup (feeds {nxt_name})"
    if isinstance(layer, keras.layers.BatchNormalization) and is_relu_like(nxt):
        producer = graph.producers.get(name, [])
        if len(producer) == 1 and isinstance(graph.layer(producer[0]), WEIGHTED_TYPES):
            return f"inner op of a supergroup (feeds {nxt_name})"
    if is_elementwise_add(layer) and is_relu_like(nxt):  # x + y or x + c (hard-sigmoid's x + 3), then ReLU/ReLU6
        return f"inner op of a supergroup (feeds {nxt_name})"
    return None


def _float_output(layer: keras.layers.Layer) -> bool:
    outputs = keras.tree.flatten(layer.output)
    return all(keras.backend.is_float_dtype(t.dtype) for t in outputs)


def plan_quantizers(graph: FunctionalGraph, excluded: frozenset[str] = frozenset()) -> QuantizerPlan:
    """Decide which inputs, outputs and kernels get quantizers."""
    plan = QuantizerPlan()
    for name in graph.inputs():
        if _float_output(graph.layer(name)):
            plan.inputs.append(name)
        else:
            plan.skipped[name] = f"{graph.layer(name).output.dtype} input (e.g. token ids): not quantized"
    for name in graph.order:
        layer = graph.layer(name)
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if name in excluded:
            plan.skipped[name] = "excluded by the user"
            continue
        if quantized_weight(layer) is not None:
            plan.params.append(name)
        if name in graph.shared:
            plan.skipped[name] = "shared layer (called more than once): output not quantized"
            continue
        if isinstance(layer, PASSTHROUGH_TYPES):
            plan.skipped[name] = f"{type(layer).__name__} only moves data"
            continue
        if len(keras.tree.flatten(layer.output)) > 1:
            plan.skipped[name] = "several outputs: not quantized"
            continue
        if not _float_output(layer):
            plan.skipped[name] = "integer output: not quantized"
            continue
        reason = _continues_group(graph, name)
        if reason:
            plan.skipped[name] = reason
            continue
        plan.outputs.append(name)
    return plan
