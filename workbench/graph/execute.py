"""Run two versions of one functional model side by side, layer by layer.

Bias correction needs, for every weighted layer in order, the FP32 and the quantized
pre-activation outputs on the same samples, with earlier corrections already applied
downstream. :func:`run_side_by_side` walks the graph once, in topological order, feeding
a reference stream through the original layers and a second stream through stand-in
layers of the same names; a hook sees each weighted layer's two pre-activations and may
return a per-channel shift to subtract from the second. Tensors are freed as soon as
their last consumer has run, so memory stays at the live frontier and the cost is one
forward pass per stream, not one per layer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import keras
import tensorflow as tf
from tqdm.auto import tqdm

from workbench import interrupts
from workbench.graph.functional import WEIGHTED_TYPES, nodes_in_order

Hook = Callable[[str, tf.Tensor, tf.Tensor], "tf.Tensor | None"]
Before = Callable[[str, tf.Tensor, tf.Tensor], None]


def _linear_twin(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A copy of a weighted layer without its fused activation, with the same weights (the caller's
    layer is never modified)."""
    config = {**layer.get_config(), "activation": "linear", "name": f"{layer.name}_pre_activation"}
    twin = layer.__class__.from_config(config)
    twin.build(layer.input.shape)
    twin.set_weights(layer.get_weights())
    return twin


def _call_pre_activation(layer: keras.layers.Layer, args, kwargs, twins: dict):
    """Call a weighted layer without its fused activation; returns (pre, activation)."""
    activation = layer.activation
    if activation is keras.activations.linear:
        return layer(*args, **kwargs), activation
    if id(layer) not in twins:
        twins[id(layer)] = _linear_twin(layer)
    return twins[id(layer)](*args, **kwargs), activation


def run_side_by_side(
    model: keras.Model,
    reference_inputs: tf.Tensor,
    other_inputs: tf.Tensor,
    other_layers: dict[str, keras.layers.Layer],
    hook: Hook,
    before: Before | None = None,
    progress: str | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Execute ``model`` on both streams; returns both outputs. Single-input models only.

    ``before``, when given, sees each weighted layer's input in both streams before the layer runs
    (it may change the stand-in's weights: the second stream then goes on with them). ``progress``: the
    label of a progress bar over the weighted layers (shown on a terminal only).
    """
    if len(model.inputs) != 1:
        raise ValueError("run_side_by_side supports single-input models")
    ref: dict[int, tf.Tensor] = {id(model.inputs[0]): tf.convert_to_tensor(reference_inputs)}
    oth: dict[int, tf.Tensor] = {id(model.inputs[0]): tf.convert_to_tensor(other_inputs)}
    nodes = nodes_in_order(model)
    twins: dict[int, keras.layers.Layer] = {}
    uses = Counter(id(t) for n in nodes if n.operation and not n.is_input for t in n.input_tensors)
    keep = {id(t) for t in model.outputs}
    weighted = sum(isinstance(n.operation, WEIGHTED_TYPES) for n in nodes if n.operation and not n.is_input)
    bar = tqdm(total=weighted, desc=progress, unit="layer", disable=None if progress else True, leave=False)
    for node in nodes:
        if not node.operation or node.is_input:
            continue
        interrupts.checkpoint()
        layer = node.operation
        args_r, kwargs_r = node.arguments.fill_in(ref)
        args_o, kwargs_o = node.arguments.fill_in(oth)
        stand_in = other_layers.get(layer.name, layer)
        if isinstance(layer, WEIGHTED_TYPES):
            if before is not None:
                before(layer.name, args_r[0], args_o[0])
            pre_r, act = _call_pre_activation(layer, args_r, kwargs_r, twins)
            pre_o, _ = _call_pre_activation(stand_in, args_o, kwargs_o, twins)
            shift = hook(layer.name, pre_r, pre_o)
            if shift is not None:
                pre_o = pre_o - shift
            out_r, out_o = act(pre_r), act(pre_o)
            bar.update(1)
        else:
            out_r, out_o = layer(*args_r, **kwargs_r), stand_in(*args_o, **kwargs_o)
        for x, a, b in zip(node.outputs, keras.tree.flatten(out_r), keras.tree.flatten(out_o)):
            ref[id(x)], oth[id(x)] = a, b
        for t in node.input_tensors:
            uses[id(t)] -= 1
            if uses[id(t)] == 0 and id(t) not in keep:
                ref.pop(id(t), None)
                oth.pop(id(t), None)
    bar.close()
    return ref[id(model.outputs[0])], oth[id(model.outputs[0])]
