"""The embedded default model: a small MobileNetV2-family classifier (trained by ``models.training``).

Depthwise-separable inverted-residual blocks with batch norm, ReLU6 and residual adds,
about 35k parameters at ``width=16``. BN momentum defaults to 0.9: Keras' MobileNetV2
value (0.999) leaves the moving statistics unconverged after a few hundred steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

# (expansion, output-channel multiple of width, stride) per inverted-residual block
BLOCKS = ((1, 1.0, 1), (4, 1.5, 2), (4, 1.5, 1), (4, 2.0, 2), (4, 2.0, 1))


def _conv_bn(x, filters: int, kernel: int, stride: int, momentum: float, name: str, relu6: bool = True):
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if relu6 else x


def _inverted_residual(x, expansion: int, out_ch: int, stride: int, momentum: float, name: str):
    in_ch = x.shape[-1]
    y = x
    if expansion != 1:
        y = _conv_bn(y, in_ch * expansion, 1, 1, momentum, f"{name}_expand")
    y = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = keras.layers.BatchNormalization(momentum=momentum, name=f"{name}_dw_bn")(y)
    y = keras.layers.ReLU(6.0, name=f"{name}_dw_relu6")(y)
    y = _conv_bn(y, out_ch, 1, 1, momentum, f"{name}_project", relu6=False)
    if stride == 1 and in_ch == out_ch:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def build_mnist_mobilenet(
    input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, width: int = 16, bn_momentum: float = 0.9
) -> keras.Model:
    inputs = keras.Input(tuple(input_shape), name="image")
    x = _conv_bn(inputs, width, 3, 2, bn_momentum, "stem")
    for i, (expansion, mult, stride) in enumerate(BLOCKS):
        x = _inverted_residual(x, expansion, int(round(width * mult)), stride, bn_momentum, f"block{i}")
    x = _conv_bn(x, width * 8, 1, 1, bn_momentum, "head")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="mnist_mobilenet")
