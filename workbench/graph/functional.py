"""Keras 3 functional-graph analysis: producers, consumers and layer kinds.

The graph is read from each layer's inbound node (``_inbound_nodes``), which Keras 3
keeps for every layer of a functional model; ``model.layers`` is already in
topological order. Layers called more than once (shared layers) are reported, not
rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras

from workbench.graph.layers import ChannelClip

CONV_TYPES = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.DepthwiseConv2D)
WEIGHTED_TYPES = CONV_TYPES + (keras.layers.Dense,)
# Ops that only move or drop data: AIMET gives them no output quantizer.
PASSTHROUGH_TYPES = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.Reshape,
    keras.layers.Flatten,
    keras.layers.Permute,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.Identity,
)


def activation_name(layer: keras.layers.Layer) -> str | None:
    """Name of the activation a layer applies ('linear' for a plain conv), or None."""
    if isinstance(layer, ChannelClip):
        return "relu6"  # a ReLU6 whose clip is per channel after cross-layer scaling
    if isinstance(layer, keras.layers.ReLU):
        if layer.negative_slope == 0 and layer.threshold == 0:
            if layer.max_value is None:
                return "relu"
            if float(layer.max_value) == 6.0:
                return "relu6"
        return "relu_variant"
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    if isinstance(layer, keras.layers.Activation) or isinstance(layer, WEIGHTED_TYPES):
        fn = getattr(layer, "activation", None)
        return getattr(fn, "__name__", None) if fn is not None else None
    return None


def is_elementwise_add(layer: keras.layers.Layer) -> bool:
    """An ``Add`` layer, or a wrapped ``keras.ops`` add (``x + 3.0`` in MobileNetV3's hard-sigmoid)."""
    op = getattr(layer, "op", None)
    return isinstance(layer, keras.layers.Add) or (isinstance(op, keras.Operation) and type(op).__name__ == "Add")


def is_relu_like(layer: keras.layers.Layer) -> bool:
    """A standalone ReLU or ReLU6 (layer or Activation)."""
    return not isinstance(layer, WEIGHTED_TYPES) and activation_name(layer) in ("relu", "relu6")


@dataclass
class FunctionalGraph:
    """Producer/consumer view of a functional Keras model, by layer name."""

    model: keras.Model
    producers: dict[str, list[str]] = field(default_factory=dict)
    consumers: dict[str, list[str]] = field(default_factory=dict)
    outputs: set[str] = field(default_factory=set)
    shared: set[str] = field(default_factory=set)
    order: list[str] = field(default_factory=list)
    layers: dict[str, keras.layers.Layer] = field(default_factory=dict, repr=False)

    @classmethod
    def from_model(cls, model: keras.Model) -> FunctionalGraph:
        graph_of(model)  # a subclassed or unbuilt model: one line that says what to do
        if needs_flattening(model):
            raise UnsupportedModel(f"model {model.name!r} has nested models, composite layers or list inputs: call flatten_model() first")
        graph = cls(model=model)
        for layer in model.layers:
            graph.order.append(layer.name)
            graph.layers[layer.name] = layer
            graph.consumers.setdefault(layer.name, [])
            nodes = [n for i, n in enumerate(layer._inbound_nodes) if _node_in_model(layer, i, model)]
            if len(nodes) > 1:
                graph.shared.add(layer.name)
            parents: list[str] = []
            for node in nodes:
                for tensor in node.input_tensors:
                    parents.append(producer_name(tensor))
            graph.producers[layer.name] = parents
            for parent in parents:
                graph.consumers.setdefault(parent, []).append(layer.name)
        for tensor in model.outputs:
            graph.outputs.add(producer_name(tensor))
        return graph

    def layer(self, name: str) -> keras.layers.Layer:
        return self.layers[name]

    def single_consumer(self, name: str) -> str | None:
        """The only consumer of a layer's output, or None (none, several, or a model output)."""
        users = self.consumers.get(name, [])
        if len(users) != 1 or name in self.outputs:
            return None
        return users[0]

    def inputs(self) -> list[str]:
        return [producer_name(t) for t in self.model.inputs]


# The only helpers that read Keras' private graph attributes; the rest of the package goes through them.
def producer(tensor) -> keras.Operation | None:
    """The operation (layer) that produced a symbolic tensor, or None for a plain value."""
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.operation


def producer_name(tensor) -> str:
    op = producer(tensor)
    if op is None:
        raise TypeError(f"{tensor!r} is not a symbolic tensor of a functional model")
    return op.name


def fresh_inputs(model: keras.Model) -> list:
    """New ``keras.Input`` tensors like the model's (same shapes, dtypes and names), for a rebuilt copy."""
    return [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=producer_name(t)) for t in model.inputs]


