"""Small serialisable layers that graph rewrites put in place of others."""

from __future__ import annotations

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="workbench")
class ChannelClip(keras.layers.Layer):
    """clip(x, 0, upper_c) per channel: ReLU6 after cross-layer scaling, exactly (6/s_c)."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)

    def build(self, input_shape):
        self.upper = self.add_weight(name="upper", shape=(self.channels,), initializer=keras.initializers.Constant(6.0), trainable=False)
        super().build(input_shape)

    def call(self, inputs):
        return keras.ops.minimum(keras.ops.relu(inputs), self.upper)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


@keras.saving.register_keras_serializable(package="workbench")
class ChannelAffine(keras.layers.Layer):
    """x·scale_c + shift_c: a batch norm that folds into no neighbour (γ/σ, β − μγ/σ)."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(self.channels,), initializer="ones", trainable=False)
        self.shift = self.add_weight(name="shift", shape=(self.channels,), initializer="zeros", trainable=False)
        super().build(input_shape)

    def call(self, inputs):
        return inputs * self.scale + self.shift

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


def channel_clip(name: str, upper: np.ndarray) -> tuple[keras.layers.Layer, list[np.ndarray]]:
    return ChannelClip(len(upper), name=name), [np.asarray(upper, np.float32)]


def channel_affine(name: str, scale: np.ndarray, shift: np.ndarray) -> tuple[keras.layers.Layer, list[np.ndarray]]:
    return ChannelAffine(len(scale), name=name), [np.asarray(scale, np.float32), np.asarray(shift, np.float32)]


def pre_activation(layer: keras.layers.Layer, x, kernel):
    """A Conv2D / DepthwiseConv2D / Dense layer's output before its activation, with ``kernel`` in place of its own.

    Channels-last only; the layer's own bias is added. Used where a kernel is a tensor being optimized or
    fake-quantized (AdaRound, the TFLite conversion graph) rather than the layer's variable.
    """
    import tensorflow as tf

    if isinstance(layer, keras.layers.Dense):
        # a rank-2 input as one MatMul (what the TFLite converter turns into an int8 FULLY_CONNECTED; a
        # Tensordot becomes reshapes around a float MatMul)
        y = tf.matmul(x, kernel) if len(x.shape) == 2 else tf.tensordot(x, kernel, axes=1)
    elif isinstance(layer, keras.layers.DepthwiseConv2D):
        y = tf.nn.depthwise_conv2d(x, kernel, strides=(1, *layer.strides, 1), padding=layer.padding.upper(), dilations=layer.dilation_rate)
    elif isinstance(layer, keras.layers.Conv2D):
        y = tf.nn.conv2d(x, kernel, strides=layer.strides, padding=layer.padding.upper(), dilations=layer.dilation_rate)
    else:
        raise TypeError(f"layer {layer.name!r} ({type(layer).__name__}) is not a Conv2D, DepthwiseConv2D or Dense layer")
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise ValueError(f"layer {layer.name!r}: only channels_last layers are supported here")
    return y + layer.bias if layer.use_bias else y


@keras.saving.register_keras_serializable(package="workbench")
class AttentionScores(keras.layers.Layer):
    """einsum(equation, key, query · scale): MultiHeadAttention's scores matmul as its own op (QKᵀ/√d)."""

    def __init__(self, equation: str, scale: float, **kwargs):
        super().__init__(**kwargs)
        self.equation = equation
        self.scale = float(scale)

    def call(self, query, key):
        query = keras.ops.multiply(query, keras.ops.cast(self.scale, query.dtype))
        return keras.ops.einsum(self.equation, key, query)

    def get_config(self):
        return {**super().get_config(), "equation": self.equation, "scale": self.scale}


@keras.saving.register_keras_serializable(package="workbench")
class AttentionCombine(keras.layers.Layer):
    """einsum(equation, probabilities, value): MultiHeadAttention's second matmul as its own op."""

    def __init__(self, equation: str, **kwargs):
        super().__init__(**kwargs)
        self.equation = equation

    def call(self, probabilities, value):
        return keras.ops.einsum(self.equation, probabilities, value)

    def get_config(self):
        return {**super().get_config(), "equation": self.equation}


TENSOR = "__tensor__"  # marks where the i-th input tensor goes in an OperationLayer's argument template


def argument_template(args: tuple, kwargs: dict) -> tuple[dict, list]:
    """A call's arguments with every symbolic tensor replaced by ``{TENSOR: i}``, and the tensors in that order."""
    tensors: list = []

    def mark(value):
        if isinstance(value, keras.KerasTensor):
            tensors.append(value)
            return {TENSOR: len(tensors) - 1}
        if isinstance(value, (list, tuple)):
            return [mark(v) for v in value]
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        return value.item() if isinstance(value, np.generic) else value

    return {"args": mark(list(args)), "kwargs": mark(dict(kwargs))}, tensors


def _fill(template, tensors):
    if isinstance(template, dict):
        if set(template) == {TENSOR}:
            return tensors[template[TENSOR]]
        return {k: _fill(v, tensors) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, tensors) for v in template]
    return template


@keras.saving.register_keras_serializable(package="workbench")
class OperationLayer(keras.layers.Layer):
    """A ``keras.ops`` operation of a functional graph (``x + 3``, ``x * (1/6)``, ``ops.mean``) as a layer, so that
    the graph has only layers and the sim can quantize the op's output like any other (MobileNetV3's hard-swish,
    ConvNeXt's residual adds). ``template`` holds the call's constant arguments (see :func:`argument_template`)."""

    def __init__(self, op, template: dict, **kwargs):
        super().__init__(**kwargs)
        self.op = op if isinstance(op, keras.Operation) else keras.saving.deserialize_keras_object(op)
        self.template = template

    def call(self, inputs):
        tensors = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        filled = _fill(self.template, tensors)
        return self.op(*filled["args"], **filled["kwargs"])

    def compute_output_spec(self, inputs):
        tensors = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        filled = _fill(self.template, tensors)
        return self.op.compute_output_spec(*filled["args"], **filled["kwargs"])

    def get_config(self):
        return {**super().get_config(), "op": keras.saving.serialize_keras_object(self.op), "template": self.template}
