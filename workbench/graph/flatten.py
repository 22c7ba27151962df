"""Flatten first: any functional or Sequential Keras model as one flat functional graph.

Every technique and the simulator analyse one functional graph whose layers are leaves. Users bring
``keras.Sequential`` models, transfer-learning models (a ``keras.applications`` base called inside a
wrapper), nested Sequential blocks, one-element input/output lists, several inputs and outputs.
:func:`flatten_model` inlines every nested functional or Sequential model, at any depth, into one
graph of fresh copies of the same leaf layers with the same weights (outputs identical bit for bit),
and rewrites two composite layers into the primitives AIMET and TFLite quantize:

- ``SeparableConv1D/2D`` → ``DepthwiseConv1D/2D`` (``<name>_depthwise``) + 1×1 ``Conv1D/2D``
  (``<name>_pointwise``), as TFLite's converter lowers it (depthwise, then pointwise with the bias and
  activation); equal to the fused op up to float rounding.
- a Conv/Dense layer's fused activation other than ReLU/ReLU6 (softmax, sigmoid, tanh, GELU, swish…) →
  the layer without it + ``Activation`` (``<name>_<activation>``): an int8 runtime fuses only ReLU/ReLU6
  into a convolution, so the pre-activation tensor needs its own quantizer (else the converter keeps the
  layer in float), and a final softmax becomes visible (QAT then trains with ``from_logits=False``).
- ``MultiHeadAttention`` called without masks → its ``EinsumDense`` Q/K/V/output projections
  (``<name>_query`` …), :class:`AttentionScores` (QKᵀ·1/√d), ``Softmax`` over the key axes and
  :class:`AttentionCombine` (scores·V), so that each projection's kernel, both matmuls' inputs and the
  softmax output get quantizers, as AIMET's transformer config places them.

Operations of ``keras.ops`` called on symbolic tensors (``x + 3``, ``x * y``) become
:class:`~workbench.graph.layers.OperationLayer`s, so the graph is layers only and their outputs get quantizers.

A flat model with nothing to rewrite is returned as it is (no copy). A subclassed model (its own
``call``) cannot be read as a graph and is refused with what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras

from workbench.graph.functional import (
    SEPARABLE,
    UnsupportedModel,
    graph_of,
    is_nested,
    needs_flattening,
    producer_name,
    split_activation,
)
from workbench.graph.layers import AttentionCombine, AttentionScores, OperationLayer, argument_template


@dataclass
class FlattenReport:
    """What flattening did: nested models inlined, composite layers decomposed, layers renamed."""

    inlined: list[str] = field(default_factory=list)
    decomposed: dict[str, list[str]] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)
    kept_whole: dict[str, str] = field(default_factory=dict)  # layer → why it was not decomposed
    wrapped: list[str] = field(default_factory=list)  # keras.ops operations now OperationLayers

    @property
    def changed(self) -> bool:
        return bool(self.inlined or self.decomposed or self.wrapped)


def _mha_decomposable(layer: keras.layers.MultiHeadAttention, kwargs: dict) -> str | None:
    """Why this MultiHeadAttention call must stay whole, or None."""
    masked = [k for k in ("query_mask", "value_mask", "key_mask", "attention_mask") if kwargs.get(k) is not None]
    if masked:
        return f"called with {', '.join(masked)}"
    if kwargs.get("use_causal_mask") or kwargs.get("return_attention_scores"):
        return "called with use_causal_mask or return_attention_scores"
    if getattr(layer, "_use_gate", False) or getattr(layer, "_sliding_window", None) is not None:
        return "gated or sliding-window attention"
    if type(layer)._compute_attention is not keras.layers.MultiHeadAttention._compute_attention:
        return "a subclass with its own attention"
    return None


class _Flattener:
    def __init__(self) -> None:
        self.report = FlattenReport()
        self.clones: dict[int, keras.layers.Layer] = {}  # id(original layer) → its copy (shared layers stay shared)
        self.pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []  # (original, copy) whose weights are copied
        self.weights: list[tuple[keras.layers.Layer, list]] = []  # decomposed parts and their weights
        self.names: set[str] = set()

    def name(self, wanted: str, prefix: str) -> str:
        name = wanted
        if name in self.names and prefix:
            name = f"{prefix}_{wanted}"
        base, i = name, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        if name != wanted:
            self.report.renamed[f"{prefix}/{wanted}" if prefix else wanted] = name
        return name

    def copy(self, layer: keras.layers.Layer, prefix: str, frozen: bool) -> keras.layers.Layer:
        if id(layer) in self.clones:
            return self.clones[id(layer)]
        config = {**layer.get_config(), "name": self.name(layer.name, prefix)}
        if split_activation(layer):
            config["activation"] = "linear"  # applied by its own Activation layer after the call
        if frozen and isinstance(layer, keras.layers.BatchNormalization):
            config["trainable"] = False  # the nested call had training=False: its BNs stay in inference mode
        new = layer.__class__.from_config(config)
        self.clones[id(layer)] = new
        self.pairs.append((layer, new))
        return new

    def part(self, cls, config: dict, weights: list) -> keras.layers.Layer:
        layer = cls.from_config(config)
        self.weights.append((layer, weights))
        return layer

    def separable(self, layer, x, prefix: str):
        depthwise_cls, pointwise_cls = SEPARABLE[type(layer)]
        c = layer.get_config()
        name = self.name(layer.name, prefix)
        shared = {k: c[k] for k in ("padding", "data_format", "dtype") if k in c}
        dw = self.part(
            depthwise_cls,
            {
                **shared,
                "name": self.name(f"{name}_depthwise", ""),
                "kernel_size": c["kernel_size"],
                "strides": c["strides"],
                "dilation_rate": c["dilation_rate"],
                "depth_multiplier": c["depth_multiplier"],
                "use_bias": False,
            },
            [layer.depthwise_kernel.numpy()],
        )
        ones = (1,) * len(c["kernel_size"])
        pw_weights = [layer.pointwise_kernel.numpy()] + ([layer.bias.numpy()] if c["use_bias"] else [])
        pw = self.part(
            pointwise_cls,
            {
                **shared,
                "name": self.name(f"{name}_pointwise", ""),
                "filters": c["filters"],
                "kernel_size": ones,
                "strides": ones,
                "padding": "valid",
                "activation": c["activation"],
                "use_bias": c["use_bias"],
            },
            pw_weights,
        )
        self.report.decomposed[layer.name] = [dw.name, pw.name]
        return pw(dw(x))

    def attention(self, layer, args, kwargs, prefix: str):
        query = args[0] if args else kwargs["query"]
        value = args[1] if len(args) > 1 else kwargs["value"]
        key = args[2] if len(args) > 2 else kwargs.get("key")
        key = value if key is None else key
        name = self.name(layer.name, prefix)
        projections = {}
        for role, sub in (("query", layer._query_dense), ("key", layer._key_dense), ("value", layer._value_dense)):
            projections[role] = self.part(
                keras.layers.EinsumDense, {**sub.get_config(), "name": self.name(f"{name}_{role}", "")}, sub.get_weights()
            )
        q, k, v = projections["query"](query), projections["key"](key), projections["value"](value)
        scale = float(layer._inverse_sqrt_key_dim)
        scores = AttentionScores(layer._dot_product_equation, scale, name=self.name(f"{name}_scores", ""))
        softmax = keras.layers.Softmax(axis=list(layer._softmax.axis), name=self.name(f"{name}_softmax", ""))
        probs = softmax(scores(q, k))
        parts = [projections[r].name for r in ("query", "key", "value")] + [scores.name, softmax.name]
        if layer._dropout > 0:
            dropout = keras.layers.Dropout(layer._dropout, seed=layer.seed, name=self.name(f"{name}_dropout", ""))
            probs = dropout(probs)
            parts.append(dropout.name)
        combine = AttentionCombine(layer._combine_equation, name=self.name(f"{name}_combine", ""))
        out_sub = layer._output_dense
        output = self.part(
            keras.layers.EinsumDense, {**out_sub.get_config(), "name": self.name(f"{name}_output", "")}, out_sub.get_weights()
        )
        self.report.decomposed[layer.name] = [*parts, combine.name, output.name]
        return output(combine(probs, v))

    def inline(self, model: keras.Model, inputs: list, prefix: str, frozen: bool) -> list:
        """Run ``model``'s graph on ``inputs`` with copies of its layers; returns its flat outputs."""
        graph = graph_of(model)
        tensors = {id(x): y for x, y in zip(graph.inputs, inputs)}
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[depth]:
                if node.is_input or node.operation is None:
                    continue
                if any(id(x) not in tensors for x in node.input_tensors):
                    continue  # a branch that does not lead from these inputs
                op = node.operation
                args, kwargs = node.arguments.fill_in(tensors)
                if is_nested(op):
                    training = kwargs.get("training", None)
                    self.report.inlined.append(op.name)
                    sub_inputs = keras.tree.flatten((args, {k: v for k, v in kwargs.items() if k not in ("training", "mask")}))
                    sub_inputs = [t for t in sub_inputs if isinstance(t, keras.KerasTensor)]
                    outputs = self.inline(op, sub_inputs, op.name, frozen or training is False)
                elif type(op) in SEPARABLE and op.get_config().get("data_format", "channels_last") == "channels_last":
                    outputs = [self.separable(op, args[0], prefix)]
                elif isinstance(op, keras.layers.MultiHeadAttention):
                    why = _mha_decomposable(op, kwargs)
                    if why is None:
                        outputs = [self.attention(op, args, kwargs, prefix)]
                    else:
                        self.report.kept_whole[op.name] = why
                        outputs = keras.tree.flatten(self.copy(op, prefix, frozen)(*args, **kwargs))
                elif (split := split_activation(op)) is not None:
                    new = self.copy(op, prefix, frozen)
                    activation = keras.layers.Activation(op.activation, name=self.name(f"{new.name}_{split}", ""))
                    self.report.decomposed[op.name] = [new.name, activation.name]
                    outputs = [activation(new(*args, **kwargs))]
                elif isinstance(op, keras.layers.Layer):
                    outputs = keras.tree.flatten(self.copy(op, prefix, frozen)(*args, **kwargs))
                else:  # a keras.ops operation (x + 3, ops.mean): wrapped in a layer, so that its output can be quantized
                    template, op_inputs = argument_template(args, kwargs)
                    layer = OperationLayer(op, template, name=self.name(op.name, prefix))
                    self.report.wrapped.append(layer.name)
                    outputs = keras.tree.flatten(layer(op_inputs if len(op_inputs) != 1 else op_inputs[0]))
                for x, y in zip(node.outputs, outputs):
                    tensors[id(x)] = y
        missing = [i for i, x in enumerate(graph.outputs) if id(x) not in tensors]
        if missing:
            raise UnsupportedModel(f"model {model.name!r}: output {missing[0]} does not depend on its inputs")
        return [tensors[id(x)] for x in graph.outputs]


def flatten_with_report(model: keras.Model) -> tuple[keras.Model, FlattenReport]:
    """One flat functional model equivalent to ``model`` (see the module docstring), and what was done."""
    if not needs_flattening(model):
        return model, FlattenReport()
    graph = graph_of(model)
    flattener = _Flattener()
    inputs = []
    for t in graph.inputs:
        name = flattener.name(producer_name(t), "")
        inputs.append(keras.Input(batch_shape=t.shape, dtype=t.dtype, name=name))
    outputs = flattener.inline(graph, inputs, "", False)
    flat = keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs if len(outputs) > 1 else outputs[0], name=model.name)
    for original, new in flattener.pairs:
        if original.weights:
            new.set_weights(original.get_weights())
    for layer, weights in flattener.weights:
        layer.set_weights(weights)
    return flat, flattener.report


def flatten_model(model: keras.Model) -> keras.Model:
    """:func:`flatten_with_report` without the report: what every technique and the sim call first."""
    return flatten_with_report(model)[0]