def nodes_in_order(model: keras.Model) -> list:
    """The model's call nodes in topological order (inputs first)."""
    return [n for depth in sorted(model._nodes_by_depth, reverse=True) for n in model._nodes_by_depth[depth]]


def _node_in_model(layer: keras.layers.Layer, index: int, model: keras.Model) -> bool:
    """Whether a layer's ``index``-th call belongs to ``model`` (Keras keys nodes as ``id_ib-index``)."""
    nodes = getattr(model, "_nodes", None)
    return True if nodes is None else f"{id(layer)}_ib-{index}" in nodes


# what flattening (graph/flatten.py) rewrites, and what makes a model unreadable as a graph
SEPARABLE = {keras.layers.SeparableConv2D: (keras.layers.DepthwiseConv2D, keras.layers.Conv2D)}
SEPARABLE[keras.layers.SeparableConv1D] = (keras.layers.DepthwiseConv1D, keras.layers.Conv1D)


class UnsupportedModel(TypeError):
    """A model that cannot be read as a functional graph (subclassed, or a Sequential never built)."""


def graph_of(model: keras.Model) -> keras.Model:
    """The functional graph that runs ``model``: itself, a built Sequential's inner graph, or an error."""
    if isinstance(model, keras.Sequential):
        inner = getattr(model, "_functional", None)
        if inner is None:
            raise UnsupportedModel(
                f"Sequential model {model.name!r} has no input shape yet: start it with keras.Input(shape=...) "
                "(or call model.build(input_shape)) so that its graph exists"
            )
        return inner
    if isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth"):
        return model
    raise UnsupportedModel(
        f"{type(model).__name__} {getattr(model, 'name', '')!r} is a subclassed model (its own call()), which has no graph to "
        "analyse: rebuild it with the functional API (keras.Input → layers → keras.Model) or as a keras.Sequential"
    )


def is_nested(op) -> bool:
    return isinstance(op, keras.Model)


FUSABLE_ACTIVATIONS = ("linear", "relu", "relu6")


def split_activation(op) -> str | None:
    """The fused activation of a weighted layer that an int8 runtime does not fuse, or None."""
    if not isinstance(op, WEIGHTED_TYPES + (keras.layers.EinsumDense, keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose)):
        return None
    name = activation_name(op)
    return None if name is None or name in FUSABLE_ACTIVATIONS else name


def needs_flattening(model: keras.Model) -> bool:
    """Whether :func:`flatten_model` would change ``model`` (nesting, composite layers, list structures)."""
    if isinstance(model, keras.Sequential):
        return True
    graph = graph_of(model)
    if any(
        is_nested(op)
        or type(op) in SEPARABLE
        or isinstance(op, keras.layers.MultiHeadAttention)
        or split_activation(op)
        or not isinstance(op, keras.layers.Layer)
        for op in graph.operations
    ):
        return True
    return listed(graph._inputs_struct) or listed(graph._outputs_struct)


def listed(struct) -> bool:
    """A one-element list or tuple (Keras then insists on the same structure everywhere)."""
    return isinstance(struct, (list, tuple)) and len(struct) == 1
