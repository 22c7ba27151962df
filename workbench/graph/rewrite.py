"""Clone-with-changes: one rebuild of a functional model with per-layer edits.

A :class:`GraphEdit` collects what transforms decided (new kernels and biases, layers to
drop, layers to replace); :func:`apply_edit` rebuilds the model once with
``keras.models.clone_model`` and returns a new model, leaving the input untouched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import keras
import numpy as np

from workbench.graph.functional import fresh_inputs

log = logging.getLogger(__name__)


@dataclass
class GraphEdit:
    kernels: dict[str, np.ndarray] = field(default_factory=dict)
    biases: dict[str, np.ndarray] = field(default_factory=dict)
    # single-input layers removed from the graph (their input flows on)
    drop: set[str] = field(default_factory=set)
    # layer name -> (replacement layer with the same name, its weights)
    replace: dict[str, tuple[keras.layers.Layer, list[np.ndarray]]] = field(default_factory=dict)
    _index: dict[str, keras.layers.Layer] = field(default_factory=dict, repr=False)

    def _layer(self, model: keras.Model, name: str) -> keras.layers.Layer:
        # model.get_layer rebuilds the layer list on every call; index it once
        if name not in self._index:
            self._index.update({layer.name: layer for layer in model.layers})
        return self._index[name]

    def kernel(self, model: keras.Model, name: str) -> np.ndarray:
        """The current kernel of ``name``: edited if edited, else the model's."""
        if name in self.kernels:
            return self.kernels[name]
        return np.asarray(self._layer(model, name).kernel.numpy(), np.float32)

    def bias(self, model: keras.Model, name: str) -> np.ndarray:
        """The current bias of ``name`` (zeros for a layer without one)."""
        if name in self.biases:
            return self.biases[name]
        return current_bias(self._layer(model, name))


def current_bias(layer: keras.layers.Layer) -> np.ndarray:
    """A layer's bias, or zeros of its output-channel count when it has none."""
    if getattr(layer, "use_bias", False) and layer.bias is not None:
        return np.asarray(layer.bias.numpy(), np.float32)
    shape = layer.kernel.shape
    channels = shape[-2] * shape[-1] if isinstance(layer, keras.layers.DepthwiseConv2D) else shape[-1]
    return np.zeros(int(channels), np.float32)


def _weights_for(layer: keras.layers.Layer, edit: GraphEdit) -> list[np.ndarray]:
    name = layer.name
    if name not in edit.kernels and name not in edit.biases:
        return layer.get_weights()
    kernel = edit.kernels.get(name, np.asarray(layer.kernel.numpy()))
    if name in edit.biases:
        return [kernel, edit.biases[name]]
    return [kernel, current_bias(layer)] if getattr(layer, "use_bias", False) else [kernel]


def clone_layer(layer: keras.layers.Layer, config: dict | None = None) -> keras.layers.Layer:
    """A fresh copy of ``layer`` from its config (weights are set afterwards).

    A layer that cannot be rebuilt from its config (a Lambda around a Python lambda, a custom
    layer without ``get_config``) is shared with the copy, with a warning, when it holds no weights
    (sharing it then shares no state); otherwise the error says which layer.
    """
    try:
        return layer.__class__.from_config(config if config is not None else layer.get_config())
    except (TypeError, ValueError, NotImplementedError, KeyError, AttributeError) as err:
        if layer.weights:
            raise TypeError(f"layer {layer.name!r} ({type(layer).__name__}) cannot be cloned from its config: {err}") from err
        log.warning(
            "layer %r (%s) cannot be rebuilt from its config (%s): the copy shares it (it holds no weights)",
            layer.name,
            type(layer).__name__,
            err,
        )
        return layer


def apply_edit(model: keras.Model, edit: GraphEdit) -> keras.Model:
    """Rebuild ``model`` once with ``edit`` applied; the input model is not modified."""

    def clone_function(layer):
        if layer.name in edit.replace:
            return edit.replace[layer.name][0]
        config = layer.get_config()
        if layer.name in edit.biases and not config.get("use_bias", True):
            config["use_bias"] = True
        return clone_layer(layer, config)

    def call_function(layer, *args, **kwargs):
        if layer.name in edit.drop:
            return args[0]
        if layer.name in edit.replace:
            return layer(args[0])  # replacements are single-input ops; the original's kwargs (mask, training) do not apply
        return layer(*args, **kwargs)

    inputs = fresh_inputs(model)
    new = keras.models.clone_model(
        model, input_tensors=inputs if len(inputs) > 1 else inputs[0], clone_function=clone_function, call_function=call_function
    )
    new_layers = {layer.name: layer for layer in new.layers}
    for layer in model.layers:
        if layer.name in edit.drop or isinstance(layer, keras.layers.InputLayer):
            continue
        target = new_layers[layer.name]
        if layer.name in edit.replace:
            target.set_weights(edit.replace[layer.name][1])
        elif layer.weights:
            target.set_weights(_weights_for(layer, edit))
    return new
