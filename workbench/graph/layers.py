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
