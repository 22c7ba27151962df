"""The embedded keyword spotter: a small Conv1D network over 49×10 cepstral frames (trained by ``models.training``).

Conv1D → BN → ReLU blocks with a stride-2 reduction, global average pooling and a dense head: the layer types of
the Conv1D KWS models that ship to int8 microcontrollers, about 10k parameters at ``width=32``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras


def build_kws_conv1d(input_shape: Sequence[int] = (49, 10), num_classes: int = 8, width: int = 32, bn_momentum: float = 0.9) -> keras.Model:
    inputs = keras.Input(tuple(input_shape), name="frames")
    x = inputs
    for i, (filters, stride) in enumerate(((width, 1), (width, 2), (width * 2, 1))):
        x = keras.layers.Conv1D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"block{i}_conv")(x)
        x = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"block{i}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x), name="kws_conv1d")
