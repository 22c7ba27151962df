"""The embedded segmentation model: a small U-Net over 32×32 canvases (trained by ``models.training``).

Two stride-2 Conv2D → BN → ReLU stages down, two Conv2DTranspose stages up with skip connections (Concatenate),
and a 1×1 Conv2D giving per-pixel class logits: the layer types of the encoder-decoder networks that ship to
int8 edge hardware, about 60k parameters at ``width=16``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras


def _block(x, filters: int, stride: int, name: str, bn_momentum: float):
    x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def build_digit_segmenter(
    input_shape: Sequence[int] = (32, 32, 1), num_classes: int = 11, width: int = 16, bn_momentum: float = 0.9
) -> keras.Model:
    inputs = keras.Input(tuple(input_shape), name="canvas")
    skip1 = _block(inputs, width, 1, "enc1", bn_momentum)
    skip2 = _block(_block(skip1, 2 * width, 2, "down1", bn_momentum), 2 * width, 1, "enc2", bn_momentum)
    x = _block(skip2, 4 * width, 2, "down2", bn_momentum)
    x = _block(x, 4 * width, 1, "bottom", bn_momentum)
    for level, (filters, skip) in enumerate(((2 * width, skip2), (width, skip1)), 1):
        x = keras.layers.Conv2DTranspose(filters, 2, strides=2, name=f"up{level}")(x)
        x = keras.layers.Concatenate(name=f"skip{level}")([x, skip])
        x = _block(x, filters, 1, f"dec{level}", bn_momentum)
    logits = keras.layers.Conv2D(num_classes, 1, name="classes")(x)
    return keras.Model(inputs, logits, name="digit_segmenter")
